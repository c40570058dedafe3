"""GRPO reward functions (TRL signature), a registry to select them by name, and a debug CLI.

Every reward is built by a factory in :data:`REWARDS` and has TRL's signature
``fn(completions, **kwargs) -> list[float]``; ``kwargs`` carries the dataset columns
(``answer``, ``options``, ``answer_letter``, ``answer_type``, optionally ``question``) and
TRL's extras (``prompts``, ``completion_ids``, ``trainer_state``, ``log_metric`` ...),
which are ignored unless used.  Its ``__name__`` is its registry name, so TRL logs
``rewards/<name>/mean``.  All parsing goes through :mod:`qlora_grpo.parsing`.

=============  ============================================================================
reward         pays for
=============  ============================================================================
``format``     1 if the completion has the template's format, else 0 (paper mode:
               Med-R1's ``re.fullmatch`` regex; default: exact block order, nothing
               outside the tags, no nested/repeated tags, non-empty answer)
``accuracy``   closed: 1 if the single ``<answer>`` block selects the gold option
               (:func:`~qlora_grpo.parsing.match_choice`; paper: Med-R1's exact compare);
               open: yes/no polarity, else token F1 (``open_metric="f1"``) or normalized
               exact match (``"exact"``)
``reasoning``  RARL-inspired reasoning quality in [0, 1] (formula below)
``length``     0 until ``max_len - buffer`` tokens, then linearly down to -1 at ``max_len``
=============  ============================================================================

Reasoning reward (our design; RARL publishes no formula)
--------------------------------------------------------
With ``w`` the words of the ``<think>`` block (lower case, ASCII punctuation removed,
split on whitespace)::

    R = present * consistency * (a*S_len + b*S_rep + c*S_copy) / (a + b + c)

* ``present`` = 1 if the completion parses with a non-empty ``<think>`` block, else 0
  (so no-think completions always get 0);
* ``S_len`` = 1 inside ``[min_words, max_words]``; ``|w| / min_words`` below;
  ``max(0, 2 - |w| / max_words)`` above (0 at twice the band);
* ``S_rep`` = distinct ``rep_n``-grams / all ``rep_n``-grams (1 when fewer than ``rep_n``
  words): a reasoning that loops scores near 0;
* ``S_copy`` = ``1 - clip((c - copy_tolerance) / (1 - copy_tolerance), 0, 1)`` where ``c``
  is the share of the reasoning's distinct ``copy_n``-grams that occur in the question
  (1 without a question): restating a part of the question is free, pasting it is not;
* ``consistency`` = ``1 - contradiction_penalty`` if the reasoning's *last* concluding
  statement (``the answer is ...``, ``answer: ...``, ``the correct option is ...``,
  ``I choose ...``) selects an option different from the one in ``<answer>``, else 1.
  Not applicable to open questions (1).

A reasoning longer than ``max(20000, 16 * max_words)`` characters gets ``S_len = 0`` and
only that prefix is analysed.  Defaults: ``min_words=15``, ``max_words=150``, ``rep_n=3``, ``copy_n=3``,
``copy_tolerance=0.25``, ``contradiction_penalty=1.0``, weights ``a=b=c=1``.
:func:`reasoning_subscores` returns every term for logging; during training the reward
also reports the batch means through TRL's ``log_metric`` as ``reasoning/<term>``.

Safety
------
A reward never raises for one strange completion: the exception is caught, that
completion scores 0.0, :data:`REWARD_ERRORS` ``[name]`` is incremented, and a warning is
issued once per (reward, exception type).  The batch error count is also reported via
``log_metric`` as ``reward_errors/<name>``.

CLI
---
``python -m qlora_grpo.rewards --template think --input FILE.jsonl [--mode paper]
[--rewards format,accuracy,reasoning,length]`` scores JSONL lines with ``completion``,
``answer`` (text or letter), optional ``options``, ``answer_type`` and ``question`` and
prints one JSON object of floats per valid line.  Bad lines: ``error: line N: ...`` on
stderr, no output line, exit code 1 at the end.  Missing file: exit code 2.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import math
import re
import string
import sys
import warnings
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

from qlora_grpo.parsing import (
    MODES,
    TEMPLATES,
    completion_text,
    match_choice,
    normalize_option_text,
    parse_completion,
    score_closed,
    score_open,
)

__all__ = [
    "REWARDS",
    "REWARD_ERRORS",
    "RewardFn",
    "build_reward_funcs",
    "closed_item",
    "main",
    "make_accuracy_reward",
    "make_format_reward",
    "make_length_reward",
    "make_reasoning_reward",
    "reasoning_subscores",
]

logger = logging.getLogger(__name__)

RewardFn = Callable[..., list[float]]

#: Per-reward count of completions whose scoring raised (each scored 0.0).
REWARD_ERRORS: collections.Counter[str] = collections.Counter()
_WARNED: set[tuple[str, str]] = set()


# --------------------------------------------------------------------------- plumbing


def _record_error(name: str, exc: BaseException) -> None:
    REWARD_ERRORS[name] += 1
    kind = (name, type(exc).__name__)
    if kind in _WARNED:
        return
    _WARNED.add(kind)
    msg = (
        f"reward {name!r} raised {type(exc).__name__}: {exc!s:.200} on one completion; it was "
        f"scored 0.0 (further {type(exc).__name__} errors of this reward are only counted in REWARD_ERRORS)"
    )
    logger.warning(msg)
    warnings.warn(msg, RuntimeWarning, stacklevel=3)


def _column(kwargs: dict[str, Any], key: str, i: int, default: Any = None) -> Any:
    col = kwargs.get(key)
    if col is None:
        return default
    return col[i]


def _safe_batch(name: str, per_item: Callable[[Any, int, dict[str, Any]], float]) -> RewardFn:
    """Turn a per-completion scorer into a TRL reward function with error isolation."""

    def reward_fn(completions: Sequence[Any], **kwargs: Any) -> list[float]:
        out: list[float] = []
        errors = 0
        for i, c in enumerate(completions):
            try:
                v = float(per_item(c, i, kwargs))
                if not math.isfinite(v):
                    raise ValueError(f"non-finite reward {v}")
            except Exception as exc:  # noqa: BLE001 - one bad completion must not stop training
                _record_error(name, exc)
                errors += 1
                v = 0.0
            out.append(v)
        log_metric = kwargs.get("log_metric")
        if callable(log_metric):
            try:
                log_metric(f"reward_errors/{name}", float(errors))
            except Exception:  # noqa: BLE001 - logging must never break scoring
                pass
        return out

    reward_fn.__name__ = name
    reward_fn.__qualname__ = name
    return reward_fn


def _check(template: str, mode: str) -> None:
    if template not in TEMPLATES:
        raise ValueError(f"unknown template {template!r}; valid: {', '.join(TEMPLATES)}")
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; valid: {', '.join(MODES)}")


def closed_item(options: Any, answer_letter: Any, answer_type: Any) -> bool:
    """Whether a dataset row is scored as multiple choice (needs options and a gold letter).

    Rows marked ``open`` -- or lacking options or a letter (e.g. yes/no "closed" questions
    of VQA-RAD/SLAKE) -- are scored as open questions.
    """
    if answer_type is not None and str(answer_type).lower() == "open":
        return False
    return bool(options) and bool(answer_letter)


# --------------------------------------------------------------------------- format


def make_format_reward(template: str, mode: str = "default") -> RewardFn:
    """1.0 if the completion has the template's format (see :mod:`qlora_grpo.parsing`), else 0.0."""
    _check(template, mode)

    def one(c: Any, i: int, kw: dict[str, Any]) -> float:
        return float(parse_completion(completion_text(c), template, mode).format_ok)

    return _safe_batch("format", one)


