"""Metrics over scored predictions, and the markdown report.

`compute_metrics(predictions)` returns the dict written to ``metrics.json``. Its keys are stable
(documented in docs/eval.md; add keys, never rename or remove them):

    schema_version:        1
    overall:               {"accuracy": 0..1, "n": int, "correct": int, "ci95": [lo, hi]}
                           closed questions = multiple choice + closed yes/no questions without options
                           (Med-R1's accuracy; VQA-RAD/SLAKE/PathVQA's "closed" accuracy); unparsed = wrong
    by_modality, by_question_type, by_dataset:
                           {NAME: {"accuracy", "n", "correct", "ci95"}} over the closed questions
                           ("unknown" for rows without a label)
    unparsed_rate:         fraction of closed questions whose answer could not be parsed (counted wrong)
    format_violation_rate: fraction of all predictions whose completion breaks the template's format
    format_rate:           1 - format_violation_rate
    open:                  open questions, reported separately:
                           {"n", "exact_match", "exact_match_ci95", "token_recall", "token_f1",
                            "unparsed_rate", "by_dataset": {NAME: {"n", "exact_match", "token_recall",
                            "token_f1"}}}; the scores are null when n == 0
    n_predictions, n_closed, n_open: counts

Accuracies are fractions in [0, 1] rounded to 4 decimals; a group with n == 0 has accuracy 0.0.
95% confidence intervals are percentile bootstraps (1000 resamples, fixed seed): deterministic.
"""

from __future__ import annotations

from collections import defaultdict

SCHEMA_VERSION = 1
GROUPS = (("modality", "by_modality"), ("question_type", "by_question_type"), ("dataset", "by_dataset"))
N_BOOT = 1000


