"""Parsing the judge's JSON verdicts and aggregating them (pure functions; no model).

Verdict shapes (the prompts in eval/prompts/ ask for exactly these):

- rubric:   {"medical_correctness": 1-5, "answer_consistency": 1-5, "image_findings": 1-5,
             "no_hallucination": 1-5, "clarity": 1-5, "comment": "..."}   (comment optional)
- pairwise: {"winner": "A" | "B" | "tie", "reason": "..."}               (reason optional)
- open:     {"same_meaning": true | false}

`parse_verdict` is strict: one JSON object (a ```json fence around it is tolerated), the required
keys with values of the right type and range. Anything else raises `VerdictError` with a reason
that the repair prompt quotes back to the judge.

The aggregations return the sections of the judge's metrics.json (keys documented in docs/eval.md).
Rates and means are rounded to 4 decimals; 95% CIs are `eval.metrics.bootstrap_ci` (fixed seed).
"""

from __future__ import annotations

import json
import re
from collections import defaultdict

from eval.metrics import bootstrap_ci

CRITERIA = ("medical_correctness", "answer_consistency", "image_findings", "no_hallucination", "clarity")
TASKS = ("rubric", "pairwise", "open")
#: A rubric overall score (mean of the 5 criteria) at or above this counts as "good" reasoning when
#: agreement with hand labels is measured (the calibration set).
GOOD_THRESHOLD = 3.0
#: Token F1 at or above this counts as "same meaning" when the judge is compared with token F1.
F1_THRESHOLD = 0.5
GROUPS = (("modality", "by_modality"), ("question_type", "by_question_type"), ("dataset", "by_dataset"))


class VerdictError(ValueError):
    """The judge's reply is not the JSON verdict the task asks for."""