# --------------------------------------------------------------------------- accuracy


def make_accuracy_reward(template: str, mode: str = "default", open_metric: str = "f1") -> RewardFn:
    """Closed questions: 1.0 if the chosen option is the gold one; open: graded in [0, 1]."""
    _check(template, mode)
    if open_metric not in ("f1", "exact"):
        raise ValueError(f"unknown open_metric {open_metric!r}; valid: f1, exact")

    def one(c: Any, i: int, kw: dict[str, Any]) -> float:
        options = _column(kw, "options", i) or []
        letter = _column(kw, "answer_letter", i) or ""
        text = completion_text(c)
        if closed_item(options, letter, _column(kw, "answer_type", i)):
            return score_closed(text, list(options), letter, template, mode)[0]
        answer = kw["answer"][i]
        return score_open(text, str(answer), template, mode, metric=open_metric)[0]

    return _safe_batch("accuracy", one)


# --------------------------------------------------------------------------- reasoning

# ASCII punctuation -> space, then whitespace split: the words of the n-gram statistics
_PUNCT_TO_SPACE = str.maketrans({ch: " " for ch in string.punctuation})
#: The concluding statement is looked for in the last characters of the reasoning only.
_CONCLUSION_WINDOW = 2000
#: Reasoning longer than max(this, 16 * max_words) characters gets S_len = 0 and only its
#: prefix is analysed (bounds the work on a pathological completion).
_REASONING_CHAR_CAP = 20_000
# Concluding statements, located by keyword (str.rfind) and checked around it:
#   "... answer is / would be / should be / must be / = / :"   (any qualifier before)
#   "correct|best|right|final option|choice is / :"
#   "I (would|will) choose|select|pick"
_CUE_AFTER = {
    "answer": re.compile(r"answer\s*(?:is|would\s+be|should\s+be|must\s+be|=|:)\s*"),
    "option": re.compile(r"option\s*(?:is|would\s+be|should\s+be|:)\s*"),
    "choice": re.compile(r"choice\s*(?:is|would\s+be|should\s+be|:)\s*"),
    "choose": re.compile(r"choose\s*"),
    "select": re.compile(r"select\s*"),
    "pick": re.compile(r"pick\s*"),
}
_QUALIFIED = re.compile(r"(?:correct|best|right|final)\s+$")
_FIRST_PERSON = re.compile(r"(?:^|\W)i\s+(?:would\s+|will\s+)?$")
_CUE_BEFORE = {
    "option": _QUALIFIED,
    "choice": _QUALIFIED,
    "choose": _FIRST_PERSON,
    "select": _FIRST_PERSON,
    "pick": _FIRST_PERSON,
}
_SENTENCE_END_RE = re.compile(r"\n|[;!?]|\.(?:\s|$)")


