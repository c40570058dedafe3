"""Hand-written cases for qlora_grpo.parsing: tag structure, choice matching, open answers,
Med-R1 paper modes, and linear-time behaviour on adversarial inputs."""

from __future__ import annotations

import re
import time

import pytest

from qlora_grpo.parsing import (
    MEDR1_EVAL_ANSWER_REGEX,
    MEDR1_FORMAT_REGEX,
    MEDR1_TRAIN_ANSWER_REGEX,
    Parsed,
    completion_text,
    format_ok_paper,
    match_choice,
    medr1_eval_answer,
    medr1_train_answer,
    normalize_text,
    parse_completion,
    score_closed,
    score_open,
    token_f1,
    token_recall,
    yes_no,
)

OPTS = ["CT", "MRI", "X-ray", "Ultrasound"]
R = "The image shows bright CSF on a T2 weighted sequence, typical of magnetic resonance."


def think(answer: str, reasoning: str = R) -> str:
    return f"<think>{reasoning}</think>\n<answer>{answer}</answer>"


# ----------------------------------------------------------------------------- match_choice

CHOICES = [
    # accepted letter forms
    ("B", "B"),
    ("b", "B"),
    ("(B)", "B"),
    ("( b )", "B"),
    ("[B]", "B"),
    ("B)", "B"),
    ("B.", "B"),
    ("B:", "B"),
    ("B: MRI", "B"),
    ("B) MRI", "B"),
    ("B)MRI", "B"),
    ("(B) MRI.", "B"),
    ("B. magnetic resonance, T2 weighted", "B"),
    ("B MRI", "B"),
    ("Option B", "B"),
    ("option (b)", "B"),
    ("Answer: B", "B"),
    ("The answer is B", "B"),
    ("The correct answer is (C) X-ray.", "C"),
    ("My final answer is d", "D"),
    # option text, normalized
    ("MRI", "B"),
    ("mri.", "B"),
    ("  x ray ", "C"),
    ("X-RAY!", "C"),
    ("The answer is Ultrasound", "D"),
    ("ＭＲＩ", "B"),  # full-width: NFKC compatibility form of MRI
    ("Ｂ", "B"),  # full-width B
    # several answers / hedges
    ("A, B", None),
    ("A or B", None),
    ("A and B", None),
    ("A/B", None),
    ("A. or B.", None),
    ("A: B", None),
    # hedges in any letter case and with any connector case
    ("A. or b", None),
    ("a. or b.", None),
    ("A) or (b)", None),
    ("B. and a", None),
    ("B. and c.", None),
    ("A. OR B", None),
    ("A. Or b", None),
    ("C) X-ray AND D", None),
    ("B) MRI and A) CT", None),
    ("A) CT or b) MRI", None),
    ("A: b", None),
    # not hedges: the English article "a" after a connector, another word after the letter
    ("B) MRI and a mass", "B"),
    ("B. or a T2 sequence", "B"),
    ("A) CT or B) MRI", None),
    ("A) CT, B) MRI, C) X-ray, D) Ultrasound", None),
    ("CT, MRI, X-ray, Ultrasound", None),
    ("B) CT", None),  # letter and text name different options
    ("B CT", None),
    ("AB", None),
    # out of range, empty, junk
    ("E", None),
    ("(E)", None),
    ("", None),
    ("   ", None),
    ("B is correct", None),
    ("A mass", None),  # English article, not option A
    ("I think B", None),
    # unicode look-alikes and invisible characters
    ("\u0412", None),  # Cyrillic Ve looks like B
    ("\u0392", None),  # Greek Beta
    ("(\u0412)", None),
    ("B\u200b", None),  # zero-width space
    ("\u200bB", None),
    ("B\u0301", None),  # B + combining acute: a different character
    ("М\u0420\u0422", None),  # "MRT"-looking Cyrillic is not the option text MRI
]


@pytest.mark.parametrize("answer,expected", CHOICES)
def test_match_choice(answer: str, expected: str | None) -> None:
    assert match_choice(answer, OPTS) == expected


