"""Prompt templates: Med-R1's exact strings, our think-after and open-answer variants, RARL styles.

The user turn is ``[image, text]`` with no system message (as Med-R1).
``{Question}`` stands for `format_question(question, options)`, e.g.
``What modality is shown? A)CT, B)MRI, C)X-Ray`` (no space after ``)``,
options joined by ``", "``).

Templates (`TEMPLATES`) and modes (`MODES`)
--------------------------------------------
mode="paper", phase="train" (Med-R1 training strings, byte for byte):

- think: ``{Question} Your task: 1. Think through the question step by step, enclose your
  reasoning process in <think>...</think> tags. 2. Then provide the correct single-letter
  choice (A, B, C, D,...) inside <answer>...</answer> tags. 3. No extra information or text
  outside of these tags.``
- no-think: ``{Question} Your task: 1. Provide the correct single-letter choice (A, B, C,
  D,...) inside <answer>...</answer> tags. 2. No extra information or text outside of this tag.``
- think-after (ours; Med-R1 never published it): ``{Question} Your task: 1. Provide the
  correct single-letter choice (A, B, C, D,...) inside <answer>...</answer> tags. 2. Then
  explain your reasoning step by step, enclosing it in <think>...</think> tags. 3. No extra
  information or text outside of these tags.``

mode="paper", phase="eval" (Med-R1 evaluation strings, byte for byte):

- think: ``{Question} Think through the question step by step in <think>...</think> tags.
  Then provide the correct single-letter choice (A, B, C, D,...) inside <answer>...</answer> tags.``
- no-think: ``{Question} Provide the correct single-letter choice (A, B, C, D,...) inside
  <answer>...</answer> tags.``
- think-after (ours): ``{Question} Provide the correct single-letter choice (A, B, C, D,...)
  inside <answer>...</answer> tags. Then explain your reasoning step by step in
  <think>...</think> tags.``

mode="default": the training strings above for both phases, so a model is
evaluated with the prompt it was trained on.

zero-shot (any mode/phase): ``{Question} Provide the correct single-letter choice (A, B, C, D,...).``

Open questions
--------------
Rows without options (VQA-RAD, SLAKE, PathVQA), or with answer_type="open",
replace the letter instruction by the answer clause ``the answer as a short
word or phrase (or yes/no)``, keeping the template's structure, e.g. think/train:
``{Question} Your task: 1. Think through the question step by step, enclose your
reasoning process in <think>...</think> tags. 2. Then provide the answer as a short
word or phrase (or yes/no) inside <answer>...</answer> tags. 3. No extra information
or text outside of these tags.`` Zero-shot open: ``{Question} Answer with a short word
or phrase (or yes/no).``

RARL diversity styles (`STYLES`, training only)
-----------------------------------------------
A style replaces the reasoning step of the training string of ``think`` (step 1)
or ``think-after`` (step 2); the answer step and the tags stay, so the format
reward is unchanged. Styles need a template with reasoning (else `ValueError`).

- explain: ``Explain step by step which findings in the image lead to the answer, enclosing
  your explanation in <think>...</think> tags.`` (think-after: ``Then explain step by step
  which findings in the image support the answer, enclosing your explanation in
  <think>...</think> tags.``)
- short: ``Reason briefly, in at most two short sentences, enclosed in <think>...</think>
  tags.`` (think-after: ``Then justify it briefly, in at most two short sentences, enclosed
  in <think>...</think> tags.``)
- open: ``Describe freely what the image shows and how it relates to the question, enclosing
  your thoughts in <think>...</think> tags.`` (think-after: ``Then describe freely what the
  image shows and how it relates to the answer, enclosing your thoughts in <think>...</think>
  tags.``)

`diversity_style(seed, index)` picks one of them deterministically per sample.
``python -m medvqa_data.templates`` prints every string.
"""

from __future__ import annotations

import hashlib

TEMPLATES = ("think", "think-after", "no-think", "zero-shot")
MODES = ("default", "paper")
PHASES = ("train", "eval")
STYLES = ("explain", "short", "open")

_CHOICE = "the correct single-letter choice (A, B, C, D,...)"
_OPEN = "the answer as a short word or phrase (or yes/no)"
_TAGS_END = "3. No extra information or text outside of these tags."