def _words(text: str) -> list[str]:
    return text.lower().translate(_PUNCT_TO_SPACE).split()


def _ngrams(words: list[str], n: int) -> zip:
    return zip(*(words[k:] for k in range(n)))


@lru_cache(maxsize=2048)
def _question_ngrams(question: str, n: int) -> frozenset[tuple[str, ...]]:
    return frozenset(_ngrams(_words(question), n))


def _last_cue_end(low: str) -> int:
    """End of the last concluding cue in ``low`` (lower-cased text), or -1."""
    best_pos, best_end = -1, -1
    for kw, after in _CUE_AFTER.items():
        before = _CUE_BEFORE.get(kw)
        pos = low.rfind(kw)
        while pos > best_pos:
            m = after.match(low, pos)
            if (
                m is not None
                and (pos == 0 or not low[pos - 1].isalnum())
                and (before is None or before.search(low, max(0, pos - 24), pos))
            ):
                best_pos, best_end = pos, m.end()
                break
            pos = low.rfind(kw, 0, pos)
    return best_end


def _concluded_letter(reasoning: str, options: list[str]) -> str | None:
    """The option selected by the reasoning's last concluding statement, if any."""
    low = reasoning[-_CONCLUSION_WINDOW:].lower()
    end = _last_cue_end(low)
    if end < 0:
        return None
    seg = low[end : end + 200]
    cut = _SENTENCE_END_RE.search(seg, 1)  # "b." keeps its letter: the cut starts after it
    return match_choice(seg[: cut.start()] if cut else seg, options)


