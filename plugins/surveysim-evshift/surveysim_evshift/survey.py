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


def build_survey(single_digit: bool = False) -> Survey:
    """The survey on its 0-100 scale, or (``single_digit``) rescaled to 0-9 as the paper does
    for its numeric penalty, so that every answer is one digit token."""
    inst = instrument()
    path = Path(str(HERE / "survey.yaml"))
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if single_digit:
        data["name"] = "evshift-0to9"
        data["description"] += " Rescaled to 0-9: round(answer * 9 / 100), halves up."
        for q in data["questions"]:
            q["text"] = q["text"].replace("from 0 to 100", "from 0 to 9")
            q["answer"] = {"type": "integer", "min": 0, "max": 9, "bin_width": 1}
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
    if single_digit:
        return Survey(spec=spec, source=str(path), synthesize=synthesize, load=load_rescaled)
    return Survey(spec=spec, source=str(path), synthesize=synthesize)


def synthesize(out_dir: Path, subjects: int | None, seed: int) -> Path:
    from surveysim_evshift.synth import write_population

    return write_population(Path(out_dir), n_subjects=subjects or 4045, seed=seed)


def to_single_digit(answer: float) -> int:
    """0-100 to 0-9: ``floor(answer * 9 / 100 + 0.5)`` (halves round up; 50 -> 5, 100 -> 9)."""
    return int(answer * 9 // 100 + (1 if (answer * 9) % 100 >= 50 else 0))


def load_rescaled(path: Path):
    """Read a 0-100 long-format file (any registered format) and rescale answers to 0-9.

    Answers that are not integers in 0-100 are left as they are, so that validation reports them
    with their row.
    """
    from surveysim_core.data import read_table
    from surveysim_core.plugins import get_plugins

    table = read_table(path, get_plugins().data_formats)

    def rescale(value):
        try:
            number = float(value)
        except (TypeError, ValueError):
            return value
        if number.is_integer() and 0 <= number <= 100:
            return to_single_digit(number)
        return value

    table["answer"] = [rescale(v) for v in table["answer"]]
    return table


SURVEY = build_survey()
SURVEY_0TO9 = build_survey(single_digit=True)
