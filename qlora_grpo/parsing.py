"""Answer parsing shared by the GRPO rewards and by evaluation (one implementation).

Design
------
Every completion goes through :func:`parse_completion`, which returns a :class:`Parsed`
(the answer text, the reasoning text, whether the format is right, and why not). Scoring
functions (:func:`score_closed`, :func:`score_open`) only ever look at ``Parsed.answer``,
so training and evaluation cannot disagree about what the model answered.

Modes
~~~~~
``"default"`` (our verifier, robust to reward hacking)
    The four tags ``<think> </think> <answer> </answer>`` (lower case, exact) are located
    with a quantifier-free regex (linear time) and checked as a flat sequence of blocks:

    * nested tags (``<think> .. <answer>B</answer> .. </think>``), unclosed tags, stray
      closing tags or more than ``MAX_TAGS`` tags make the completion *unparseable*:
      ``answer`` is ``None`` -- an answer hidden in ``<think>`` is never read;
    * exactly one top-level ``<answer>`` block must exist (two blocks = hedging = ``None``);
    * ``format_ok`` further needs the template's block order (``think``: think, answer;
      ``think-after``: answer, think; ``no-think``: answer), nothing but whitespace outside
      the blocks, and a non-empty answer.  Accuracy does not depend on ``format_ok``
      (the ``format`` reward pays for the format), only on the single answer block.
    * ``zero-shot`` (evaluation of base models): no tags are expected; the whole text is
      the answer.  If the text does contain tags, the single ``<answer>`` block is used.

``"paper"`` (Med-R1 training, byte-faithful)
    ``format_ok`` equals ``re.fullmatch(MEDR1_FORMAT_REGEX[template], text, re.DOTALL)``
    and the answer is Med-R1's (R1-V's) ``re.search(r"<answer>(.*?)</answer>", text)``
    (no ``re.DOTALL``) stripped, *falling back to the whole stripped text* when there is
    no match, exactly like the original ``accuracy_reward``; accuracy is then an exact,
    case-sensitive compare with the gold letter.  Both are computed by linear-time
    equivalents (``str.find`` scans and atomic regexes) that are property-tested to agree
    with the original regexes, which are quadratic on adversarial inputs such as
    ``<think>`` + ``</think><answer>`` x 60k or ``<answer>`` x 130k.

``"paper-eval"`` (Med-R1 evaluation scripts, byte-faithful; one rule per template,
    :data:`MEDR1_EVAL_RULE`, from the script named in :data:`MEDR1_EVAL_SCRIPT`)
    ``regex`` (think; think-after, which has no script): the answer is the first
    ``<answer>\\s*(\\w+)\\s*</answer>`` group, ``None`` when it does not match (a bare ``B``
    is wrong).  ``raw`` (zero-shot): the raw output itself, unstripped.  ``hybrid``
    (no-think): ``regex`` if the output contains ``"answer"``, else ``raw``.  Compared
    exactly with the gold letter.

Choice matching (:func:`match_choice`), default mode
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
The answer text is NFKC-normalized, whitespace-collapsed and then, in order:

1. equal to exactly one option text (case-folded, punctuation and whitespace
   normalized) -> that option's letter;
2. an optional lead-in is removed (``The answer is``, ``Answer:``, ``Option``,
   ``The correct choice is`` ...), only at the start;
3. letter forms: ``B``, ``b``, ``(B)``, ``[B]``, ``B)``, ``B.``, ``B:``, each optionally
   followed by text (``B) CT``, ``B: text``); ``B CT`` (letter, space, text) only when the
   text is option B's text.  Text after the letter must not be another option's exact
   text and must not name another option letter (``A) CT or B) MRI``, ``A or B``,
   ``A, B``, ``A. or b``, ``B. AND c``) -- such hedges give ``None``.

``None`` also for: empty answers, answers longer than ``MAX_CHOICE_CHARS`` characters,
letters outside the options' range, and answers containing invisible or control
characters.  Unicode policy: NFKC is the only equivalence we apply, so compatibility forms
(full-width ``Ｂ``) count as ``B`` but cross-script look-alikes (Cyrillic ``В``, Greek
``Β``) are different characters and never match a Latin letter; combining marks make the
letter a different character too (``B\\u0301`` is not ``B``).

Open questions (:func:`score_open`)
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
Yes/no golds (``yes``/``no``/``true``/``false``) are compared by polarity: the prediction's
first normalized word must be a polarity word and no word of the opposite polarity may
follow (``Yes, a mass`` = yes; ``yes or no`` = unparsed).  Other golds: normalized exact
match (lower case, punctuation -> space, articles removed, whitespace collapsed) or the
SQuAD-style token F1 as a graded reward.  Predictions longer than ``MAX_OPEN_CHARS``
characters score 0.

All scanning is linear in the input length; a 1 MB adversarial completion parses in a few
milliseconds (see ``bench/reward_speed.py``).
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

__all__ = [
    "MAX_CHOICE_CHARS",
    "MAX_OPEN_CHARS",
    "MAX_TAGS",
    "MEDR1_EVAL_ANSWER_REGEX",
    "MEDR1_EVAL_RULE",
    "MEDR1_EVAL_SCRIPT",
    "MEDR1_FORMAT_REGEX",
    "MEDR1_TRAIN_ANSWER_REGEX",
    "MODES",
    "TEMPLATES",
    "Parsed",
    "completion_text",
    "format_ok_paper",
    "match_choice",
    "medr1_eval_answer",
    "medr1_train_answer",
    "normalize_option_text",
    "normalize_text",
    "parse_completion",
    "score_closed",
    "score_open",
    "token_f1",
    "token_recall",
    "yes_no",
]

TEMPLATES: tuple[str, ...] = ("think", "think-after", "no-think", "zero-shot")
MODES: tuple[str, ...] = ("default", "paper", "paper-eval")

#: Med-R1's format regexes (``re.fullmatch`` with ``re.DOTALL``); think-after is our
#: symmetric design.  zero-shot has no format regex (any non-empty text).
MEDR1_FORMAT_REGEX: dict[str, str] = {
    "think": r"<think>.*?</think>\s*<answer>.*?</answer>",
    "no-think": r"\s*<answer>.*?</answer>",
    "think-after": r"<answer>.*?</answer>\s*<think>.*?</think>",
}
#: Med-R1's training-time answer extraction (``re.search``, no flags).
MEDR1_TRAIN_ANSWER_REGEX = r"<answer>(.*?)</answer>"
#: Med-R1's evaluation-time answer extraction (``re.search``, no flags).
MEDR1_EVAL_ANSWER_REGEX = r"<answer>\s*(\w+)\s*</answer>"

#: Med-R1's evaluation script whose answer decision paper-eval reproduces, per template
#: (github.com/Yuxiang-Lai117/Med-R1 @ 88d76c7, src/eval_vqa/).  Med-R1 ships no think-after
#: script; think-after takes the think script's regex (re.search finds an answer-first block).
#: The no-think rule is test_qwen2_5vl_vqa_nothink.py's: test_qwen2vl_vqa_nothink.py as
#: committed compares the raw output (every ``<answer>B</answer>`` wrong), see docs/reproduce.md.
MEDR1_EVAL_SCRIPT: dict[str, str] = {
    "think": "test_qwen2vl_vqa.py",
    "think-after": "test_qwen2vl_vqa.py",
    "no-think": "test_qwen2_5vl_vqa_nothink.py",
    "zero-shot": "test_qwen2vl_vqa_zero_shot.py",
}
MEDR1_EVAL_RULE: dict[str, str] = {"think": "regex", "think-after": "regex", "no-think": "hybrid",
                                   "zero-shot": "raw"}

#: More tags than this in a completion = unparseable (bounds the work on tag floods).
MAX_TAGS = 16
#: Longer answer blocks are never a single choice (bounds the work on hedging floods).
MAX_CHOICE_CHARS = 1000
#: Open answers longer than this score 0 (no reference answer is that long; bounds the work).
MAX_OPEN_CHARS = 10_000

_OPEN_THINK, _CLOSE_THINK = "<think>", "</think>"
_OPEN_ANSWER, _CLOSE_ANSWER = "<answer>", "</answer>"
_TAG_RE = re.compile(r"</?(?:think|answer)>")  # no quantifiers: linear
_WS_RE = re.compile(r"\s*")
# ``(?=(X))\N`` is an atomic group (no backtracking into X) that also works before
# Python 3.11; where X is followed by something X cannot match, it changes no result.
# Med-R1's eval regex with atomic runs; the answer is group 2:
_EVAL_RE = re.compile(r"<answer>(?=(\s*))\1(?=(\w+))\2(?=(\s*))\3</answer>")
# first <answer> of a line (the guarded prefix cannot contain one), then Med-R1's lazy group
# (atomic: the line up to its first <answer>; then the text up to the first </answer>)
_LINE_ANSWER_RE = re.compile(
    r"\n(?=([^\n<]*(?:<(?!answer>)[^\n<]*)*))\1<answer>(?=((?:[^\n<]+|<(?!/answer>))*))\2</answer>"
)
_JOIN_RE = {
    _CLOSE_THINK: re.compile(r"</think>(?=(\s*))\1<answer>"),
    _CLOSE_ANSWER: re.compile(r"</answer>(?=(\s*))\1<think>"),
}
_EXPECTED_BLOCKS: dict[str, tuple[str, ...]] = {
    "think": ("think", "answer"),
    "think-after": ("answer", "think"),
    "no-think": ("answer",),
}


@dataclass(frozen=True)
class Parsed:
    """What a completion says.

    answer: text of the single top-level ``<answer>`` block, stripped (in paper modes:
        exactly the string Med-R1 compares); ``None`` if absent or ambiguous.
    reasoning: text of the single ``<think>`` block, stripped; ``None`` if absent.
    format_ok: the completion has the template's format (mode-dependent).
    error: why the format is not ok / the answer is missing; ``None`` when all is well.
    """

    answer: str | None
    reasoning: str | None
    format_ok: bool
    error: str | None


# --------------------------------------------------------------------------- input


def completion_text(c: Any) -> str:
    """Text of a completion given as a string or in TRL's conversational form.

    Accepts ``"text"``, ``{"role": "assistant", "content": ...}`` or a list of such
    messages (assistant messages are concatenated; if no message has a role, all are),
    where ``content`` is a string or a list of ``{"type": "text", "text": ...}`` parts
    (non-text parts such as images are ignored).  ``None`` gives ``""``.
    """
    if c is None:
        return ""
    if isinstance(c, str):
        return c
    if isinstance(c, dict):
        return _content_text(c.get("content"))
    if isinstance(c, (list, tuple)):
        msgs = [m for m in c if isinstance(m, dict)]
        if len(msgs) != len(c):
            raise TypeError("conversational completion must be a list of message dicts")
        chosen = [m for m in msgs if m.get("role") == "assistant"]
        if not chosen and not any("role" in m for m in msgs):
            chosen = msgs
        return "".join(_content_text(m.get("content")) for m in chosen)
    raise TypeError(f"unsupported completion type: {type(c).__name__}")


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, (list, tuple)):
        parts = []
        for p in content:
            if isinstance(p, str):
                parts.append(p)
            elif isinstance(p, dict) and p.get("type", "text") == "text":
                parts.append(str(p.get("text") or ""))
        return "".join(parts)
    raise TypeError(f"unsupported message content type: {type(content).__name__}")


def _check(template: str, mode: str) -> None:
    if template not in TEMPLATES:
        raise ValueError(f"unknown template {template!r}; valid: {', '.join(TEMPLATES)}")
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; valid: {', '.join(MODES)}")


# --------------------------------------------------------------------------- paper mode


def format_ok_paper(text: str, template: str) -> bool:
    """``re.fullmatch(MEDR1_FORMAT_REGEX[template], text, re.DOTALL) is not None``, in linear time.

    ``zero-shot`` has no format: any text that is not blank passes.
    """
    if template == "think":
        return _fullmatch_pair(text, _OPEN_THINK, _CLOSE_THINK, _CLOSE_ANSWER)
    if template == "think-after":
        return _fullmatch_pair(text, _OPEN_ANSWER, _CLOSE_ANSWER, _CLOSE_THINK)
    if template == "no-think":
        q = _WS_RE.match(text).end()
        return (
            text.startswith(_OPEN_ANSWER, q)
            and text.endswith(_CLOSE_ANSWER)
            and (q + len(_OPEN_ANSWER) <= len(text) - len(_CLOSE_ANSWER))
        )
    if template == "zero-shot":
        return bool(text.strip())
    raise ValueError(f"unknown template {template!r}")


def _fullmatch_pair(text: str, o1: str, c1: str, c2: str) -> bool:
    """Linear equivalent of ``fullmatch(o1 .*? c1 \\s* o2 .*? c2, DOTALL)``, where ``o2`` is the tag that
    ``_JOIN_RE[c1]`` expects after ``c1``.

    The text must start with ``o1`` and end with ``c2``; the earliest ``c1\\s*o2`` after
    ``o1`` leaves the most room for the final ``c2``, so it is the only one to check.
    """
    if not (text.startswith(o1) and text.endswith(c2)):
        return False
    m = _JOIN_RE[c1].search(text, len(o1))
    return m is not None and m.end() <= len(text) - len(c2)


def medr1_train_answer(text: str) -> str | None:
    """Group 1 of ``re.search(r"<answer>(.*?)</answer>", text)`` (no DOTALL), linear time.

    Fast path: the first ``<answer>`` and the first ``</answer>`` after it on the same line.
    Otherwise the match (if any) starts at the first ``<answer>`` of some later line, which
    :data:`_LINE_ANSWER_RE` finds without the original regex's quadratic rescans.
    """
    i = text.find(_OPEN_ANSWER)
    if i == -1:
        return None
    start = i + len(_OPEN_ANSWER)
    j = text.find(_CLOSE_ANSWER, start)
    if j == -1:
        return None  # no </answer> after the first <answer>: none after any later one
    k = text.find("\n", start, j)
    if k == -1:
        return text[start:j]
    m = _LINE_ANSWER_RE.search(text, k)
    return m.group(2) if m else None


def medr1_eval_answer(text: str) -> str | None:
    """Group 1 of ``re.search(r"<answer>\\s*(\\w+)\\s*</answer>", text)``.

    After each ``<answer>`` the regex can only consume one whitespace/word/whitespace
    run, which stops at the next ``<``; atomic runs also remove its backtracking.
    """
    m = _EVAL_RE.search(text)
    return m.group(2) if m else None


def _first_think_paper(text: str) -> str | None:
    i = text.find(_OPEN_THINK)
    if i == -1:
        return None
    j = text.find(_CLOSE_THINK, i + len(_OPEN_THINK))
    return None if j == -1 else text[i + len(_OPEN_THINK) : j].strip()


def _parse_paper(text: str, template: str, mode: str) -> Parsed:
    fmt = format_ok_paper(text, template)
    reasoning = _first_think_paper(text)
    if mode == "paper":
        found = medr1_train_answer(text)
        answer = found.strip() if found is not None else text.strip()
        error = None if found is not None else "no <answer> block (Med-R1 compares the whole text)"
    else:  # paper-eval: the rule of Med-R1's evaluation script for this template
        rule = MEDR1_EVAL_RULE[template]
        if rule == "regex" or (rule == "hybrid" and "answer" in text):
            answer = medr1_eval_answer(text)
            error = None if answer is not None else "no <answer>\\s*(\\w+)\\s*</answer> match"
        else:
            answer, error = text, "no <answer> block (Med-R1 eval compares the raw output)"
    if not fmt and error is None:
        error = f"does not match Med-R1's {template} format"
    return Parsed(answer=answer, reasoning=reasoning, format_ok=fmt, error=error)


# --------------------------------------------------------------------------- default mode


def _parse_default(text: str, template: str) -> Parsed:
    blocks: list[tuple[str, int, int, int, int]] = []  # name, tag_start, content_start, content_end, tag_end
    open_name: str | None = None
    open_at = content_at = 0
    structural: str | None = None
    for n, m in enumerate(_TAG_RE.finditer(text)):
        if n >= MAX_TAGS:
            structural = f"more than {MAX_TAGS} tags"
            break
        tag = m.group()
        closing = tag[1] == "/"
        name = tag[2:-1] if closing else tag[1:-1]
        if not closing:
            if open_name is not None:
                structural = "nested tags"
                break
            open_name, open_at, content_at = name, m.start(), m.end()
        elif open_name is None:
            structural = f"stray </{name}>"
            break
        elif open_name != name:
            structural = "nested tags"
            break
        else:
            blocks.append((name, open_at, content_at, m.start(), m.end()))
            open_name = None
    if structural is None and open_name is not None:
        structural = f"unclosed <{open_name}>"
    if structural is not None:
        return Parsed(answer=None, reasoning=None, format_ok=False, error=structural)

    if template == "zero-shot" and not blocks:
        answer = text.strip()
        return Parsed(answer or None, None, bool(answer), None if answer else "empty answer")

    answers = [b for b in blocks if b[0] == "answer"]
    thinks = [b for b in blocks if b[0] == "think"]
    answer = text[answers[0][2] : answers[0][3]].strip() if len(answers) == 1 else None
    reasoning = text[thinks[0][2] : thinks[0][3]].strip() if len(thinks) == 1 else None

    error: str | None = None
    if not answers:
        error = "no <answer> block"
    elif len(answers) > 1:
        error = f"{len(answers)} <answer> blocks"
    elif template != "zero-shot":
        expected = _EXPECTED_BLOCKS[template]
        got = tuple(b[0] for b in blocks)
        if got != expected:
            if len(thinks) > 1:
                error = f"{len(thinks)} <think> blocks"
            else:
                want = ", ".join(f"<{e}>" for e in expected)
                error = f"expected {want} blocks, got {', '.join(f'<{g}>' for g in got) or 'none'}"
    if error is None and _text_outside(text, blocks):
        error = "text outside tags"
    if error is None and not answer:
        error = "empty answer"
    if answer == "":
        answer = None
    return Parsed(answer=answer, reasoning=reasoning, format_ok=error is None, error=error)


def _text_outside(text: str, blocks: list[tuple[str, int, int, int, int]]) -> bool:
    pos = 0
    for _, start, _, _, end in blocks:
        gap = text[pos:start]
        if gap and not gap.isspace():
            return True
        pos = end
    tail = text[pos:]
    return bool(tail) and not tail.isspace()


def parse_completion(text: str, template: str, mode: str = "default") -> Parsed:
    """Parse one completion (string) for a template (``think``, ``think-after``,
    ``no-think``, ``zero-shot``) in a mode (``default``, ``paper``, ``paper-eval``).

    See the module docstring for the rules of each mode.  Never raises on any string.
    """
    _check(template, mode)
    if not isinstance(text, str):
        text = completion_text(text)
    if len(text) > _CACHE_MAX_CHARS:  # huge texts: a small cache of their own
        return _parse_cached_big(text, template, mode)
    return _parse_cached(text, template, mode)


def _parse(text: str, template: str, mode: str) -> Parsed:
    if mode == "default":
        return _parse_default(text, template)
    return _parse_paper(text, template, mode)


#: Parses are memoized so that the rewards of one batch share one parse; texts longer than
#: this go to a cache of only 8 entries (bounded memory).
_CACHE_MAX_CHARS = 65_536
_parse_cached = lru_cache(maxsize=4096)(_parse)
_parse_cached_big = lru_cache(maxsize=8)(_parse)


# --------------------------------------------------------------------------- normalization

_PUNCT_RE = re.compile(r"[^\w\s]|_")
_ARTICLES_RE = re.compile(r"\b(?:a|an|the)\b")
_WORD_RE = re.compile(r"\w+")


def normalize_option_text(s: str) -> str:
    """NFKC, case-fold, punctuation -> space, whitespace collapsed (for option texts)."""
    s = unicodedata.normalize("NFKC", s).casefold()
    return " ".join(_PUNCT_RE.sub(" ", s).split())


def normalize_text(s: str) -> str:
    """Open-answer normalization: NFKC, lower case, punctuation -> space, articles
    (a, an, the) removed, whitespace collapsed."""
    s = unicodedata.normalize("NFKC", s).casefold()
    s = _PUNCT_RE.sub(" ", s)
    s = _ARTICLES_RE.sub(" ", s)
    return " ".join(s.split())


def token_f1(pred: str, gold: str) -> float:
    """SQuAD-style token F1 between normalized texts (1.0 if both are empty)."""
    p, g = normalize_text(pred).split(), normalize_text(gold).split()
    if not p or not g:
        return float(p == g)
    common = sum((Counter(p) & Counter(g)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(g)
    return 2 * precision * recall / (precision + recall)


def token_recall(pred: str, gold: str) -> float:
    """Fraction of the gold's normalized tokens found in the prediction (1.0 if gold is empty)."""
    p, g = normalize_text(pred).split(), normalize_text(gold).split()
    if not g:
        return float(not p)
    return sum((Counter(p) & Counter(g)).values()) / len(g)


