"""Edge cases of qlora_grpo.rewards that tests/qlora_grpo/test_rewards.py leaves free: the exact texts of
the errors a user sees, the logging of a failing reward, parameters that must reach the score, paper
mode details and the command line's output (cases found by mutation testing)."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import warnings
from pathlib import Path

import pytest

from qlora_grpo import rewards as rw
from qlora_grpo.rewards import (
    build_reward_funcs,
    make_accuracy_reward,
    make_reasoning_reward,
    reasoning_subscores,
)

OPTS = ["CT", "MRI", "X-ray", "Ultrasound"]
VALID_NAMES = "format, accuracy, reasoning, length"


def run_main(tmp_path: Path, rows: list[dict], *args: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `python -m qlora_grpo.rewards --input ROWS.jsonl ARGS`, in this process."""
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = rw.main(["--input", str(path), *args])
    return code, out.getvalue(), err.getvalue()


# ----------------------------------------------------------------------------- error messages


def test_unknown_template_or_mode_names_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"^unknown template 'cot'; valid: think, think-after, no-think, zero-shot$"):
        build_reward_funcs({"format": 1.0}, "cot")
    with pytest.raises(ValueError, match=r"^unknown mode 'strict'; valid: default, paper, paper-eval$"):
        build_reward_funcs({"format": 1.0}, "think", mode="strict")


@pytest.mark.parametrize("rewards,options,message", [
    ({}, None, f"no rewards selected; valid names: {VALID_NAMES}"),
    ({"acuracy": 1.0, "format": 1.0}, {"nope": {}},
     f"unknown reward name(s) 'acuracy', 'nope'; valid names: {VALID_NAMES}"),
    ({"format": "heavy"}, None, "weight of reward 'format' must be a number, got 'heavy'"),
    ({"format": float("inf")}, None, "weight of reward 'format' must be finite, got inf"),
    ({"length": 1.0}, {"length": [("max_len", 10)]}, "options for reward 'length' must be a mapping, got list"),
    ({"length": 1.0}, {"length": []}, "options for reward 'length' must be a mapping, got list"),
    ({"accuracy": 1.0}, {"accuracy": {"open_metric": "F1"}}, "unknown open_metric 'F1'; valid: f1, exact"),
])
def test_build_reward_funcs_says_exactly_what_is_wrong(rewards, options, message) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        build_reward_funcs(rewards, "think", options=options)


# ----------------------------------------------------------------------------- safety wrapper


def test_a_failing_completion_is_logged_with_the_text_of_its_warning(monkeypatch, caplog) -> None:
    monkeypatch.setattr(rw, "_WARNED", set())
    acc = make_accuracy_reward("no-think")
    with caplog.at_level(logging.WARNING, logger="qlora_grpo.rewards"), pytest.warns(RuntimeWarning) as caught:
        assert acc([42], answer=["MRI"]) == [0.0]
    assert len(caught) == 1
    assert caplog.messages == [str(caught[0].message)]
    assert caplog.messages[0].startswith("reward 'accuracy' raised TypeError: ")


def test_a_non_finite_score_is_scored_0_and_named_in_the_warning(monkeypatch) -> None:
    monkeypatch.setattr(rw, "_WARNED", set())
    monkeypatch.setattr(rw, "score_open", lambda *a, **kw: (float("nan"), None))
    with pytest.warns(RuntimeWarning) as caught:
        assert make_accuracy_reward("no-think")(["<answer>x</answer>"], answer=["x"]) == [0.0]
    assert [str(w.message) for w in caught] == [
        "reward 'accuracy' raised ValueError: non-finite reward nan on one completion; it was scored 0.0 "
        "(further ValueError errors of this reward are only counted in REWARD_ERRORS)"]


# ----------------------------------------------------------------------------- reasoning reward


def reasoning_reward_of(reasoning: str, question: str = "", **factory_kw) -> float:
    """The reasoning reward of one closed-question completion that answers A."""
    reward = make_reasoning_reward("think", **factory_kw)
    text = f"<think>{reasoning}</think><answer>A</answer>"
    return reward([text], question=[question], options=[OPTS], answer_letter=["A"], answer_type=["closed"])[0]


LOOP = "x y x y x y x y"  # 8 words: length 8/15; 3-grams: 2 distinct of 6; 2-grams: 2 distinct of 7


