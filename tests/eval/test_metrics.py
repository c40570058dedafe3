"""eval.metrics in-process: pinned bootstrap CIs, every metrics key from hand-made records, the report."""

from __future__ import annotations

import pytest

from eval.metrics import bootstrap_ci, compute_metrics, group_accuracy, markdown_report


def test_bootstrap_ci_pinned_values():
    """Fixed seed -> fixed numbers: a change of percentiles, seed, resampling or rounding shows here."""
    assert bootstrap_ci([1.0] * 30 + [0.0] * 70) == [0.21, 0.39]
    assert bootstrap_ci([1.0] * 30 + [0.0] * 70, seed=1) == [0.22, 0.39]
    assert bootstrap_ci([1.0] * 30 + [0.0] * 70, n_boot=200) == [0.21, 0.4]
    assert bootstrap_ci([0.5, 0.25, 1.0, 0.0] * 10) == [0.3312, 0.5563]  # graded values: resampled
    assert bootstrap_ci([1.0] * 4 + [0.0] * 2) == [0.3333, 1.0]
    assert bootstrap_ci([]) == [0.0, 0.0] and bootstrap_ci([1.0, 1.0]) == [1.0, 1.0]
    assert bootstrap_ci([0.0]) == [0.0, 0.0]


def test_bootstrap_ci_matches_numpy_percentiles():
    """The interval is the 2.5th / 97.5th order statistic of the resampled means."""
    import numpy as np

    vals = [1.0] * 17 + [0.0] * 23
    means = np.sort(np.random.default_rng(0).binomial(40, 17 / 40, size=1000) / 40)
    assert bootstrap_ci(vals) == [round(float(means[25]), 4), round(float(means[975]), 4)]


def test_group_accuracy():
    assert group_accuracy([1.0, 0.0, 1.0]) == {"accuracy": 0.6667, "n": 3, "correct": 2,
                                               "ci95": bootstrap_ci([1.0, 0.0, 1.0])}
    assert group_accuracy([]) == {"accuracy": 0.0, "n": 0, "correct": 0, "ci95": [0.0, 0.0]}


def _rec(correct, parsed="A", fmt=True, **kw):
    return {"correct": correct, "parsed": parsed, "format_ok": fmt, **kw}


RECORDS = [
    _rec(1.0, modality="CT", question_type="Q1", dataset="D1"),
    _rec(0.0, parsed=None, fmt=False, modality="CT", question_type="Q1", dataset="D1"),
    _rec(0.0, parsed="", modality="MRI", question_type="Q2", dataset="D1"),
    _rec(1.0, modality=None, question_type="Q2", dataset="D2", answer_type="closed"),
    _rec(1.0, answer_type="open", exact=1.0, f1=1.0, recall=1.0, dataset="D2"),
    _rec(0.0, parsed=None, fmt=False, answer_type="open", exact=0.0, f1=0.5, recall=0.25, dataset="D2"),
    _rec(0.0, answer_type="open", f1=0.0, recall=0.0),  # no "exact": falls back to "correct"
]


def test_compute_metrics_every_key():
    m = compute_metrics(RECORDS)
    assert m["schema_version"] == 1
    assert m["overall"] == group_accuracy([1.0, 0.0, 0.0, 1.0])
    assert {k: (v["correct"], v["n"]) for k, v in m["by_modality"].items()} == {
        "CT": (1, 2), "MRI": (0, 1), "unknown": (1, 1)}
    assert list(m["by_modality"]) == ["CT", "MRI", "unknown"]  # sorted
    assert {k: v["accuracy"] for k, v in m["by_question_type"].items()} == {"Q1": 0.5, "Q2": 0.5}
    assert m["by_dataset"]["D1"] == group_accuracy([1.0, 0.0, 0.0])
    assert m["unparsed_rate"] == 0.5  # None and "" are unparsed: 2 of 4 closed
    assert m["format_violation_rate"] == round(2 / 7, 4) and m["format_rate"] == round(1 - round(2 / 7, 4), 4)
    op = m["open"]
    assert op["n"] == 3 and op["exact_match"] == 0.3333
    assert op["token_f1"] == 0.5 and op["token_recall"] == round(1.25 / 3, 4)
    assert op["exact_match_ci95"] == bootstrap_ci([1.0, 0.0, 0.0]) and op["unparsed_rate"] == 0.3333
    assert op["by_dataset"] == {
        "D2": {"n": 2, "exact_match": 0.5, "token_recall": 0.625, "token_f1": 0.75},
        "unknown": {"n": 1, "exact_match": 0.0, "token_recall": 0.0, "token_f1": 0.0}}
    assert (m["n_predictions"], m["n_closed"], m["n_open"]) == (7, 4, 3)


