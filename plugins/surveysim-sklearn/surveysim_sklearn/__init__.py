"""surveysim baselines without a language model (SVR, CatBoost) and the RMSE-KL report.

Importing this package imports nothing heavy; scikit-learn, CatBoost and matplotlib are
imported by the modules that use them, on first use.
"""

__version__ = "0.1.0"
