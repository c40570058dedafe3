"""Benchmark `medvqa_data.prepare` on a synthetic OmniMedVQA-sized tree.

    python bench/prepare_speed.py [--n 88996] [--workers N] [--keep DIR]

Builds a raw OmniMedVQA layout in a temporary folder (the 8 verbatim modality
strings in the real proportions, 2-4 options, ~0.9 images per question as tiny
8x8 PNGs hard-linked from a handful of files), then times prepare with
``--no-check-images`` (existence only) and with full decoding, and prints a
markdown table of records/s. Target: >= 20,000 records/s without decoding.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PIL import Image  # noqa: E402

from medvqa_data.prepare import prepare  # noqa: E402

MODALITY_COUNTS = {  # open-access QA counts from PROTOCOL.md
    "MR (Mag-netic Resonance Imaging)": 31877,
    "CT(Computed Tomography)": 15808,
    "ultrasound": 10991,
    "X-Ray": 7916,
    "Dermoscopy": 6679,
    "Microscopy Images": 5680,
    "Fundus Photography": 5398,
    "OCT (Optical Coherence Tomography": 4646,
}
QUESTION_TYPES = ["Disease Diagnosis"] * 12 + ["Anatomy Identification"] * 4 + ["Modality Recognition"] * 3 + [
    "Other Biological Attributes", "Lesion Grading"]
DATASETS_PER_MODALITY = 5


def build_tree(root: Path, n: int) -> int:
    """Write a raw OmniMedVQA tree with about `n` records under `root`; returns the number of records."""
    root.mkdir(parents=True, exist_ok=True)
    seeds = []
    for k in range(8):
        path = root / f"seed{k}.png"
        Image.new("RGB", (8, 8), (k * 30, 255 - k * 30, 90)).save(path)
        seeds.append(path)
    qa = root / "QA_information" / "Open-access"
    qa.mkdir(parents=True)
    total_weight = sum(MODALITY_COUNTS.values())
    written = 0
    for m, (modality, count) in enumerate(MODALITY_COUNTS.items()):
        per_modality = round(n * count / total_weight)
        for d in range(DATASETS_PER_MODALITY):
            name = f"Synth-{m}-{d}"
            folder = root / "Images" / name
            folder.mkdir(parents=True)
            records = []
            size = per_modality // DATASETS_PER_MODALITY + (d < per_modality % DATASETS_PER_MODALITY)
            for i in range(size):
                image_index = int(i * 0.9)
                image = folder / f"{image_index:06d}.png"
                if not image.exists():
                    os.link(seeds[(image_index + m) % len(seeds)], image)
                record = {"question_id": f"{name}_{i:06d}", "dataset": name,
                          "question_type": QUESTION_TYPES[i % len(QUESTION_TYPES)],
                          "question": f"Synthetic question {i} about this {modality} image?",
                          "option_A": "first answer", "option_B": "second answer",
                          "modality_type": modality, "image_path": f"Images/{name}/{image_index:06d}.png"}
                if i % 3:
                    record.update(option_C="third answer", option_D="fourth answer")
                record["gt_answer"] = record["option_B"]
                records.append(record)
            (qa / f"{name}.json").write_text(json.dumps(records))
            written += len(records)
    for seed in seeds:
        seed.unlink()
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=88996, help="records to generate (default: OmniMedVQA's 88,996)")
    parser.add_argument("--workers", type=int, default=None, help="image-check threads (default: CPU count)")
    parser.add_argument("--keep", default=None, help="build the tree in this folder and keep it")
    args = parser.parse_args(argv)

    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="prepare-speed-"))
    try:
        started = time.perf_counter()
        records = build_tree(base / "OmniMedVQA", args.n)
        print(f"built {records:,} records in {time.perf_counter() - started:.1f}s under {base} "
              f"({os.cpu_count()} CPU cores)\n")
        rows = []
        for label, no_decode in (("exists only (--no-check-images)", True), ("decode every image", False)):
            out = base / ("out-fast" if no_decode else "out-decode")
            started = time.perf_counter()
            report = prepare("omnimedvqa", base / "OmniMedVQA", out, no_check_images=no_decode,
                             workers=args.workers, progress=False, overwrite=True)
            seconds = time.perf_counter() - started
            rows.append((label, records, report["kept"], seconds, records / seconds))
        print("| image check | records | kept | seconds | records/s |")
        print("|---|---:|---:|---:|---:|")
        for label, total, kept, seconds, rate in rows:
            print(f"| {label} | {total:,} | {kept:,} | {seconds:.2f} | {rate:,.0f} |")
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
