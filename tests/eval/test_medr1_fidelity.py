"""`--mode paper` gives exactly the decision of Med-R1's evaluation scripts, per template.

The functions below transcribe the decision logic of Med-R1's scripts, from
github.com/Yuxiang-Lai117/Med-R1 at commit 88d76c73e7d21cd958a2b2dc32eca038be766f8f
(src/eval_vqa/, files added in 3fb9b0d / d75b22a, 17 May 2025), lines ~105-141 of each:

    def extract_option_answer(output_str):
        answer_pattern = r'<answer>\\s*(\\w+)\\s*</answer>'
        match = re.search(answer_pattern, output_str)
        if match:
            return match.group(1)
        return None
    ...
    original_output = model_output            # batch_decode(skip_special_tokens=True), no strip
    model_answer = <per script, below>
    ground_truth = re.search(r'<answer>\\s*(\\w+)\\s*</answer>', input_example['solution']).group(1)
    if model_answer is not None and model_answer == ground_truth:
        correct_number += 1
    accuracy = correct_number / len(data) * 100

`model_answer` per script:

- test_qwen2vl_vqa.py (think) and test_qwen2_5vl_vqa.py (think):
  ``extract_option_answer(original_output)``;
- test_qwen2vl_vqa_zero_shot.py: ``original_output`` (the raw text);
- test_qwen2_5vl_vqa_nothink.py: ``extract_option_answer(original_output) if "answer" in
  original_output else original_output``;
- test_qwen2vl_vqa_nothink.py: ``original_output`` (as committed: the extraction line is commented
  out, so every ``<answer>B</answer>`` is wrong; it cannot have produced a trained no-think model's
  published numbers, so paper mode follows the Qwen2.5 no-think script, which agrees with it on
  every output without "answer"). There is no qwen2_5vl zero-shot script.
- think-after: Med-R1 ships no script; paper mode uses the think script's extraction (re.search
  finds the answer block wherever it stands).
"""

from __future__ import annotations

import json
import re

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from eval.score import main as score_main
from eval.score import score_file
from eval.scoring import score_record
from qlora_grpo.parsing import MEDR1_EVAL_SCRIPT

MEDR1_COMMIT = "88d76c73e7d21cd958a2b2dc32eca038be766f8f"
OPTIONS = ["Right Atrium", "Thyroid Gland", "common bile duct", "Thyroid gland"]
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ----------------------------------------------------------------- the transcription


def extract_option_answer(output_str):
    answer_pattern = r'<answer>\s*(\w+)\s*</answer>'
    match = re.search(answer_pattern, output_str)
    if match:
        return match.group(1)
    return None


def _medr1_correct(model_answer, solution: str) -> bool:
    ground_truth = re.search(r'<answer>\s*(\w+)\s*</answer>', solution).group(1)
    return model_answer is not None and model_answer == ground_truth


def qwen2vl_think(output: str, solution: str) -> bool:  # test_qwen2vl_vqa.py
    return _medr1_correct(extract_option_answer(output), solution)


qwen2_5vl_think = qwen2vl_think  # test_qwen2_5vl_vqa.py: the same two lines


def qwen2vl_zero_shot(output: str, solution: str) -> bool:  # test_qwen2vl_vqa_zero_shot.py
    return _medr1_correct(output, solution)


def qwen2vl_nothink(output: str, solution: str) -> bool:  # test_qwen2vl_vqa_nothink.py (as committed)
    return _medr1_correct(output, solution)


def qwen2_5vl_nothink(output: str, solution: str) -> bool:  # test_qwen2_5vl_vqa_nothink.py
    if "answer" in output:
        model_answer = extract_option_answer(output)
    else:
        model_answer = output
    return _medr1_correct(model_answer, solution)


SCRIPT_OF_TEMPLATE = {
    "think": (qwen2vl_think, qwen2_5vl_think),
    "think-after": (qwen2vl_think,),  # no Med-R1 script: the think script's rule
    "no-think": (qwen2_5vl_nothink,),
    "zero-shot": (qwen2vl_zero_shot,),
}


# ----------------------------------------------------------------- outputs: random + adversarial

FRAGMENTS = ["<answer>", "</answer>", "<think>", "</think>", "<answer", "answer>", "answer", "Answer",
             "</", "<", ">", " ", "  ", "\n", "\t", "\r", "\u00a0", "\u2003", "\u3000", "A", "B", "C", "D", "E",
             "b", "AB", "B.", "(B)", "B)", "B:", "_", "B_", "1", "\u0661", "\uff22", "\u0392", "B\u0301",
             "Thyroid gland", "Thyroid Gland", "The answer is B", "answer: B", "<answer> B </answer>",
             "<answer>B</answer>", "<answer>\nC\n</answer>", "<answer>B C</answer>", "<answer></answer>",
             "<think>reasoning</think>", "\u200b", "<|im_end|>"]