_YES = frozenset({"yes", "true"})
_NO = frozenset({"no", "false"})


def yes_no(s: str) -> str | None:
    """``"yes"``/``"no"`` if ``s`` is a (strict) yes/no answer, else ``None``.

    The first normalized word must be yes/true/no/false and no later word may have the
    opposite polarity: ``"Yes."`` -> yes, ``"No, there is no mass"`` -> no,
    ``"yes or no"`` -> None, ``"yeah"`` -> None.
    """
    words = normalize_text(s[:MAX_CHOICE_CHARS] if len(s) > MAX_CHOICE_CHARS else s).split()
    if not words:
        return None
    first = words[0]
    if first in _YES:
        polarity, opposite = "yes", _NO
    elif first in _NO:
        polarity, opposite = "no", _YES
    else:
        return None
    return None if any(w in opposite for w in words[1:]) else polarity


# --------------------------------------------------------------------------- choices

_LETTERS = string.ascii_uppercase
_LEAD_IN_RE = re.compile(
    r"(?:(?:the|my)\s+)?(?:(?:correct|final|right|best|most\s+likely)\s+)?"
    r"(?:answer|option|choice)\b(?:\s+is)?\s*[:\-]?\s*",
    re.IGNORECASE,
)
_BARE_RE = re.compile(r"([A-Za-z])")
_DELIM_RE = re.compile(
    r"(?:\(\s*([A-Za-z])\s*\)|\[\s*([A-Za-z])\s*\]|([A-Za-z])\s*[.:)\]])\s*(.*)", re.DOTALL
)
_SPACE_RE = re.compile(r"([A-Za-z])\s+(.+)", re.DOTALL)
_OTHER_LETTER_RE = re.compile(
    r"(?:^|[^A-Za-z0-9])[(\[]?([A-Za-z])\s*[)\]]"  # (B)  B)  [B]
    # or B, AND C, option D; a lower-case letter only where it ends a phrase ("or b", "and c."),
    # so the article in "and a mass" is not read as option A
    r"|\b(?i:or|and|nor|vs|versus|option|choice)\s+[(\[]?(?:([A-Z])\b|([a-z])(?=\s*(?:[.:)\],;/]|$)))"
    r"|^([A-Za-z])$"  # the rest is a bare letter: "A: B"
)