# (style, position) -> reasoning step; position "before" = think, "after" = think-after.
_REASONING = {
    (None, "before"): "Think through the question step by step, enclose your reasoning process in <think>...</think> tags.",
    (None, "after"): "Then explain your reasoning step by step, enclosing it in <think>...</think> tags.",
    ("explain", "before"): (
        "Explain step by step which findings in the image lead to the answer, "
        "enclosing your explanation in <think>...</think> tags."
    ),
    ("explain", "after"): (
        "Then explain step by step which findings in the image support the answer, "
        "enclosing your explanation in <think>...</think> tags."
    ),
    ("short", "before"): "Reason briefly, in at most two short sentences, enclosed in <think>...</think> tags.",
    ("short", "after"): "Then justify it briefly, in at most two short sentences, enclosed in <think>...</think> tags.",
    ("open", "before"): (
        "Describe freely what the image shows and how it relates to the question, "
        "enclosing your thoughts in <think>...</think> tags."
    ),
    ("open", "after"): (
        "Then describe freely what the image shows and how it relates to the answer, "
        "enclosing your thoughts in <think>...</think> tags."
    ),
}


def answer_letters(n: int) -> list[str]:
    """The first `n` option letters: ["A", "B", ...] (at most 26)."""
    if not 0 <= n <= 26:
        raise ValueError(f"between 0 and 26 options are supported, got {n}")
    return [chr(ord("A") + i) for i in range(n)]


def format_question(question: str, options: list[str]) -> str:
    """Med-R1's ``{Question}``: ``QUESTION A)opt1, B)opt2, C)opt3``; the question alone without options."""
    question = question.strip()
    if not options:
        return question
    letters = answer_letters(len(options))
    return question + " " + ", ".join(f"{letter}){str(opt).strip()}" for letter, opt in zip(letters, options))


def _instruction(template: str, phase: str, answer: str, style: str | None) -> str:
    """The text after ``{Question} `` for a template whose arguments were validated."""
    if template == "zero-shot":
        return "Answer with a short word or phrase (or yes/no)." if answer == _OPEN else f"Provide {answer}."
    answer_step = f"{answer} inside <answer>...</answer> tags."
    if phase == "eval":
        if template == "think":
            return f"Think through the question step by step in <think>...</think> tags. Then provide {answer_step}"
        if template == "no-think":
            return f"Provide {answer_step}"
        return f"Provide {answer_step} Then explain your reasoning step by step in <think>...</think> tags."
    if template == "think":
        return f"Your task: 1. {_REASONING[(style, 'before')]} 2. Then provide {answer_step} {_TAGS_END}"
    if template == "think-after":
        return f"Your task: 1. Provide {answer_step} 2. {_REASONING[(style, 'after')]} {_TAGS_END}"
    return f"Your task: 1. Provide {answer_step} 2. No extra information or text outside of this tag."


def render_prompt(
    question: str,
    options: list[str],
    template: str,
    mode: str = "default",
    phase: str = "train",
    answer_type: str = "closed",
    style: str | None = None,
) -> str:
    """The user-turn text for one sample (see the module docstring for every string).

    The letter instruction is used when there are options and `answer_type` is
    "closed"; otherwise the open-answer instruction. `style` (RARL diversity
    prompting) rewrites the reasoning step of the training string.
    """
    if template not in TEMPLATES:
        raise ValueError(f"unknown template {template!r}; choose one of: {', '.join(TEMPLATES)}")
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of: {', '.join(MODES)}")
    if phase not in PHASES:
        raise ValueError(f"unknown phase {phase!r}; choose one of: {', '.join(PHASES)}")
    if style is not None:
        if style not in STYLES:
            raise ValueError(f"unknown style {style!r}; choose one of: {', '.join(STYLES)} (or None)")
        if template not in ("think", "think-after"):
            raise ValueError(f"style {style!r} rewrites the reasoning step; use it with template think or think-after")
    answer = _CHOICE if options and answer_type != "open" else _OPEN
    if mode == "default" or style is not None:
        phase = "train"
    return f"{format_question(question, options)} {_instruction(template, phase, answer, style)}"


def diversity_style(seed: int, index: int) -> str:
    """A deterministic, seeded pick of a RARL style for sample `index` (stable across processes)."""
    digest = hashlib.sha256(f"{seed}:{index}".encode()).digest()
    return STYLES[int.from_bytes(digest[:8], "big") % len(STYLES)]


def build_messages(prompt_text: str) -> list[dict]:
    """The chat messages for one sample: a single user turn holding the image then the text."""
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt_text}]}]


def _print_all() -> None:
    for answer_type in ("closed", "open"):
        options = ["opt1", "opt2"] if answer_type == "closed" else []
        for template in TEMPLATES:
            for mode in MODES:
                for phase in PHASES:
                    text = render_prompt("{Question}", options, template, mode, phase, answer_type)
                    print(f"[{answer_type} {template} {mode} {phase}]\n{text}\n")
    for template in ("think", "think-after"):
        for style in STYLES:
            print(f"[style {style} {template}]\n{render_prompt('{Question}', ['opt1', 'opt2'], template, style=style)}\n")


if __name__ == "__main__":
    _print_all()
