"""Reward throughput and worst-case latency benchmark.

1. Throughput: 10,000 completions of ~256 tokens (a mix of well-formed, wrong, hedging,
   nested, untagged, repetitive, truncated and open-question completions) scored by all
   rewards (format, accuracy, reasoning, length).  Two ways:
   * ``trl-batches``: as GRPOTrainer calls them -- every reward on one batch of 64, then
     the next batch (the parse cache is shared by the rewards of a batch);
   * ``cold``: the parse cache is cleared before every reward, each reward scores all
     10,000 completions at once (no sharing at all).
   Target: under 1 s in total.
2. Latency: 1 MB adversarial completions (tag floods, unclosed tags, hedge floods, inputs
   that make Med-R1's own regexes quadratic) scored by all rewards, in default and paper
   modes, plus the paper-eval parser.  Target: under 50 ms each.
3. For comparison: Med-R1's original regexes on 32 KB inputs that make them quadratic.

Run: ``python bench/reward_speed.py [--n 10000]``; prints markdown tables.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qlora_grpo.parsing import (  # noqa: E402
    MEDR1_FORMAT_REGEX,
    MEDR1_TRAIN_ANSWER_REGEX,
    _parse_cached,
    _parse_cached_big,
    format_ok_paper,
    medr1_train_answer,
    parse_completion,
)
from qlora_grpo.rewards import build_reward_funcs  # noqa: E402

ALL = {"format": 1.0, "accuracy": 1.0, "reasoning": 0.5, "length": 1.0}
OPTIONS = ["Computed tomography", "Magnetic resonance imaging", "X-ray radiograph", "Ultrasound"]
QUESTION = "Which imaging modality was used to acquire this image? " + ", ".join(
    f"{chr(65 + i)}){o}" for i, o in enumerate(OPTIONS)
)
VOCAB = (
    "the image shows a hyperintense lesion in left temporal lobe with surrounding edema and mass effect "
    "on adjacent ventricle signal characteristics suggest fluid content while bone cortex appears dark "
    "contrast between grey and white matter is high which is typical of this modality findings are "
    "consistent with an acute process no calcification is visible"
).split()


def _reasoning(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(VOCAB) for _ in range(words)) + ". Therefore the answer is B."


def make_batch(n: int, seed: int = 0) -> tuple[list[str], dict[str, list]]:
    """n completions of ~256 tokens (~190 words) and their dataset columns."""
    rng = random.Random(seed)
    comps: list[str] = []
    cols: dict[str, list] = {k: [] for k in ("answer", "options", "answer_letter", "answer_type", "question")}
    ids: list[list[int]] = []
    for i in range(n):
        r = _reasoning(rng, 180)
        kind = i % 10
        closed = kind != 9
        if kind == 0:
            c = f"<think>{r}</think>\n<answer>B</answer>"
        elif kind == 1:
            c = f"<think>{r}</think>\n<answer>C) X-ray radiograph</answer>"
        elif kind == 2:
            c = f"<think>{r}</think>\n<answer>magnetic resonance imaging</answer>"
        elif kind == 3:
            c = f"<think>{r}</think><answer>A</answer><answer>B</answer>"
        elif kind == 4:
            c = f"<think>{r} <answer>B</answer></think><answer>A</answer>"
        elif kind == 5:
            c = f"{r} The answer is (B)."
        elif kind == 6:
            c = "<think>" + " ".join(["the lesion is bright"] * 45) + "</think><answer>B</answer>"
        elif kind == 7:
            c = f"<think>{r}"  # truncated at max length
        elif kind == 8:
            c = f"<think>{r}</think>\n<answer>A or B</answer>"
        else:
            c = f"<think>{r}</think>\n<answer>Left temporal lobe</answer>"
        comps.append(c)
        cols["answer"].append("Magnetic resonance imaging" if closed else "left temporal lobe")
        cols["options"].append(OPTIONS if closed else [])
        cols["answer_letter"].append("B" if closed else "")
        cols["answer_type"].append("closed" if closed else "open")
        cols["question"].append(QUESTION)
        ids.append(list(range(len(c.split()) * 4 // 3)))
    cols["completion_ids"] = ids
    return comps, cols


def bench_throughput(n: int, template: str = "think", mode: str = "default") -> dict[str, float]:
    comps, cols = make_batch(n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        funcs, _ = build_reward_funcs(ALL, template, mode)
    out: dict[str, float] = {}

    _parse_cached.cache_clear()
    t0 = time.perf_counter()
    for s in range(0, n, 64):
        batch = comps[s : s + 64]
        kw = {k: v[s : s + 64] for k, v in cols.items()}
        for f in funcs:
            f(batch, **kw)
    out["trl-batches (64), all rewards"] = time.perf_counter() - t0

    total = 0.0
    for f in funcs:
        _parse_cached.cache_clear()
        t0 = time.perf_counter()
        f(comps, **cols)
        dt = time.perf_counter() - t0
        out[f"cold: {f.__name__}"] = dt
        total += dt
    out["cold: all rewards"] = total
    return out


def adversarial() -> dict[str, str]:
    mb = 1 << 20
    return {
        '"<think>" x 150k': "<think>" * (mb // 7),
        '"<answer>" x 131k, unclosed': "<answer>" * (mb // 8),
        '"<answer>" x 131k + "\\n</answer>"': "<answer>" * (mb // 8) + "\n</answer>",
        '"<answer>\\n" x 116k + "</answer>"': "<answer>\n" * (mb // 9) + "</answer>",
        '"<think>" + "</think><answer>" x 61k': "<think>" + "</think><answer>" * (mb // 17),
        '"</think>" x 131k': "</think>" * (mb // 8),
        'answer block of 1 MB "A, "': "<think>r</think><answer>" + "A, " * (mb // 3) + "</answer>",
        "1 MB whitespace + answer": " " * mb + "<answer>B</answer>",
        "1 MB reasoning, 'answer is B' x 70k": "<think>"
        + "the answer is B. " * (mb // 17)
        + "</think><answer>B</answer>",
        "1 MB of words, no tags": "lesion " * (mb // 7),
        '"<answer>" + 1 MB "a" + "!</answer>"': "<answer>" + "a" * mb + "!</answer>",
        '"</think>" + 1 MB spaces + "x</answer>"': "<think></think>" + " " * mb + "x</answer>",
        '"<answer>\\n" + 1 MB line + "</answer>"': "<answer>\n" + "x" * mb + "</answer>",
        '"<answer>\\n<answer>" + 1 MB line + "\\n</answer>"': "<answer>\n<answer>" + "x" * mb + "\n</answer>",
    }


def bench_adversarial() -> list[tuple[str, float, float, float]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        default_funcs, _ = build_reward_funcs(ALL, "think", "default")
        paper_funcs, _ = build_reward_funcs({"format": 1.0, "accuracy": 1.0}, "think", "paper")
    rows = []
    for label, text in adversarial().items():
        times = []
        for funcs in (default_funcs, paper_funcs):
            _parse_cached.cache_clear()
            _parse_cached_big.cache_clear()
            t0 = time.perf_counter()
            for answer_type in ("closed", "open"):
                kw = {
                    "answer": ["Magnetic resonance imaging" if answer_type == "closed" else "left lobe"],
                    "options": [OPTIONS if answer_type == "closed" else []],
                    "answer_letter": ["B" if answer_type == "closed" else ""],
                    "answer_type": [answer_type],
                    "question": [QUESTION],
                }
                for f in funcs:
                    f([text], **kw)
            times.append(time.perf_counter() - t0)
        _parse_cached_big.cache_clear()
        t0 = time.perf_counter()
        parse_completion(text, "no-think", "paper-eval")
        times.append(time.perf_counter() - t0)
        rows.append((label, *times))
    return rows


def bench_naive_medr1(kb: int = 32) -> list[tuple[str, float, float]]:
    """Med-R1's own regexes vs our linear equivalents on inputs that make them quadratic."""
    n = kb * 1024
    cases = [
        (
            f'fullmatch think regex, "<think>" + "</think><answer>" x {n // 16}',
            "<think>" + "</think><answer>" * (n // 16),
            lambda t: re.fullmatch(MEDR1_FORMAT_REGEX["think"], t, re.DOTALL),
            lambda t: format_ok_paper(t, "think"),
        ),
        (
            f'search answer regex, "<answer>" x {n // 8}',
            "<answer>" * (n // 8),
            lambda t: re.search(MEDR1_TRAIN_ANSWER_REGEX, t),
            medr1_train_answer,
        ),
    ]
    rows = []
    for label, text, naive, ours in cases:
        t0 = time.perf_counter()
        naive(text)
        t1 = time.perf_counter()
        ours(text)
        rows.append((label, t1 - t0, time.perf_counter() - t1))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000)
    args = ap.parse_args()

    print(f"## Throughput: {args.n:,} completions (~256 tokens), template think\n")
    print("| mode | measurement | seconds | µs / completion |")
    print("|---|---|---:|---:|")
    ok = True
    for mode in ("default", "paper"):
        res = bench_throughput(args.n, mode=mode)
        for k, v in res.items():
            print(f"| {mode} | {k} | {v:.3f} | {v / args.n * 1e6:.1f} |")
        ok &= res["trl-batches (64), all rewards"] < 1.0

    print("\n## Latency: 1 MB adversarial completions (closed + open scoring, all rewards)\n")
    print("| input | default mode, ms | paper mode, ms | paper-eval parse, ms |")
    print("|---|---:|---:|---:|")
    worst = 0.0
    for label, d, p, e in bench_adversarial():
        worst = max(worst, d, p, e)
        print(f"| {label} | {d * 1e3:.1f} | {p * 1e3:.1f} | {e * 1e3:.1f} |")
    print(f"\nworst adversarial: {worst * 1e3:.1f} ms (target < 50 ms); throughput target met: {ok}")

    print("\n## Med-R1's original regexes are quadratic (32 KB inputs; ours for comparison)\n")
    print("| input | Med-R1 regex, ms | ours, ms |")
    print("|---|---:|---:|")
    for label, naive, ours in bench_naive_medr1():
        print(f"| {label} | {naive * 1e3:.1f} | {ours * 1e3:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
