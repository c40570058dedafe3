"""Prompt templates: Med-R1's strings byte for byte (copied from PROTOCOL.md), options, open questions, styles."""

from __future__ import annotations

import re

import pytest

from medvqa_data.templates import (
    MODES,
    STYLES,
    TEMPLATES,
    answer_letters,
    build_messages,
    diversity_style,
    format_question,
    render_prompt,
)

# Verbatim from shared/reference/PROTOCOL.md ("Med-R1 prompt templates").
PAPER = {
    ("think", "train"): "{Question} Your task: 1. Think through the question step by step, enclose your reasoning "
    "process in <think>...</think> tags. 2. Then provide the correct single-letter choice (A, B, C, D,...) inside "
    "<answer>...</answer> tags. 3. No extra information or text outside of these tags.",
    ("no-think", "train"): "{Question} Your task: 1. Provide the correct single-letter choice (A, B, C, D,...) inside "
    "<answer>...</answer> tags. 2. No extra information or text outside of this tag.",
    ("think", "eval"): "{Question} Think through the question step by step in <think>...</think> tags. Then provide "
    "the correct single-letter choice (A, B, C, D,...) inside <answer>...</answer> tags.",
    ("no-think", "eval"): "{Question} Provide the correct single-letter choice (A, B, C, D,...) inside "
    "<answer>...</answer> tags.",
    ("zero-shot", "eval"): "{Question} Provide the correct single-letter choice (A, B, C, D,...).",
}
QUESTION = "What modality is used to take this image?"
OPTIONS = ["CT", "MRI", "X-ray", "PET"]
FORMATTED = "What modality is used to take this image? A)CT, B)MRI, C)X-ray, D)PET"


def test_format_question_matches_med_r1():
    assert format_question(QUESTION, OPTIONS) == FORMATTED
    assert format_question("Is it normal?", ["No, It's normal", "Tumor"]) == "Is it normal? A)No, It's normal, B)Tumor"
    assert format_question("  What organ?  ", []) == "What organ?"


@pytest.mark.parametrize(("template", "phase"), list(PAPER))
def test_paper_strings_are_byte_exact(template, phase):
    expected = PAPER[(template, phase)].replace("{Question}", FORMATTED)
    assert render_prompt(QUESTION, OPTIONS, template, mode="paper", phase=phase) == expected


@pytest.mark.parametrize("template", ["think", "no-think", "think-after"])
def test_default_mode_uses_the_training_string_for_evaluation(template):
    train = render_prompt(QUESTION, OPTIONS, template, phase="train")
    assert render_prompt(QUESTION, OPTIONS, template, phase="eval") == train
    assert train == render_prompt(QUESTION, OPTIONS, template, mode="paper", phase="train")
    if template != "think-after":
        assert train == PAPER[(template, "train")].replace("{Question}", FORMATTED)


def test_think_after_puts_the_answer_first():
    for phase in ("train", "eval"):
        text = render_prompt(QUESTION, OPTIONS, "think-after", mode="paper", phase=phase)
        assert text.index("<answer>...</answer>") < text.index("<think>...</think>")
        assert text.startswith(FORMATTED + " ")


def test_braces_in_questions_are_kept_verbatim():
    assert render_prompt("Value {x}?", ["a", "b"], "zero-shot").startswith("Value {x}? A)a, B)b ")


def test_open_questions_get_an_open_answer_instruction():
    for template in ("think", "think-after", "no-think"):
        text = render_prompt("What organ is shown?", [], template, answer_type="open")
        assert "short word or phrase (or yes/no) inside <answer>...</answer> tags" in text
        assert "single-letter" not in text
        assert ("<think>" in text) == (template != "no-think")
    closed_without_options = render_prompt("Is there a fracture?", [], "think", answer_type="closed")
    assert "single-letter" not in closed_without_options
    assert render_prompt("What organ?", [], "zero-shot", answer_type="open") == (
        "What organ? Answer with a short word or phrase (or yes/no)."
    )


