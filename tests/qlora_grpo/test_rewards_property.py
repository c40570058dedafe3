"""Property-based tests (hypothesis) for parsing and rewards.

1. No completion scores accuracy 1 (default mode) unless its single answer block holds
   the gold letter or the gold option text.
2. Paper mode is Med-R1's regexes exactly: format == re.fullmatch(...), and the linear
   answer extractors == re.search(...).
3. Nothing crashes on arbitrary text, in any template and mode.
"""

from __future__ import annotations

import re
import unicodedata

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from qlora_grpo.parsing import (
    MEDR1_EVAL_ANSWER_REGEX,
    MEDR1_FORMAT_REGEX,
    MEDR1_TRAIN_ANSWER_REGEX,
    MODES,
    TEMPLATES,
    format_ok_paper,
    medr1_eval_answer,
    medr1_train_answer,
    normalize_option_text,
    parse_completion,
    score_closed,
    score_open,
)
from qlora_grpo.rewards import REWARD_ERRORS, build_reward_funcs

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
OPTS = ["CT", "MRI", "X-ray", "Ultrasound"]

FRAGMENTS = [
    "<think>",
    "</think>",
    "<answer>",
    "</answer>",
    "<think",
    "answer>",
    "</",
    "<",
    " ",
    "\n",
    "\t",
    "\u00a0",
    "\u2003",
    "A",
    "B",
    "b",
    "C",
    "D",
    "E",
    "(B)",
    "B)",
    "B.",
    "B:",
    "MRI",
    "mri",
    "CT",
    "X-ray",
    "Ultrasound",
    "Option ",
    "The answer is ",
    " or ",
    " and ",
    ", ",
    "\u0412",
    "\u0392",
    "Ｂ",
    "\u200b",
    "\u0301",
    "reasoning",
    "the answer is A",
    "x",
    "_",
    "é",
]
fragment_text = st.lists(st.sampled_from(FRAGMENTS), max_size=14).map("".join)
short_fragments = st.lists(st.sampled_from(FRAGMENTS), max_size=4).map("".join)
# mostly-well-formed completions, so that accuracy 1 is actually reached
tagged_text = st.builds(
    lambda pre, think, ans, post: f"{pre}<think>{think}</think>{pre}<answer>{ans}</answer>{post}",
    st.sampled_from(["", " ", "\n", "x"]),
    short_fragments,
    st.one_of(
        short_fragments,
        st.tuples(
            st.sampled_from(["", " ", "Option ", "The answer is ", "answer: ", "\u200b"]),
            st.sampled_from(["A", "b", "(C)", "D)", "B.", "c: ", "\u0412", "Ｂ", "MRI", "x-ray", "CT"]),
            st.sampled_from(["", " ", "MRI", " CT", " or B", ", A", ".", "\u0301"]),
        ).map("".join),
    ),
    st.sampled_from(["", "\n", "x"]),
)
any_text = st.one_of(fragment_text, st.text(max_size=200))


# ----------------------------------------------------------------------------- 1. soundness


@settings(SETTINGS, max_examples=600)
@given(
    text=st.one_of(fragment_text, tagged_text, tagged_text, tagged_text),
    template=st.sampled_from(TEMPLATES),
    gold=st.integers(0, 3),
)
def test_accuracy_one_needs_gold_in_answer_block(text: str, template: str, gold: int) -> None:
    letter = "ABCD"[gold]
    score, parsed, chosen = score_closed(text, OPTS, letter, template)
    if score == 1.0:
        event("accuracy 1")
        ans = parsed.answer
        assert ans is not None and chosen == letter
        if template != "zero-shot":
            assert "<answer>" in text and ans in text
        nfkc = unicodedata.normalize("NFKC", ans)
        has_letter = re.search(rf"(?<![A-Za-z]){letter}(?![A-Za-z])", nfkc, re.IGNORECASE) is not None
        has_text = normalize_option_text(OPTS[gold]) in normalize_option_text(ans)
        assert has_letter or has_text, (text, ans)