def test_match_choice_edge_inputs() -> None:
    assert match_choice(None, OPTS) is None
    assert match_choice("B", []) is None
    assert match_choice("C", ["yes", "no"]) is None  # only A and B exist
    assert match_choice("B", ["yes", "no"]) == "B"
    assert match_choice("no", ["yes", "no"]) == "B"
    assert match_choice("B", ["CT", "MRI", None]) == "B"  # missing option tolerated
    assert match_choice("same", ["same", "same"]) is None  # duplicate options: ambiguous
    assert match_choice("A" * 2000, OPTS) is None  # too long to be one choice


def test_match_choice_long_hedge_is_fast() -> None:
    t0 = time.perf_counter()
    assert match_choice("A, " * 350_000, OPTS) is None
    assert time.perf_counter() - t0 < 0.05


# ----------------------------------------------------------------------------- completion_text


def test_completion_text_forms() -> None:
    assert completion_text("x") == "x"
    assert completion_text(None) == ""
    assert completion_text([{"role": "assistant", "content": "x"}]) == "x"
    parts = [{"type": "text", "text": "<answer>"}, {"type": "image"}, {"type": "text", "text": "B</answer>"}]
    assert completion_text([{"role": "assistant", "content": parts}]) == "<answer>B</answer>"
    assert completion_text({"role": "assistant", "content": "y"}) == "y"
    assert completion_text([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]) == "a"
    with pytest.raises(TypeError):
        completion_text(42)
    with pytest.raises(TypeError):
        completion_text(["not a message"])


# ----------------------------------------------------------------------------- default parsing

# (template, text, answer, format_ok, error substring or None)
STRUCTURE = [
    ("think", think("B"), "B", True, None),
    ("think", f"  \n<think>{R}</think><answer> B </answer>\n ", "B", True, None),
    ("think", "<think></think><answer>B</answer>", "B", True, None),  # empty reasoning: format ok
    ("think", "<answer>B</answer>", "B", False, "expected"),
    ("think", "<answer>B</answer><think>r</think>", "B", False, "expected"),
    ("think", "<think>r</think><answer>A</answer><answer>B</answer>", None, False, "2 <answer> blocks"),
    ("think", "<think>r</think><answer>B</answer><answer>B</answer>", None, False, "2 <answer> blocks"),
    ("think", "<think>r <answer>B</answer></think><answer>B</answer>", None, False, "nested"),
    ("think", "<think>the answer is <answer>B</answer></think>", None, False, "nested"),
    ("think", "<think><think>r</think></think><answer>B</answer>", None, False, "nested"),
    ("think", "<answer><answer>B</answer></answer>", None, False, "nested"),
    ("think", "<think>r</think><think>s</think><answer>B</answer>", "B", False, "2 <think> blocks"),
    ("think", "Sure! " + think("B"), "B", False, "text outside"),
    ("think", think("B") + " Hope this helps.", "B", False, "text outside"),
    ("think", "<think>r</think> so <answer>B</answer>", "B", False, "text outside"),
    ("think", "<think>r</think><answer></answer>", None, False, "empty answer"),
    ("think", "<think>r</think><answer>  \n </answer>", None, False, "empty answer"),
    ("think", "<think>r</think>", None, False, "no <answer>"),
    ("think", "<think>" + R, None, False, "unclosed"),  # truncated at max length
    ("think", "<think>r</think><answer>B", None, False, "unclosed"),
    ("think", "<think>r</think></answer>B</answer>", None, False, "stray"),
    ("think", "<THINK>r</THINK><ANSWER>B</ANSWER>", None, False, "no <answer>"),
    ("think", "", None, False, "no <answer>"),
    ("think", "B", None, False, "no <answer>"),
    ("think", "<think>r</think>" + "<answer>B</answer>" * 20, None, False, "more than"),
    ("think-after", "<answer>B</answer>\n<think>" + R + "</think>", "B", True, None),
    ("think-after", think("B"), "B", False, "expected"),
    ("think-after", "<answer>A</answer><think>r</think><answer>B</answer>", None, False, "2 <answer>"),
    ("no-think", "<answer>B</answer>", "B", True, None),
    ("no-think", "\n  <answer> B </answer>  \n", "B", True, None),
    ("no-think", think("B"), "B", False, "expected"),
    ("no-think", "The answer: <answer>B</answer>", "B", False, "text outside"),
    ("zero-shot", "B", "B", True, None),
    ("zero-shot", "  The answer is B.  ", "The answer is B.", True, None),
    ("zero-shot", "<answer>B</answer>", "B", True, None),
    ("zero-shot", "", None, False, "empty"),
]


