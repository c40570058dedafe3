"""eval.score and the metrics against hand-computed values (no model)."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from eval.scoring import (
    check_mode,
    parser_mode,
    prompt_mode,
    question_kind,
    read_predictions,
    score_record,
    validate_record,
    write_outputs,
)
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
    src = tmp_path / "p.jsonl"
    src.write_text('{"id": "a", "completion": "x"\n{"id": "b" "completion": "y"}\n')
    _, bad = read_predictions(src, strict=True)
    assert "cut off" in bad[0]["error"] and "column 1" not in bad[0]["error"]
    assert "at column 12" in bad[1]["error"] and '"completio' in bad[1]["error"]


# ----------------------------------------------------------------------------- eval.scoring, unit by unit
# (cases found by mutation testing: the CLI tests above run in a subprocess, which mutmut cannot see)


def test_modes_and_question_kinds():
    assert [check_mode(m) for m in ("default", "paper", "paper-eval")] == ["default", "paper", "paper"]
    assert [parser_mode(m) for m in ("default", "paper", "paper-eval")] == ["default", "paper-eval", "paper-eval"]
    assert prompt_mode("paper-eval") == "paper" and prompt_mode("default") == "default"
    with pytest.raises(ValueError, match=r"^unknown mode 'exact'; valid: default, paper$"):
        check_mode("exact")
    choice = {"options": ["CT", "MRI"], "answer_letter": "A"}
    assert question_kind(choice) == "choice" and question_kind({**choice, "answer_type": "CLOSED"}) == "choice"
    assert question_kind({**choice, "answer_type": " Open "}) == "open"
    assert question_kind({**choice, "answer_letter": ""}) == "closed"
    assert question_kind({"answer_letter": "A"}) == "closed" and question_kind({"answer_type": None}) == "closed"
    assert question_kind({"answer_type": "OPEN"}) == "open"


@pytest.mark.parametrize("rec,error", [
    ([1], "not a JSON object (list)"),
    ({}, "missing key(s) id, answer, completion"),
    ({"id": "a", "completion": ""}, "missing key(s) answer"),
    ({"id": None, "answer": "x", "completion": ""}, "empty id"),
    ({"id": "  ", "answer": "x", "completion": ""}, "empty id"),
    ({"id": 0, "answer": "x", "completion": ""}, None),
    ({"id": "a", "answer": "x", "completion": "", "options": ["CT", 1]}, "options must be a list of strings"),
    ({"id": "a", "answer": "x", "completion": "", "options": "CT"}, "options must be a list of strings"),
    ({"id": "a", "answer": "x", "completion": "", "answer_type": "yes"}, "answer_type must be closed or open, got 'yes'"),
    ({"id": "a", "answer": "x", "completion": "", "options": ["CT", "MRI"]},
     "a multiple-choice row (with options) needs answer_letter"),
    ({"id": "a", "answer": "x", "completion": "", "options": ["CT", "MRI"], "answer_letter": 1},
     "a multiple-choice row (with options) needs answer_letter"),
    ({"id": "a", "answer": "x", "completion": "", "options": ["CT", "MRI"], "answer_letter": "C"},
     "answer_letter 'C' is not one of the 2 options"),
    ({"id": "a", "answer": "x", "completion": "", "options": ["CT", "MRI"], "answer_letter": "@"},
     "answer_letter '@' is not one of the 2 options"),
    ({"id": "a", "answer": "x", "completion": "", "options": ["CT", "MRI"], "answer_letter": "AB"},
     "answer_letter 'AB' is not one of the 2 options"),
    ({"id": "a", "answer": "x", "completion": "", "options": ["CT", "MRI"], "answer_letter": " b "}, None),
    ({"id": "a", "answer": "x", "completion": "", "options": ["CT", "MRI"], "answer_type": "open"}, None),
    ({"id": "a", "answer": None, "completion": ""}, "answer is null"),
    ({"id": "a", "answer": None, "completion": "", "options": ["CT", "MRI"], "answer_letter": "A"}, None),
    ({"id": "a", "answer": "x", "completion": 5}, "completion: unsupported completion type: int"),
])
def test_validate_record_names_the_problem(rec, error):
    assert validate_record(rec) == error


def test_read_predictions_reports_each_bad_line_and_reads_on(tmp_path):
    assert read_predictions(tmp_path / "missing.jsonl") == ([], [])
    ok = {"id": "a", "answer": "x", "completion": "<answer>x</answer>"}
    lines = [json.dumps(ok), "", '{"id": "b", "answer": "x"', '{"id": "c", "answer": x}', "[1]",
             json.dumps({"answer": "x"}), json.dumps({**ok, "id": "d", "answer": "café"}, ensure_ascii=False),
             json.dumps(ok)]
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    cut = "invalid JSON (Expecting ',' delimiter; the line ends before the JSON object does (cut off?))"
    middle = "invalid JSON (Expecting value; at column 23: '\"answer\": x}')"  # 10 characters either side
    recs, bad = read_predictions(path)
    assert [r["id"] for r in recs] == ["a", "d", "a"] and recs[1]["answer"] == "café"
    assert bad == [{"line": 3, "error": cut}, {"line": 4, "error": middle},
                   {"line": 5, "error": "not a prediction record"}, {"line": 6, "error": "not a prediction record"}]
    recs, bad = read_predictions(path, strict=True)
    assert [r["id"] for r in recs] == ["a", "d"]
    assert bad[2:] == [{"line": 5, "error": "not a JSON object (list)"},
                       {"line": 6, "error": "missing key(s) id, completion"},
                       {"line": 8, "error": "duplicate id 'a' (first on line 1)"}]
    (tmp_path / "latin1.jsonl").write_bytes(b'{"id": "e", "answer": "caf\xe9", "completion": ""}\n')
    assert read_predictions(tmp_path / "latin1.jsonl", strict=True)[0][0]["answer"] == "caf\ufffd"  # replaced


def test_score_record_fields_per_kind():
    base = {"id": "q", "modality": "CT", "question_type": "t", "dataset": "d", "extra": "not copied"}
    rec = score_record({**base, "options": ["CT", "MRI"], "answer": "MRI", "answer_letter": "B"},
                       "<think>r</think><answer>B</answer>", "think")
    assert rec == {**{k: v for k, v in base.items() if k != "extra"}, "options": ["CT", "MRI"], "answer": "MRI",
                   "answer_letter": "B", "answer_type": None, "completion": "<think>r</think><answer>B</answer>",
                   "reasoning": "r", "parsed": "B", "correct": 1.0, "format_ok": True, "error": None}
    rec = score_record({**base, "answer": "Yes", "answer_type": "closed", "options": None}, "<answer>yes, it is</answer>",
                       "no-think")
    assert (rec["options"], rec["parsed"], rec["correct"], rec["format_ok"], rec["error"]) == ([], "yes", 1.0, True, None)
    assert "f1" not in rec and rec["reasoning"] is None
    rec = score_record({**base, "answer": "left lung", "answer_type": "open"}, "<think>x</think><answer>lung</answer>",
                       "think")
    assert (rec["parsed"], rec["correct"], rec["exact"], rec["recall"]) == ("lung", 0.0, 0.0, 0.5)
    assert rec["f1"] == pytest.approx(2 / 3) and rec["reasoning"] == "x"
    rec = score_record({**base, "answer": "left lung", "answer_type": "open"}, "no tags", "think")
    assert (rec["parsed"], rec["f1"], rec["recall"], rec["format_ok"]) == (None, 0.0, 0.0, False)
    assert rec["error"] == "no <answer> block"
    rec = score_record({**base, "answer": None, "answer_type": "open"}, "<think>x</think><answer>lung</answer>", "think")
    assert (rec["parsed"], rec["correct"], rec["f1"]) == ("lung", 0.0, 0.0)
    rec = score_record({**base, "answer": "left lung", "answer_type": "open"}, "<think>x</think><answer> </answer>",
                       "think", "paper")
    assert rec["parsed"] is None


def test_write_outputs_records_modes_and_extra(tmp_path):
    preds = [score_record({"id": "q", "options": ["CT", "MRI"], "answer": "MRI", "answer_letter": "B"},
                          "<answer>B</answer>", "no-think", "paper")]
    metrics = write_outputs(preds, tmp_path / "out", "no-think", "paper-eval", "My run", extra={"note": "x"},
                            plot=False)
    on_disk = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert on_disk == metrics
    assert (metrics["template"], metrics["mode"], metrics["parser_mode"], metrics["note"]) == (
        "no-think", "paper", "paper-eval", "x")
    assert metrics["overall"]["accuracy"] == 1.0
    report = (tmp_path / "out" / "report.md").read_text()
    assert report.startswith("# My run\n") and report.endswith("\n") and "accuracy.png" not in report
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["metrics.json", "report.md"]
    assert (tmp_path / "out" / "metrics.json").read_text().startswith('{\n  "')  # indented for people
    write_outputs(preds, tmp_path / "new" / "plotted", "no-think", "default", "R")  # parents are created
    assert "](accuracy.png)" in (tmp_path / "new" / "plotted" / "report.md").read_text()
    _png_ok(tmp_path / "new" / "plotted" / "accuracy.png")