def _json_object(text: str) -> dict:
    s = (text or "").strip()
    fence = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", s, flags=re.S)
    if fence:
        s = fence.group(1)
    if not s.startswith("{") or not s.endswith("}"):
        raise VerdictError("the reply must be a single JSON object and nothing else")
    try:
        obj = json.loads(s)
    except json.JSONDecodeError as e:
        raise VerdictError(f"invalid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(obj, dict):
        raise VerdictError("the reply must be a JSON object")
    return obj


def parse_verdict(text: str, task: str) -> dict:
    """The normalized verdict of one reply for `task` ("rubric", "pairwise", "open"); VerdictError if unusable."""
    obj = _json_object(text)
    if task == "rubric":
        missing = [c for c in CRITERIA if c not in obj]
        if missing:
            raise VerdictError(f"missing key(s) {', '.join(missing)}")
        out = {}
        for c in CRITERIA:
            v = obj[c]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v != int(v) or not 1 <= v <= 5:
                raise VerdictError(f"{c} must be an integer from 1 to 5, got {json.dumps(v)}")
            out[c] = int(v)
        out["comment"] = str(obj.get("comment", ""))
        return out
    if task == "pairwise":
        w = obj.get("winner")
        if not isinstance(w, str) or w.strip().lower() not in ("a", "b", "tie"):
            raise VerdictError(f'winner must be "A", "B" or "tie", got {json.dumps(w)}')
        w = w.strip().lower()
        return {"winner": "tie" if w == "tie" else w.upper(), "reason": str(obj.get("reason", ""))}
    if task == "open":
        v = obj.get("same_meaning")
        if not isinstance(v, bool):
            raise VerdictError(f"same_meaning must be true or false, got {json.dumps(v)}")
        return {"same_meaning": v}
    raise ValueError(f"unknown task {task!r}; valid: {', '.join(TASKS)}")


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


def _rate(flags: list[float]) -> dict:
    """{"rate", "ci95", "count"} of 0/1 flags (rate null when empty)."""
    return {"rate": _mean(flags), "ci95": bootstrap_ci(flags) if flags else None, "count": int(sum(flags))}


def _group_by(rows: list[dict], fn) -> dict:
    out = {}
    for key, name in GROUPS:
        groups: dict[str, list[dict]] = defaultdict(list)
        for r in rows:
            groups[str(r.get(key) or "unknown")].append(r)
        out[name] = {k: fn(v) for k, v in sorted(groups.items())}
    return out


# ----------------------------------------------------------------------------- rubric
def rubric_score(verdict: dict) -> float:
    """The overall 1-5 score of one rubric verdict: the mean of the 5 criteria."""
    return sum(verdict[c] for c in CRITERIA) / len(CRITERIA)


def _rubric_summary(rows: list[dict]) -> dict:
    judged = [r for r in rows if r.get("verdict")]
    scores = [rubric_score(r["verdict"]) for r in judged]
    return {"n": len(rows), "n_judged": len(judged), "mean": _mean(scores),
            "ci95": bootstrap_ci(scores) if scores else None,
            "criteria": {c: _mean([float(r["verdict"][c]) for r in judged]) for c in CRITERIA}}


def rubric_metrics(rows: list[dict]) -> dict:
    """rows: {"id", "modality", "question_type", "dataset", "correct", "verdict" (dict | None), "label"?}.

    Returns {"n", "n_judged", "n_unparsable", "unparsable_rate", "mean", "ci95", "criteria": {c: mean},
    "criteria_ci95": {c: [lo, hi]}, "distribution": {c: {"1".."5": count}}, "by_modality",
    "by_question_type", "by_dataset" (each {NAME: {"n", "n_judged", "mean", "ci95", "criteria"}}),
    "by_correct": {"correct"|"wrong": {...}}, and "calibration" when rows carry a good/bad "label"}.
    """
    out = _rubric_summary(rows)
    judged = [r for r in rows if r.get("verdict")]
    out["n_unparsable"] = len(rows) - len(judged)
    out["unparsable_rate"] = round(out["n_unparsable"] / len(rows), 4) if rows else 0.0
    out["criteria_ci95"] = {c: bootstrap_ci([float(r["verdict"][c]) for r in judged]) if judged else None
                            for c in CRITERIA}
    out["distribution"] = {c: {str(k): sum(r["verdict"][c] == k for r in judged) for k in range(1, 6)}
                           for c in CRITERIA}
    out.update(_group_by(rows, _rubric_summary))
    by_correct: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        if r.get("correct") is not None:
            by_correct["correct" if float(r["correct"]) >= 1 else "wrong"].append(r)
    out["by_correct"] = {k: _rubric_summary(v) for k, v in sorted(by_correct.items())}
    labelled = [r for r in judged if r.get("label") in ("good", "bad")]
    if labelled:
        agree = [float((rubric_score(r["verdict"]) >= GOOD_THRESHOLD) == (r["label"] == "good")) for r in labelled]
        out["calibration"] = {
            "n": len([r for r in rows if r.get("label") in ("good", "bad")]), "n_judged": len(labelled),
            "agreement": _mean(agree), "agreement_ci95": bootstrap_ci(agree), "threshold": GOOD_THRESHOLD,
            "good_mean": _mean([rubric_score(r["verdict"]) for r in labelled if r["label"] == "good"]),
            "bad_mean": _mean([rubric_score(r["verdict"]) for r in labelled if r["label"] == "bad"])}
    return out


# ----------------------------------------------------------------------------- pairwise
def pair_outcome(ab: dict | None, ba: dict | None) -> str | None:
    """The outcome for the SECOND run (the candidate) of one row judged in both orders.

    In order "ab" the first run is shown as A; in order "ba" the second run is. A win (loss) counts
    only when both orders pick the second (first) run; both "tie" is a tie; disagreeing orders are a
    tie too (the position, not the content, decided). None when either verdict is unparsable.
    """
    if not ab or not ba:
        return None
    pick_ab = {"A": "first", "B": "second", "tie": "tie"}[ab["winner"]]
    pick_ba = {"A": "second", "B": "first", "tie": "tie"}[ba["winner"]]
    if pick_ab == pick_ba == "second":
        return "win"
    if pick_ab == pick_ba == "first":
        return "loss"
    return "tie"


def _pair_summary(rows: list[dict]) -> dict:
    outcomes = [pair_outcome(r.get("ab"), r.get("ba")) for r in rows]
    judged = [o for o in outcomes if o is not None]
    return {"n": len(rows), "n_judged": len(judged),
            **{k: _rate([float(o == k) for o in judged]) for k in ("win", "tie", "loss")}}


def pairwise_metrics(rows: list[dict], runs: list[str]) -> dict:
    """rows: {"id", "modality", "question_type", "dataset", "ab": verdict|None, "ba": verdict|None}.

    Rates are for runs[1] (the candidate) against runs[0] (the baseline). Returns {"baseline",
    "candidate", "n", "n_judged", "n_unparsable", "unparsable_rate", "win"/"tie"/"loss": {"rate", "ci95",
    "count"}, "position_consistency", "first_position_rate", "by_modality", "by_question_type",
    "by_dataset"}. position_consistency: fraction of judged rows whose two orders agree (same run or
    both tie); first_position_rate: fraction of all parsed non-tie single verdicts that chose A.
    """
    out = {"baseline": runs[0], "candidate": runs[1], **_pair_summary(rows)}
    out["n_unparsable"] = out["n"] - out["n_judged"]
    out["unparsable_rate"] = round(out["n_unparsable"] / out["n"], 4) if out["n"] else 0.0
    both = [r for r in rows if r.get("ab") and r.get("ba")]
    consistent = [float(pair_outcome(r["ab"], r["ba"]) != "tie" or r["ab"]["winner"] == r["ba"]["winner"] == "tie")
                  for r in both]
    out["position_consistency"] = _mean(consistent)
    picks = [v["winner"] for r in rows for v in (r.get("ab"), r.get("ba")) if v and v["winner"] != "tie"]
    out["first_position_rate"] = _mean([float(p == "A") for p in picks])
    out.update(_group_by(rows, _pair_summary))
    return out


# ----------------------------------------------------------------------------- open answers
def _kappa(a: list[bool], b: list[bool]) -> float | None:
    """Cohen's kappa of two yes/no raters; None when undefined (no rows, or chance agreement is 1)."""
    n = len(a)
    if not n:
        return None
    po = sum(x == y for x, y in zip(a, b)) / n
    pa, pb = sum(a) / n, sum(b) / n
    pe = pa * pb + (1 - pa) * (1 - pb)
    return None if pe >= 1 else round((po - pe) / (1 - pe), 4)


def _open_summary(rows: list[dict]) -> dict:
    judged = [r for r in rows if r.get("verdict")]
    judge = [bool(r["verdict"]["same_meaning"]) for r in judged]
    return {"n": len(rows), "n_judged": len(judged), "judge_match": _rate([float(j) for j in judge]),
            "exact_match": _mean([float(r.get("exact") or 0.0) for r in rows]),
            "token_f1": _mean([float(r.get("f1") or 0.0) for r in rows]),
            "agreement_exact": _mean([float(j == (float(r.get("exact") or 0) >= 1)) for j, r in zip(judge, judged)]),
            "agreement_f1": _mean([float(j == (float(r.get("f1") or 0) >= F1_THRESHOLD))
                                   for j, r in zip(judge, judged)])}


def open_metrics(rows: list[dict]) -> dict:
    """rows: {"id", "modality", "question_type", "dataset", "exact", "f1", "verdict": {"same_meaning"}|None}.

    Returns {"n", "n_judged", "n_unparsable", "unparsable_rate", "judge_match": {"rate", "ci95", "count"},
    "exact_match", "token_f1" (over all rows), "agreement_exact" (judge == exact match, judged rows),
    "agreement_f1" (judge == token F1 >= 0.5), "kappa_exact", "judge_only" (judge yes, exact no:
    paraphrases the exact match misses, or judge leniency), "exact_only" (exact yes, judge no),
    "f1_threshold", "by_modality", "by_question_type", "by_dataset"}.
    """
    out = _open_summary(rows)
    out["n_unparsable"] = out["n"] - out["n_judged"]
    out["unparsable_rate"] = round(out["n_unparsable"] / out["n"], 4) if out["n"] else 0.0
    judged = [r for r in rows if r.get("verdict")]
    judge = [bool(r["verdict"]["same_meaning"]) for r in judged]
    exact = [float(r.get("exact") or 0) >= 1 for r in judged]
    out["kappa_exact"] = _kappa(judge, exact)
    out["judge_only"] = sum(j and not e for j, e in zip(judge, exact))
    out["exact_only"] = sum(e and not j for j, e in zip(judge, exact))
    out["f1_threshold"] = F1_THRESHOLD
    out.update(_group_by(rows, _open_summary))
    return out
