"""Hand-written cases for qlora_grpo.rewards: registry, TRL signature, each reward, the
safety wrapper and the command line."""

from __future__ import annotations

import contextlib
import io
import json
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from qlora_grpo import rewards as rw
from qlora_grpo.rewards import (
    REWARD_ERRORS,
    REWARDS,
    build_reward_funcs,
    make_accuracy_reward,
    make_format_reward,
    make_length_reward,
    make_reasoning_reward,
    reasoning_subscores,
)

REPO = Path(__file__).resolve().parents[2]
OPTS = ["CT", "MRI", "X-ray", "Ultrasound"]
Q = "Which imaging modality is shown? A)CT, B)MRI, C)X-ray, D)Ultrasound"
GOOD_R = (
    "The image is an axial slice with bright cerebrospinal fluid and high soft tissue contrast, "
    "which is typical of a T2 weighted sequence. Bone cortex is dark. Therefore the answer is B."
)


def cols(n: int, *, closed: bool = True, **over) -> dict:
    base = {
        "answer": ["MRI"] * n if closed else ["left lung"] * n,
        "options": [OPTS] * n if closed else [[]] * n,
        "answer_letter": ["B"] * n if closed else [""] * n,
        "answer_type": ["closed"] * n if closed else ["open"] * n,
        "question": [Q] * n,
    }
    base.update(over)
    return base


def trl_extras(n: int) -> dict:
    """What GRPOTrainer passes besides the dataset columns."""
    return {
        "prompts": [[{"role": "user", "content": "q"}]] * n,
        "completion_ids": [[1] * 10] * n,
        "trainer_state": object(),
        "log_extra": lambda column, values: None,
        "log_metric": lambda name, value: None,
    }


# ----------------------------------------------------------------------------- registry