def reasoning_subscores(
    completion: Any,
    question: str | None,
    options: list[str] | None,
    answer_letter: str | None,
    template: str,
    *,
    min_words: int = 15,
    max_words: int = 150,
    rep_n: int = 3,
    copy_n: int = 3,
    copy_tolerance: float = 0.25,
    contradiction_penalty: float = 1.0,
    weights: tuple[float, float, float] = (1.0, 1.0, 1.0),
) -> dict[str, float]:
    """All terms of the reasoning reward (see the module docstring) plus ``total``.

    ``answer_letter`` is accepted for symmetry with the dataset columns; the contradiction
    check compares the reasoning with the completion's own ``<answer>``, not with the gold.
    """
    del answer_letter
    text = completion_text(completion)
    parsed = parse_completion(text, template, "default")
    full = parsed.reasoning or ""
    cap = max(_REASONING_CHAR_CAP, 16 * max_words)
    too_long = len(full) > cap
    words = _words(full[:cap] if too_long else full)
    present = 1.0 if words else 0.0
    n_words = len(words)

    if too_long:
        s_len = 0.0
    elif n_words < min_words:
        s_len = n_words / min_words if min_words > 0 else 1.0
    elif n_words <= max_words:
        s_len = 1.0
    else:
        s_len = max(0.0, 2.0 - n_words / max_words)

    n_grams = n_words - rep_n + 1
    distinct = set(_ngrams(words, rep_n)) if n_grams > 0 else set()
    s_rep = len(distinct) / n_grams if n_grams > 0 else 1.0

    s_copy = 1.0
    if question and n_words >= copy_n:
        mine = distinct if copy_n == rep_n else set(_ngrams(words, copy_n))
        qset = _question_ngrams(question, copy_n)
        if qset and mine:
            c = len(qset.intersection(mine)) / len(mine)
            s_copy = 1.0 - min(1.0, max(0.0, (c - copy_tolerance) / (1.0 - copy_tolerance)))

    consistency = 1.0
    if present and options:
        chosen = match_choice(parsed.answer, list(options))
        concluded = _concluded_letter(full, list(options))
        if chosen is not None and concluded is not None and concluded != chosen:
            consistency = 1.0 - contradiction_penalty

    a, b, c_w = weights
    quality = (a * s_len + b * s_rep + c_w * s_copy) / (a + b + c_w)
    total = present * consistency * quality
    return {
        "present": present,
        "length": s_len,
        "repetition": s_rep,
        "copy": s_copy,
        "consistency": consistency,
        "total": total,
    }


def make_reasoning_reward(
    template: str,
    mode: str = "default",
    *,
    min_words: int = 15,
    max_words: int = 150,
    rep_n: int = 3,
    copy_n: int = 3,
    copy_tolerance: float = 0.25,
    contradiction_penalty: float = 1.0,
    weights: Sequence[float] = (1.0, 1.0, 1.0),
) -> RewardFn:
    """RARL-inspired reasoning-quality reward in [0, 1] (formula in the module docstring).

    The reasoning is always read with the default parser (Med-R1 has no such reward);
    ``mode`` is accepted for a uniform factory signature.
    """
    _check(template, mode)
    if not 0 < min_words <= max_words:
        raise ValueError("need 0 < min_words <= max_words")
    if rep_n < 1 or copy_n < 1:
        raise ValueError("rep_n and copy_n must be >= 1")
    if not 0 <= copy_tolerance < 1 or not 0 <= contradiction_penalty <= 1:
        raise ValueError("need 0 <= copy_tolerance < 1 and 0 <= contradiction_penalty <= 1")
    w = tuple(float(x) for x in weights)
    if len(w) != 3 or not all(map(math.isfinite, w)) or min(w) < 0 or sum(w) <= 0:
        raise ValueError("weights must be three finite non-negative numbers with a positive sum")
    if template in ("no-think", "zero-shot"):
        warnings.warn(
            f"the reasoning reward is always 0 with template {template!r} (no <think> block)",
            UserWarning,
            stacklevel=2,
        )
    params = dict(
        min_words=min_words,
        max_words=max_words,
        rep_n=rep_n,
        copy_n=copy_n,
        copy_tolerance=copy_tolerance,
        contradiction_penalty=contradiction_penalty,
        weights=w,
    )
    sums: dict[str, float] = collections.defaultdict(float)

    def one(c: Any, i: int, kw: dict[str, Any]) -> float:
        options = _column(kw, "options", i) or []
        letter = _column(kw, "answer_letter", i) or ""
        if not closed_item(options, letter, _column(kw, "answer_type", i)):
            options = []
        sub = reasoning_subscores(c, _column(kw, "question", i), options, letter, template, **params)
        for k, v in sub.items():
            sums[k] += v
        return sub["total"]

    inner = _safe_batch("reasoning", one)

    def reasoning(completions: Sequence[Any], **kwargs: Any) -> list[float]:
        sums.clear()
        out = inner(completions, **kwargs)
        log_metric = kwargs.get("log_metric")
        if callable(log_metric) and out:
            try:
                for k, v in sums.items():
                    if k != "total":
                        log_metric(f"reasoning/{k}", v / len(out))
            except Exception:  # noqa: BLE001 - logging must never break scoring
                pass
        return out

    return reasoning