@pytest.mark.parametrize("template,text,answer,fmt,error", STRUCTURE)
def test_default_structure(
    template: str, text: str, answer: str | None, fmt: bool, error: str | None
) -> None:
    p = parse_completion(text, template)
    assert isinstance(p, Parsed)
    assert p.answer == answer
    assert p.format_ok is fmt
    if error is None:
        assert p.error is None
    else:
        assert p.error is not None and error in p.error


def test_reasoning_extracted() -> None:
    assert parse_completion(think("B"), "think").reasoning == R
    assert parse_completion("<answer>B</answer><think> why </think>", "think-after").reasoning == "why"
    assert parse_completion("<answer>B</answer>", "no-think").reasoning is None


def test_unknown_template_or_mode() -> None:
    with pytest.raises(ValueError, match="template"):
        parse_completion("x", "chain-of-thought")
    with pytest.raises(ValueError, match="mode"):
        parse_completion("x", "think", "strict")


# ----------------------------------------------------------------------------- score_closed

CLOSED_DEFAULT = [
    ("think", think("B"), 1.0),
    ("think", think("b"), 1.0),
    ("think", think("(B)"), 1.0),
    ("think", think("B) MRI"), 1.0),
    ("think", think("MRI"), 1.0),
    ("think", think("A"), 0.0),
    ("think", think("A or B"), 0.0),
    ("think", think("A, B, C, D"), 0.0),
    ("think", think("\u0412"), 0.0),
    ("think", think("E"), 0.0),
    ("think", "<think>r</think><answer>A</answer><answer>B</answer>", 0.0),
    ("think", "<think>r</think><answer>B</answer><answer>A</answer>", 0.0),
    ("think", "<think>the answer is B <answer>B</answer></think>", 0.0),  # answer only in think
    ("think", "<think>r <answer>B</answer></think><answer>B</answer>", 0.0),
    ("think", "<answer>B</answer>", 1.0),  # format is the format reward's business
    ("think", "Sure. <answer>B</answer>", 1.0),
    ("think", [{"role": "assistant", "content": think("B")}], 1.0),
    ("think-after", "<answer>B</answer><think>r</think>", 1.0),
    ("think-after", "<answer>C</answer><think>r</think>", 0.0),
    ("no-think", "<answer>B</answer>", 1.0),
    ("no-think", "<answer> b. </answer>", 1.0),
    ("no-think", "<answer></answer>", 0.0),
    ("zero-shot", "B", 1.0),
    ("zero-shot", "B) MRI", 1.0),
    ("zero-shot", "The answer is B.", 1.0),
    ("zero-shot", "A or B", 0.0),
]


@pytest.mark.parametrize("template,completion,expected", CLOSED_DEFAULT)
def test_score_closed_default(template: str, completion, expected: float) -> None:
    score, parsed, chosen = score_closed(completion, OPTS, "B", template)
    assert score == expected
    assert (chosen == "B") == (expected == 1.0)


def test_score_closed_gold_letter_normalized() -> None:
    assert score_closed(think("B"), OPTS, " b ", "think")[0] == 1.0
    assert score_closed(think("B"), OPTS, "", "think")[0] == 0.0