def bootstrap_ci(values: list[float], n_boot: int = N_BOOT, seed: int = 0) -> list[float]:
    """Percentile bootstrap 95% CI of the mean of 0/1 (or graded) values; [0, 0] when empty.

    0/1 values are resampled through the binomial distribution (the exact distribution of a
    bootstrap resample's sum), so large test sets cost nothing; graded values are resampled.
    """
    import numpy as np

    n = len(values)
    if n == 0:
        return [0.0, 0.0]
    arr = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    if np.all((arr == 0.0) | (arr == 1.0)):
        means = rng.binomial(n, arr.mean(), size=n_boot) / n
    else:
        means = np.empty(n_boot)
        chunk = max(1, 2_000_000 // n)
        for start in range(0, n_boot, chunk):
            stop = min(n_boot, start + chunk)
            means[start:stop] = arr[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    means.sort()
    return [round(float(means[int(0.025 * n_boot)]), 4), round(float(means[min(n_boot - 1, int(0.975 * n_boot))]), 4)]


def group_accuracy(values: list[float]) -> dict:
    """{"accuracy", "n", "correct", "ci95"} of 0/1 scores."""
    n = len(values)
    return {"accuracy": round(sum(values) / n, 4) if n else 0.0, "n": n, "correct": int(round(sum(values))),
            "ci95": bootstrap_ci(values)}


def is_open(p: dict) -> bool:
    return (p.get("answer_type") or "closed") == "open"


def is_unparsed(p: dict) -> bool:
    return p.get("parsed") in (None, "")


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


def _open_scores(rows: list[dict]) -> dict:
    return {
        "n": len(rows),
        "exact_match": _mean([float(p.get("exact", p.get("correct", 0.0))) for p in rows]),
        "token_recall": _mean([float(p.get("recall", 0.0)) for p in rows]),
        "token_f1": _mean([float(p.get("f1", 0.0)) for p in rows]),
    }


def compute_metrics(predictions: list[dict]) -> dict:
    """predictions: scored records (see eval.scoring.score_record): answer_type, correct, parsed,
    format_ok, modality, question_type, dataset, and for open questions exact, f1, recall."""
    closed = [p for p in predictions if not is_open(p)]
    opened = [p for p in predictions if is_open(p)]
    out: dict = {"schema_version": SCHEMA_VERSION,
                 "overall": group_accuracy([float(p["correct"]) for p in closed])}
    for key, name in GROUPS:
        groups: dict[str, list[float]] = defaultdict(list)
        for p in closed:
            groups[str(p.get(key) or "unknown")].append(float(p["correct"]))
        out[name] = {k: group_accuracy(v) for k, v in sorted(groups.items())}
    out["unparsed_rate"] = round(sum(map(is_unparsed, closed)) / len(closed), 4) if closed else 0.0
    violations = sum(not p.get("format_ok") for p in predictions)
    out["format_violation_rate"] = round(violations / len(predictions), 4) if predictions else 0.0
    out["format_rate"] = round(1.0 - out["format_violation_rate"], 4) if predictions else 0.0
    op = _open_scores(opened)
    op["exact_match_ci95"] = (bootstrap_ci([float(p.get("exact", p.get("correct", 0.0))) for p in opened])
                              if opened else None)
    op["unparsed_rate"] = round(sum(map(is_unparsed, opened)) / len(opened), 4) if opened else None
    by_ds: dict[str, list[dict]] = defaultdict(list)
    for p in opened:
        by_ds[str(p.get("dataset") or "unknown")].append(p)
    op["by_dataset"] = {k: _open_scores(v) for k, v in sorted(by_ds.items())}
    out["open"] = op
    out["n_predictions"] = len(predictions)
    out["n_closed"] = len(closed)
    out["n_open"] = len(opened)
    return out


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def markdown_report(metrics: dict, title: str = "Evaluation", figure: str | None = None) -> str:
    """A readable report.md: overall accuracy, rates, one table per grouping, open questions."""
    o = metrics["overall"]
    lines = [f"# {title}", ""]
    if metrics.get("template"):
        lines += [f"Template `{metrics['template']}`, mode `{metrics.get('mode', 'default')}` "
                  f"(parser `{metrics.get('parser_mode', 'default')}`).", ""]
    lines += [f"**Accuracy (closed questions): {_pct(o['accuracy'])}%** "
              f"(95% CI {_pct(o['ci95'][0])}–{_pct(o['ci95'][1])}, {o.get('correct', '?')}/{o['n']})  ",
              f"Unparsed answers: {_pct(metrics['unparsed_rate'])}% of closed questions · format violations: "
              f"{_pct(metrics.get('format_violation_rate', 1 - metrics.get('format_rate', 0.0)))}% of "
              f"{metrics.get('n_predictions', o['n'])} predictions", ""]
    if figure:
        lines += [f"![accuracy per modality and question type]({figure})", ""]
    for name, label in (("by_modality", "Modality"), ("by_question_type", "Question type"), ("by_dataset", "Dataset")):
        if not metrics.get(name):
            continue
        lines += [f"## By {label.lower()}", "", f"| {label} | Accuracy (%) | 95% CI | correct / n |",
                  "|---|---:|---|---:|"]
        for k, v in metrics[name].items():
            lines.append(f"| {k} | {_pct(v['accuracy'])} | {_pct(v['ci95'][0])}–{_pct(v['ci95'][1])} "
                         f"| {v.get('correct', '?')}/{v['n']} |")
        lines.append("")
    op = metrics.get("open") or {}
    if op.get("n"):
        lines += ["## Open questions", "",
                  "Normalized exact match (yes/no answers by polarity) and SQuAD-style token recall / F1 of the "
                  "parsed answer against the gold answer.", "",
                  "| Dataset | n | Exact match (%) | Token recall (%) | Token F1 (%) |", "|---|---:|---:|---:|---:|",
                  f"| **all** | {op['n']} | {_pct(op['exact_match'])} | {_pct(op['token_recall'])} | "
                  f"{_pct(op['token_f1'])} |"]
        for k, v in (op.get("by_dataset") or {}).items():
            lines.append(f"| {k} | {v['n']} | {_pct(v['exact_match'])} | {_pct(v['token_recall'])} | "
                         f"{_pct(v['token_f1'])} |")
        lines += ["", f"Unparsed open answers: {_pct(op.get('unparsed_rate'))}%", ""]
    if metrics.get("skipped_images"):
        bad = metrics["skipped_images"]
        lines += [f"## Skipped rows: image cannot be read ({len(bad)}, not scored)", "",
                  "Re-run `python -m medvqa_data.prepare` to rebuild the dataset (it checks every image).", ""]
        lines += _first_50([f"- {b['id']}: {b['image']}: {b['reason']}" for b in bad])
    if metrics.get("malformed_lines"):
        lines += ["## Malformed prediction lines (not scored)", ""]
        lines += _first_50([f"- line {b['line']}: {b['error']}" for b in metrics["malformed_lines"]])
    return "\n".join(lines)


def _first_50(items: list[str]) -> list[str]:
    """A markdown list of at most 50 items, then how many more, then a blank line."""
    more = [f"- ... and {len(items) - 50} more"] if len(items) > 50 else []
    return items[:50] + more + [""]