# --------------------------------------------------------------------------- length


def make_length_reward(
    template: str, mode: str = "default", *, max_len: int = 256, buffer: int = 64
) -> RewardFn:
    """Soft over-length penalty in [-1, 0]: 0 up to ``max_len - buffer`` tokens, then
    linearly down to -1 at ``max_len`` (``max_len`` should be ``max_completion_length``).

    Length = ``len(completion_ids[i])`` when TRL passes token ids, else whitespace words.
    """
    _check(template, mode)
    if max_len <= 0 or not 0 < buffer <= max_len:
        raise ValueError("need max_len > 0 and 0 < buffer <= max_len")
    start = max_len - buffer

    def one(c: Any, i: int, kw: dict[str, Any]) -> float:
        ids = _column(kw, "completion_ids", i)
        # split at most max_len times: counting beyond max_len + 1 cannot change the result
        n = len(ids) if ids is not None else len(completion_text(c).split(maxsplit=max_len))
        if n <= start:
            return 0.0
        return -min(1.0, (n - start) / buffer)

    return _safe_batch("length", one)


# --------------------------------------------------------------------------- registry

REWARDS: dict[str, Callable[..., RewardFn]] = {
    "format": make_format_reward,
    "accuracy": make_accuracy_reward,
    "reasoning": make_reasoning_reward,
    "length": make_length_reward,
}


def build_reward_funcs(
    rewards: dict[str, float],
    template: str,
    mode: str = "default",
    options: dict[str, dict[str, Any]] | None = None,
) -> tuple[list[RewardFn], list[float]]:
    """Reward functions and weights (for ``GRPOConfig.reward_weights``), in ``rewards`` order.

    ``rewards`` maps registry names to weights, e.g. ``{"format": 1.0, "accuracy": 1.0}``;
    ``options`` maps names to factory keyword arguments, e.g.
    ``{"accuracy": {"open_metric": "exact"}, "length": {"max_len": 256, "buffer": 64}}``.
    Unknown names or options raise ``ValueError``.
    """
    valid = ", ".join(REWARDS)
    if not rewards:
        raise ValueError(f"no rewards selected; valid names: {valid}")
    options = dict(options or {})
    unknown = [n for n in list(rewards) + list(options) if n not in REWARDS]
    if unknown:
        raise ValueError(f"unknown reward name(s) {', '.join(map(repr, unknown))}; valid names: {valid}")
    funcs: list[RewardFn] = []
    weights: list[float] = []
    for name, weight in rewards.items():
        try:
            w = float(weight)
        except (TypeError, ValueError):
            raise ValueError(f"weight of reward {name!r} must be a number, got {weight!r}") from None
        if not math.isfinite(w):
            raise ValueError(f"weight of reward {name!r} must be finite, got {weight!r}")
        opts = options.get(name)
        opts = {} if opts is None else opts
        if not isinstance(opts, dict):
            raise ValueError(f"options for reward {name!r} must be a mapping, got {type(opts).__name__}")
        try:
            funcs.append(REWARDS[name](template, mode, **opts))
        except TypeError as exc:
            raise ValueError(f"bad options for reward {name!r}: {exc}") from None
        weights.append(w)
    return funcs, weights