def test_compute_metrics_empty_and_closed_only():
    m = compute_metrics([])
    assert m["overall"]["n"] == 0 and m["unparsed_rate"] == 0.0
    assert m["format_violation_rate"] == 0.0 and m["format_rate"] == 0.0
    assert m["open"] == {"n": 0, "exact_match": None, "token_recall": None, "token_f1": None,
                         "exact_match_ci95": None, "unparsed_rate": None, "by_dataset": {}}
    m = compute_metrics(RECORDS[:2])
    assert m["format_rate"] == 0.5 and m["n_open"] == 0 and m["open"]["exact_match"] is None


def test_markdown_report_shows_the_numbers():
    m = compute_metrics(RECORDS)
    m.update(template="think", mode="default", parser_mode="default")
    m["malformed_lines"] = [{"line": n, "error": "invalid JSON"} for n in range(1, 53)]
    md = markdown_report(m, title="T", figure="accuracy.png")
    lo, hi = m["overall"]["ci95"]
    assert md.startswith("# T\n")
    assert "Template `think`, mode `default` (parser `default`)." in md
    assert f"**Accuracy (closed questions): 50.0%** (95% CI {100 * lo:.1f}–{100 * hi:.1f}, 2/4)" in md
    assert "Unparsed answers: 50.0% of closed questions · format violations: 28.6% of 7 predictions" in md
    assert "![accuracy per modality and question type](accuracy.png)" in md
    assert "## By modality" in md and "## By question type" in md and "## By dataset" in md
    for label in ("Modality", "Question type", "Dataset"):
        assert f"\n| {label} | Accuracy (%) | 95% CI | correct / n |\n|---|---:|---|---:|\n" in md
    ct = m["by_modality"]["CT"]["ci95"]
    assert f"| CT | 50.0 | {100 * ct[0]:.1f}–{100 * ct[1]:.1f} | 1/2 |" in md
    assert "| **all** | 3 | 33.3 | 41.7 | 50.0 |" in md and "| D2 | 2 | 50.0 | 62.5 | 75.0 |" in md
    assert "Unparsed open answers: 33.3%" in md
    assert "- line 50: invalid JSON" in md and "- line 51" not in md and "- ... and 2 more" in md
    bare = markdown_report(compute_metrics(RECORDS[:1]))
    assert "## Open questions" not in bare and "Template" not in bare and "![" not in bare
    assert "–" in markdown_report({**compute_metrics([]), "open": {"n": 1, "exact_match": None,
                                   "token_recall": None, "token_f1": None}})


@pytest.mark.parametrize("value", [0.0, 1.0])
def test_constant_values_have_a_point_interval(value):
    assert bootstrap_ci([value] * 25) == [value, value]


def test_markdown_report_of_an_older_metrics_file_uses_its_fallbacks():
    """Keys an older metrics.json lacks: correct, n_predictions, format_violation_rate, mode."""
    g = {"accuracy": 0.5, "n": 4, "ci95": [0.25, 0.75]}
    m = {"overall": g, "by_modality": {"CT": g}, "unparsed_rate": 0.25, "format_rate": 0.875,
         "template": "no-think"}
    md = markdown_report(m)
    assert md.startswith("# Evaluation\n")
    assert "Template `no-think`, mode `default` (parser `default`)." in md
    assert "**Accuracy (closed questions): 50.0%** (95% CI 25.0–75.0, ?/4)  " in md
    assert "format violations: 12.5% of 4 predictions" in md
    assert "| CT | 50.0 | 25.0–75.0 | ?/4 |" in md
    assert "## By question type" not in md and "## Open questions" not in md and "Malformed" not in md
    assert "format violations: 100.0%" in markdown_report({"overall": g, "unparsed_rate": 0.0})


@pytest.mark.parametrize("n_bad,shown,more", [(50, 50, None), (51, 50, 1)])
def test_markdown_report_caps_malformed_lines_at_50(n_bad, shown, more):
    m = compute_metrics(RECORDS)
    m["malformed_lines"] = [{"line": n, "error": "bad"} for n in range(1, n_bad + 1)]
    md = markdown_report(m)
    assert "## Malformed prediction lines (not scored)" in md
    assert f"- line {shown}: bad" in md and f"- line {shown + 1}: bad" not in md
    assert ("- ... and" in md) == (more is not None)
    if more:
        assert f"- ... and {more} more" in md


@pytest.mark.parametrize("n_bad,more", [(50, None), (51, 1), (52, 2)])
def test_markdown_report_lists_skipped_images_capped_at_50(n_bad, more):
    m = compute_metrics(RECORDS)
    assert "Skipped rows" not in markdown_report(m)
    m["skipped_images"] = [{"id": f"q{n}", "image": f"img{n}.png", "reason": "truncated PNG"}
                           for n in range(1, n_bad + 1)]
    md = markdown_report(m)
    listed = [f"- q{n}: img{n}.png: truncated PNG" for n in range(1, 51)]
    section = [f"## Skipped rows: image cannot be read ({n_bad}, not scored)", "",
               "Re-run `python -m medvqa_data.prepare` to rebuild the dataset (it checks every image).", "",
               *listed, *([f"- ... and {more} more"] if more else []), ""]
    assert md.endswith("\n".join(section))
    assert md.startswith("# Evaluation\n") and "**Accuracy (closed questions)" in md


