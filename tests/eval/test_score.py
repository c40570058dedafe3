"""eval.score and the metrics against hand-computed values (no model)."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from tests.conftest import run_cli
from tests.eval.conftest import HAND_RECORDS


def _png_ok(path):
    assert path.is_file() and path.stat().st_size > 0
    with Image.open(path) as im:
        im.load()
        assert im.format == "PNG" and im.width > 100 and im.height > 100
        lo, hi = im.convert("L").getextrema()
        assert hi > lo  # not a blank canvas


def test_score_default_mode_hand_computed(hand_predictions, tmp_path):
    out = tmp_path / "scored"
    r = run_cli(["-m", "eval.score", "--predictions", str(hand_predictions), "--template", "think", "--out", str(out)])
    assert r.returncode == 0, r.stderr
    m = json.loads((out / "metrics.json").read_text())
    # closed questions q1..q6: q1, q2, q5, q6 right -> 4/6
    assert m["overall"]["n"] == 6 and m["overall"]["correct"] == 4
    assert m["overall"]["accuracy"] == pytest.approx(0.6667)
    lo, hi = m["overall"]["ci95"]
    assert 0.0 <= lo <= 0.6667 <= hi <= 1.0
    assert m["unparsed_rate"] == pytest.approx(0.1667)  # q4 only
    assert m["format_violation_rate"] == pytest.approx(0.125)  # q4 of 8
    assert m["format_rate"] == pytest.approx(0.875)
    by_mod = {k: (v["correct"], v["n"]) for k, v in m["by_modality"].items()}
    assert by_mod == {"CT": (2, 2), "MRI": (0, 2), "OCT": (1, 1), "X-Ray": (1, 1)}
    assert m["by_question_type"]["Anatomy Identification"]["accuracy"] == pytest.approx(0.5)  # q4 wrong, q5 right
    assert m["by_dataset"]["D1"]["accuracy"] == pytest.approx(0.5)  # q1..q4: 2/4
    op = m["open"]
    assert op["n"] == 2
    assert op["exact_match"] == pytest.approx(0.5)
    assert op["token_recall"] == pytest.approx(0.75)
    assert op["token_f1"] == pytest.approx((1 + 2 / 3) / 2, abs=1e-4)
    assert m["n_predictions"] == 8 and m["n_closed"] == 6 and m["n_open"] == 2
    assert m["template"] == "think" and m["mode"] == "default" and m["parser_mode"] == "default"
    assert m["malformed_lines"] == []
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [p["parsed"] for p in preds] == ["A", "B", "A", None, "B", "yes", "the left lung", "kidney"]
    report = (out / "report.md").read_text()
    assert "66.7%" in report and "## Open questions" in report and "accuracy.png" in report
    _png_ok(out / "accuracy.png")


def test_score_paper_mode_is_medr1_eval_parser(hand_predictions, tmp_path):
    from eval.score import score_file

    m, bad = score_file(hand_predictions, "think", tmp_path / "paper", mode="paper", plot=False)
    assert not bad
    # <answer>\s*(\w+)\s*</answer>, exact compare: only q1 right
    assert (m["overall"]["correct"], m["overall"]["n"]) == (1, 6)
    assert m["unparsed_rate"] == pytest.approx(0.6667)  # q2, q4, q5, q6
    assert m["parser_mode"] == "paper-eval" and m["mode"] == "paper"
    assert m["open"]["exact_match"] == 0.0
    assert m["open"]["token_recall"] == pytest.approx(0.25)
    assert not (tmp_path / "paper" / "accuracy.png").exists()


def test_score_reports_malformed_lines_and_scores_the_rest(tmp_path):
    good = [json.dumps(r) for r in HAND_RECORDS[:3]]
    lines = [
        good[0],
        good[1],
        '{"id": "cut", "answer": "A", "compl',                              # 3: truncated JSON
        "",                                                                  # 4: blank (ignored)
        json.dumps({"id": "q9", "answer": "CT", "options": ["CT", "MRI"], "answer_letter": "A"}),  # 5: no completion
        json.dumps(["not", "an", "object"]),                                  # 6
        good[0],                                                              # 7: duplicate id q1
        json.dumps({**HAND_RECORDS[0], "id": "q10", "answer_letter": "E"}),  # 8: letter outside the options
        good[2],
    ]
    src = tmp_path / "preds.jsonl"
    src.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    r = run_cli(["-m", "eval.score", "--predictions", str(src), "--template", "think", "--out", str(out)])
    assert r.returncode == 1, r.stderr
    for n, why in ((3, "invalid JSON"), (5, "completion"), (6, "not a JSON object"), (7, "duplicate id"),
                   (8, "answer_letter")):
        assert f"line {n}: " in r.stderr and why in r.stderr, (n, r.stderr)
    assert "line 4" not in r.stderr
    m = json.loads((out / "metrics.json").read_text())
    assert m["n_predictions"] == 3 and (m["overall"]["correct"], m["overall"]["n"]) == (2, 3)
    assert [b["line"] for b in m["malformed_lines"]] == [3, 5, 6, 7, 8]
    assert "line 3:" in (out / "report.md").read_text()


def test_score_bad_inputs(tmp_path):
    r = run_cli(["-m", "eval.score", "--predictions", str(tmp_path / "nope.jsonl"), "--template", "think",
                 "--out", str(tmp_path / "o")])
    assert r.returncode == 2 and "no predictions file" in r.stderr
    junk = tmp_path / "junk.jsonl"
    junk.write_text("not json\n")
    r = run_cli(["-m", "eval.score", "--predictions", str(junk), "--template", "think", "--out", str(tmp_path / "o")])
    assert r.returncode == 2 and "no scorable line" in r.stderr


def test_bootstrap_ci_is_deterministic_and_brackets_the_mean():
    from eval.metrics import bootstrap_ci

    vals = [1.0] * 30 + [0.0] * 70
    a = bootstrap_ci(vals)
    assert a == bootstrap_ci(vals) and a[0] < 0.3 < a[1] and 0.15 < a[0] and a[1] < 0.45
    assert bootstrap_ci([]) == [0.0, 0.0] and bootstrap_ci([1.0, 1.0]) == [1.0, 1.0]
    graded = bootstrap_ci([0.5, 0.25, 1.0, 0.0] * 10)
    assert graded[0] < 0.4375 < graded[1]


def test_compare_two_fake_runs(tmp_path):
    def metrics(overall, ct, mri, qt):
        g = lambda a, n: {"accuracy": a, "n": n, "correct": round(a * n), "ci95": [max(0, a - 0.1), min(1, a + 0.1)]}  # noqa: E731
        return {"overall": g(overall, 20), "by_modality": {"CT": g(ct, 10), "MRI": g(mri, 10)},
                "by_question_type": {"Modality Recognition": g(qt, 20)}, "by_dataset": {},
                "unparsed_rate": 0.1, "format_violation_rate": 0.2, "format_rate": 0.8,
                "open": {"n": 0}, "n_predictions": 20}

    base = tmp_path / "base-eval"
    base.mkdir()
    (base / "metrics.json").write_text(json.dumps(metrics(0.5, 0.4, 0.6, 0.5)))
    grpo = tmp_path / "grpo-run"  # a training run dir: eval/metrics.json
    (grpo / "eval").mkdir(parents=True)
    (grpo / "eval" / "metrics.json").write_text(json.dumps(metrics(0.75, 0.8, 0.7, 0.75)))
    out = tmp_path / "cmp"
    r = run_cli(["-m", "eval.compare", str(base), str(grpo), "--out", str(out), "--names", "base,grpo"])
    assert r.returncode == 0, r.stderr
    md = (out / "compare.md").read_text()
    assert "| base (%) | grpo (%) | Δ grpo vs base |" in md
    assert "| **Overall** | 50.0 | 75.0 | +25.0 | 20 |" in md
    assert "| CT | 40.0 | 80.0 | +40.0 | 10 |" in md and "| MRI | 60.0 | 70.0 | +10.0 | 10 |" in md
    cmp = json.loads((out / "compare.json").read_text())
    assert cmp["runs"] == ["base", "grpo"]
    ct = next(row for row in cmp["rows"] if row["group"] == "CT")
    assert ct["delta"] == {"grpo": 40.0}
    _png_ok(out / "compare.png")
    # default names; a missing run is a clear error
    r = run_cli(["-m", "eval.compare", str(base), str(grpo / "eval"), "--out", str(out)])
    assert r.returncode == 0 and "base-eval: 50.0%" in r.stdout and "grpo-run: 75.0%" in r.stdout
    r = run_cli(["-m", "eval.compare", str(base), str(tmp_path / "nothing"), "--out", str(out)])
    assert r.returncode == 2 and "nothing" in r.stderr
    r = run_cli(["-m", "eval.compare", str(base), str(grpo), "--out", str(out), "--names", "one"])
    assert r.returncode == 2 and "--names" in r.stderr


def test_compare_refuses_deltas_between_different_test_sets(tmp_path):
    """Runs evaluated on other questions (another split, --limit, --subset) are refused, or flagged per row."""
    from eval.compare import main as compare_main

    def run(name, ids, acc):
        d = tmp_path / name
        d.mkdir()
        g = {"accuracy": acc, "n": len(ids), "correct": round(acc * len(ids)), "ci95": [0.0, 1.0]}
        (d / "metrics.json").write_text(json.dumps({"overall": g, "by_modality": {"CT": g}, "by_question_type": {},
                                                    "unparsed_rate": 0.0, "format_violation_rate": 0.0}))
        (d / "predictions.jsonl").write_text("".join(json.dumps({"id": i, "completion": ""}) + "\n" for i in ids))
        return str(d)

    base, same, other = run("base", ["q1", "q2", "q3", "q4"], 0.25), run("same", ["q4", "q3", "q2", "q1"], 0.5), \
        run("other", ["q1", "q2", "q5", "q6"], 1.0)
    out = tmp_path / "cmp"
    assert compare_main([base, same, "--out", str(out)]) == 0  # same ids, any order
    assert "| **Overall** | 25.0 | 50.0 | +25.0 | 4 |" in (out / "compare.md").read_text()
    r = run_cli(["-m", "eval.compare", base, same, other, "--out", str(tmp_path / "refused")])
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and lines[-1].startswith("error: the runs were evaluated on different test sets")
    assert "shared with base: other 2" in lines[-1] and "--allow-different-tests" in lines[-1]
    assert not (tmp_path / "refused").exists()
    assert compare_main([base, same, other, "--out", str(out), "--allow-different-tests"]) == 0
    md = (out / "compare.md").read_text()
    assert "| **Overall** | 25.0 | 50.0 | 100.0 | +25.0 | +75.0 ≠ | 4 |" in md and "| CT | 25.0 | 50.0 | 100.0 | +25.0 | +75.0 ≠ |" in md
    assert "**Different test sets:** other" in md
    assert json.loads((out / "compare.json").read_text())["test_sets"] == {"base": "same", "same": "same",
                                                                           "other": "different"}


def test_json_errors_say_where(tmp_path):
    """A cut-off line says so (it used to say "at column 1", the newline after it); others name the column."""
    from eval.scoring import read_predictions

    src = tmp_path / "p.jsonl"
    src.write_text('{"id": "a", "completion": "x"\n{"id": "b" "completion": "y"}\n')
    _, bad = read_predictions(src, strict=True)
    assert "cut off" in bad[0]["error"] and "column 1" not in bad[0]["error"]
    assert "at column 12" in bad[1]["error"] and '"completio' in bad[1]["error"]