def test_100k_character_completions() -> None:
    long_reasoning = ("the lesion is hyperintense on T2 " * 3200)[:100_000]
    text = think("B", long_reasoning)
    assert len(text) > 100_000
    score, parsed, _ = score_closed(text, OPTS, "B", "think")
    assert score == 1.0 and parsed.format_ok
    no_answer = "B " * 50_000
    assert score_closed(no_answer, OPTS, "B", "think")[0] == 0.0
    assert score_closed("<answer>" + "B" * 100_000 + "</answer>", OPTS, "B", "no-think")[0] == 0.0


# ----------------------------------------------------------------------------- paper modes

PAPER_CLOSED = [
    # (template, completion, gold, accuracy, format)
    ("think", "<think>r</think><answer>B</answer>", "B", 1.0, True),
    ("think", "<think>r</think>\n\n<answer> B </answer>", "B", 1.0, True),
    ("think", "<think>r</think><answer>b</answer>", "B", 0.0, True),  # case-sensitive
    ("think", "<think>r</think><answer>(B)</answer>", "B", 0.0, True),
    ("think", "<think>r</think><answer>B) MRI</answer>", "B", 0.0, True),
    ("think", "<think>r</think><answer>MRI</answer>", "B", 0.0, True),
    ("think", "<think>r</think><answer>A</answer><answer>B</answer>", "A", 1.0, True),  # first tag wins
    ("think", "<think><answer>B</answer></think><answer>A</answer>", "B", 1.0, True),  # even inside think
    ("think", "B", "B", 1.0, False),  # no tags: Med-R1 compares the whole stripped text
    ("think", "<answer>B\n</answer>", "B", 0.0, False),  # no DOTALL: no match, whole text compared
    ("think", " <think>r</think><answer>B</answer>", "B", 1.0, False),  # leading space: no fullmatch
    ("think", "<think>r</think><answer>B</answer>\n", "B", 1.0, False),  # trailing newline: no fullmatch
    ("no-think", "\n <answer>B</answer>", "B", 1.0, True),
    ("no-think", "<answer></answer>", "B", 0.0, True),
    ("think-after", "<answer>B</answer> <think>r</think>", "B", 1.0, True),
]


@pytest.mark.parametrize("template,completion,gold,acc,fmt", PAPER_CLOSED)
def test_score_closed_paper(template: str, completion: str, gold: str, acc: float, fmt: bool) -> None:
    score, parsed, _ = score_closed(completion, OPTS, gold, template, mode="paper")
    assert score == acc
    assert parsed.format_ok is fmt
    regex = MEDR1_FORMAT_REGEX[template]
    assert fmt == bool(re.fullmatch(regex, completion, re.DOTALL))


def test_paper_eval_mode() -> None:
    # Med-R1 eval scripts: think regex; no-think regex, or the raw output if "answer" is absent;
    # zero-shot the raw output (tests/eval/test_medr1_fidelity.py property-tests all of them)
    assert score_closed("<answer> B </answer>", OPTS, "B", "no-think", "paper-eval")[0] == 1.0
    assert (
        score_closed("<answer>(B)</answer><answer>B</answer>", OPTS, "B", "no-think", "paper-eval")[0] == 1.0
    )
    assert score_closed("<answer>B.</answer>", OPTS, "B", "no-think", "paper-eval")[0] == 0.0
    assert score_closed("B", OPTS, "B", "zero-shot", "paper-eval")[0] == 1.0
    assert score_closed("B\n", OPTS, "B", "zero-shot", "paper-eval")[0] == 0.0  # raw, unstripped
    assert score_closed("the answer B", OPTS, "B", "zero-shot", "paper-eval")[0] == 0.0
    assert parse_completion("answer: B", "zero-shot", "paper-eval").answer == "answer: B"  # raw, no regex
    assert score_closed("B", OPTS, "B", "think", "paper-eval")[0] == 0.0  # think: no tags, wrong


