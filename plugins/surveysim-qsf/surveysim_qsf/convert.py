"""A Qualtrics survey file (.qsf, JSON) to a surveysim survey definition.

A .qsf file holds ``SurveyEntry`` (the survey's name) and ``SurveyElements``: the blocks (``BL``,
which questions each block holds, in order), the survey flow (``FL``, the order of the blocks)
and one ``SQ`` element per question, whose ``Payload`` gives ``QuestionType``, ``Selector``,
``SubSelector``, ``QuestionText``, ``Choices`` and ``ChoiceOrder`` (``Answers`` and
``AnswerOrder`` for a matrix's scale points), ``DataExportTag`` (the variable name),
``DisplayLogic``, ``SkipLogic`` and ``Randomization``.

Mappings:

- single-answer multiple choice (``MC`` with a single-answer selector) -> categorical;
- net promoter score (``MC``/``NPS``) -> integer 0-10, the end labels kept;
- Likert matrix with one answer per row -> one question per row: integer if the scale points
  are whole numbers, else ordered categorical; points Qualtrics excludes from analysis
  (``AnalyzeChoices: No``, e.g. "n/a") are left out and answers with them are missing;
- slider -> one integer question per slider, from its minimum to its maximum;
- display logic and skip logic on single-choice and numeric questions -> ``when:`` conditions;
- randomised choices of a single-answer question -> ``option_order: shuffled``.

Everything else (text entry, multiple answers, rank order, matrices other than single-answer
Likert, carried-forward choices, embedded data, flow branches and randomisers, ...) is listed in the import report with its reason; nothing is dropped
silently.
"""

from __future__ import annotations

import html
import json
import keyword
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from surveysim_core.errors import ConfigError

SINGLE_ANSWER = {"SAVR", "SAHR", "SACOL", "DL", "SB"}
MULTIPLE_ANSWER = {"MAVR", "MAHR", "MACOL", "MSB"}
NOT_QUESTIONS = {"DB": "descriptive text (no answer)", "Timing": "page timer (no answer)",
                 "Meta": "browser meta information (no answer)"}  # fmt: skip
UNSUPPORTED_TYPES = {
    "TE": "text entry: surveysim has no free-text answer type",
    "RO": "rank order: surveysim has no ranking answer type",
    "PGR": "pick, group and rank: no answer type for it",
    "CS": "constant sum: no answer type for it",
    "SBS": "side by side: no answer type for it",
    "HeatMap": "heat map: no answer type for it",
    "FileUpload": "file upload: no answer type for it",
    "Draw": "signature: no answer type for it",
}
JINJA_WORDS = {"and", "or", "not", "in", "is", "if", "else", "true", "false", "none", "True",
               "False", "None"}  # fmt: skip
CHOICE_TEMPLATE = "choice"
SCALE_TEMPLATE = "scale"
NUMERIC_OPERATORS = {"EqualTo": "==", "NotEqualTo": "!=", "GreaterThan": ">", "LessThan": "<",
                     "GreaterThanOrEqual": ">=", "LessThanOrEqual": "<="}  # fmt: skip
LOCATOR = re.compile(r"^q://(QID\d+)/(SelectableChoice|ChoiceNumericEntryValue)/(\d+)$")


@dataclass
class ReportItem:
    """One thing the import did not map, or mapped with a change: where, and why."""

    where: str
    what: str


@dataclass
class Imported:
    """One surveysim question (or demographic field) made from a Qualtrics question."""

    qid: str
    id: str
    spec: dict[str, Any]
    labels: dict[str, Any] = field(default_factory=dict)  # Qualtrics choice id -> answer value
    numeric: bool = False  # integer answer: conditions compare numbers


@dataclass
class Conversion:
    """The survey definition (a dict for ``survey.yaml``), its templates, and the report."""

    survey: dict[str, Any]
    templates: dict[str, str]
    report: list[ReportItem]
    imported: list[Imported]


def text_of(value: Any) -> str:
    """Qualtrics text (HTML) as plain text: tags removed, entities decoded, spaces collapsed."""
    text = re.sub(r"<[^>]+>", " ", str(value or ""))
    return " ".join(html.unescape(text).split())