def _choice_prep(answer: str) -> str | None:
    s = answer.strip()
    if not s or len(s) > MAX_CHOICE_CHARS:
        return None
    s = unicodedata.normalize("NFKC", s)
    for ch in s:
        cat = unicodedata.category(ch)
        if cat in ("Cf", "Co", "Cs", "Cn") or (cat == "Cc" and not ch.isspace()):
            return None
    return " ".join(s.split())


def match_choice(answer: str | None, options: list[str]) -> str | None:
    """The option letter (``"A"``, ``"B"``, ...) that ``answer`` selects, or ``None``.

    See the module docstring for the accepted forms, the hedges that give ``None`` and
    the Unicode policy.  ``options`` are the option texts in letter order (``None``
    entries are treated as empty options that nothing matches).
    """
    if answer is None or not options:
        return None
    if len(answer) > MAX_CHOICE_CHARS and len(answer.strip()) > MAX_CHOICE_CHARS:
        return None
    return _match_choice(answer, tuple("" if o is None else str(o) for o in options))


@lru_cache(maxsize=1024)
def _normalized_options(options: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(normalize_option_text(o) for o in options)


@lru_cache(maxsize=8192)
def _match_choice(answer: str, options: tuple[str, ...]) -> str | None:
    s = _choice_prep(answer)
    if s is None:
        return None
    letters = _LETTERS[: len(options)]
    norm_opts = _normalized_options(options)
    hit = _option_text_letter(s, norm_opts, letters)
    if hit is not None:
        return hit
    lead = _LEAD_IN_RE.match(s)
    core = s[lead.end() :] if lead else s
    if core is not s:
        hit = _option_text_letter(core, norm_opts, letters)
        if hit is not None:
            return hit
    return _letter_form(core, norm_opts, letters)


def _option_text_letter(s: str, norm_opts: tuple[str, ...], letters: str) -> str | None:
    ns = normalize_option_text(s)
    if not ns:
        return None
    hits = [letters[i] for i, o in enumerate(norm_opts) if o == ns]
    return hits[0] if len(hits) == 1 else None


def _letter_form(core: str, norm_opts: tuple[str, ...], letters: str) -> str | None:
    if not core:
        return None
    m = _BARE_RE.fullmatch(core)
    if m:
        letter = m.group(1).upper()
        return letter if letter in letters else None
    m = _DELIM_RE.fullmatch(core)
    if m:
        letter = (m.group(1) or m.group(2) or m.group(3)).upper()
        rest, must_equal = m.group(4), False
    else:
        m = _SPACE_RE.fullmatch(core)
        if not m:
            return None
        letter, rest, must_equal = m.group(1).upper(), m.group(2), True
    if letter not in letters:
        return None
    idx = letters.index(letter)
    rest_norm = normalize_option_text(rest)
    if not rest_norm or rest_norm == norm_opts[idx]:
        return letter
    if must_equal or rest_norm in norm_opts:
        return None  # "A mass" is English, not option A; "A) <text of B>" is a conflict
    for om in _OTHER_LETTER_RE.finditer(rest.strip()):
        other = next(g for g in om.groups() if g).upper()
        if other in letters and other != letter:
            return None  # hedge: "A) CT or B) MRI", "A. or B"
    return letter


# --------------------------------------------------------------------------- scoring


def score_closed(
    completion: Any,
    options: list[str],
    answer_letter: str,
    template: str,
    mode: str = "default",
) -> tuple[float, Parsed, str | None]:
    """(correct 0/1, parsed, chosen letter) for a multiple-choice question.

    default: the single ``<answer>`` block through :func:`match_choice`.
    paper / paper-eval: Med-R1's exact, case-sensitive string compare with the gold letter.
    """
    text = completion_text(completion)
    parsed = parse_completion(text, template, mode)
    gold = (answer_letter or "").strip()
    letters = _LETTERS[: len(options or [])]
    if mode == "default":
        chosen = match_choice(parsed.answer, options)
        correct = chosen is not None and chosen == gold.upper()
        return float(correct), parsed, chosen
    pred = parsed.answer
    chosen = pred if pred is not None and len(pred) == 1 and pred in letters else None
    return float(pred is not None and bool(gold) and pred == gold), parsed, chosen


def score_open(
    completion: Any,
    answer: str,
    template: str,
    mode: str = "default",
    metric: str = "f1",
) -> tuple[float, Parsed]:
    """(score in [0, 1], parsed) for an open question.

    Yes/no golds: 1.0 iff the prediction has the same polarity (:func:`yes_no`).
    Otherwise ``metric="exact"``: normalized exact match; ``"f1"``: token F1.
    In paper modes the answer text is Med-R1's extraction; the scoring is the same.
    """
    if metric not in ("f1", "exact"):
        raise ValueError(f"unknown open metric {metric!r}; valid: f1, exact")
    text = completion_text(completion)
    parsed = parse_completion(text, template, mode)
    pred = parsed.answer
    if pred is None or not pred.strip() or len(pred) > MAX_OPEN_CHARS:
        return 0.0, parsed
    gold_yn = yes_no(answer) if len(normalize_text(answer).split()) == 1 else None
    if gold_yn is not None:
        return float(yes_no(pred) == gold_yn), parsed
    if metric == "exact":
        return float(normalize_text(pred) == normalize_text(answer)), parsed
    return token_f1(pred, answer), parsed