def test_medr1_extractors_match_regexes_on_examples() -> None:
    samples = [
        "<answer>B</answer>",
        "<answer>\nB</answer><answer>C</answer>",
        "<answer><answer>x\n</answer> <answer>y</answer>",
        "x\n<answer>a</answer>",
        "<answer>",
        "<answer> B </answer>",
        "<answer>(B)</answer>",
    ]
    for s in samples:
        m = re.search(MEDR1_TRAIN_ANSWER_REGEX, s)
        assert medr1_train_answer(s) == (m.group(1) if m else None), s
        m = re.search(MEDR1_EVAL_ANSWER_REGEX, s)
        assert medr1_eval_answer(s) == (m.group(1) if m else None), s


# ----------------------------------------------------------------------------- open questions


@pytest.mark.parametrize(
    "pred,gold,expected",
    [
        ("Yes.", "yes", 1.0),
        ("yes", "Yes", 1.0),
        ("True", "yes", 1.0),
        ("Yes, there is a mass.", "yes", 1.0),
        ("No, there is no mass.", "no", 1.0),
        ("no", "yes", 0.0),
        ("yes or no", "yes", 0.0),
        ("Yes, no", "yes", 0.0),
        ("yeah", "yes", 0.0),
        ("Left lung.", "left lung", 1.0),
        ("The left lung", "left lung", 1.0),
        ("left upper lung", "left lung", 0.8),
        ("heart", "left lung", 0.0),
        ("", "left lung", 0.0),
    ],
)
def test_score_open_f1(pred: str, gold: str, expected: float) -> None:
    score, _ = score_open(f"<answer>{pred}</answer>", gold, "no-think")
    assert score == pytest.approx(expected)


def test_score_open_exact_and_modes() -> None:
    assert score_open("<answer>left upper lung</answer>", "left lung", "no-think", metric="exact")[0] == 0.0
    assert score_open("<answer>The Left-Lung</answer>", "left lung", "no-think", metric="exact")[0] == 1.0
    assert score_open("left lung", "left lung", "zero-shot")[0] == 1.0
    assert score_open("left lung", "left lung", "no-think", mode="paper")[0] == 1.0  # whole-text fallback
    assert score_open("<answer>x</answer><answer>left lung</answer>", "left lung", "no-think")[0] == 0.0
    assert score_open("<answer>" + "lung " * 5000 + "</answer>", "lung", "no-think")[0] == 0.0
    with pytest.raises(ValueError):
        score_open("x", "y", "no-think", metric="bleu")


def test_text_metrics() -> None:
    assert normalize_text("The  Left-Lung, an organ!") == "left lung organ"
    assert token_f1("left lung", "left lung") == 1.0
    assert token_f1("", "") == 1.0
    assert token_f1("x", "") == 0.0
    assert token_recall("left upper lung", "left lung") == 1.0
    assert token_recall("lung", "left lung") == 0.5
    assert yes_no("False.") == "no"
    assert yes_no("") is None


# ----------------------------------------------------------------------------- linear time

