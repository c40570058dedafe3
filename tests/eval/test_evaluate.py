"""eval.evaluate end to end on the tiny model, its resumability, paper mode and bad inputs."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_cli
from tests.eval.conftest import CLI_ENV, FAST
from tests.eval.test_score import _png_ok

RECORD_KEYS = {"id", "modality", "question_type", "dataset", "options", "answer", "answer_letter", "answer_type",
               "completion", "reasoning", "parsed", "correct"}
METRIC_KEYS = {"schema_version", "overall", "by_modality", "by_question_type", "by_dataset", "unparsed_rate",
               "format_violation_rate", "format_rate", "open", "n_predictions", "n_closed", "n_open", "template",
               "mode", "parser_mode"}


def _script_for(rows, template):
    """Per distinct evaluation prompt: the correct letter, the correct option's text (checks the
    letter -> option mapping), or a wrong option's text; returns (script, expected correct per row)."""
    from medvqa_data.templates import render_prompt

    answers, expected = {}, []
    for row in rows:
        opts = list(row["options"])
        prompt = render_prompt(row["question"], opts, template, phase="eval")
        gold = ord(row["answer_letter"]) - 65
        if prompt not in answers:
            kind = len(answers) % 3
            text = (f"({row['answer_letter'].lower()})", opts[gold], opts[(gold + 1) % len(opts)])[kind]
            answers[prompt] = (f"<think>scripted</think><answer>{text}</answer>", kind < 2,
                               chr(65 + (gold + (kind == 2)) % len(opts)))
        expected.append(answers[prompt])

    def script(decoded: str) -> str:
        hits = [c for p, (c, _, _) in answers.items() if p + "<|im_end|>" in decoded]
        assert len(hits) == 1, decoded
        return hits[0]

    return script, expected


def test_evaluate_cli_end_to_end_with_adapter(tiny_model, sample_prepared, lora_runs, tmp_path, capsys, one_thread,
                                              monkeypatch):
    from transformers import AutoTokenizer, Qwen2VLForConditionalGeneration

    from eval.evaluate import main
    from medvqa_data.schema import load_prepared
    from tests.scripted import as_method, scripted_generate

    rows = list(load_prepared(sample_prepared, "test").select(range(6)))
    script, expected = _script_for(rows, "think")
    assert {e[1] for e in expected} == {True, False}
    prompts = []
    monkeypatch.setattr(Qwen2VLForConditionalGeneration, "generate",
                        as_method(scripted_generate(AutoTokenizer.from_pretrained(tiny_model), script, prompts)))
    out = tmp_path / "eval"
    args = ["--model", str(tiny_model), "--adapter", str(lora_runs / "run-a"), "--data", str(sample_prepared),
            "--template", "think", "--out", str(out), "--batch-size", "4", "--max-new-tokens", "6", "--limit", "6",
            *FAST]
    # the command line in-process (a subprocess would import torch/transformers/trl again: slow on a
    # busy CPU); test_evaluate_cli_names_missing_columns runs the real `python -m eval.evaluate`
    assert main(args) == 0
    assert len(prompts) == 6  # each row generated once, through the loaded (adapter) model
    cap = capsys.readouterr()
    # the adapter was trained with no-think: evaluating with think warns
    assert "warning" in cap.err and "'no-think'" in cap.err
    assert "samples_per_s" in cap.err  # progress bar with throughput
    assert "accuracy" in cap.out
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [p["id"] for p in preds] == [r["id"] for r in rows]
    for p, (completion, correct, letter) in zip(preds, expected):
        assert RECORD_KEYS <= p.keys()
        assert p["completion"] == completion and p["reasoning"] == "scripted"
        assert p["parsed"] == letter and p["correct"] == float(correct)
    n_right = sum(e[1] for e in expected)
    m = json.loads((out / "metrics.json").read_text())
    assert METRIC_KEYS <= m.keys()
    assert (m["overall"]["n"], m["overall"]["correct"]) == (6, n_right)
    assert m["overall"]["accuracy"] == round(n_right / 6, 4) and m["unparsed_rate"] == 0.0
    assert m["format_violation_rate"] == 0.0
    for key, name in (("modality", "by_modality"), ("question_type", "by_question_type")):
        for value, group in m[name].items():
            mine = [e[1] for r, e in zip(rows, expected) if r[key] == value]
            assert (group["n"], group["correct"]) == (len(mine), sum(mine)), (name, value)
    assert m["template"] == "think" and m["mode"] == "default"
    cfg = json.loads((out / "eval_config.json").read_text())
    assert cfg["adapter"].endswith("run-a") and cfg["max_new_tokens"] == 6
    report = (out / "report.md").read_text()
    assert "## By modality" in report and "## By question type" in report
    assert f"{100 * n_right / 6:.1f}%" in report
    _png_ok(out / "accuracy.png")


def test_evaluate_cli_names_missing_columns(sample_prepared, tiny_model, tmp_path):
    import datasets

    dd = datasets.load_from_disk(str(sample_prepared))
    broken = tmp_path / "broken"
    datasets.DatasetDict({k: v.remove_columns(["question_type", "answer_letter"]) for k, v in dd.items()}
                         ).save_to_disk(str(broken))
    r = run_cli(["-m", "eval.evaluate", "--model", str(tiny_model), "--data", str(broken), "--out",
                 str(tmp_path / "o")], env=CLI_ENV, timeout=120)
    assert r.returncode == 2
    assert "answer_letter" in r.stderr and "question_type" in r.stderr and "error:" in r.stderr
    assert "Traceback" not in r.stderr