def jinja_string(text: str) -> str:
    """A Jinja string literal of ``text``."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _identifier(tag: str, taken: set[str]) -> str:
    ident = re.sub(r"\W", "_", tag.strip()) or "q"
    if ident[0].isdigit() or keyword.iskeyword(ident) or ident in JINJA_WORDS:
        ident = f"q_{ident}"
    base, n = ident, 2
    while ident in taken:
        ident, n = f"{base}_{n}", n + 1
    taken.add(ident)
    return ident


def _choices(payload: dict[str, Any], key: str = "Choices", order_key: str = "ChoiceOrder"):
    """(choice id, choice dict) in display order; a list of choices is keyed by position."""
    raw = payload.get(key) or {}
    choices = {str(i): c for i, c in enumerate(raw)} if isinstance(raw, list) else {
        str(k): v for k, v in raw.items()
    }  # fmt: skip
    order = [str(c) for c in payload.get(order_key) or []] or list(choices)
    return [(cid, choices[cid]) for cid in order if cid in choices]


def load_qsf(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not a Qualtrics survey file (not JSON: {exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("SurveyElements"), list):
        raise ConfigError(f"{path}: not a Qualtrics survey file (no SurveyElements list)")
    return data


def _blocks(elements: list[dict[str, Any]]) -> tuple[list[dict], dict[str, dict], list[str]]:
    """Blocks in flow order, questions by QID, and notes about the flow."""
    blocks: dict[str, dict] = {}
    questions: dict[str, dict] = {}
    flow: list[dict] = []
    for el in elements:
        kind = el.get("Element")
        if kind == "BL":
            payload = el.get("Payload") or []
            for block in payload.values() if isinstance(payload, dict) else payload:
                if isinstance(block, dict) and block.get("ID"):
                    blocks[block["ID"]] = block
        elif kind == "SQ" and isinstance(el.get("Payload"), dict):
            questions[el["PrimaryAttribute"]] = el["Payload"]
        elif kind == "FL" and isinstance(el.get("Payload"), dict):
            flow = el["Payload"].get("Flow") or []
    notes: list[str] = []
    ordered: list[str] = []

    def walk(items: list[dict], under: str | None) -> None:
        for item in items:
            kind = item.get("Type")
            if item.get("ID") in blocks and kind in {"Block", "Standard", "Default"}:
                if under:
                    notes.append(
                        f"block {blocks[item['ID']].get('Description', item['ID'])!r}: {under}"
                    )
                ordered.append(item["ID"])
            elif kind in {"Branch", "BlockRandomizer", "Randomizer", "Group"}:
                reason = {
                    "Branch": "shown under a flow branch condition, not translated (the"
                    " questions get no condition from it)",
                    "BlockRandomizer": "in a block randomiser: block order is not reproduced",
                    "Randomizer": "in a randomiser: block order is not reproduced",
                    "Group": None,
                }[kind]
                walk(item.get("Flow") or [], reason or under)
            elif kind == "EmbeddedData":
                notes.append("embedded data fields in the survey flow: not imported")
            elif kind == "EndSurvey":
                notes.append("an end-of-survey element in the flow: later blocks are imported as"
                             " if every respondent reached them")  # fmt: skip

    walk(flow, None)
    # blocks missing from the flow (or a file without one): in the block list's order
    for bid, block in blocks.items():
        if bid not in ordered and block.get("Type") != "Trash":
            ordered.append(bid)
    return [blocks[b] for b in ordered], questions, notes


def convert(
    data: dict[str, Any], demographics: list[str] = (), source: str = "survey.qsf"
) -> Conversion:
    """Convert a loaded .qsf; ``demographics`` are export tags (or QIDs) of single-answer
    questions to make demographic fields instead of questions."""
    report: list[ReportItem] = []
    name = text_of((data.get("SurveyEntry") or {}).get("SurveyName")) or Path(source).stem
    blocks, payloads, flow_notes = _blocks(data["SurveyElements"])
    report += [ReportItem("survey flow", n) for n in dict.fromkeys(flow_notes)]
    for el in data["SurveyElements"]:
        if el.get("Element") == "BL":
            payload = el.get("Payload") or []
            for block in payload.values() if isinstance(payload, dict) else payload:
                if isinstance(block, dict) and block.get("Type") == "Trash":
                    for be in block.get("BlockElements") or []:
                        if be.get("Type") == "Question":
                            report.append(
                                ReportItem(be["QuestionID"], "in the trash block: left out")
                            )
    for block in blocks:
        if (block.get("Options") or {}).get("Looping") not in (None, "None", "false", False):
            report.append(ReportItem(f"block {block.get('Description')!r}",
                                     "loop and merge: its questions are imported once, not per"
                                     " loop"))  # fmt: skip
        if (block.get("Options") or {}).get("RandomizeQuestions") not in (None, "false", False):
            report.append(ReportItem(f"block {block.get('Description')!r}",
                                     "question order randomised in Qualtrics: not reproduced"))  # fmt: skip

    wanted_demo = set(demographics)
    taken: set[str] = set()
    by_qid: dict[str, list[Imported]] = {}
    questions: list[dict[str, Any]] = []
    demo_fields: dict[str, dict[str, Any]] = {}
    order: list[tuple[str, str]] = []  # (block id, QID) of questions, in survey order
    for block in blocks:
        for be in block.get("BlockElements") or []:
            if be.get("Type") == "Question":
                order.append((block.get("ID", ""), be["QuestionID"]))
    skip_when: dict[str, list[str]] = {}  # QID -> conditions from earlier questions' skip logic
    for position, (block_id, qid) in enumerate(order):
        payload = payloads.get(qid)
        if payload is None:
            report.append(
                ReportItem(qid, "listed in a block but has no question element: left out")
            )
            continue
        tag = str(payload.get("DataExportTag") or qid)
        where = f"{qid} ({tag})"
        made = _question(payload, tag, where, taken, report)
        if not made:
            continue
        if "${" in str(payload.get("QuestionText") or ""):
            report.append(ReportItem(where, "piped text (${...}) in the question: left as written"))
        is_demo = tag in wanted_demo or qid in wanted_demo
        conditions = []
        # Qualtrics writes display logic evaluated on the same page as InPageDisplayLogic
        logic = payload.get("DisplayLogic") or payload.get("InPageDisplayLogic")
        if logic:
            try:
                conditions.append(_logic_expression(logic, by_qid))
            except _Untranslatable as exc:
                report.append(ReportItem(where, f"display logic not translated ({exc}): imported"
                                                " without a condition"))  # fmt: skip
        conditions += skip_when.get(qid, [])
        if is_demo:
            wanted_demo.discard(tag)
            wanted_demo.discard(qid)
            if len(made) != 1 or made[0].spec["answer"]["type"] != "categorical":
                report.append(ReportItem(where, "asked for as a demographic field, but it is not"
                                                " a single-answer question: kept as a question"))  # fmt: skip
            else:
                if conditions:
                    report.append(ReportItem(where, "a demographic field cannot have a condition:"
                                                    " its display logic is dropped"))  # fmt: skip
                spec = made[0].spec
                demo_fields[made[0].id] = {"label": spec["text"],
                                           "options": spec["answer"]["options"]}  # fmt: skip
                by_qid[qid] = made
                continue
        for item in made:
            if conditions:
                item.spec["when"] = (
                    " and ".join(f"({c})" for c in conditions)
                    if len(conditions) > 1
                    else conditions[0]
                )
            questions.append(item.spec)
        by_qid[qid] = made
        _skip_logic(payload, made, where, order, position, block_id, skip_when, report)
    for missing in sorted(wanted_demo):
        report.append(ReportItem(missing, "named as a demographic field, but no imported question"
                                          " has this export tag or QID"))  # fmt: skip
    survey = {
        "name": _identifier(name.lower().replace(" ", "_"), set()) if name else "qualtrics",
        "description": f"Imported from the Qualtrics survey {name!r} ({Path(source).name}).",
        "demographics": demo_fields,
        "questions": questions,
        "templates": {
            CHOICE_TEMPLATE: f"{CHOICE_TEMPLATE}.j2",
            SCALE_TEMPLATE: f"{SCALE_TEMPLATE}.j2",
        },
    }
    from importlib import resources

    folder = resources.files("surveysim_qsf.templates")
    templates = {
        n: (folder / f"{n}.j2").read_text(encoding="utf-8")
        for n in (CHOICE_TEMPLATE, SCALE_TEMPLATE)
    }
    return Conversion(survey, templates, report, [i for items in by_qid.values() for i in items])


class _Untranslatable(Exception):
    pass


def _question(
    payload: dict[str, Any], tag: str, where: str, taken: set[str], report: list[ReportItem]
) -> list[Imported]:
    qtype, selector = payload.get("QuestionType"), payload.get("Selector")
    sub = payload.get("SubSelector")
    text = text_of(payload.get("QuestionText"))
    qid = payload.get("QuestionID", where)
    if qtype in NOT_QUESTIONS:
        report.append(ReportItem(where, f"{NOT_QUESTIONS[qtype]}: left out"))
        return []
    if qtype in UNSUPPORTED_TYPES:
        report.append(ReportItem(where, f"{UNSUPPORTED_TYPES[qtype]}: left out"))
        return []
    if payload.get("DynamicChoices"):
        report.append(ReportItem(where, "choices carried forward from another question: left out"))
        return []
    if qtype == "MC" and selector == "NPS":
        labels = {}
        column_labels = payload.get("ColumnLabels") or []
        if len(column_labels) == 2:
            labels = {
                0: text_of(column_labels[0].get("Display")),
                10: text_of(column_labels[1].get("Display")),
            }
        spec = {"id": _identifier(tag, taken), "text": text, "template": SCALE_TEMPLATE,
                "answer": {"type": "integer", "min": 0, "max": 10, "labels": labels},
                "parsers": ["first_integer"]}  # fmt: skip
        values = {cid: int(text_of(c.get("Display"))) for cid, c in _choices(payload)}
        return [Imported(qid, spec["id"], spec, values, numeric=True)]
    if qtype == "MC" and selector in MULTIPLE_ANSWER:
        report.append(ReportItem(where, "multiple answers: surveysim has no multi-answer question"
                                        " type: left out"))  # fmt: skip
        return []
    if qtype == "MC" and selector in SINGLE_ANSWER:
        options = _options(_choices(payload), where, report)
        if options is None:
            return []
        spec = {"id": _identifier(tag, taken), "text": text, "template": CHOICE_TEMPLATE,
                "answer": {"type": "categorical", "options": list(options.values())},
                "parsers": ["choice"]}  # fmt: skip
        if _randomisation(payload, where, report):
            spec["option_order"] = "shuffled"
        return [Imported(qid, spec["id"], spec, options)]
    if qtype == "Matrix" and selector in {"Likert", "Bipolar"} and sub == "SingleAnswer":
        return _matrix_rows(payload, tag, text, where, taken, report)
    if qtype == "Slider":
        return _sliders(payload, tag, text, where, taken, report)
    kind = "/".join(str(p) for p in (qtype, selector, sub) if p)
    report.append(ReportItem(where, f"question type {kind}: not supported: left out"))
    return []


def _options(choices, where: str, report: list[ReportItem]) -> dict[str, str] | None:
    options: dict[str, str] = {}
    for cid, choice in choices:
        label = text_of(choice.get("Display"))
        if not label:
            report.append(ReportItem(where, f"choice {cid} has no text: left out"))
            continue
        if choice.get("TextEntry") not in (None, False, "false", 0):
            report.append(ReportItem(where, f"choice {label!r} takes a text entry: the option is"
                                            " kept, the text is not"))  # fmt: skip
        options[cid] = label
    labels = list(options.values())
    dupes = sorted({lab for lab in labels if labels.count(lab) > 1})
    if dupes:
        report.append(ReportItem(where, f"options repeat ({', '.join(dupes)}): left out"))
        return None
    if len(options) < 2:
        report.append(ReportItem(where, "fewer than two options: left out"))
        return None
    return options


def _randomisation(payload: dict[str, Any], where: str, report: list[ReportItem]) -> bool:
    """Whether Qualtrics randomises the options (then the question gets ``option_order:
    shuffled``); a random subset or advanced randomisation is reported as changed."""
    rand = payload.get("Randomization")
    kind = rand.get("Type") if isinstance(rand, dict) else None
    if kind in (None, "None", ""):
        return False
    if kind != "All":
        report.append(ReportItem(where, f"option randomisation {kind!r} (a subset, or fixed"
                                        " options): imported as every option shuffled"))  # fmt: skip
    return True


def _scale(points: dict[str, str]) -> tuple[dict[str, Any], dict[str, Any], bool]:
    """An answer spec for scale points: integer if they are consecutive whole numbers."""
    labels = list(points.values())
    try:
        numbers = [int(lab) for lab in labels]
    except ValueError:
        numbers = []
    if numbers and numbers == list(range(numbers[0], numbers[0] + len(numbers))):
        answer = {"type": "integer", "min": numbers[0], "max": numbers[-1]}
        return answer, {cid: int(lab) for cid, lab in points.items()}, True
    return {"type": "categorical", "options": labels, "ordered": True}, dict(points), False


def _matrix_rows(payload, tag, text, where, taken, report) -> list[Imported]:
    points = _options(_choices(payload, "Answers", "AnswerOrder"), f"{where} scale", report)
    if points is None:
        return []
    excluded = [cid for cid, flag in (payload.get("AnalyzeChoices") or {}).items() if flag == "No"]
    for cid in excluded:
        if cid in points:
            report.append(ReportItem(where, f"scale point {points.pop(cid)!r} is excluded from"
                                            " analysis in Qualtrics: left out (such answers are"
                                            " missing)"))  # fmt: skip
    answer, values, numeric = _scale(points)
    row_tags = payload.get("ChoiceDataExportTags")
    if _randomisation(payload, where, report):  # a matrix randomises its rows, not the scale
        report.append(ReportItem(where, "row order randomised in Qualtrics: each row is its own"
                                        " question in surveysim"))  # fmt: skip
    out = []
    for cid, row in _choices(payload):
        label = text_of(row.get("Display"))
        if not label:
            report.append(ReportItem(where, f"matrix row {cid} has no text: left out"))
            continue
        if row.get("TextEntry") not in (None, False, "false", 0):
            report.append(ReportItem(where, f"matrix row {label!r} takes a text entry: the row is"
                                            " kept, the text is not"))  # fmt: skip
        suffix = row_tags.get(cid) if isinstance(row_tags, dict) and row_tags.get(cid) else cid
        ident = _identifier(f"{tag}_{suffix}", taken)
        spec = {"id": ident, "text": f"{text}\n{label}",
                "template": SCALE_TEMPLATE if numeric else CHOICE_TEMPLATE, "answer": dict(answer),
                "parsers": ["first_integer"] if numeric else ["choice"]}  # fmt: skip
        out.append(Imported(payload.get("QuestionID", where), ident, spec, values, numeric))
    return out


def _sliders(payload, tag, text, where, taken, report) -> list[Imported]:
    config = payload.get("Configuration") or {}
    try:
        low = float(config.get("CSSliderMin", 0))
        high = float(config.get("CSSliderMax", 100))
    except (TypeError, ValueError):
        report.append(ReportItem(where, "slider range is not numeric: left out"))
        return []
    if not (low.is_integer() and high.is_integer()) or high <= low:
        report.append(
            ReportItem(
                where, f"slider range {low:g}-{high:g} is not a whole-number range: left out"
            )
        )
        return []
    if str(config.get("NumDecimals", "0")) not in {"0", ""}:
        report.append(ReportItem(where, f"slider allows {config.get('NumDecimals')} decimals:"
                                        " answers must be whole numbers in surveysim"))  # fmt: skip
    choices = _choices(payload)
    out = []
    for cid, row in choices:
        label = text_of(row.get("Display"))
        ident = _identifier(tag if len(choices) == 1 else f"{tag}_{cid}", taken)
        spec = {"id": ident, "text": text if len(choices) == 1 else f"{text}\n{label}",
                "template": SCALE_TEMPLATE, "parsers": ["first_integer"],
                "answer": {"type": "integer", "min": int(low), "max": int(high)}}  # fmt: skip
        # a slider's numeric locator reads row cid; keep its id for conditions
        out.append(Imported(payload.get("QuestionID", where), ident, spec, {cid: None}, True))
    if not out:
        report.append(ReportItem(where, "slider without statements: left out"))
    return out


def _logic_expression(logic: dict[str, Any], by_qid: dict[str, list[Imported]]) -> str:
    """A ``when:`` expression of Qualtrics display logic (BooleanExpression of If-sets)."""
    sets = [logic[k] for k in sorted((k for k in logic if k.isdigit()), key=int)]
    if not sets:
        raise _Untranslatable("no conditions")
    out = ""
    for i, group in enumerate(sets):
        parts = ""
        conds = [group[k] for k in sorted((k for k in group if k.isdigit()), key=int)]
        if not conds:
            raise _Untranslatable("an empty condition set")
        for j, cond in enumerate(conds):
            expr = _condition(cond, by_qid)
            parts = expr if j == 0 else f"{parts} {_conjunction(cond)} {expr}"
        parts = f"({parts})" if len(conds) > 1 and len(sets) > 1 else parts
        out = parts if i == 0 else f"{out} {_conjunction(group)} {parts}"
    return out


def _conjunction(item: dict[str, Any]) -> str:
    word = item.get("Conjuction") or item.get("Conjunction")  # Qualtrics spells it Conjuction
    if word not in {"And", "Or"}:
        raise _Untranslatable(f"conjunction {word!r}")
    return word.lower()


def _condition(cond: dict[str, Any], by_qid: dict[str, list[Imported]]) -> str:
    if cond.get("LogicType") != "Question":
        raise _Untranslatable(f"{cond.get('LogicType')} logic")
    match = LOCATOR.match(str(cond.get("LeftOperand") or cond.get("ChoiceLocator") or ""))
    if not match:
        raise _Untranslatable(f"locator {cond.get('LeftOperand')!r}")
    qid, kind, cid = match.groups()
    targets = by_qid.get(qid)
    if not targets:
        raise _Untranslatable(f"it reads {qid}, which is not an earlier imported question")
    operator = cond.get("Operator")
    if kind == "SelectableChoice":
        if len(targets) != 1 or cid not in targets[0].labels:
            raise _Untranslatable(f"choice {cid} of {qid}")
        target = targets[0]
        value = target.labels[cid]
        literal = str(value) if target.numeric else jinja_string(value)
        if operator == "Selected":
            return f"{target.id} == {literal}"
        if operator == "NotSelected":
            return f"{target.id} != {literal}"
        raise _Untranslatable(f"operator {operator!r}")
    target = next((t for t in targets if cid in t.labels and t.numeric), None)
    if target is None or operator not in NUMERIC_OPERATORS:
        raise _Untranslatable(f"operator {operator!r} on {qid}")
    try:
        number = float(cond.get("RightOperand"))
    except (TypeError, ValueError):
        raise _Untranslatable(f"right operand {cond.get('RightOperand')!r}") from None
    # "is not none": an unanswered question fails a numeric comparison, as in Qualtrics
    return f"({target.id} is not none and {target.id} {NUMERIC_OPERATORS[operator]} {number:g})"


def _skip_logic(payload, made, where, order, position, block_id, skip_when, report) -> None:
    """Skip logic "if this answer, skip to X" as conditions on the questions it skips."""
    skips = payload.get("SkipLogic")
    if not skips:
        return
    entries = skips.values() if isinstance(skips, dict) else skips
    for skip in entries:
        if not isinstance(skip, dict):
            continue
        destination = skip.get("SkipToDestination")
        locator = LOCATOR.match(str(skip.get("ChoiceLocator") or ""))
        condition = skip.get("Condition")
        if (len(made) != 1 or not locator or locator.group(2) != "SelectableChoice"
                or condition not in {"Selected", "NotSelected"}):  # fmt: skip
            report.append(ReportItem(where, "skip logic not translated: later questions are"
                                            " imported without a condition from it"))  # fmt: skip
            continue
        target = made[0]
        cid = locator.group(3)
        if cid not in target.labels:
            report.append(ReportItem(where, f"skip logic on unknown choice {cid}: not translated"))
            continue
        literal = str(target.labels[cid]) if target.numeric else jinja_string(target.labels[cid])
        # the later questions are asked when the skip does NOT happen
        asked = (
            f"{target.id} != {literal}" if condition == "Selected" else f"{target.id} == {literal}"
        )
        later = order[position + 1 :]
        if destination.startswith("QID") and destination not in {q for _, q in later}:
            report.append(ReportItem(where, f"skip logic to {destination}, which is not a later"
                                            " question: not translated"))  # fmt: skip
            continue
        skipped = []
        for later_block, later_qid in later:
            if destination == "ENDOFBLOCK" and later_block != block_id:
                break
            if destination == later_qid:
                break
            if destination not in {"ENDOFBLOCK", "ENDOFSURVEY"} and not destination.startswith(
                "QID"
            ):
                report.append(ReportItem(where, f"skip logic to {destination!r}: not translated"))
                skipped = []
                break
            skipped.append(later_qid)
        for later_qid in skipped:
            skip_when.setdefault(later_qid, []).append(asked)
