"""eval.judge: strict verdict parsing, a scripted judge (known verdicts) through the CLI for exact
aggregations, the rubric prompt on the hand-labelled calibration set, and the tiny model as judge."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from eval.judge_metrics import CRITERIA, VerdictError, parse_verdict
from eval.metrics import bootstrap_ci

CALIBRATION = Path(__file__).resolve().parents[1] / "data" / "judge" / "calibration.jsonl"


def _rubric(*scores: int) -> str:
    return json.dumps(dict(zip(CRITERIA, scores)) | {"comment": "ok"})


def _rec(i: str, think: str, answer: str, options=("CT", "MRI"), letter="A", answer_type="closed",
         modality="CT", question_type="Modality Recognition", dataset="D1", pred=None) -> dict:
    return {"id": i, "modality": modality, "question_type": question_type, "dataset": dataset,
            "options": list(options), "answer": answer, "answer_letter": letter, "answer_type": answer_type,
            "question": f"question {i}?", "completion": f"<think>{think}</think><answer>{pred or letter}</answer>"}


def _write(path: Path, recs: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


class Scripted:
    """A stand-in judge: `reply(prompt, repair)` decides each reply; counts the prompts it is sent."""

    def __init__(self, reply):
        self.reply, self.prompts = reply, []

    def generate(self, prompts, images):
        self.prompts += prompts
        return [self.reply(p, p.startswith("Your previous reply could not be used")) for p in prompts]


@pytest.fixture()
def scripted(monkeypatch, tmp_path):
    """(install(reply) -> Scripted, judge model dir): load_judge returns the stand-in."""
    import eval.judge as J

    model = tmp_path / "judge-model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "gpt2"}))  # a text-only judge

    def install(reply):
        s = Scripted(reply)
        monkeypatch.setattr(J, "load_judge", lambda *a, **k: s)
        return s

    return install, model


# --------------------------------------------------------------------------- parsing
def test_parse_verdict_is_strict():
    assert parse_verdict(_rubric(5, 4, 3, 2, 1), "rubric")["clarity"] == 1
    assert parse_verdict("```json\n" + _rubric(1, 1, 1, 1, 1) + "\n```", "rubric")["medical_correctness"] == 1
    assert parse_verdict('{"winner": "tie"}', "pairwise")["winner"] == "tie"
    assert parse_verdict('{"winner": "b", "reason": "x"}', "pairwise")["winner"] == "B"
    assert parse_verdict('{"same_meaning": false}', "open") == {"same_meaning": False}
    for text, task, why in [
        ("Sure! " + _rubric(5, 5, 5, 5, 5), "rubric", "single JSON object"),
        (_rubric(5, 5, 5, 5, 6), "rubric", "clarity must be an integer from 1 to 5"),
        (json.dumps(dict.fromkeys(CRITERIA, True)), "rubric", "integer from 1 to 5"),
        (_rubric(5, 5, 5, 5, 4.5), "rubric", "integer"),
        ('{"medical_correctness": 3}', "rubric", "missing key(s) answer_consistency"),
        ('{"winner": "both"}', "pairwise", "winner must be"),
        ('{"same_meaning": "true"}', "open", "same_meaning must be true or false"),
        ("{not json}", "open", "invalid JSON"),
        ("", "rubric", "single JSON object"),
    ]:
        with pytest.raises(VerdictError, match=re.escape(why)):
            parse_verdict(text, task)


# --------------------------------------------------------------------------- rubric, scripted
RUBRIC_REPLIES = {  # marker in the reasoning -> (first reply, reply to the repair prompt)
    "r1": (_rubric(5, 5, 5, 5, 5), None),                      # 5.0
    "r2": (_rubric(3, 3, 3, 3, 3), None),                      # 3.0
    "r3": ("I think it is fine.", _rubric(1, 1, 1, 1, 1)),     # repaired -> 1.0
    "r4": ("garbage", "still garbage"),                        # unparsable
    "r5": ("```json\n" + _rubric(4, 4, 4, 2, 1) + "\n```", None),  # 3.0
    "r6": (_rubric(2, 2, 2, 2, 6), _rubric(2, 2, 2, 2, 2)),    # out of range, repaired -> 2.0
}
RUBRIC_RECS = [
    _rec("p1", "r1 bright bone", "CT"),
    _rec("p2", "r2 some text", "CT", pred="B"),
    _rec("p3", "r3 text", "CT", question_type="Anatomy Identification"),
    _rec("p4", "r4 text", "MRI", letter="B", modality="MRI"),
    _rec("p5", "r5 text", "MRI", letter="B", modality="MRI", question_type="Anatomy Identification"),
    _rec("p6", "r6 text", "X-Ray", options=("X-Ray", "CT"), modality="X-Ray", dataset="D2"),
]


def _rubric_reply(prompt, repair):
    marker = re.search(r"<<<\n(r\d) ", prompt).group(1)
    return RUBRIC_REPLIES[marker][1 if repair else 0]


def test_rubric_scripted_hand_computed_and_resumed(scripted, tmp_path, capsys):
    from eval.judge import main

    install, model = scripted
    s = install(_rubric_reply)
    preds = _write(tmp_path / "eval" / "predictions.jsonl", RUBRIC_RECS)
    out = tmp_path / "judge"
    args = ["--predictions", str(preds), "--judge-model", str(model), "--out", str(out), "--batch-size", "4"]
    assert main(args) == 0
    assert "rubric: mean 2.8 / 5 over 5 judged; unparsable 1 of 6" in capsys.readouterr().out
    assert len(s.prompts) == 6 + 3  # one repair prompt each for r3, r4, r6
    repair = [p for p in s.prompts if p.startswith("Your previous reply")]
    assert any("clarity must be an integer from 1 to 5, got 6" in p for p in repair)
    m = json.loads((out / "metrics.json").read_text())
    r = m["rubric"]
    assert (r["n"], r["n_judged"], r["n_unparsable"], r["unparsable_rate"]) == (6, 5, 1, 0.1667)
    assert r["mean"] == 2.8  # (5 + 3 + 1 + 3 + 2) / 5
    assert r["ci95"] == bootstrap_ci([5.0, 3.0, 1.0, 3.0, 2.0])
    assert r["criteria"]["medical_correctness"] == 3.0 and r["criteria"]["no_hallucination"] == 2.6
    assert r["criteria"]["clarity"] == 2.4
    assert r["distribution"]["clarity"] == {"1": 2, "2": 1, "3": 1, "4": 0, "5": 1}
    assert r["by_modality"]["CT"]["mean"] == 3.0 and r["by_modality"]["CT"]["n_judged"] == 3
    assert (r["by_modality"]["MRI"]["n"], r["by_modality"]["MRI"]["n_judged"], r["by_modality"]["MRI"]["mean"]) \
        == (2, 1, 3.0)
    assert r["by_modality"]["X-Ray"]["ci95"] == [2.0, 2.0]
    assert r["by_question_type"]["Anatomy Identification"]["mean"] == 2.0  # p3 1.0, p5 3.0
    assert r["by_dataset"]["D2"]["mean"] == 2.0
    assert r["by_correct"]["wrong"]["mean"] == 3.0 and r["by_correct"]["correct"]["n"] == 5  # p2 answered B
    assert "calibration" not in r
    assert m["judge"]["vision"] is False and len(m["judge"]["prompt_sha256"]) == 64
    cache = [json.loads(x) for x in (out / "judgements_rubric.jsonl").read_text().splitlines()]
    assert {c["id"]: len(c["replies"]) for c in cache} == {"p1": 1, "p2": 1, "p3": 2, "p4": 2, "p5": 1, "p6": 2}
    report = (out / "report.md").read_text()
    assert "Mean score: 2.80 / 5" in report and m["judge"]["prompt_sha256"][:16] in report
    assert "not a clinician" in report and (out / "judge.png").stat().st_size > 1000
    # resumed: every reply comes from the cache, the judge is not asked again
    s2 = install(_rubric_reply)
    capsys.readouterr()
    assert main(args) == 0
    assert s2.prompts == [] and json.loads((out / "metrics.json").read_text())["rubric"] == r
    # killed mid-write: p1's line lost, the last line cut -> only p1 is judged again
    lines = (out / "judgements_rubric.jsonl").read_text().splitlines()
    (out / "judgements_rubric.jsonl").write_text("\n".join(lines[1:]) + '\n{"key": "cut')
    s2b = install(_rubric_reply)
    assert main(args) == 0
    assert len(s2b.prompts) == 1 and "r1 bright bone" in s2b.prompts[0]
    assert json.loads((out / "metrics.json").read_text())["rubric"] == r
    # another task into the same --out with the same judge keeps the rubric section
    assert main([*args, "--open", "--no-rubric"]) == 0
    both = json.loads((out / "metrics.json").read_text())
    assert both["rubric"] == r and both["open"]["n"] == 0 and both["open"]["judge_match"]["rate"] is None
    # an edited prompt (another --prompts-dir) changes the hash and re-judges everything
    mine = tmp_path / "prompts"
    mine.mkdir()
    (mine / "judge_rubric.txt").write_text("Grade this.\n{reasoning}\nJSON: {\"clarity\": <1-5>}\n")
    s3 = install(lambda p, rep: _rubric(4, 4, 4, 4, 4) if "r1" in p else "x")
    assert main([*args, "--prompts-dir", str(mine), "--retries", "0"]) == 0
    m3 = json.loads((out / "metrics.json").read_text())
    assert len(s3.prompts) == 6 and m3["judge"]["prompt_sha256"] != m["judge"]["prompt_sha256"]
    assert m3["rubric"]["n_judged"] == 1 and s3.prompts[0].startswith("Grade this.")
    # verdicts are re-read from the cached replies with today's parser (here: a reply edited into the cache)
    cache = [json.loads(x) for x in (out / "judgements_rubric.jsonl").read_text().splitlines()]
    cache[1]["replies"] = [_rubric(1, 2, 3, 4, 5)]
    (out / "judgements_rubric.jsonl").write_text("".join(json.dumps(c) + "\n" for c in cache))
    s4 = install(lambda p, rep: "x")
    assert main([*args, "--prompts-dir", str(mine), "--retries", "0"]) == 0
    assert s4.prompts == [] and json.loads((out / "metrics.json").read_text())["rubric"]["n_judged"] == 2


# --------------------------------------------------------------------------- pairwise, scripted
#: row -> (reply when the baseline is shown as A, reply when the candidate is shown as A)
PAIR_SCRIPT = {
    "q1": ("B", "A"),        # both orders pick the candidate -> win
    "q2": ("A", "A"),        # always the first position -> tie (orders disagree)
    "q3": ("A", "B"),        # both orders pick the baseline -> loss
    "q4": ("tie", "tie"),    # tie
    "q5": (None, "A"),       # order 1 unparsable (even after repair) -> row unparsable
    "q6": ("B", "A"),        # win
}


def _pair_reply(prompt, repair):
    first = re.search(r"Response A:\n<<<\n(\w+) ", prompt).group(1)  # "base" or "cand"
    row = re.search(r"question (q\d)\?", prompt).group(1)
    pick = PAIR_SCRIPT[row][0 if first == "base" else 1]
    return "no idea" if pick is None else json.dumps({"winner": pick, "reason": "r"})


def test_pairwise_scripted_position_swap(scripted, tmp_path):
    from eval.judge import main

    install, model = scripted
    s = install(_pair_reply)
    mods = {"q1": "CT", "q2": "CT", "q3": "CT", "q4": "MRI", "q5": "MRI", "q6": "MRI"}
    base = [_rec(i, f"base reasoning {i}", "CT", modality=mods[i]) for i in PAIR_SCRIPT]
    cand = [_rec(i, f"cand reasoning {i}", "CT", modality=mods[i]) for i in PAIR_SCRIPT]
    cand.append(_rec("q7", "cand reasoning q7", "CT"))  # q7: not in the baseline, not judged
    _write(tmp_path / "sft" / "eval" / "predictions.jsonl", base)
    _write(tmp_path / "grpo" / "eval" / "predictions.jsonl", cand)
    out = tmp_path / "pair"
    assert main(["--compare", str(tmp_path / "sft" / "eval"), str(tmp_path / "grpo" / "eval"),
                 "--judge-model", str(model), "--out", str(out)]) == 0
    assert len(s.prompts) == 12 + 1  # 6 rows x 2 orders + 1 repair
    w = json.loads((out / "metrics.json").read_text())["pairwise"]
    assert (w["baseline"], w["candidate"]) == ("sft", "grpo")
    assert (w["n"], w["n_judged"], w["n_unparsable"]) == (6, 5, 1)
    assert (w["win"]["rate"], w["tie"]["rate"], w["loss"]["rate"]) == (0.4, 0.4, 0.2)
    assert (w["win"]["count"], w["tie"]["count"], w["loss"]["count"]) == (2, 2, 1)
    assert w["win"]["ci95"] == bootstrap_ci([1, 0, 0, 0, 1]) and w["loss"]["ci95"] == bootstrap_ci([0, 0, 1, 0, 0])
    assert w["position_consistency"] == 0.8  # q2 disagrees
    assert w["first_position_rate"] == 0.6667  # 6 of the 9 parsed non-tie verdicts chose A
    ct, mri = w["by_modality"]["CT"], w["by_modality"]["MRI"]
    assert (ct["win"]["rate"], ct["tie"]["rate"], ct["loss"]["rate"]) == (0.3333, 0.3333, 0.3333)
    assert (mri["n"], mri["n_judged"], mri["win"]["rate"], mri["tie"]["rate"]) == (3, 2, 0.5, 0.5)
    assert mri["loss"]["ci95"] == [0.0, 0.0]
    report = (out / "report.md").read_text()
    assert "`grpo` against `sft`" in report and "Win 40.0%" in report


def test_pair_outcome_needs_both_orders():
    from eval.judge_metrics import pair_outcome

    A, B, T = ({"winner": w} for w in ("A", "B", "tie"))
    assert pair_outcome(B, A) == "win" and pair_outcome(A, B) == "loss"
    assert pair_outcome(A, A) == pair_outcome(B, B) == pair_outcome(T, A) == pair_outcome(T, T) == "tie"
    assert pair_outcome(None, A) is None and pair_outcome(B, None) is None


# --------------------------------------------------------------------------- open answers, scripted
OPEN_RECS = [
    _rec("o1", "t", "left lung", options=(), letter="", answer_type="open", pred="the left lung"),
    _rec("o2", "t", "right kidney", options=(), letter="", answer_type="open", pred="kidney", dataset="D2"),
    _rec("o3", "t", "pleural effusion", options=(), letter="", answer_type="open", pred="fluid in pleural space",
         dataset="D2"),
    _rec("o4", "t", "liver", options=(), letter="", answer_type="open", pred="liver", dataset="D2"),
    _rec("c1", "t", "CT"),  # a closed question: not graded by --open
]
OPEN_SCRIPT = {"the left lung": "true", "kidney": "false", "fluid in pleural space": "true", "liver": None}


def _open_reply(prompt, repair):
    pred = re.search(r"Model's answer: (.*)\n", prompt).group(1)
    v = OPEN_SCRIPT[pred]
    return "yes" if v is None else f'{{"same_meaning": {v}}}'


def test_open_scripted_agreement(scripted, tmp_path):
    from eval.judge import main

    install, model = scripted
    s = install(_open_reply)
    preds = _write(tmp_path / "eval" / "predictions.jsonl", OPEN_RECS)
    out = tmp_path / "open"
    assert main(["--predictions", str(preds), "--judge-model", str(model), "--out", str(out), "--open",
                 "--no-rubric"]) == 0
    assert len(s.prompts) == 4 + 1
    m = json.loads((out / "metrics.json").read_text())
    assert "rubric" not in m
    o = m["open"]
    assert (o["n"], o["n_judged"], o["n_unparsable"]) == (4, 3, 1)
    assert o["judge_match"]["rate"] == 0.6667 and o["judge_match"]["count"] == 2
    assert o["exact_match"] == 0.5 and o["token_f1"] == 0.75  # F1s 1, 2/3, 1/3, 1
    assert o["agreement_exact"] == 0.6667 and o["agreement_f1"] == 0.3333
    assert o["kappa_exact"] == 0.4  # po 2/3, pe 4/9
    assert (o["judge_only"], o["exact_only"]) == (1, 0)
    d2 = o["by_dataset"]["D2"]
    assert (d2["n"], d2["n_judged"], d2["judge_match"]["rate"], d2["exact_match"]) == (3, 2, 0.5, 0.3333)
    assert "Cohen's kappa 0.40" in (out / "report.md").read_text()


# --------------------------------------------------------------------------- calibration set
def _calibration():
    return [json.loads(line) for line in CALIBRATION.read_text().splitlines()]


def test_calibration_set_is_balanced_and_hand_labelled():
    cal = _calibration()
    assert len(cal) == 20 and sum(c["label"] == "good" for c in cal) == 10
    assert all(c["why"] and c["question"] for c in cal) and len({c["id"] for c in cal}) == 20


def test_rubric_prompt_renders_the_calibration_set():
    from eval.judge import load_records
    from eval.judge_prompts import IMAGE_NOTE, load_prompts, rubric_prompt

    template = load_prompts()["rubric"]
    recs = load_records(CALIBRATION, None, None, None)
    for rec, raw in zip(recs, _calibration()):
        p = rubric_prompt(template, rec, False)
        think = re.search(r"<think>(.*)</think>", raw["completion"], re.S).group(1)
        assert f"<<<\n{think}\n>>>" in p  # the reasoning, verbatim and fenced
        assert f"Question: {raw['question']}\n" in p and IMAGE_NOTE[False] in p
        if raw["options"]:
            gold = f"{raw['answer_letter']}) {raw['answer']}"
            assert f"Reference (correct) answer: {gold}\n" in p and f"A) {raw['options'][0]}, B)" in p
        else:
            assert f"Reference (correct) answer: {raw['answer']}\n" in p and "Options: none" in p
        assert not re.search(r"\{(image_note|question|options|reference|reasoning|final_answer)\}", p)
        assert raw["why"] not in p and "label" not in p  # the hand label never leaks into the prompt
        assert all(f"- {c}:" in p for c in CRITERIA)
        assert p.rstrip().endswith('"comment": "<one short sentence>"}')
    by_id = {r["id"]: rubric_prompt(template, r, True) for r in recs}
    # the final answer shown is what the parser read (cal11 argues CT but answers B = MRI)
    assert "The model's final answer: B) MRI\n" in by_id["cal11"] and "clearly a CT scan" in by_id["cal11"]
    assert "The model's final answer: fractured femur\n" in by_id["cal20"]
    assert IMAGE_NOTE[True] in by_id["cal01"]


def test_calibration_agreement_with_a_scripted_judge(scripted, tmp_path):
    """The agreement the docs ask a real judge for: here a stand-in that misjudges two texts -> 18/20."""
    from eval.judge import main

    install, model = scripted
    cal = _calibration()

    def reply(prompt, repair):  # finds the text by its reasoning (the label is not in the prompt)
        c = next(c for c in cal if re.search(r"<think>(.*)</think>", c["completion"]).group(1) in prompt)
        good = (c["label"] == "good") != (c["id"] in ("cal03", "cal16"))  # two deliberate mistakes
        return _rubric(*([4] * 5 if good else [2] * 5))

    install(reply)
    assert main(["--predictions", str(CALIBRATION), "--judge-model", str(model), "--out", str(tmp_path / "c")]) == 0
    cal_m = json.loads((tmp_path / "c" / "metrics.json").read_text())["rubric"]["calibration"]
    assert (cal_m["n"], cal_m["n_judged"], cal_m["agreement"]) == (20, 20, 0.9)
    assert cal_m["good_mean"] == 3.8 and cal_m["bad_mean"] == 2.2  # 9x4 + 1x2 / 10; 9x2 + 1x4 / 10


# --------------------------------------------------------------------------- bad input
def test_bad_inputs_give_one_error_line(tmp_path, scripted, capsys):
    from eval.judge import main

    install, model = scripted
    install(lambda p, r: "x")
    preds = _write(tmp_path / "eval" / "predictions.jsonl", RUBRIC_RECS[:2])
    other = _write(tmp_path / "other" / "predictions.jsonl", [_rec("zz", "t", "CT")])
    cases = [
        (["--predictions", str(preds), "--judge-model", str(tmp_path / "nope")], "not a local checkpoint dir"),
        (["--predictions", str(tmp_path / "missing"), "--judge-model", str(model)], "no predictions file"),
        (["--compare", str(preds), str(other), "--judge-model", str(model)], "no prediction ids in common"),
        (["--predictions", str(preds), "--judge-model", str(model), "--no-rubric"], "nothing to do"),
        (["--predictions", str(preds), "--judge-model", str(model), "--prompts-dir", str(tmp_path / "np")],
         "--prompts-dir"),
    ]
    for args, msg in cases:
        assert main([*args, "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error:") and msg in err and "Traceback" not in err


# --------------------------------------------------------------------------- the tiny model as judge
def _tiny_predictions(sample_prepared, out: Path, words: str) -> Path:
    from eval.scoring import score_record
    from medvqa_data.schema import load_prepared

    ds = load_prepared(sample_prepared, "test").select(range(2))
    recs = []
    for i, row in enumerate(ds):
        row = dict(row) | ({"answer_type": "open"} if i == 1 else {})
        recs.append(score_record(row, f"<think>{words} {i}</think><answer>A</answer>", "think"))
    _write(out / "predictions.jsonl", recs)
    (out / "eval_config.json").write_text(json.dumps({"data": str(sample_prepared), "split": "test"}))
    return out


def test_tiny_judge_unparsable_output_is_counted(tiny_model, sample_prepared, tmp_path, one_thread):
    """The whole pipeline with a real (tiny, random) VLM judge: its garbage is retried, counted, reported."""
    from eval.judge import main

    ev = _tiny_predictions(sample_prepared, tmp_path / "grpo" / "eval", "the image shows")
    out = tmp_path / "judge"
    assert main(["--predictions", str(ev), "--judge-model", str(tiny_model), "--out", str(out), "--limit", "1",
                 "--max-new-tokens", "3", "--max-pixels", "12544"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["judge"]["vision"] is True and m["judge"]["images_shown"] is True
    assert (m["rubric"]["n"], m["rubric"]["n_unparsable"], m["rubric"]["mean"]) == (1, 1, None)
    cache = [json.loads(x) for x in (out / "judgements_rubric.jsonl").read_text().splitlines()]
    assert len(cache[0]["replies"]) == 2 and cache[0]["verdict"] is None and cache[0]["error"]
    assert "unparsable judge replies: 1 = 100.0%" in (out / "report.md").read_text()


def test_tiny_text_only_judge(tiny_model, tmp_path, one_thread):
    """A text-only chat checkpoint (AutoModelForCausalLM, random) judges the calibration texts without images."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from eval.judge import main

    tok = AutoTokenizer.from_pretrained(tiny_model)
    torch.manual_seed(0)
    Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=1)).save_pretrained(tmp_path / "llm")
    tok.save_pretrained(tmp_path / "llm")
    out = tmp_path / "judge"
    assert main(["--predictions", str(CALIBRATION), "--judge-model", str(tmp_path / "llm"), "--out", str(out),
                 "--limit", "2", "--max-new-tokens", "3", "--batch-size", "2"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["judge"]["vision"] is False and m["judge"]["images_shown"] is False
    assert (m["rubric"]["n"], m["rubric"]["n_unparsable"]) == (2, 2)
    assert m["rubric"]["n_judged"] == 0 and "calibration" not in m["rubric"]  # nothing judged: no agreement


@pytest.mark.slow
def test_tiny_judge_all_modes_cli(tiny_model, sample_prepared, tmp_path):
    from tests.conftest import run_cli
    from tests.eval.conftest import CLI_ENV

    sft = _tiny_predictions(sample_prepared, tmp_path / "sft" / "eval", "sft thinks")
    grpo = _tiny_predictions(sample_prepared, tmp_path / "grpo" / "eval", "grpo thinks")
    common = ["--judge-model", str(tiny_model), "--max-new-tokens", "4", "--max-pixels", "12544"]
    r = run_cli(["-m", "eval.judge", "--predictions", str(grpo), "--open", "--out", str(tmp_path / "j"), *common],
                env=CLI_ENV)
    assert r.returncode == 0, r.stderr
    assert "judge rubric" in r.stderr and "unparsable 2 of 2" in r.stdout and "unparsable 1 of 1" in r.stdout
    r = run_cli(["-m", "eval.judge", "--compare", str(sft), str(grpo), "--out", str(tmp_path / "p"), *common],
                env=CLI_ENV)
    assert r.returncode == 0, r.stderr
    w = json.loads((tmp_path / "p" / "metrics.json").read_text())["pairwise"]
    assert (w["n"], w["n_unparsable"], w["win"]["rate"]) == (2, 2, None)


def test_compare_includes_judge_scores(scripted, tmp_path):
    from eval.compare import compare
    from eval.judge import main
    from eval.metrics import compute_metrics
    from eval.scoring import score_record

    install, model = scripted
    install(_rubric_reply)
    for run in ("sft", "grpo"):
        preds = _write(tmp_path / run / "eval" / "predictions.jsonl", RUBRIC_RECS)
        m = compute_metrics([score_record(r, r["completion"], "think") for r in RUBRIC_RECS])
        (tmp_path / run / "eval" / "metrics.json").write_text(json.dumps(m))
    assert main(["--predictions", str(preds), "--judge-model", str(model), "--out", str(tmp_path / "grpo" / "judge")]) == 0
    cmp = compare([str(tmp_path / "sft"), str(tmp_path / "grpo" / "eval")], tmp_path / "cmp")
    assert list(cmp["judge"]) == ["grpo"] and cmp["judge"]["grpo"]["rubric_mean"] == 2.8
    md = (tmp_path / "cmp" / "compare.md").read_text()
    assert "## LLM-judge scores" in md and "| grpo | judge-model (`" in md and "| 2.80 |" in md
