"""Scoring one prediction, reading predictions files, and writing metrics.json / report.md / PNG.

Shared by `eval.evaluate` (with a model) and `eval.score` (without one). Answers are parsed only by
`qlora_grpo.parsing`, the parser the GRPO rewards use:

- mode ``default``: our verifier (``parsing`` mode ``default``) with the training prompt strings;
- mode ``paper``: Med-R1's evaluation scripts: their evaluation prompt strings and the decision of
  the template's script (``parsing`` mode ``paper-eval``, ``parsing.MEDR1_EVAL_SCRIPT``: think
  ``<answer>\\s*(\\w+)\\s*</answer>`` or wrong, zero-shot the raw output, exact compare).

Question kinds (as the rewards): *choice* when the row has options, an answer letter and is not
``open``; *closed* (yes/no without options, VQA-RAD/SLAKE/PathVQA) and *open* are scored with
``parsing.score_open`` (yes/no by polarity, else normalized exact match).
"""

from __future__ import annotations

import json
from pathlib import Path

from qlora_grpo import parsing

EVAL_TEMPLATES = parsing.TEMPLATES
EVAL_MODES = ("default", "paper")
#: Schema columns copied into each predictions.jsonl record (they are all `score` needs, plus
#: `completion`).
PRED_KEYS = ["id", "modality", "question_type", "dataset", "options", "answer", "answer_letter", "answer_type"]
#: Record keys written by `score_record` (in this order).
SCORE_KEYS = ["completion", "reasoning", "parsed", "correct", "format_ok", "error"]


def check_mode(mode: str) -> str:
    """The user-facing mode ("default" | "paper"); "paper-eval" is accepted as "paper"."""
    if mode == "paper-eval":
        return "paper"
    if mode not in EVAL_MODES:
        raise ValueError(f"unknown mode {mode!r}; valid: {', '.join(EVAL_MODES)}")
    return mode


def parser_mode(mode: str) -> str:
    """The `qlora_grpo.parsing` mode that scores an evaluation in `mode`."""
    return "paper-eval" if check_mode(mode) == "paper" else "default"


def prompt_mode(mode: str) -> str:
    """The `medvqa_data.templates` mode of the evaluation prompts (used with phase="eval")."""
    return check_mode(mode)


def question_kind(row: dict) -> str:
    """"choice" (multiple choice), "closed" (closed without options, e.g. yes/no) or "open"."""
    answer_type = (row.get("answer_type") or "closed").strip().lower()
    if row.get("options") and row.get("answer_letter") and answer_type != "open":
        return "choice"
    return "open" if answer_type == "open" else "closed"


def score_record(row: dict, completion, template: str, mode: str = "default") -> dict:
    """One predictions.jsonl record: the schema columns of `row` + completion, reasoning, parsed,
    correct (0/1), format_ok, error; open questions also get exact, f1, recall.

    `parsed` is what the answer was read as: the chosen option letter (choice), "yes"/"no" for yes/no
    golds, else the answer text; None when unparseable.
    """
    pmode = parser_mode(mode)
    text = parsing.completion_text(completion)
    rec = {k: row.get(k) for k in PRED_KEYS}
    rec["options"] = list(rec["options"] or [])
    rec["completion"] = text
    kind = question_kind(row)
    if kind == "choice":
        score, parsed, letter = parsing.score_closed(text, rec["options"], row["answer_letter"], template, pmode)
        rec.update(reasoning=parsed.reasoning, parsed=letter, correct=float(score), format_ok=parsed.format_ok,
                   error=parsed.error)
        return rec
    gold = str(row.get("answer") or "")
    score, parsed = parsing.score_open(text, gold, template, pmode, metric="exact")
    pred = parsed.answer
    gold_yes_no = parsing.yes_no(gold) if len(parsing.normalize_text(gold).split()) == 1 else None
    if pred is not None and gold_yes_no is not None:
        shown = parsing.yes_no(pred)
    else:
        shown = pred.strip() if pred and pred.strip() else None
    rec.update(reasoning=parsed.reasoning, parsed=shown, correct=float(score), format_ok=parsed.format_ok,
               error=parsed.error)
    if kind == "open":
        pred = pred or ""
        rec.update(exact=float(score), f1=parsing.token_f1(pred, gold), recall=parsing.token_recall(pred, gold))
    return rec