@SETTINGS
@given(text=fragment_text, template=st.sampled_from(["think", "think-after", "no-think"]))
def test_answer_inside_think_is_never_read(text: str, template: str) -> None:
    wrapped = f"<think>{text}<answer>B</answer></think>"
    assert score_closed(wrapped, OPTS, "B", template)[0] == 0.0


# ----------------------------------------------------------------------------- 2. paper == Med-R1 regexes


@SETTINGS
@given(
    text=st.one_of(fragment_text, tagged_text), template=st.sampled_from(["think", "think-after", "no-think"])
)
def test_paper_format_equals_medr1_regex(text: str, template: str) -> None:
    expected = 1.0 if re.fullmatch(MEDR1_FORMAT_REGEX[template], text, re.DOTALL) else 0.0
    assert float(format_ok_paper(text, template)) == expected
    funcs, _ = build_reward_funcs({"format": 1.0}, template, "paper")
    assert funcs[0]([text]) == [expected]


# small alphabet: many lines, partial tags, several <answer> per line
line_text = st.lists(
    st.sampled_from(["<answer>", "</answer>", "\n", "x", " ", "<", "/", "answer>", "B", "\r"]), max_size=20
).map("".join)


@SETTINGS
@given(text=st.one_of(any_text, line_text))
def test_paper_extractors_equal_medr1_regexes(text: str) -> None:
    m = re.search(MEDR1_TRAIN_ANSWER_REGEX, text)
    assert medr1_train_answer(text) == (m.group(1) if m else None)
    m = re.search(MEDR1_EVAL_ANSWER_REGEX, text)
    assert medr1_eval_answer(text) == (m.group(1) if m else None)


@SETTINGS
@given(text=st.one_of(fragment_text, tagged_text), gold=st.sampled_from(["A", "B", "C"]))
def test_paper_accuracy_equals_medr1_compare(text: str, gold: str) -> None:
    # Med-R1 accuracy_reward: search answer tag, else whole text; strip; exact compare
    m = re.search(r"<answer>(.*?)</answer>", text)
    student = m.group(1).strip() if m else text.strip()
    expected = 1.0 if student == gold else 0.0
    assert score_closed(text, OPTS, gold, "think", "paper")[0] == expected


# ----------------------------------------------------------------------------- 3. robustness


@SETTINGS
@given(text=any_text, template=st.sampled_from(TEMPLATES), mode=st.sampled_from(MODES))
def test_no_crash_on_arbitrary_text(text: str, template: str, mode: str) -> None:
    p = parse_completion(text, template, mode)
    assert isinstance(p.format_ok, bool)
    s, _, _ = score_closed(text, OPTS, "B", template, mode)
    assert s in (0.0, 1.0)
    o, _ = score_open(text, "left lung", template, mode)
    assert 0.0 <= o <= 1.0


@settings(max_examples=150, deadline=None)
@given(texts=st.lists(any_text, min_size=1, max_size=4), template=st.sampled_from(["think", "think-after"]))
def test_rewards_never_raise_or_error(texts: list[str], template: str) -> None:
    funcs, _ = build_reward_funcs({"format": 1, "accuracy": 1, "reasoning": 1, "length": 1}, template)
    n = len(texts)
    kw = {
        "answer": ["MRI"] * n,
        "options": [OPTS] * n,
        "answer_letter": ["B"] * n,
        "answer_type": ["closed"] * n,
        "question": ["Which modality? A)CT, B)MRI"] * n,
    }
    before = sum(REWARD_ERRORS.values())
    for f in funcs:
        out = f(texts, **kw)
        assert len(out) == n
        lo, hi = (-1.0, 0.0) if f.__name__ == "length" else (0.0, 1.0)
        assert all(lo <= v <= hi for v in out)
    assert sum(REWARD_ERRORS.values()) == before