outputs = st.one_of(
    st.lists(st.sampled_from(FRAGMENTS), max_size=12).map("".join),
    st.text(alphabet=st.sampled_from(list("<>/answerthikABCDb \n\t_")), max_size=40),
    st.text(max_size=30),
)
golds = st.sampled_from("ABCD")
ADVERSARIAL = ["B", "B\n", " B", "b", "<answer>B</answer>", "<answer> B </answer>", "<answer>\nB\n</answer>",
               "<answer>B.</answer><answer>B</answer>", "<answer>BB</answer>", "<answer>B_</answer>",
               "<think>x</think><answer>B</answer>", "<answer>B</answer><think>x</think>", "answer B", "",
               "<answer>\uff22</answer>", "\uff22", "<Answer>B</Answer>", "<answer>B</answer", "Thyroid gland",
               "The answer is B", "<answer> B</answer> <answer> C </answer>"]


def _row(gold: str) -> dict:
    return {"id": "r", "options": OPTIONS, "answer": OPTIONS["ABCD".index(gold)], "answer_letter": gold,
            "answer_type": "closed"}


def _check(template: str, output: str, gold: str) -> None:
    ours = score_record(_row(gold), output, template, "paper")["correct"]
    for script in SCRIPT_OF_TEMPLATE[template]:
        assert ours == float(script(output, f"<answer> {gold} </answer>")), (template, script.__name__, output)


def test_the_scripts_named_are_the_ones_transcribed() -> None:
    assert MEDR1_EVAL_SCRIPT == {"think": "test_qwen2vl_vqa.py", "think-after": "test_qwen2vl_vqa.py",
                                 "no-think": "test_qwen2_5vl_vqa_nothink.py",
                                 "zero-shot": "test_qwen2vl_vqa_zero_shot.py"}


@SETTINGS
@given(output=outputs, gold=golds)
def test_think_matches_medr1_scripts(output: str, gold: str) -> None:
    _check("think", output, gold)
    _check("think-after", output, gold)


@SETTINGS
@given(output=outputs, gold=golds)
def test_no_think_matches_medr1_script(output: str, gold: str) -> None:
    _check("no-think", output, gold)


@SETTINGS
@given(output=outputs, gold=golds)
def test_zero_shot_matches_medr1_script(output: str, gold: str) -> None:
    _check("zero-shot", output, gold)


def test_adversarial_outputs_every_template() -> None:
    for template in SCRIPT_OF_TEMPLATE:
        for output in ADVERSARIAL:
            for gold in "ABCD":
                _check(template, output, gold)
    # the decisions that used to differ from the scripts: a bare letter under think, tags under zero-shot
    assert score_record(_row("B"), "B", "think", "paper")["correct"] == 0.0
    assert score_record(_row("B"), "B", "no-think", "paper")["correct"] == 1.0
    assert score_record(_row("B"), "<answer>B</answer>", "zero-shot", "paper")["correct"] == 0.0
    # the committed Qwen2-VL no-think script disagrees with the Qwen2.5 one only on outputs with "answer"
    assert qwen2vl_nothink("<answer>B</answer>", "<answer> B </answer>") is False
    assert qwen2_5vl_nothink("<answer>B</answer>", "<answer> B </answer>") is True


@SETTINGS
@given(output=outputs, gold=golds)
@example(output="answer", gold="B")
def test_qwen2vl_nothink_differs_only_on_answer_outputs(output: str, gold: str) -> None:
    if "answer" not in output:
        assert qwen2vl_nothink(output, f"<answer> {gold} </answer>") == \
            bool(score_record(_row(gold), output, "no-think", "paper")["correct"])


def test_eval_score_cli_gives_medr1_accuracy(tmp_path) -> None:
    """Through the entry point (eval.score --mode paper): per-record decisions and accuracy == Med-R1's correct / N * 100."""
    cases = [(o, g) for o in ADVERSARIAL for g in "AB"]
    for template, scripts in SCRIPT_OF_TEMPLATE.items():
        preds = tmp_path / f"{template}.jsonl"
        preds.write_text("".join(json.dumps({**_row(g), "id": f"r{i}", "completion": o}) + "\n"
                                 for i, (o, g) in enumerate(cases)))
        out = tmp_path / f"out-{template}"
        if template == "think":
            assert score_main(["--predictions", str(preds), "--template", template, "--mode", "paper",
                               "--out", str(out)]) == 0
        else:  # what the CLI calls, without drawing the PNG (seconds on a small CPU)
            score_file(preds, template, out, "paper", plot=False)
        want = [scripts[0](o, f"<answer> {g} </answer>") for o, g in cases]
        rescored = [json.loads(line)["correct"] for line in (out / "predictions.jsonl").read_text().splitlines()]
        assert rescored == [float(w) for w in want], template
        got = 100 * json.loads((out / "metrics.json").read_text())["overall"]["accuracy"]
        assert abs(got - sum(want) / len(cases) * 100) < 0.01, template  # metrics.json rounds to 4 digits