@pytest.mark.parametrize("factory_kw,reasoning,question,expected", [
    ({}, LOOP, "", (8 / 15 + 2 / 6 + 1) / 3),
    ({"min_words": 2, "max_words": 4}, LOOP, "", (0 + 2 / 6 + 1) / 3),  # twice max_words: length 0
    ({"rep_n": 2}, LOOP, "", (8 / 15 + 2 / 7 + 1) / 3),
    ({"copy_n": 2}, LOOP, "x y", (8 / 15 + 2 / 6 + (1 - 0.25 / 0.75)) / 3),  # 2-grams: 1 of 2 copied
    ({"copy_tolerance": 0.0}, LOOP, "x y x", (8 / 15 + 2 / 6 + 0.5) / 3),  # 3-grams: 1 of 2 copied
    ({}, LOOP, "x y x", (8 / 15 + 2 / 6 + (1 - 0.25 / 0.75)) / 3),
    ({"weights": (1.0, 0.0, 0.0)}, LOOP, "", 8 / 15),
    ({"contradiction_penalty": 0.5}, "the answer is B", "", 0.5 * (4 / 15 + 1 + 1) / 3),
    ({}, "the answer is B", "", 0.0),
])
def test_every_factory_parameter_reaches_the_reasoning_reward(factory_kw, reasoning, question, expected) -> None:
    assert reasoning_reward_of(reasoning, question, **factory_kw) == pytest.approx(expected)


def test_a_contradiction_scores_0_without_counting_as_an_error() -> None:
    logged: dict[str, float] = {}
    reward = make_reasoning_reward("think")
    text = "<think>the scan shows fluid so the answer is B</think><answer>A</answer>"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a failing completion would warn
        out = reward([text], options=[OPTS], answer_letter=["A"], answer_type=["closed"],
                     log_metric=logged.__setitem__)
    assert out == [0.0]
    assert logged["reward_errors/reasoning"] == 0.0 and logged["reasoning/consistency"] == 0.0


@pytest.mark.parametrize("reasoning,answer,consistency", [
    # the conclusion is read from the 200 characters after the cue
    ("the answer is B" + " " * 199 + "or C", "A", 0.0),
    ("the answer is B" + " " * 199 + "or C", "B", 1.0),
    # a sentence mark right after the cue does not end the conclusion before it has begun
    ("the answer is? MRI", "A", 0.0),
    ("the answer is! MRI", "B", 1.0),
])
def test_where_the_concluding_statement_ends(reasoning, answer, consistency) -> None:
    text = f"<think>{reasoning}</think><answer>{answer}</answer>"
    assert reasoning_subscores(text, None, OPTS, None, "think")["consistency"] == consistency


# ----------------------------------------------------------------------------- paper mode


def test_paper_mode_open_question_without_answer_block_compares_the_whole_text() -> None:
    """Med-R1's training extraction falls back to the whole text; our parser finds no answer."""
    kw = {"answer": ["left lung"], "answer_type": ["open"]}
    assert make_accuracy_reward("think", "paper")(["left lung"], **kw) == [1.0]
    assert make_accuracy_reward("think")(["left lung"], **kw) == [0.0]


# ----------------------------------------------------------------------------- command line


def test_cli_paper_mode_with_the_gold_given_as_option_text(tmp_path: Path) -> None:
    """Paper mode compares letters case-sensitively: the letter derived from 'MRI' must be 'B'."""
    row = {"completion": "<think>r</think><answer>B</answer>", "answer": "mri", "options": OPTS}
    assert run_main(tmp_path, [row], "--template", "think", "--mode", "paper", "--rewards", "accuracy") == (
        0, '{"accuracy": 1.0}\n', "")


def test_cli_reasoning_with_a_no_think_template_is_0_without_a_warning(tmp_path: Path) -> None:
    row = {"completion": "<answer>B</answer>", "answer": "B", "options": OPTS}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run_main(tmp_path, [row], "--template", "no-think", "--rewards", "reasoning")
    assert result == (0, '{"reasoning": 0.0}\n', "")
    assert [str(w.message) for w in caught] == []


def test_cli_length_is_printed_as_0_up_to_the_start_of_the_ramp(tmp_path: Path) -> None:
    # max_len 4, buffer 2: no penalty up to 2 whitespace-separated words, -0.5 at 3
    rows = [{"completion": f"<answer>{said}</answer>", "answer": "x"} for said in ("left lung", "left upper lung")]
    code, out, _ = run_main(tmp_path, rows, "--template", "no-think", "--rewards", "length", "--max-len", "4",
                            "--buffer", "2")
    assert (code, out) == (0, '{"length": 0.0}\n{"length": -0.5}\n')  # not "-0.0"


def test_cli_input_is_read_as_utf8_whatever_the_locale(tmp_path: Path, ascii_locale) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes('{"completion": "<answer>caf\u00e9</answer>", "answer": "caf\u00e9"}\n'.encode("utf-8"))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = rw.main(["--input", str(path), "--template", "no-think", "--rewards", "accuracy"])
    assert (code, out.getvalue()) == (0, '{"accuracy": 1.0}\n')