# --------------------------------------------------------------------------- CLI


def _row_from_json(obj: Any) -> dict[str, Any]:
    """Validate one CLI input object and derive ``answer_letter``."""
    if not isinstance(obj, dict):
        raise ValueError("line is not a JSON object")
    if "completion" not in obj:
        raise ValueError("missing 'completion'")
    completion = obj["completion"]
    if not isinstance(completion, (str, list, dict)):
        raise ValueError("'completion' must be a string or a conversational list")
    if not isinstance(obj.get("answer"), str):
        raise ValueError("missing or non-string 'answer'")
    answer: str = obj["answer"]
    options = obj.get("options") or []
    if not isinstance(options, list) or not all(isinstance(o, str) for o in options):
        raise ValueError("'options' must be a list of strings")
    answer_type = obj.get("answer_type")
    if answer_type is not None and str(answer_type).lower() not in ("open", "closed"):
        raise ValueError("'answer_type' must be 'open' or 'closed'")
    question = obj.get("question")
    if question is not None and not isinstance(question, str):
        raise ValueError("'question' must be a string")
    letter = ""
    if options and str(answer_type or "closed").lower() == "closed":
        a = answer.strip()
        if len(a) == 1 and a.isascii() and a.isalpha() and a.upper() < chr(ord("A") + len(options)):
            letter = a.upper()
        else:
            na = normalize_option_text(answer)
            hits = [i for i, o in enumerate(options) if normalize_option_text(o) == na]
            if len(hits) != 1:
                raise ValueError(
                    f"answer {answer!r} is neither an option letter nor exactly one option's text"
                )
            letter = chr(ord("A") + hits[0])
    return {
        "completion": completion,
        "answer": answer,
        "options": options,
        "answer_letter": letter,
        "answer_type": (str(answer_type).lower() if answer_type else ("closed" if letter else "open")),
        "question": question or "",
    }


def main(argv: list[str] | None = None) -> int:
    """Score a JSONL file; see the module docstring.  Returns the exit code."""
    ap = argparse.ArgumentParser(
        prog="python -m qlora_grpo.rewards", description="Score completions (JSONL)."
    )
    ap.add_argument("--template", required=True, choices=[t for t in TEMPLATES])
    ap.add_argument("--mode", default="default", choices=list(MODES))
    ap.add_argument(
        "--input", required=True, help="JSONL file: completion, answer[, options, answer_type, question]"
    )
    ap.add_argument(
        "--rewards", default="format,accuracy", help=f"comma-separated, from: {', '.join(REWARDS)}"
    )
    ap.add_argument("--open-metric", default="f1", choices=["f1", "exact"])
    ap.add_argument("--max-len", type=int, default=256, help="length reward: max completion length")
    ap.add_argument("--buffer", type=int, default=64, help="length reward: penalty ramp width")
    args = ap.parse_args(argv)

    names = [n.strip() for n in args.rewards.split(",") if n.strip()]
    opts: dict[str, dict[str, Any]] = {
        "accuracy": {"open_metric": args.open_metric},
        "length": {"max_len": args.max_len, "buffer": args.buffer},
    }
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            funcs, _ = build_reward_funcs({n: 1.0 for n in names}, args.template, args.mode, opts)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        with open(args.input, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        print(f"error: input file not found: {args.input}", file=sys.stderr)
        return 2
    except (OSError, UnicodeDecodeError) as exc:
        print(f"error: cannot read {args.input}: {exc}", file=sys.stderr)
        return 2

    failed = False
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = _row_from_json(json.loads(line))
        except (json.JSONDecodeError, ValueError) as exc:
            print(f"error: line {lineno}: {exc}", file=sys.stderr)
            failed = True
            continue
        kwargs = {k: [v] for k, v in row.items() if k != "completion"}
        before = sum(REWARD_ERRORS.values())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scores = {f.__name__: f([row["completion"]], **kwargs)[0] for f in funcs}
        if sum(REWARD_ERRORS.values()) > before:
            print(f"error: line {lineno}: a reward raised; scored 0.0", file=sys.stderr)
            failed = True
        print(json.dumps(scores))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