def validate_record(rec) -> str | None:
    """Why a predictions line cannot be scored, or None when it can."""
    if not isinstance(rec, dict):
        return f"not a JSON object ({type(rec).__name__})"
    missing = [k for k in ("id", "answer", "completion") if k not in rec]
    if missing:
        return f"missing key(s) {', '.join(missing)}"
    if rec["id"] is None or (isinstance(rec["id"], str) and not rec["id"].strip()):
        return "empty id"
    options = rec.get("options")
    if options is not None and not (isinstance(options, list) and all(isinstance(o, str) for o in options)):
        return "options must be a list of strings"
    if rec.get("answer_type") not in (None, "closed", "open"):
        return f"answer_type must be closed or open, got {rec.get('answer_type')!r}"
    letter = rec.get("answer_letter")
    if options and (rec.get("answer_type") or "closed") != "open":
        if not isinstance(letter, str) or not letter:
            return "a multiple-choice row (with options) needs answer_letter"
        if not (len(letter.strip()) == 1 and 0 <= ord(letter.strip().upper()) - 65 < len(options)):
            return f"answer_letter {letter!r} is not one of the {len(options)} options"
    if rec.get("answer") is None and not letter:
        return "answer is null"
    try:
        parsing.completion_text(rec["completion"])
    except TypeError as e:
        return f"completion: {e}"
    return None


def read_predictions(path: str | Path, strict: bool = False) -> tuple[list[dict], list[dict]]:
    """(records, malformed) of a predictions.jsonl; malformed = [{"line": N (1-based), "error"}].

    Blank lines are ignored. With strict=False only JSON is checked (resume of `evaluate`: a line
    cut by a kill is dropped and redone); with strict=True each record is also validated and
    duplicate ids after the first are reported.
    """
    path = Path(path)
    if not path.is_file():
        return [], []
    recs, bad, seen = [], [], {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            text = line.strip()  # the newline would make a cut-off line's error point at "column 1" of the next
            try:
                rec = json.loads(text)
            except json.JSONDecodeError as e:
                where = ("the line ends before the JSON object does (cut off?)" if e.pos >= len(text)
                         else f"at column {e.colno}: {text[max(0, e.pos - 10):e.pos + 10]!r}")
                bad.append({"line": n, "error": f"invalid JSON ({e.msg}; {where})"})
                continue
            err = validate_record(rec) if strict else (None if isinstance(rec, dict) and "id" in rec
                                                      else "not a prediction record")
            if err is None and strict:
                key = str(rec["id"])
                if key in seen:
                    err = f"duplicate id {key!r} (first on line {seen[key]})"
                else:
                    seen[key] = n
            if err is not None:
                bad.append({"line": n, "error": err})
                continue
            recs.append(rec)
    return recs, bad


def write_outputs(preds: list[dict], out_dir: str | Path, template: str, mode: str, title: str,
                  extra: dict | None = None, plot: bool = True) -> dict:
    """Compute the metrics of scored `preds`; write metrics.json, report.md and accuracy.png."""
    from eval.metrics import compute_metrics, markdown_report

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics = compute_metrics(preds)
    metrics.update(template=template, mode=check_mode(mode), parser_mode=parser_mode(mode))
    metrics.update(extra or {})
    figure = None
    if plot:
        from eval.plots import accuracy_bars

        accuracy_bars(metrics, out / "accuracy.png", title=title)
        figure = "accuracy.png"
    (out / "report.md").write_text(markdown_report(metrics, title, figure=figure) + "\n")
    tmp = out / "metrics.json.tmp"  # written last and atomically: its presence marks a finished evaluation
    tmp.write_text(json.dumps(metrics, indent=2) + "\n")
    tmp.replace(out / "metrics.json")
    return metrics
