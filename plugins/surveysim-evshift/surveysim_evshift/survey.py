"""The EV-shift survey object: ``survey.yaml`` plus the verbatim instrument.

Real data, for those who hold it, is read in surveysim's long format (docs/user-guide.md): one
row per answer with ``subject_id``, the fourteen demographic columns (option labels verbatim,
``household`` as labels joined by ``|``), ``question`` (``initial_preference`` or
``post_intervention_preference``), ``intervention`` (statement id 1-35, empty for the initial
answer), ``seq`` (0 for the initial answer, then 1, 2, ... in the order seen) and ``answer``
(0-100).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import yaml

from surveysim_core.survey import Survey

HERE = resources.files("surveysim_evshift")


def instrument() -> dict:
    """The published questionnaire (demographic options and the 35 statements), verbatim."""
    return yaml.safe_load((HERE / "questionnaire.yaml").read_text(encoding="utf-8"))


def build_survey() -> Survey:
    inst = instrument()
    path = Path(str(HERE / "survey.yaml"))
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["templates"] = {
        name: (HERE / value).read_text(encoding="utf-8")
        for name, value in data["templates"].items()
    }
    data["demographics"] = {
        name: {
            "options": [str(o) for o in field["options"]],
            "multi": bool(field.get("multi", False)),
            "exclusive": ["I live alone", "Prefer not to answer"] if field.get("multi") else [],
            "label": name.replace("_", " "),
        }
        for name, field in inst["demographics"].items()
    }
    data["context_values"] = {
        "intervention": {str(k): str(v) for k, v in inst["interventions"].items()}
    }
    from pydantic import ValidationError

    from surveysim_core.config import format_validation_error
    from surveysim_core.errors import ConfigError
    from surveysim_core.survey import SurveySpec

    try:
        spec = SurveySpec.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, str(path))) from None
    return Survey(spec=spec, source=str(path), synthesize=synthesize)


def synthesize(out_dir: Path, subjects: int | None, seed: int) -> Path:
    from surveysim_evshift.synth import write_population

    return write_population(Path(out_dir), n_subjects=subjects or 4045, seed=seed)


SURVEY = build_survey()