MB = 1 << 20
ADVERSARIAL = {
    "think flood": "<think>" * (MB // 7),
    "answer flood unclosed": "<answer>" * (MB // 8),
    "answer flood + newline close": "<answer>" * (MB // 8) + "\n</answer>",
    "answer newline flood": "<answer>\n" * (MB // 9) + "</answer>",
    "join flood": "<think>" + "</think><answer>" * (MB // 17),
    "close flood": "</think>" * (MB // 8),
    "hedge flood": "<think>r</think><answer>" + "A, " * (MB // 3) + "</answer>",
    "whitespace": "<think>r</think>" + " " * MB + "x</answer>",
    "long line": "<answer>\n" + "x" * MB + "</answer>",
    "eval backtrack": "<answer>" + "a" * MB + "!</answer>",
}


@pytest.mark.parametrize("name", list(ADVERSARIAL))
def test_adversarial_inputs_are_linear(name: str) -> None:
    text = ADVERSARIAL[name]
    # generous bound for a shared CI machine; a quadratic scan of 1 MB takes minutes
    for mode in ("default", "paper", "paper-eval"):
        for template in ("think", "think-after", "no-think", "zero-shot"):
            t0 = time.perf_counter()
            p = parse_completion(text + " ", template, mode)  # " ": bypass the parse cache
            score_closed(text + " ", OPTS, "B", template, mode)
            score_open(text + " ", "left lung", template, mode)
            assert time.perf_counter() - t0 < 0.5, (name, mode, template)
            assert isinstance(p, Parsed)
        t0 = time.perf_counter()
        format_ok_paper(text, "think")
        medr1_train_answer(text)
        medr1_eval_answer(text)
        assert time.perf_counter() - t0 < 0.5, name


# ----------------------------------------------------------------------------- killed mutants (make mutants)


def test_message_content_parts():
    msg = lambda content: {"role": "assistant", "content": content}  # noqa: E731
    assert completion_text(msg(None)) == "" and completion_text(msg([])) == ""
    assert completion_text(msg(["<answer>", "B", "</answer>"])) == "<answer>B</answer>"
    parts = [{"text": "a"}, {"type": "text", "text": "b"}, {"type": "image", "text": "IMG"}, {"type": "text"},
             {"type": "text", "text": None}, "c", 7]
    assert completion_text(msg(parts)) == "abc"  # no type = text; image parts and non-text items dropped
    with pytest.raises(TypeError, match="^unsupported message content type: int$"):
        completion_text(msg(3))


@pytest.mark.parametrize("template,text,ok", [
    ("think", "<think>r</think><answer>B</answer>", True),
    ("think", "<think>r</think><think>s</think>", False),  # the second block must be <answer>
    ("think", "<think>r</think>\n<answer>B</answer>", True),
    ("think", "<think>r</think><answer>B</answer>x", False),
    ("think", "<think>r</think><answer>B</answer></answer>", True),  # re.fullmatch with .*? inside
    ("think-after", "<answer>B</answer><think>r</think>", True),
    ("think-after", "<answer>B</answer>x<think>r</think>", False),
    ("think-after", "<answer>B<think>r</think>", False),
    ("think-after", "<answer>B</answer><answer>r</think>", False),
    ("no-think", "<answer>B</answer>", True),
    ("no-think", "  <answer>B</answer>", True),
    ("no-think", "x<answer>B</answer>", False),
    ("no-think", "<answer></answer>", True),
    ("no-think", "<answer>", False),
    ("no-think", "<answer></answer", False),
    ("no-think", "<answer>B</answer> ", False),
    ("zero-shot", "B", True),
    ("zero-shot", "  ", False),
])
def test_format_ok_paper_equals_the_medr1_regex(template, text, ok):
    assert format_ok_paper(text, template) is ok
    if template in MEDR1_FORMAT_REGEX:
        assert bool(re.fullmatch(MEDR1_FORMAT_REGEX[template], text, re.DOTALL)) is ok


def test_format_ok_paper_unknown_template():
    with pytest.raises(ValueError, match="^unknown template 'x'$"):
        format_ok_paper("B", "x")


def test_token_scores_edges():
    assert token_f1("", "") == 1.0 and token_f1("x", "") == 0.0 and token_f1("", "lung") == 0.0
    assert token_f1("left lung", "left upper lung") == pytest.approx(0.8)
    assert token_f1("left lung mass", "lung") == pytest.approx(0.5)
    assert token_recall("", "") == 1.0 and token_recall("x", "") == 0.0 and token_recall("lung", "left lung") == 0.5


def test_yes_no_and_open_scoring_edges():
    assert yes_no("Yes") == "yes" and yes_no("true.") == "yes" and yes_no("No!") == "no" and yes_no("") is None
    long_yes = "yes " + "x " * 2000
    assert yes_no(long_yes) == "yes"
    assert yes_no("yes " + "x " * 2000 + " no") == "yes"  # only the first MAX_CHOICE_CHARS are read
    with pytest.raises(ValueError, match="^unknown open metric 'bleu'; valid: f1, exact$"):
        score_open("<answer>x</answer>", "x", "no-think", metric="bleu")
    # a multi-word gold is not a yes/no gold, even when it starts with "no"
    assert score_open("<answer>no mass</answer>", "no mass seen", "no-think")[0] == pytest.approx(0.8)
    assert score_open("<answer>no</answer>", "no mass", "no-think", metric="exact")[0] == 0.0


@pytest.mark.parametrize("text,reasoning", [
    ("<think>a</think><think>b</think><answer>B</answer>", "a"),  # the first block
    ("x<think> a </think>", "a"),
    ("<answer>B</answer>", None),
    ("<think>a", None),
    ("</think><think>a</think>", "a"),  # a close before the open does not count
    ("<think></think>", ""),
])
def test_paper_reasoning_is_the_first_think_block(text, reasoning):
    assert parse_completion(text, "think", "paper").reasoning == reasoning


def test_open_answer_length_limit():
    from qlora_grpo.parsing import MAX_OPEN_CHARS

    at_limit = "lung " + "x" * (MAX_OPEN_CHARS - 5)
    assert len(at_limit) == MAX_OPEN_CHARS
    assert score_open(f"<answer>{at_limit}</answer>", "lung", "no-think")[0] > 0.0
    assert score_open(f"<answer>{at_limit}x</answer>", "lung", "no-think")[0] == 0.0


@pytest.mark.parametrize("text,mode,answer,error", [
    ("<think>r</think><answer> B </answer>", "paper", "B", None),
    (" B ", "paper", "B", "no <answer> block (Med-R1 compares the whole text)"),
    ("<think>r</think><answer>B) CT</answer>", "paper", "B) CT", None),
    ("<think>r</think><answer>B) CT</answer>", "paper-eval", None, "no <answer>\\s*(\\w+)\\s*</answer> match"),
    (" B ", "paper-eval", None, "no <answer>\\s*(\\w+)\\s*</answer> match"),  # Med-R1's think script: tags or wrong
    ("<answer>B</answer>", "paper", "B", "does not match Med-R1's think format"),
    ("<answer>B</answer>", "paper-eval", "B", "does not match Med-R1's think format"),
])
def test_paper_parse_answer_and_error(text, mode, answer, error):
    parsed = parse_completion(text, "think", mode)
    assert (parsed.answer, parsed.error) == (answer, error)


@pytest.mark.parametrize("answer,expected", [
    ("B\ue000", None),  # private use (Co)
    ("B\ud800", None),  # lone surrogate (Cs)
    ("B\u0378", None),  # unassigned (Cn)
    ("B\x07", None),  # control character (Cc)
    ("B\u200d", None),  # zero-width joiner (Cf)
    ("\tB\n", "B"),  # control characters that are whitespace are fine
    ("B )\t MRI", "B"),
])
def test_invisible_and_control_characters(answer, expected):
    assert match_choice(answer, OPTS) == expected


def test_choice_length_limit():
    from qlora_grpo.parsing import MAX_CHOICE_CHARS

    text = "B) " + "m" * (MAX_CHOICE_CHARS - 3)
    assert len(text) == MAX_CHOICE_CHARS and match_choice(text, OPTS) == "B"
    assert match_choice(text + "m", OPTS) is None


# ----------------------------------------------------------------------------- edges found by mutation testing


@pytest.mark.parametrize("text,template,error", [
    ("<think>r</think>", "think", "no <answer> block"),
    ("<answer>A</answer>", "think", "expected <think>, <answer> blocks, got <answer>"),
    ("<answer>A</answer><think>r</think>", "think", "expected <think>, <answer> blocks, got <answer>, <think>"),
    ("x<think>r</think><answer>A</answer>", "think", "text outside tags"),  # at the very first character
    ("<think>r</think><answer>A</answer>y", "think", "text outside tags"),
    ("<think>r</think><answer> </answer>", "think", "empty answer"),
    ("<think><answer>A</answer></think>", "think", "nested tags"),
    ("<think>r</answer>", "think", "nested tags"),
    ("<think>r</think></answer>", "think", "stray </answer>"),
    ("<think>r", "think", "unclosed <think>"),
    ("   ", "zero-shot", "empty answer"),
])
def test_default_mode_error_reasons(text, template, error):
    parsed = parse_completion(text, template)
    assert parsed.error == error and not parsed.format_ok


def test_the_tag_limit_is_16():
    sixteen = "<think>r</think>" * 7 + "<answer>A</answer>"  # 16 tags: the 17th is one too many
    assert parse_completion(sixteen, "think").error == "7 <think> blocks"
    assert parse_completion(sixteen + "<think>", "think").error == "more than 16 tags"


def test_paper_mode_error_reasons_and_reasoning():
    assert parse_completion("plain B", "think", "paper").error == "no <answer> block (Med-R1 compares the whole text)"
    raw = parse_completion("plain B", "zero-shot", "paper-eval")
    assert (raw.answer, raw.error) == ("plain B", "no <answer> block (Med-R1 eval compares the raw output)")
    # a </think> without an opening <think> is no reasoning
    assert parse_completion("because</think><answer>A</answer>", "think", "paper").reasoning is None
    assert parse_completion("<think> because </think><answer>A</answer>", "think", "paper").reasoning == "because"
    # huge texts (their own cache) keep their mode
    huge = "x" * 70_000
    assert parse_completion(huge, "think", "paper").error == "no <answer> block (Med-R1 compares the whole text)"
    assert parse_completion(huge, "think", "paper-eval").error == "no <answer>\\s*(\\w+)\\s*</answer> match"


def test_unknown_template_and_mode_name_the_valid_ones():
    with pytest.raises(ValueError, match=re.escape("unknown template 'cot'; valid: think, think-after, no-think, "
                                                   "zero-shot")):
        parse_completion("x", "cot")
    with pytest.raises(ValueError, match=re.escape("unknown mode 'exact'; valid: default, paper, paper-eval")):
        parse_completion("x", "think", "exact")


def test_completion_text_message_forms():
    assert completion_text([{"content": "a"}, {"content": [{"type": "text", "text": "b"}]}]) == "ab"  # no roles
    assert completion_text([{"role": "user", "content": "q"}]) == ""  # roles but no assistant
    assert completion_text([{"role": "user", "content": "q"}, {"role": "assistant", "content": "x"},
                            {"role": "assistant", "content": "y"}]) == "xy"
    with pytest.raises(TypeError, match="^conversational completion must be a list of message dicts$"):
        completion_text([{"role": "assistant", "content": "x"}, "y"])
    with pytest.raises(TypeError, match="^unsupported completion type: int$"):
        completion_text(3)
    parsed = parse_completion([{"role": "assistant", "content": think("B")}], "think")
    assert (parsed.answer, parsed.format_ok) == ("B", True)


@pytest.mark.parametrize("char", ["\u200b", "\ue000", "\ud800", "\u0378", "\x07"])  # Cf, Co, Cs, Cn, Cc
def test_an_answer_with_an_invisible_or_control_character_is_refused(char):
    assert match_choice(f"A) MRI{char}", ["MRI", "CT"]) is None
    assert match_choice(f"{char}B", ["MRI", "CT"]) is None
    assert match_choice("A) MRI\t", ["MRI", "CT"]) == "A"  # whitespace controls are only spacing


def test_answer_length_limit_counts_the_stripped_answer():
    limit = 1000
    assert match_choice("A" + " " * (limit + 200), ["MRI", "CT"]) == "A"
    at_limit = "A) " + "x" * (limit - 3)
    assert match_choice(" " + at_limit + " ", ["MRI", "CT"]) == "A"
    assert match_choice(" " + at_limit + "x ", ["MRI", "CT"]) is None


def test_missing_options_and_letters_that_are_not_options():
    assert match_choice("None", ["MRI", None]) is None  # a missing option matches nothing
    assert match_choice("A) head CT or E", ["CT", "US"]) == "A"  # E is no option: no hedge
    assert match_choice("A) a mass (A) on the left", ["CT", "US"]) == "A"  # naming A again is no hedge