def test_styles_rewrite_only_the_reasoning_step():
    plain = render_prompt(QUESTION, OPTIONS, "think")
    for style in STYLES:
        for template in ("think", "think-after"):
            text = render_prompt(QUESTION, OPTIONS, template, style=style, phase="eval")
            assert text != render_prompt(QUESTION, OPTIONS, template)
            assert "Provide the correct single-letter choice" in text or "provide the correct single-letter" in text
            assert re.search(r"<think>\.\.\.</think>", text) and text.endswith("outside of these tags.")
    assert plain == render_prompt(QUESTION, OPTIONS, "think", style=None)
    with pytest.raises(ValueError, match="think or think-after"):
        render_prompt(QUESTION, OPTIONS, "no-think", style="short")


def test_diversity_style_is_seeded_and_mixed():
    picks = [diversity_style(7, i) for i in range(300)]
    assert picks == [diversity_style(7, i) for i in range(300)]
    assert picks != [diversity_style(8, i) for i in range(300)]
    assert set(picks) == set(STYLES) and min(picks.count(s) for s in STYLES) > 60


@pytest.mark.parametrize(
    ("kwargs", "names"),
    [({"template": "thinking"}, TEMPLATES), ({"template": "think", "mode": "med-r1"}, MODES),
     ({"template": "think", "style": "verbose"}, STYLES)],
)
def test_unknown_choices_name_the_valid_ones(kwargs, names):
    with pytest.raises(ValueError) as info:
        render_prompt(QUESTION, OPTIONS, **kwargs)
    assert all(name in str(info.value) for name in names)


def test_messages_and_letters():
    assert build_messages("hi") == [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]}]
    assert answer_letters(4) == ["A", "B", "C", "D"] and answer_letters(0) == []
    with pytest.raises(ValueError):
        answer_letters(27)


def test_every_prompt_string_matches_the_golden_file(capsys):
    """Every template x mode x phase x answer type, and every style: `python -m medvqa_data.templates`
    output, pinned. A prompt change must be deliberate: review the diff, then regenerate with
    ``PYTHONPATH=. python -m medvqa_data.templates > tests/medvqa_data/golden/templates.txt``."""
    from pathlib import Path

    from medvqa_data import templates

    templates._print_all()
    golden = Path(__file__).parent / "golden" / "templates.txt"
    assert capsys.readouterr().out == golden.read_text()


def test_diversity_style_pinned_and_letters_bounds():
    assert [diversity_style(0, i) for i in range(8)] == ["short", "short", "short", "open", "short", "short",
                                                        "explain", "short"]
    assert [diversity_style(42, i) for i in range(4)] == ["short", "open", "short", "short"]
    assert answer_letters(26)[-1] == "Z" and answer_letters(1) == ["A"]
    with pytest.raises(ValueError, match="between 0 and 26 options are supported, got -1"):
        answer_letters(-1)
    with pytest.raises(ValueError, match="got 27"):
        answer_letters(27)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"template": "thinking"}, "unknown template 'thinking'; choose one of: think, think-after, no-think, zero-shot"),
    ({"template": "think", "mode": "x"}, "unknown mode 'x'; choose one of: default, paper"),
    ({"template": "think", "phase": "test"}, "unknown phase 'test'; choose one of: train, eval"),
    ({"template": "think", "style": "v"}, "unknown style 'v'; choose one of: explain, short, open (or None)"),
    ({"template": "no-think", "style": "short"},
     "style 'short' rewrites the reasoning step; use it with template think or think-after"),
])
def test_error_messages(kwargs, message):
    with pytest.raises(ValueError) as info:
        render_prompt(QUESTION, OPTIONS, **kwargs)
    assert str(info.value) == message


def test_styles_and_open_answers_in_paper_mode():
    # a style always renders the training string, also for phase eval / paper mode
    styled = render_prompt(QUESTION, OPTIONS, "think", mode="paper", phase="eval", style="short")
    assert styled == render_prompt(QUESTION, OPTIONS, "think", style="short")
    assert "Reason briefly" in styled and styled.startswith(FORMATTED + " Your task: 1. ")
    # options with answer_type open: the open-answer instruction, options still listed
    opened = render_prompt(QUESTION, OPTIONS, "zero-shot", answer_type="open")
    assert opened == FORMATTED + " Answer with a short word or phrase (or yes/no)."
    assert format_question("  Q?  ", [" a ", 2]) == "Q? A)a, B)2"
