"""The papers' published numbers beside this project's, from a finished generalization matrix.

`python -m eval.generalization ... --paper-table` prints `paper_table(result)` and writes it to
OUT/paper_table.md. Only numbers the papers state are listed (see docs/reproduce.md for the
citations and for what is not published or not readable offline); "this project" is computed from
generalization.json the same way for every run, and left empty ("–") where it cannot be: no
--base row for a gain, or a number this project does not produce (Qwen2-VL-72B, RARL's LLM judge).
"""

from __future__ import annotations

from dataclasses import dataclass

BASE = "base"  # the base-model row of eval.generalization


@dataclass(frozen=True)
class PaperNumber:
    key: str        # what "this project" computes for it (see `ours`); "" = not computed here
    axis: str       # "modality", "question_type" or "rarl"
    quantity: str
    paper: str      # as the paper states it
    source: str     # where the paper states it


#: The papers' numbers, as stated. Med-R1: arXiv 2503.13939 (abstract, v1-v5); RARL: arXiv 2506.06600
#: (abstract, v2). The per-cell matrices and the per-variant (think / no-think / think-after) numbers are
#: in the papers' tables and figures, which are not readable offline: see docs/reproduce.md.
PAPER_NUMBERS: tuple[PaperNumber, ...] = (
    PaperNumber("mean", "modality", "Med-R1 average accuracy over the 8 modality test sets (%)", "69.91",
                "Med-R1 results table, as quoted in PROTOCOL.md (table number not verified offline)"),
    PaperNumber("gain", "modality", "gain over base Qwen2-VL-2B, 8 modalities (points)", "+29.94",
                "Med-R1 abstract (\"29.94% improvement in average accuracy\")"),
    PaperNumber("", "modality", "Qwen2-VL-72B average accuracy, 8 modalities (%)", "68.05",
                "Med-R1 results table, as quoted in PROTOCOL.md"),
    PaperNumber("gain", "question_type", "gain over base Qwen2-VL-2B, 5 question types (points)", "+32.06",
                "Med-R1 abstract (\"outperforming Qwen2-VL-2B by 32.06%\")"),
    PaperNumber("", "rarl", "RARL vs SFT, reasoning accuracy (LLM judge; points)", "+7.78 (57.08 -> 64.86)",
                "RARL abstract (+7.78%); 57.08 -> 64.86 as quoted in PROTOCOL.md"),
    PaperNumber("", "rarl", "RARL vs SFT on unseen sets (VQA-RAD, SLAKE, PathVQA, VQA-Med 2019)", "about +27%",
                "RARL abstract"),
    PaperNumber("", "rarl", "RARL vs traditional RL fine-tuning on unseen sets", "about +4%", "RARL abstract"),
)


def _mean(xs: list) -> float | None:
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def ours(result: dict) -> dict[str, float | None]:
    """{"mean": mean accuracy (%) over every trained run x test set cell, "gain": that minus the base
    row's mean over the same test sets (None without a base row)} of a generalization.json dict."""
    acc, cols = result["accuracy"], result["columns"]
    runs = [r for r in result["rows"] if r != BASE]
    mean = _mean([acc[r].get(c) for r in runs for c in cols])
    base = _mean([acc[BASE].get(c) for c in cols]) if BASE in acc else None
    return {"mean": mean, "gain": None if mean is None or base is None else mean - base}


def paper_table(result: dict | None, axis: str) -> str:
    """Markdown: the papers' numbers for `axis` beside this project's (from `result`; empty when None)."""
    values = ours(result) if result else {}
    lines = ["| quantity | paper | source | this project |", "|---|---:|---|---:|"]
    for number in PAPER_NUMBERS:
        if number.axis != axis:
            continue
        value = values.get(number.key) if number.key else None
        shown = "–" if value is None else (f"{value:+.2f}" if number.key == "gain" else f"{value:.2f}")
        lines.append(f"| {number.quantity} | {number.paper} | {number.source} | {shown} |")
    return "\n".join(lines)
