"""Metrics over scored predictions: accuracy with 95% bootstrap CIs, overall and per group.

`metrics.json` keys (stable, documented in the README):
    overall:          {"accuracy": 0..1, "n": int, "ci95": [lo, hi]}       (closed questions)
    by_modality / by_question_type / by_dataset: {NAME: {"accuracy", "n", "ci95"}}
    unparsed_rate:    fraction of closed questions whose answer could not be parsed (counted wrong)
    format_rate:      fraction of completions that follow the template's format
    open:             {"n", "exact_match", "token_f1", "token_recall"}    (open questions, if any)
"""

from __future__ import annotations

import random
from collections import defaultdict


def bootstrap_ci(values: list[float], n_boot: int = 1000, seed: int = 0) -> list[float]:
    """Percentile bootstrap 95% CI of the mean of 0/1 (or graded) values."""
    n = len(values)
    if n == 0:
        return [0.0, 0.0]
    rng = random.Random(seed)
    means = sorted(sum(values[rng.randrange(n)] for _ in range(n)) / n for _ in range(n_boot))
    return [round(means[int(0.025 * n_boot)], 4), round(means[min(n_boot - 1, int(0.975 * n_boot))], 4)]


def group_accuracy(values: list[float]) -> dict:
    return {"accuracy": round(sum(values) / len(values), 4) if values else 0.0, "n": len(values),
            "ci95": bootstrap_ci(values)}


def compute_metrics(predictions: list[dict]) -> dict:
    """predictions: dicts with answer_type, correct, parsed, format_ok, modality, question_type, dataset."""
    closed = [p for p in predictions if p.get("answer_type", "closed") != "open"]
    opened = [p for p in predictions if p.get("answer_type") == "open"]
    out: dict = {"overall": group_accuracy([float(p["correct"]) for p in closed])}
    for key, name in (("modality", "by_modality"), ("question_type", "by_question_type"), ("dataset", "by_dataset")):
        groups: dict[str, list[float]] = defaultdict(list)
        for p in closed:
            groups[str(p.get(key) or "unknown")].append(float(p["correct"]))
        out[name] = {k: group_accuracy(v) for k, v in sorted(groups.items())}
    out["unparsed_rate"] = round(sum(p.get("parsed") in (None, "") for p in closed) / len(closed), 4) if closed else 0.0
    out["format_rate"] = (round(sum(bool(p.get("format_ok")) for p in predictions) / len(predictions), 4)
                          if predictions else 0.0)
    if opened:
        out["open"] = {
            "n": len(opened),
            "exact_match": round(sum(float(p.get("exact", 0.0)) for p in opened) / len(opened), 4),
            "token_f1": round(sum(float(p.get("f1", 0.0)) for p in opened) / len(opened), 4),
            "token_recall": round(sum(float(p.get("recall", 0.0)) for p in opened) / len(opened), 4),
        }
    out["n_predictions"] = len(predictions)
    return out


def markdown_report(metrics: dict, title: str = "Evaluation") -> str:
    """A readable report.md: overall accuracy and one table per grouping."""
    o = metrics["overall"]
    lines = [f"# {title}", "",
             f"**Accuracy (closed questions): {100 * o['accuracy']:.1f}%** "
             f"(95% CI {100 * o['ci95'][0]:.1f}-{100 * o['ci95'][1]:.1f}, n={o['n']})  ",
             f"Unparsed answers: {100 * metrics['unparsed_rate']:.1f}% · format followed: "
             f"{100 * metrics['format_rate']:.1f}%", ""]
    for name, label in (("by_modality", "Modality"), ("by_question_type", "Question type"), ("by_dataset", "Dataset")):
        if not metrics.get(name):
            continue
        lines += [f"## By {label.lower()}", "", f"| {label} | Accuracy (%) | 95% CI | n |", "|---|---:|---|---:|"]
        for k, v in metrics[name].items():
            lines.append(f"| {k} | {100 * v['accuracy']:.1f} | {100 * v['ci95'][0]:.1f}-{100 * v['ci95'][1]:.1f} "
                         f"| {v['n']} |")
        lines.append("")
    if "open" in metrics:
        op = metrics["open"]
        lines += ["## Open questions", "", "| n | Exact match (%) | Token F1 (%) | Token recall (%) |",
                  "|---:|---:|---:|---:|",
                  f"| {op['n']} | {100 * op['exact_match']:.1f} | {100 * op['token_f1']:.1f} | "
                  f"{100 * op['token_recall']:.1f} |", ""]
    return "\n".join(lines)
