"""Look inside a prepared dataset: counts per split and a few rendered prompts.

    python -m medvqa_data.inspect OUT [--n 3] [--template think] [--mode default] [--phase train]

Prints the row count of each split, the images per split and how many appear in more
than one split (0 for every split prepare makes), tables of modality / question type /
source dataset per split, what the prepare report skipped, and the first `--n`
rows of the first split rendered with the chosen prompt template.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from medvqa_data.errors import DataError
from medvqa_data.schema import load_prepared, read_report
from medvqa_data.templates import MODES, PHASES, TEMPLATES, render_prompt


def split_names(out: Path) -> list[str]:
    """The splits of a prepared OUT dir (["all"] for an unsplit dataset)."""
    import json

    dict_file = out / "dataset_dict.json"
    if dict_file.is_file():
        return list(json.loads(dict_file.read_text())["splits"])
    return ["all"]


def table(title: str, counts: dict[str, Counter]) -> str:
    """A plain-text table: one line per value, one column per split, sorted by total."""
    splits = list(counts)
    totals = Counter()
    for counter in counts.values():
        totals.update(counter)
    width = max([len(title)] + [len(str(value) or "(none)") for value in totals])
    lines = [f"{title:<{width}}  " + "  ".join(f"{s:>8}" for s in splits)]
    for value, _ in totals.most_common():
        label = str(value) or "(none)"
        lines.append(f"{label:<{width}}  " + "  ".join(f"{counts[s].get(value, 0):>8,}" for s in splits))
    return "\n".join(lines)


def describe(out: str | Path, n: int = 3, template: str = "think", mode: str = "default", phase: str = "train") -> str:
    """The text `python -m medvqa_data.inspect` prints."""
    out = Path(out)
    parts = {name: load_prepared(out, None if name == "all" else name) for name in split_names(out)}
    report = read_report(out)
    lines = [f"{out}: " + ", ".join(f"{name} {len(ds):,} rows" for name, ds in parts.items())]
    if report:
        line = (f"source {report.get('source')}, split {report.get('options', {}).get('split_method')}, "
                f"kept {report.get('kept', 0):,}, skipped {report.get('skipped_count', 0):,}")
        reasons = report.get("skipped_by_reason") or {}
        if reasons:
            line += " (" + ", ".join(f"{kind} x{n}" for kind, n in reasons.items()) + ")"
        lines.append(line)
    if len(parts) > 1:
        images = {name: set(ds.data.column("image").to_pylist()) for name, ds in parts.items()}
        names = list(images)
        shared = set().union(*(images[a] & images[b] for i, a in enumerate(names) for b in names[i + 1:]))
        line = ("images: " + ", ".join(f"{name} {len(found):,}" for name, found in images.items())
                + f"; in more than one split: {len(shared):,}")
        if shared:
            how = "as published by the source" if (report or {}).get("options", {}).get("split_method") == "official" \
                else "re-run prepare to split by image"
            line += f" ({how}; e.g. {sorted(shared)[0]})"
        lines.append(line)
    for column in ("modality", "question_type", "dataset"):
        counts = {name: Counter(ds.data.column(column).to_pylist()) for name, ds in parts.items()}
        lines += ["", table(column, counts)]
    name, ds = next(iter(parts.items()))
    lines += ["", f"first {min(n, len(ds))} prompt(s) of {name} (template {template}, mode {mode}, phase {phase}):"]
    for row in ds.select(range(min(n, len(ds)))):
        prompt = render_prompt(row["question"], row["options"], template, mode, phase, row["answer_type"])
        gold = f"{row['answer_letter']} ({row['answer']})" if row["answer_letter"] else row["answer"]
        lines += [
            "",
            f"--- id {row['id']}  [{row['modality'] or '-'} | {row['question_type'] or '-'} | {row['dataset']}]",
            f"image: {row['image']}",
            f"prompt: {prompt}",
            f"gold: {gold}",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m medvqa_data.inspect", description=__doc__.splitlines()[0])
    parser.add_argument("out", help="a folder written by python -m medvqa_data.prepare")
    parser.add_argument("--n", type=int, default=3, help="prompts to show (default 3)")
    parser.add_argument("--template", default="think", choices=TEMPLATES)
    parser.add_argument("--mode", default="default", choices=MODES)
    parser.add_argument("--phase", default="train", choices=PHASES)
    args = parser.parse_args(argv)
    try:
        print(describe(args.out, args.n, args.template, args.mode, args.phase))
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