# --------------------------------------------------------------------------- in-process, fake generation
def _rows(sample_prepared, n):
    from medvqa_data.schema import load_prepared

    return load_prepared(sample_prepared, "test").select(range(n))


def test_evaluate_resumes_and_tolerates_a_truncated_line(sample_prepared, tmp_path, monkeypatch):
    import eval.evaluate as ev

    rows = _rows(sample_prepared, 6)
    calls: list[list[str]] = []
    kill_at = [2]

    class Killed(Exception):
        pass

    def fake_generate(model, processor, batch, template, mode, *a):
        calls.append([r["id"] for r in batch])
        if len(calls) == kill_at[0]:
            raise Killed  # killed during the second batch
        return [f"<think>t</think><answer>{r['answer_letter']}</answer>" for r in batch]

    monkeypatch.setattr(ev, "generate_batch", fake_generate)
    out = tmp_path / "ev"
    with pytest.raises(Killed):
        ev.evaluate(None, None, rows, "think", out, batch_size=2, progress=False)
    pred_file = out / "predictions.jsonl"
    kept = [json.loads(line) for line in pred_file.read_text().splitlines()]
    assert [k["id"] for k in kept] == calls[0]
    with pred_file.open("a") as f:  # a line cut by the kill
        f.write('{"id": "' + rows[2]["id"] + '", "completion": "<think>')
    calls.clear()
    kill_at[0] = -1
    m = ev.evaluate(None, None, rows, "think", out, batch_size=2, progress=False)
    done_first = set(k["id"] for k in kept)
    assert all(i not in done_first for batch in calls for i in batch)  # finished ids are skipped
    assert sorted(i for b in calls for i in b) == sorted(r["id"] for r in rows if r["id"] not in done_first)
    assert m["overall"]["n"] == 6 and m["overall"]["accuracy"] == 1.0 and m["unparsed_rate"] == 0.0
    lines = pred_file.read_text().splitlines()
    assert len(lines) == 6 and all(json.loads(line) for line in lines)
    # a rerun with other generation settings does not reuse the predictions
    calls.clear()
    ev.evaluate(None, None, rows, "no-think", out, batch_size=6, progress=False, plot=False)
    assert len(calls) == 1 and len(calls[0]) == 6
    assert (out / "predictions.stale.jsonl").is_file()


def test_paper_mode_uses_medr1_eval_prompts_and_parser(sample_prepared, tmp_path, monkeypatch):
    from types import SimpleNamespace

    from transformers import Qwen2VLConfig

    import eval.evaluate as ev
    from medvqa_data import templates

    rows = _rows(sample_prepared, 2)
    seen = []

    class Stop(Exception):
        pass

    class FakeProcessor:
        def apply_chat_template(self, messages, **kw):
            return messages[0]["content"][1]["text"]

        def __call__(self, text, images, **kw):
            seen.extend(text)
            raise Stop

    with pytest.raises(Stop):
        ev.generate_batch(SimpleNamespace(config=Qwen2VLConfig()), FakeProcessor(), list(rows), "think", "paper", 8,
                          3136, 12544)  # a config only: the family's resize rule is read from it
    row = rows[0]
    expected = templates.render_prompt(row["question"], list(row["options"]), "think", mode="paper", phase="eval")
    assert seen[0] == expected
    assert "Think through the question step by step in <think>...</think> tags. Then provide" in seen[0]

    def fake_generate(model, processor, batch, template, mode, *a):
        # "B)" is a valid answer for our parser, not for Med-R1's <answer>\s*(\w+)\s*</answer>
        return [f"<think>t</think><answer>{r['answer_letter']})</answer>" for r in batch]

    monkeypatch.setattr(ev, "generate_batch", fake_generate)
    m_default = ev.evaluate(None, None, rows, "think", tmp_path / "d", progress=False, plot=False)
    m_paper = ev.evaluate(None, None, rows, "think", tmp_path / "p", mode="paper", progress=False, plot=False)
    assert m_default["overall"]["accuracy"] == 1.0
    assert m_paper["overall"]["accuracy"] == 0.0 and m_paper["parser_mode"] == "paper-eval"


def test_a_corrupt_image_is_skipped_counted_and_named(sample_prepared, tmp_path, monkeypatch, capsys):
    """One unreadable image does not end the evaluation: its row is skipped, counted in metrics.json,
    named in report.md, and the message says to re-run prepare."""
    import eval.evaluate as ev
    from medvqa_data.dataset import load_row_image

    rows = list(_rows(sample_prepared, 4))
    bad = tmp_path / "corrupt.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)  # a PNG header and no image
    rows[1] = {**rows[1], "image": str(bad)}

    def generate(model, processor, batch, template, mode, max_new_tokens, min_pixels, max_pixels):
        for r in batch:  # as generate_batch: decode every image of the batch first
            load_row_image(r["image"], min_pixels, max_pixels)
        return [f"<think>t</think><answer>{r['answer_letter']}</answer>" for r in batch]

    monkeypatch.setattr(ev, "generate_batch", generate)
    m = ev.evaluate(None, None, rows, "think", tmp_path / "ev", batch_size=2, progress=False, plot=False)
    assert m["overall"]["n"] == 3 and m["overall"]["accuracy"] == 1.0
    assert [s["id"] for s in m["skipped_images"]] == [rows[1]["id"]]
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["skipped_images"][0]["image"] == str(bad)
    report = (tmp_path / "ev" / "report.md").read_text()
    assert "Skipped rows" in report and str(bad) in report and "medvqa_data.prepare" in report
    assert "re-run `python -m medvqa_data.prepare`" in capsys.readouterr().err