REPORT_X = """# Run X

Template `think`, mode `paper` (parser `paper-eval`).

**Accuracy (closed questions): 50.0%** (95% CI 25.0–75.0, 2/4)\x20\x20
Unparsed answers: 12.5% of closed questions · format violations: 20.0% of 5 predictions

![accuracy per modality and question type](acc.png)

## By question type

| Question type | Accuracy (%) | 95% CI | correct / n |
|---|---:|---|---:|
| Q1 | 100.0 | 100.0–100.0 | 1/1 |

## By dataset

| Dataset | Accuracy (%) | 95% CI | correct / n |
|---|---:|---|---:|
| D1 | 25.0 | 0.0–50.0 | 1/4 |

## Open questions

Normalized exact match (yes/no answers by polarity) and SQuAD-style token recall / F1 of the parsed answer against the gold answer.

| Dataset | n | Exact match (%) | Token recall (%) | Token F1 (%) |
|---|---:|---:|---:|---:|
| **all** | 1 | – | 50.0 | – |
| D2 | 1 | 100.0 | 50.0 | 75.0 |

Unparsed open answers: –%

## Malformed prediction lines (not scored)

- line 3: invalid JSON
"""


def test_markdown_report_exact_text():
    """The whole report, line by line: paper mode, an empty first grouping, missing scores shown as –."""
    def g(a, n, c, lo, hi):
        return {"accuracy": a, "n": n, "correct": c, "ci95": [lo, hi]}

    m = {"template": "think", "mode": "paper", "parser_mode": "paper-eval", "overall": g(0.5, 4, 2, 0.25, 0.75),
         "by_modality": {}, "by_question_type": {"Q1": g(1.0, 1, 1, 1.0, 1.0)},
         "by_dataset": {"D1": g(0.25, 4, 1, 0.0, 0.5)}, "unparsed_rate": 0.125, "format_violation_rate": 0.2,
         "n_predictions": 5,
         "open": {"n": 1, "exact_match": None, "token_recall": 0.5, "token_f1": None, "unparsed_rate": None,
                  "by_dataset": {"D2": {"n": 1, "exact_match": 1.0, "token_recall": 0.5, "token_f1": 0.75}}},
         "malformed_lines": [{"line": 3, "error": "invalid JSON"}]}
    assert markdown_report(m, "Run X", "acc.png") == REPORT_X


def test_open_scores_key_precedence_and_defaults():
    """"exact" wins over "correct"; a missing score counts 0 (older prediction files lack some keys)."""
    m = compute_metrics([{"answer_type": "open", "exact": 1.0, "correct": 0.0, "parsed": "x", "format_ok": True},
                         {"answer_type": "open", "parsed": "y", "format_ok": True},
                         {"answer_type": "open", "correct": 1.0, "parsed": "z", "format_ok": True}] * 10)
    op = m["open"]
    assert (op["exact_match"], op["token_recall"], op["token_f1"]) == (0.6667, 0.0, 0.0)
    assert op["exact_match_ci95"] == bootstrap_ci([1.0, 0.0, 1.0] * 10)
    assert bootstrap_ci([1.0, 0.0, 1.0] * 10) not in (bootstrap_ci([0.0, 0.0, 1.0] * 10), bootstrap_ci([1.0, 0.0, 0.0] * 10))
    assert op["by_dataset"]["unknown"] == {"n": 30, "exact_match": 0.6667, "token_recall": 0.0, "token_f1": 0.0}
    assert m["n_closed"] == 0 and m["overall"]["n"] == 0


def _reference_ci(vals, n_boot=1000, seed=0):
    """The textbook percentile bootstrap, all resamples drawn at once."""
    import numpy as np

    arr = np.asarray(vals, dtype=float)
    rng = np.random.default_rng(seed)
    means = np.sort(arr[rng.integers(0, len(arr), size=(n_boot, len(arr)))].mean(axis=1))
    return [round(float(means[int(0.025 * n_boot)]), 4), round(float(means[int(0.975 * n_boot)]), 4)]


@pytest.mark.parametrize("vals,n_boot,seed", [
    ([0.5, 0.25, 1.0, 0.0, 0.75] * 3, 40, 0),  # 40 resamples: the top order statistic is the maximum
    ([0.5, 0.25, 1.0, 0.0, 0.75] * 3, 40, 3),
    ([(i % 7) / 6 for i in range(2500)], 1000, 0),  # > 2000 values: resampled in chunks, same stream
])
def test_graded_bootstrap_equals_the_reference(vals, n_boot, seed):
    assert bootstrap_ci(vals, n_boot=n_boot, seed=seed) == _reference_ci(vals, n_boot, seed)
