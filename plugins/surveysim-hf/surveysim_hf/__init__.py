"""surveysim backend on Hugging Face transformers: LoRA/QLoRA fine-tuning and answering.

Importing this package is cheap; torch and transformers are imported by the modules that use
them (``backend``, ``train``, ``generation``, ``losses``), which the core loads on first use.
"""