def test_registry_names_and_function_names() -> None:
    assert set(REWARDS) == {"format", "accuracy", "reasoning", "length"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, factory in REWARDS.items():
            for template in ("think", "think-after", "no-think"):
                for mode in ("default", "paper"):
                    assert factory(template, mode).__name__ == name


def test_build_reward_funcs_order_and_weights() -> None:
    funcs, weights = build_reward_funcs({"accuracy": 2.0, "format": 0.5, "length": 1}, "think")
    assert [f.__name__ for f in funcs] == ["accuracy", "format", "length"]
    assert weights == [2.0, 0.5, 1.0]


def test_build_reward_funcs_errors() -> None:
    with pytest.raises(ValueError, match="format, accuracy, reasoning, length"):
        build_reward_funcs({"acuracy": 1.0}, "think")
    with pytest.raises(ValueError, match="valid names"):
        build_reward_funcs({"format": 1.0}, "think", options={"nope": {}})
    with pytest.raises(ValueError, match="bad options"):
        build_reward_funcs({"length": 1.0}, "think", options={"length": {"max_length": 10}})
    with pytest.raises(ValueError):
        build_reward_funcs({}, "think")
    with pytest.raises(ValueError):
        build_reward_funcs({"format": "heavy"}, "think")
    with pytest.raises(ValueError, match="template"):
        build_reward_funcs({"format": 1.0}, "cot")
    with pytest.raises(ValueError, match="mode"):
        build_reward_funcs({"format": 1.0}, "think", mode="strict")


def test_options_are_forwarded() -> None:
    funcs, _ = build_reward_funcs(
        {"accuracy": 1.0}, "no-think", options={"accuracy": {"open_metric": "exact"}}
    )
    out = funcs[0](["<answer>left upper lung</answer>"], **cols(1, closed=False))
    assert out == [0.0]


# ----------------------------------------------------------------------------- format / accuracy


def test_format_reward_templates_and_modes() -> None:
    texts = [
        "<think>r</think><answer>B</answer>",
        " <think>r</think>\n<answer>B</answer>\n",
        "<answer>B</answer>",
        "<answer>B</answer><think>r</think>",
        [{"role": "assistant", "content": "<think>r</think><answer>B</answer>"}],
    ]
    assert make_format_reward("think")(texts) == [1.0, 1.0, 0.0, 0.0, 1.0]
    assert make_format_reward("think", "paper")(texts) == [1.0, 0.0, 0.0, 0.0, 1.0]
    assert make_format_reward("no-think")(texts) == [0.0, 0.0, 1.0, 0.0, 0.0]
    assert make_format_reward("think-after")(texts) == [0.0, 0.0, 0.0, 1.0, 0.0]


def test_accuracy_reward_closed_and_open() -> None:
    acc = make_accuracy_reward("no-think")
    closed = ["<answer>B</answer>", "<answer>(b)</answer>", "<answer>A or B</answer>", "<answer>MRI</answer>"]
    assert acc(closed, **cols(4), **trl_extras(4)) == [1.0, 1.0, 0.0, 1.0]
    opened = ["<answer>Left lung</answer>", "<answer>left upper lung</answer>", "<answer>heart</answer>"]
    out = acc(opened, **cols(3, closed=False))
    assert out == pytest.approx([1.0, 0.8, 0.0])


def test_accuracy_reward_paper_mode() -> None:
    acc = make_accuracy_reward("think", "paper")
    comps = ["<think>r</think><answer> B </answer>", "<think>r</think><answer>(B)</answer>", "B"]
    assert acc(comps, **cols(3)) == [1.0, 0.0, 1.0]


def test_yes_no_closed_without_options_is_scored_open() -> None:
    acc = make_accuracy_reward("no-think")
    kw = {
        "answer": ["yes", "no"],
        "options": [[], []],
        "answer_letter": ["", ""],
        "answer_type": ["closed"] * 2,
    }
    assert acc(["<answer>Yes.</answer>", "<answer>yes</answer>"], **kw) == [1.0, 0.0]


def test_accuracy_without_optional_columns() -> None:
    acc = make_accuracy_reward("no-think")
    assert acc(["<answer>left lung</answer>"], answer=["left lung"]) == [1.0]


# ----------------------------------------------------------------------------- reasoning


def test_reasoning_good_is_high() -> None:
    sub = reasoning_subscores(f"<think>{GOOD_R}</think><answer>B</answer>", Q, OPTS, "B", "think")
    assert sub["present"] == 1.0 and sub["consistency"] == 1.0 and sub["length"] == 1.0
    assert sub["total"] > 0.9


def test_reasoning_missing_or_empty_is_zero() -> None:
    for text in ("<answer>B</answer>", "<think>  </think><answer>B</answer>", "", "<think>x"):
        assert reasoning_subscores(text, Q, OPTS, "B", "think")["total"] == 0.0


def test_reasoning_contradiction() -> None:
    sub = reasoning_subscores(f"<think>{GOOD_R}</think><answer>A</answer>", Q, OPTS, "A", "think")
    assert sub["consistency"] == 0.0 and sub["total"] == 0.0
    # conclusion by option text, and only the *last* conclusion counts
    text = (
        "<think>At first the answer is A. On reflection, the correct option is MRI.</think><answer>B</answer>"
    )
    assert reasoning_subscores(text, Q, OPTS, "B", "think")["consistency"] == 1.0
    text = "<think>The answer is MRI. No wait, I choose C.</think><answer>B</answer>"
    assert reasoning_subscores(text, Q, OPTS, "B", "think")["consistency"] == 0.0
    # discussing another option is not a contradiction
    text = "<think>Option A is unlikely since there is no bone detail.</think><answer>B</answer>"
    assert reasoning_subscores(text, Q, OPTS, "B", "think")["consistency"] == 1.0
    # think-after: the reasoning comes after the answer, same check
    text = f"<answer>C</answer><think>{GOOD_R}</think>"
    assert reasoning_subscores(text, Q, OPTS, "C", "think-after")["consistency"] == 0.0
    # softened penalty
    soft = reasoning_subscores(
        f"<think>{GOOD_R}</think><answer>A</answer>", Q, OPTS, "A", "think", contradiction_penalty=0.5
    )
    assert soft["consistency"] == 0.5


def test_rewards_when_gold_differs_from_the_answer() -> None:
    """Gold letter != the completion's answer: accuracy is 0, and the reasoning's consistency
    is judged against the completion's own answer, never against the gold."""
    acc = make_accuracy_reward("think")
    comps = [f"<think>{GOOD_R}</think><answer>{a}</answer>" for a in ("A", "C", "D", "B")]
    gold = ["B", "B", "A", "D"]
    assert acc(comps, **cols(4, answer_letter=gold)) == [0.0, 0.0, 0.0, 0.0]
    assert acc(comps, **cols(4, answer_letter=["A", "C", "D", "B"])) == [1.0, 1.0, 1.0, 1.0]
    # reasoning concludes B, answer B, gold A: consistent (a wrong answer is not a contradiction)
    consistent = f"<think>{GOOD_R}</think><answer>B</answer>"
    assert reasoning_subscores(consistent, Q, OPTS, "A", "think")["consistency"] == 1.0
    # reasoning concludes B, answer A, gold B: a contradiction even though the reasoning names the gold
    contradicting = f"<think>{GOOD_R}</think><answer>A</answer>"
    assert reasoning_subscores(contradicting, Q, OPTS, "B", "think")["consistency"] == 0.0
    reason = make_reasoning_reward("think")
    out = reason([consistent, contradicting], **cols(2, answer_letter=["A", "B"]))
    assert out[0] > 0.9 and out[1] == 0.0
    # paper mode: exact string compare with a gold that differs
    paper = make_accuracy_reward("think", "paper")
    assert paper(["<think>r</think><answer>A</answer>", "<think>r</think><answer>B</answer>"],
                 **cols(2, answer_letter=["B", "A"])) == [0.0, 0.0]


def test_reasoning_repetition_and_copy() -> None:
    loop = "<think>" + "the lesion is bright " * 30 + "</think><answer>B</answer>"
    assert reasoning_subscores(loop, Q, OPTS, "B", "think")["repetition"] < 0.1
    copy = f"<think>{Q} {Q}</think><answer>B</answer>"
    assert reasoning_subscores(copy, Q, OPTS, "B", "think")["copy"] < 0.2
    assert reasoning_subscores(copy, None, OPTS, "B", "think")["copy"] == 1.0


def test_reasoning_length_band() -> None:
    short = reasoning_subscores("<think>bright fluid</think><answer>B</answer>", None, OPTS, "B", "think")
    assert short["length"] == pytest.approx(2 / 15)
    words = " ".join(f"w{i}" for i in range(225))
    long = reasoning_subscores(f"<think>{words}</think><answer>B</answer>", None, OPTS, "B", "think")
    assert long["length"] == pytest.approx(0.5)
    huge = reasoning_subscores(f"<think>{'x ' * 60_000}</think><answer>B</answer>", None, OPTS, "B", "think")
    assert huge["length"] == 0.0


def test_reasoning_reward_logs_subscores_and_bounds() -> None:
    logged: dict[str, float] = {}
    fn = make_reasoning_reward("think")
    comps = [f"<think>{GOOD_R}</think><answer>B</answer>", "<answer>B</answer>"]
    out = fn(comps, **cols(2), log_metric=lambda k, v: logged.__setitem__(k, v))
    assert out[0] > 0.9 and out[1] == 0.0
    assert logged["reasoning/present"] == 0.5
    assert {"reasoning/length", "reasoning/repetition", "reasoning/copy", "reasoning/consistency"} <= set(
        logged
    )
    assert logged["reward_errors/reasoning"] == 0.0


def test_reasoning_reward_no_think_warns() -> None:
    with pytest.warns(UserWarning, match="always 0"):
        fn = make_reasoning_reward("no-think")
    assert fn(["<answer>B</answer>"], **cols(1)) == [0.0]
    with pytest.raises(ValueError):
        make_reasoning_reward("think", min_words=50, max_words=10)


# ----------------------------------------------------------------------------- length


def test_length_reward_tokens_and_words() -> None:
    fn = make_length_reward("think", max_len=100, buffer=20)
    ids = [[0] * n for n in (10, 80, 90, 100, 150)]
    assert fn(["x"] * 5, completion_ids=ids) == [0.0, 0.0, -0.5, -1.0, -1.0]
    texts = [" ".join(["w"] * n) for n in (80, 95, 1000)]
    assert fn(texts) == [0.0, -0.75, -1.0]
    with pytest.raises(ValueError):
        make_length_reward("think", max_len=10, buffer=0)


# ----------------------------------------------------------------------------- safety


def test_safety_wrapper_scores_zero_counts_and_warns_once() -> None:
    before = REWARD_ERRORS["accuracy"]
    rw._WARNED.discard(("accuracy", "TypeError"))
    acc = make_accuracy_reward("no-think")
    with pytest.warns(RuntimeWarning, match="accuracy"):
        out = acc([42, "<answer>B</answer>", 43], **cols(3))
    assert out == [0.0, 1.0, 0.0]
    assert REWARD_ERRORS["accuracy"] == before + 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second error of the same kind does not warn again
        assert acc([44], **cols(1)) == [0.0]
    assert REWARD_ERRORS["accuracy"] == before + 3


def test_missing_column_does_not_crash() -> None:
    before = REWARD_ERRORS["accuracy"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = make_accuracy_reward("no-think")(["<answer>x</answer>"])  # no "answer" column
    assert out == [0.0]
    assert REWARD_ERRORS["accuracy"] == before + 1


def test_all_rewards_survive_strange_completions() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        funcs, _ = build_reward_funcs({"format": 1, "accuracy": 1, "reasoning": 1, "length": 1}, "think")
    strange = [
        "",
        "\x00\ud800",
        "<think>" * 1000,
        {"content": None},
        [{"role": "assistant", "content": []}],
        None,
    ]
    for f in funcs:
        out = f(strange, **cols(len(strange)), **trl_extras(len(strange)))
        assert len(out) == len(strange) and all(isinstance(v, float) for v in out)


# ----------------------------------------------------------------------------- CLI


def run_cli(tmp_path: Path, lines: list, *args: str) -> subprocess.CompletedProcess:
    """`python -m qlora_grpo.rewards --input IN.jsonl ARGS`, run in this process (so mutation testing sees
    it); `test_cli_missing_file_and_bad_reward` runs the real `-m` entry."""
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    argv = ["--input", str(path), *args]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = rw.main(argv)
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


def test_cli_scores_lines(tmp_path: Path) -> None:
    lines = [
        {"completion": "<think>r</think><answer>B</answer>", "answer": "B", "options": OPTS},
        {"completion": "<think>r</think><answer>b</answer>", "answer": "MRI", "options": OPTS},
        {"completion": "<answer>A</answer>", "answer": "mri", "options": OPTS, "answer_type": "closed"},
        {
            "completion": "<think>r</think><answer>Left lung</answer>",
            "answer": "left lung",
            "answer_type": "open",
        },
        {
            "completion": [{"role": "assistant", "content": "<think>r</think><answer>B</answer>"}],
            "answer": "B",
            "options": OPTS,
        },
    ]
    res = run_cli(tmp_path, lines, "--template", "think", "--rewards", "format,accuracy,reasoning,length")
    assert res.returncode == 0, res.stderr
    rows = [json.loads(x) for x in res.stdout.splitlines()]
    assert [r["accuracy"] for r in rows] == [1.0, 1.0, 0.0, 1.0, 1.0]
    assert [r["format"] for r in rows] == [1.0, 1.0, 0.0, 1.0, 1.0]
    assert set(rows[0]) == {"format", "accuracy", "reasoning", "length"}


def test_cli_paper_mode(tmp_path: Path) -> None:
    lines = [{"completion": "<think>r</think><answer>b</answer>", "answer": "B", "options": OPTS}]
    res = run_cli(tmp_path, lines, "--template", "think", "--mode", "paper")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == {"format": 1.0, "accuracy": 0.0}


def test_cli_malformed_lines(tmp_path: Path) -> None:
    lines = [
        {"completion": "<answer>B</answer>", "answer": "B", "options": OPTS},
        "{not json",
        {"answer": "B"},
        {"completion": "<answer>B</answer>", "answer": "PET", "options": OPTS},
        "",
        {"completion": "<answer>A</answer>", "answer": "A", "options": OPTS},
    ]
    res = run_cli(tmp_path, lines, "--template", "no-think")
    assert res.returncode == 1
    assert "line 2" in res.stderr and "line 3" in res.stderr and "line 4" in res.stderr
    assert "Traceback" not in res.stderr
    assert [json.loads(x)["accuracy"] for x in res.stdout.splitlines()] == [1.0, 1.0]


def test_cli_missing_file_and_bad_reward(tmp_path: Path) -> None:
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "qlora_grpo.rewards",
            "--template",
            "think",
            "--input",
            str(tmp_path / "nope.jsonl"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert res.returncode == 2
    assert res.stderr.startswith("error:") and len(res.stderr.strip().splitlines()) == 1
    res = run_cli(tmp_path, [], "--template", "think", "--rewards", "format,style")
    assert res.returncode == 2 and "valid names" in res.stderr


def test_cli_names_each_bad_line_and_what_is_wrong(tmp_path: Path) -> None:
    ok = {"completion": "<answer>B</answer>", "answer": "B", "options": OPTS}
    lines = [
        "[1, 2]",
        {"answer": "B"},
        {**ok, "completion": 3},
        {**ok, "answer": None},
        {**ok, "options": ["CT", 2]},
        {**ok, "options": "CT"},
        {**ok, "answer_type": "yesno"},
        {**ok, "question": 5},
        {**ok, "answer": "PET"},
        {**ok, "answer": "E"},  # a letter past the last option is no letter, and no option's text
        "{broken",
    ]
    res = run_cli(tmp_path, lines, "--template", "no-think")
    assert res.returncode == 1 and res.stdout == ""
    assert res.stderr.splitlines()[:10] == [
        "error: line 1: line is not a JSON object",
        "error: line 2: missing 'completion'",
        "error: line 3: 'completion' must be a string or a conversational list",
        "error: line 4: missing or non-string 'answer'",
        "error: line 5: 'options' must be a list of strings",
        "error: line 6: 'options' must be a list of strings",
        "error: line 7: 'answer_type' must be 'open' or 'closed'",
        "error: line 8: 'question' must be a string",
        "error: line 9: answer 'PET' is neither an option letter nor exactly one option's text",
        "error: line 10: answer 'E' is neither an option letter nor exactly one option's text",
    ]
    assert res.stderr.splitlines()[10].startswith("error: line 11: ") and len(res.stderr.splitlines()) == 11


def test_cli_rows_derive_the_gold_letter_and_answer_type(tmp_path: Path) -> None:
    # accuracy 1.0 only when the derived gold letter is the one the completion names
    cases = [
        ({"answer": " d ", "options": OPTS}, "Ultrasound", 1.0),  # a lower-case letter with spaces
        ({"answer": "x-ray", "options": OPTS}, "C", 1.0),  # an option's text, normalized
        ({"answer": "X-RAY", "options": OPTS, "answer_type": "CLOSED"}, "C", 1.0),
        ({"answer": "B", "options": OPTS, "answer_type": "Open"}, "B", 1.0),  # open: the text is the answer
        ({"answer": "MRI", "options": OPTS, "answer_type": "open"}, "B", 0.0),  # ... not the letter
        ({"answer": "left lung", "options": []}, "left lung", 1.0),  # no options: open
        ({"answer": "D", "options": ["CT", "MRI", "X-ray"]}, "C", 0.0),  # 'D' is no letter of 3 options
    ]
    lines = [{"completion": f"<answer>{said}</answer>", **row} for row, said, _ in cases]
    res = run_cli(tmp_path, lines[:-1], "--template", "no-think", "--rewards", "accuracy")
    assert res.returncode == 0, res.stderr
    assert [json.loads(x)["accuracy"] for x in res.stdout.splitlines()] == [c[2] for c in cases[:-1]]
    res = run_cli(tmp_path, lines[-1:], "--template", "no-think", "--rewards", "accuracy")
    assert res.returncode == 1 and "answer 'D' is neither an option letter" in res.stderr
    # the question reaches the reasoning reward: copying it lowers the copy term
    copied = {"completion": "<think>which organ is shown here</think><answer>B</answer>", "answer": "B",
              "options": OPTS}
    scores = [json.loads(run_cli(tmp_path, [row], "--template", "think", "--rewards", "reasoning").stdout)
              for row in (copied, {**copied, "question": "Which organ is shown here?"})]
    assert scores[0]["reasoning"] == pytest.approx((5 / 15 + 1 + 1) / 3)
    assert scores[1]["reasoning"] == pytest.approx((5 / 15 + 1 + 0) / 3)


def test_cli_length_and_open_metric_options(tmp_path: Path) -> None:
    words = " ".join(["w"] * 200)  # with "lower" and "lung</answer>": 202 whitespace-separated words
    line = {"completion": f"<think>{words}</think><answer>left lower lung</answer>", "answer": "left lung",
            "answer_type": "open"}
    run = lambda *a: json.loads(run_cli(tmp_path, [line], "--template", "think", *a).stdout)  # noqa: E731
    # defaults: max_len 256, buffer 64: the penalty starts after 192 words: -(202 - 192) / 64
    assert run("--rewards", "length") == {"length": -0.15625}
    assert run("--rewards", "length", "--max-len", "220", "--buffer", "40") == {"length": -0.55}
    assert run("--rewards", "length", "--max-len", "300") == {"length": 0.0}
    # open answers: token F1 by default (2 * 2/3 * 1 / (2/3 + 1) = 0.8), exact match on request
    assert run("--rewards", "accuracy") == {"accuracy": 0.8}
    assert run("--rewards", "accuracy", "--open-metric", "exact") == {"accuracy": 0.0}


# ----------------------------------------------------------------------------- exact values and limits
# (cases found by mutation testing: each pins a number or a bound the hand-written cases above left free)


def sub(reasoning: str, question: str | None = None, options: list | None = None, answer: str = "A", **kw) -> dict:
    return reasoning_subscores(f"<think>{reasoning}</think><answer>{answer}</answer>", question, options, None,
                               "think", **kw)


def test_reasoning_subscores_exact_values_with_the_defaults() -> None:
    s = sub("x y x y x y x y")  # 8 words < 15; 3-grams: 6, of which 2 distinct
    assert s == pytest.approx({"present": 1.0, "length": 8 / 15, "repetition": 2 / 6, "copy": 1.0,
                               "consistency": 1.0, "total": (8 / 15 + 2 / 6 + 1.0) / 3})
    assert sub("x y")["repetition"] == 1.0 and sub("x y")["length"] == pytest.approx(2 / 15)  # no 3-gram at all
    assert sub("x y z")["repetition"] == 1.0  # exactly one 3-gram
    words = " ".join(f"w{k}" for k in range(151))
    assert sub(words)["length"] == pytest.approx(2 - 151 / 150)  # over max_words: linear decay
    assert sub(" ".join(f"w{k}" for k in range(150)))["length"] == 1.0
    assert sub(" ".join(f"w{k}" for k in range(15)))["length"] == 1.0
    # copying the question: 3 words, all one 3-gram of the question -> copy 0 (over the 25 % tolerance)
    assert sub("x y z", question="which organ is x y z here")["copy"] == 0.0
    # half of 4 3-grams copied: 1 - (0.5 - 0.25) / 0.75
    assert sub("a b c d e f", question="a b c d")["copy"] == pytest.approx(1 - 0.25 / 0.75)
    assert sub("a b c d e f", question="q r s")["copy"] == 1.0


def test_reasoning_subscores_limits_and_options() -> None:
    assert sub("", min_words=1)["length"] == 0.0 and sub("", min_words=1)["total"] == 0.0
    # more than 20,000 characters (or 16 per max_words word, if more): length 0, words read up to the cap
    assert sub("x" * 20_000)["length"] == pytest.approx(1 / 15)
    assert sub("x" * 20_001)["length"] == 0.0
    assert sub("x" * 20_001, max_words=1300)["length"] == pytest.approx(1 / 15)  # cap 16 * 1300 = 20,800
    assert sub("x" * 20_801, max_words=1300)["length"] == 0.0
    assert sub("w " * 10_001)["repetition"] == pytest.approx(1 / 9998)  # 10,000 words inside the cap
    # copy n-grams of another size than the repetition n-grams: 2-grams ab bc cd of 5 -> 0.6 copied
    assert sub("a b c d e f", question="a b c d", copy_n=2)["copy"] == pytest.approx(1 - 0.35 / 0.75)
    # weights: a weighted mean of length, repetition and copy
    s = sub("x y x y x y x y", weights=(2.0, 1.0, 0.0))
    assert s["total"] == pytest.approx((2 * 8 / 15 + 2 / 6) / 3)
    s = sub("x y x y x y x y", weights=(0.0, 3.0, 1.0))
    assert s["total"] == pytest.approx((3 * 2 / 6 + 1.0) / 4)
    # consistency needs options: the conclusion says B, the answer A
    concl = "the scan shows fluid so the answer is B"
    assert sub(concl, options=OPTS)["consistency"] == 0.0
    assert sub(concl, options=OPTS, contradiction_penalty=0.5)["consistency"] == 0.5
    assert sub(concl, options=None)["consistency"] == 1.0


def test_reasoning_reward_defaults_columns_and_logged_means() -> None:
    reward = make_reasoning_reward("think")
    long151 = " ".join(f"w{k}" for k in range(151))
    texts = [f"<think>{r}</think><answer>A</answer>" for r in ("x y x y x y x y", long151, "x y z")]
    logged: dict[str, float] = {}
    kw = {"question": ["q", "q", "which organ is x y z here"], "options": [OPTS] * 3, "answer_letter": ["A"] * 3,
          "answer_type": ["closed"] * 3, "log_metric": logged.__setitem__}
    out = reward(texts, **kw)
    expected = [(8 / 15 + 2 / 6 + 1) / 3, (2 - 151 / 150 + 1 + 1) / 3, (3 / 15 + 1 + 0) / 3]
    assert out == pytest.approx(expected)
    assert logged == pytest.approx({"reward_errors/reasoning": 0.0, "reasoning/present": 1.0,
                                    "reasoning/length": (8 / 15 + 2 - 151 / 150 + 3 / 15) / 3,
                                    "reasoning/repetition": (2 / 6 + 1 + 1) / 3, "reasoning/copy": 2 / 3,
                                    "reasoning/consistency": 1.0})
    assert reward(texts) == pytest.approx(expected[:2] + [(3 / 15 + 2) / 3])  # without columns: no question
    # the factory's parameters reach the scores
    assert make_reasoning_reward("think", min_words=2, rep_n=2)(texts[2:]) == pytest.approx([1.0])
    # an open row (or one without a gold letter) is not checked for consistency with its options
    concl = ["<think>the scan shows fluid so the answer is B</think><answer>A</answer>"]
    closed = reward(concl, options=[OPTS], answer_letter=["A"], answer_type=["closed"])
    assert closed == [0.0]
    assert reward(concl, options=[OPTS], answer_letter=["A"], answer_type=["open"])[0] > 0
    assert reward(concl, options=[OPTS], answer_letter=[""], answer_type=[None])[0] > 0


@pytest.mark.parametrize("kw,message", [
    ({"min_words": 0}, "need 0 < min_words <= max_words"),
    ({"min_words": 151}, "need 0 < min_words <= max_words"),
    ({"rep_n": 0}, "rep_n and copy_n must be >= 1"),
    ({"copy_n": 0}, "rep_n and copy_n must be >= 1"),
    ({"copy_tolerance": 1.0}, "need 0 <= copy_tolerance < 1 and 0 <= contradiction_penalty <= 1"),
    ({"copy_tolerance": -0.1}, "need 0 <= copy_tolerance < 1 and 0 <= contradiction_penalty <= 1"),
    ({"contradiction_penalty": 1.01}, "need 0 <= copy_tolerance < 1 and 0 <= contradiction_penalty <= 1"),
    ({"contradiction_penalty": -0.1}, "need 0 <= copy_tolerance < 1 and 0 <= contradiction_penalty <= 1"),
    ({"weights": (1.0, 1.0)}, "weights must be three finite non-negative numbers with a positive sum"),
    ({"weights": (-1.0, 1.0, 1.0)}, "weights must be three finite non-negative numbers with a positive sum"),
    ({"weights": (0.0, 0.0, 0.0)}, "weights must be three finite non-negative numbers with a positive sum"),
    ({"weights": (float("inf"), 1.0, 1.0)}, "weights must be three finite non-negative numbers with a positive sum"),
    ({"weights": (float("nan"), 1.0, 1.0)}, "weights must be three finite non-negative numbers with a positive sum"),
])
def test_reasoning_reward_refuses_bad_parameters(kw, message) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        make_reasoning_reward("think", **kw)


def test_reasoning_reward_accepts_the_edges_of_its_parameters() -> None:
    for kw in ({"min_words": 1, "max_words": 1}, {"min_words": 150}, {"rep_n": 1, "copy_n": 1},
               {"copy_tolerance": 0.0}, {"copy_tolerance": 0.99}, {"contradiction_penalty": 0.0},
               {"contradiction_penalty": 1.0}, {"weights": (0.0, 0.0, 0.5)}, {"weights": (0.0, 1.0, 0.0)}):
        assert callable(make_reasoning_reward("think", **kw)), kw
    for template in ("no-think", "zero-shot"):
        with pytest.warns(UserWarning, match=f"^the reasoning reward is always 0 with template '{template}' "
                                             r"\(no <think> block\)$"):
            make_reasoning_reward(template)


def test_length_reward_defaults_and_limits() -> None:
    reward = make_length_reward("think")  # max_len 256, buffer 64: penalty from 193 tokens on
    ids = lambda *ns: [[1] * n for n in ns]  # noqa: E731
    assert reward(["x"] * 4, completion_ids=ids(192, 193, 224, 400)) == [0.0, -1 / 64, -0.5, -1.0]
    assert make_length_reward("think", max_len=2, buffer=1)(["x", "x y"]) == [0.0, -1.0]
    assert make_length_reward("think", max_len=1, buffer=1)(["x"]) == [-1.0]
    assert make_length_reward("think", max_len=10, buffer=10)(["x"]) == [-0.1]
    for kw in ({"max_len": 0, "buffer": 1}, {"max_len": 10, "buffer": 0}, {"max_len": 10, "buffer": 11}):
        with pytest.raises(ValueError, match=r"^need max_len > 0 and 0 < buffer <= max_len$"):
            make_length_reward("think", **kw)


def test_closed_item_and_accuracy_columns() -> None:
    assert rw.closed_item(OPTS, "B", None) and rw.closed_item(OPTS, "B", "closed") and rw.closed_item(OPTS, "B", "CLOSED")
    assert not rw.closed_item(OPTS, "B", "open") and not rw.closed_item(OPTS, "B", "Open")
    assert not rw.closed_item([], "B", None) and not rw.closed_item(OPTS, "", None)
    acc = make_accuracy_reward("think")
    text = ["<think>r</think><answer>MRI</answer>"]
    assert acc(text, answer=["MRI"], options=[OPTS], answer_letter=["B"], answer_type=["closed"]) == [1.0]
    # options but marked open, or no gold letter: the text is compared with the answer text
    assert acc(text, answer=["MRI scan"], options=[OPTS], answer_letter=["B"], answer_type=["open"]) == [
        pytest.approx(2 / 3)]
    assert acc(text, answer=["MRI scan"], options=[OPTS], answer_letter=[""], answer_type=[None]) == [
        pytest.approx(2 / 3)]
    # open questions in paper mode read Med-R1's extraction: the first <answer> on one line, not the whole text
    paper = make_accuracy_reward("think", "paper")
    assert paper(["<think>r</think>\n<answer>left lung</answer>"], answer=["left lung"], answer_type=["open"]) == [
        1.0]


def test_a_raising_reward_is_scored_0_warned_once_and_counted(monkeypatch) -> None:
    monkeypatch.setattr(rw, "_WARNED", set())
    calls = iter([ValueError("boom"), KeyError("k"), ValueError("again")])

    def one(c, i, kw):
        raise next(calls)

    fn = rw._safe_batch("custom", one)
    before = REWARD_ERRORS["custom"]
    logged: dict[str, float] = {}
    with pytest.warns(RuntimeWarning) as caught:
        assert fn(["a", "b", "c"], log_metric=logged.__setitem__) == [0.0, 0.0, 0.0]
    assert REWARD_ERRORS["custom"] - before == 3 and logged == {"reward_errors/custom": 3.0}
    assert [str(w.message) for w in caught] == [
        "reward 'custom' raised ValueError: boom on one completion; it was scored 0.0 (further ValueError "
        "errors of this reward are only counted in REWARD_ERRORS)",
        "reward 'custom' raised KeyError: 'k' on one completion; it was scored 0.0 (further KeyError "
        "errors of this reward are only counted in REWARD_ERRORS)"]
    assert fn([], log_metric=logged.__setitem__) == [] and logged == {"reward_errors/custom": 0.0}
    inf = rw._safe_batch("custom", lambda c, i, kw: float("inf"))
    assert inf(["a"]) == [0.0]


def test_cli_usage_help_and_choices(capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        rw.main(["--help"])
    assert stop.value.code == 0
    help_text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines by terminal width
    for part in ("usage: python -m qlora_grpo.rewards", " Score completions (JSONL). options:",
                 "--template {think,think-after,no-think,zero-shot}", "--mode {default,paper,paper-eval}",
                 "--input INPUT JSONL file: completion, answer[, options, answer_type, question] --rewards",
                 "comma-separated, from: format, accuracy, reasoning, length --open-metric {f1,exact}",
                 "--max-len MAX_LEN length reward: max completion length --buffer BUFFER length reward: penalty "
                 "ramp width"):
        assert part in help_text, part
    assert help_text.endswith(" length reward: penalty ramp width")
    for argv, message in ((["--input", "x"], "the following arguments are required: --template"),
                          (["--template", "think"], "the following arguments are required: --input"),
                          (["--template", "cot", "--input", "x"], "argument --template: invalid choice: 'cot'"),
                          (["--template", "think", "--mode", "exact", "--input", "x"],
                           "argument --mode: invalid choice: 'exact'"),
                          (["--template", "think", "--open-metric", "F1", "--input", "x"],
                           "argument --open-metric: invalid choice: 'F1'")):
        with pytest.raises(SystemExit) as stop:
            rw.main(argv)
        assert stop.value.code == 2 and message in capsys.readouterr().err, argv


def test_cli_input_that_cannot_be_read_is_one_error_line(tmp_path: Path, capsys) -> None:
    missing, folder = tmp_path / "nope.jsonl", tmp_path / "dir.jsonl"
    folder.mkdir()
    assert rw.main(["--template", "think", "--input", str(missing)]) == 2
    assert capsys.readouterr() == ("", f"error: input file not found: {missing}\n")
    assert rw.main(["--template", "think", "--input", str(folder)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(f"error: cannot read {folder}: [Errno 21] Is a directory") and err.count("\n") == 1
    (tmp_path / "latin1.jsonl").write_bytes(b'{"completion": "<answer>caf\xe9</answer>", "answer": "x"}\n')
    assert rw.main(["--template", "no-think", "--input", str(tmp_path / "latin1.jsonl")]) == 2
    assert capsys.readouterr().err.startswith(f"error: cannot read {tmp_path / 'latin1.jsonl'}: 'utf-8' codec")


def test_cli_a_raising_reward_fails_the_run_but_scores_the_rest(tmp_path: Path, monkeypatch) -> None:
    def broken(template, mode="default", **kw):
        def length(completions, **kwargs):
            REWARD_ERRORS["length"] += 1  # what _safe_batch does when a completion raises
            return [0.0] * len(completions)
        return length

    monkeypatch.setitem(rw.REWARDS, "length", broken)
    ok = {"completion": "<answer>B</answer>", "answer": "B", "options": OPTS}
    res = run_cli(tmp_path, [ok, ok], "--template", "no-think", "--rewards", "accuracy,length")
    assert res.returncode == 1
    assert res.stderr.splitlines() == ["error: line 1: a reward raised; scored 0.0",
                                       "error: line 2: a reward raised; scored 0.0"]
    assert [json.loads(x) for x in res.stdout.splitlines()] == [{"accuracy": 1.0, "length": 0.0}] * 2


@pytest.mark.parametrize("reasoning,answer,consistency", [
    ("answer is B", "A", 0.0),  # a cue at the very start, no sentence end after it
    ("answer is B", "B", 1.0),
    ("the answer is C. then the answer is B", "B", 1.0),  # the last cue counts
    ("answer is C. the answer is B. zanswer is D", "B", 1.0),  # 'zanswer' is no cue: the one before it is
    ("answer is B. zanswer is C", "A", 0.0),
    ("(B)", "A", 1.0),  # no cue at all: nothing to contradict
    ("no clear answer here", "A", 1.0),  # 'answer' without 'is', '=' or ':' is no cue
    ("this option is B", "A", 1.0),  # 'option is' needs correct/best/right/final before it
    ("the correct option is B", "A", 0.0),
    ("I choose B", "A", 0.0),  # first person at the very start
    ("so i" + " " * 22 + "choose B", "A", 0.0),  # the first person within 24 characters of the cue
    ("so i" + " " * 23 + "choose B", "A", 1.0),
    ("the answer is B. Or C", "A", 0.0),  # the conclusion ends at its sentence: B, not the hedge 'B. or C'
    ("the answer is B; or maybe C", "A", 0.0),
])
def test_the_concluding_statement_that_the_consistency_check_reads(reasoning, answer, consistency) -> None:
    assert sub(reasoning, options=OPTS, answer=answer)["consistency"] == consistency
