"""Convert a medical VQA set on disk into a training/eval-ready dataset, with a report.

    python -m medvqa_data.prepare --source SOURCE --root DIR --out OUT
        [--split auto|modality|question_type|official|none] [--test-fraction 0.2] [--seed 42]
        [--strict] [--no-check-images] [--include-restricted] [--embed-images]
        [--lang en|zh|all] [--workers N] [--overwrite] [--image-root DIR]

OUT is loadable with `datasets.load_from_disk` (a DatasetDict when split, else a
Dataset; use `medvqa_data.schema.load_prepared`) and holds:

- ``prepare_report.json``: ``kept``, ``skipped`` (``{"id" or "file", "reason"}``),
  ``skipped_by_reason``, ``filtered``, ``splits``, ``images`` (distinct images per split),
  ``image_overlap`` (images in more than one split: 0 for every split made here; an official
  split is kept as published and its overlap counted, with a note), ``counts`` (per split:
  modality, question_type, dataset), ``unknown_modalities``, ``options``, ``notes``;
- ``manifests/modality.json`` and ``manifests/question_type.json`` when split
  (see `medvqa_data.splits`);
- ``images/`` with ``--embed-images`` (and images extracted from parquet files).

``--split auto`` (default) keeps a source's official split (SLAKE, PathVQA, PMC-VQA,
the Med-R1 Splits tree, the VQA-RAD parquet copy, jsonl with splits) and otherwise
splits ~80/20 per modality (OmniMedVQA; VQA-RAD grouped by qid_linked_id). Every split made
here keeps all questions of one image (and of one jsonl ``group``, e.g. a patient) on one side.
Nothing under ROOT is ever written; OUT is built in a sibling temporary folder and
moved into place at the end, so a failed run leaves no half-written OUT.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import datasets
from datasets.table import InMemoryTable
from tqdm import tqdm

from medvqa_data.errors import DataError, StrictError
from medvqa_data.images import check_image
from medvqa_data.schema import CANONICAL_MODALITIES, COLUMNS, FEATURES, REPORT_NAME
from medvqa_data.sources import SOURCES, SourceOptions, read_source
from medvqa_data.splits import AXES, image_groups, image_overlap, split_by, write_manifests

SPLIT_CHOICES = ("auto", "modality", "question_type", "official", "none")
SPLIT_ORDER = ("train", "validation", "test")
RESTRICTED_HINT = " (OmniMedVQA does not distribute Restricted-access images)"


def _check_chunk(paths: list[str], decode: bool) -> list[str | None]:
    return [check_image(path, decode=decode) for path in paths]


def check_images(paths: list[str], decode: bool = True, workers: int | None = None,
                 progress: bool | None = None) -> dict[str, str]:
    """{path: reason} for the unusable images among `paths`, checked in a thread pool with a progress bar."""
    workers = max(1, workers or os.cpu_count() or 1)
    size = 16 if decode else 512
    chunks = [paths[i : i + size] for i in range(0, len(paths), size)]
    bad: dict[str, str] = {}
    label = "decoding images" if decode else "checking images"
    with ThreadPoolExecutor(max_workers=workers) as pool, tqdm(
        total=len(paths), desc=label, unit="img", disable=None if progress is None else not progress
    ) as bar:
        for chunk, reasons in zip(chunks, pool.map(_check_chunk, chunks, [decode] * len(chunks))):
            bad.update((path, reason) for path, reason in zip(chunk, reasons) if reason)
            bar.update(len(chunk))
    return bad


def _reason_kind(reason: str) -> str:
    return reason.split(": ", 1)[0]


def _check_paths(root: Path, out: Path, overwrite: bool) -> None:
    """Refuse an OUT that overlaps ROOT, or an existing OUT we may not replace."""
    root_real, out_real = root.resolve(), out.resolve()
    if out_real == root_real or root_real in out_real.parents:
        raise DataError(f"--out {out} is inside --root {root}; prepare never writes into your data folder, "
                        "choose an OUT outside it")
    if out_real in root_real.parents:
        raise DataError(f"--out {out} contains --root {root}; choose an OUT that does not hold your data")
    if out.is_file():
        raise DataError(f"--out {out} is a file; give a directory")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise DataError(f"--out {out} exists and is not empty; pass --overwrite to replace a previous "
                            "prepare output, or choose another directory")
        if not (out / REPORT_NAME).is_file():
            raise DataError(f"--out {out} is not empty and is not a prepare output (no {REPORT_NAME}); "
                            "refusing to delete it even with --overwrite")


def _embed(rows: list[dict], staging: Path) -> None:
    """Copy each row's image into OUT/images/, keeping the folder structure below their common folder."""
    sources = sorted({row["image"] for row in rows if os.path.isabs(row["image"])})
    if not sources:
        return
    common = os.path.commonpath([os.path.dirname(p) for p in sources])
    target_of = {}
    for path in sources:
        rel = os.path.relpath(path, common)
        if rel.startswith(".."):  # cannot happen below a common path; keep names unique anyway
            rel = os.path.join("_external", hashlib.sha1(path.encode()).hexdigest()[:12], os.path.basename(path))
        target = staging / "images" / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        target_of[path] = f"images/{Path(rel).as_posix()}"
    for row in rows:
        row["image"] = target_of.get(row["image"], row["image"])


def _assign_splits(rows: list[dict], method: str, test_fraction: float, seed: int) -> dict[str, list[dict]]:
    if method == "none":
        return {"all": rows}
    if method == "official":
        by_split: dict[str, list[dict]] = {}
        for row in rows:
            by_split.setdefault(row["_split"], []).append(row)
        order = [s for s in SPLIT_ORDER if s in by_split] + sorted(set(by_split) - set(SPLIT_ORDER))
        return {name: by_split[name] for name in order}
    # All questions of one image (and of one _group: paraphrases, a patient) go to the same side.
    train_idx, test_idx = split_by(rows, method, test_fraction, seed, image_groups(rows))
    return {"train": [rows[i] for i in train_idx], "test": [rows[i] for i in test_idx]}


def _to_dataset(rows: list[dict]) -> datasets.Dataset:
    """Rows -> Dataset, building the Arrow table directly (from_dict would re-encode every value in Python)."""
    columns = {col: [row[col] for row in rows] for col in COLUMNS}
    table = InMemoryTable.from_pydict(columns, schema=FEATURES.arrow_schema)
    return datasets.Dataset(table, info=datasets.DatasetInfo(features=FEATURES))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _quiet_save(data: datasets.Dataset | datasets.DatasetDict, path: Path) -> None:
    """save_to_disk without its per-split progress bars (our own bar covers the slow part)."""
    enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        data.save_to_disk(str(path))
    finally:
        if enabled:
            datasets.enable_progress_bars()


def _counts(rows: list[dict]) -> dict:
    return {key: dict(Counter(row[key] for row in rows).most_common()) for key in ("modality", "question_type", "dataset")}


def prepare(
    source: str,
    root: str | os.PathLike,
    out: str | os.PathLike,
    *,
    split: str = "auto",
    test_fraction: float = 0.2,
    seed: int = 42,
    strict: bool = False,
    no_check_images: bool = False,
    include_restricted: bool = False,
    embed_images: bool = False,
    lang: str = "en",
    workers: int | None = None,
    overwrite: bool = False,
    image_root: str | os.PathLike | None = None,
    progress: bool | None = None,
) -> dict:
    """Convert `source` data under `root` into the prepared dataset `out`; returns the report dict.

    Keyword options mirror the CLI flags (``no_check_images=True`` is ``--no-check-images``:
    existence only, no decoding). Raises
    `DataError` for unusable input and `StrictError` (nothing written) when
    `strict` and any record, file or modality label was a problem.
    """
    started = time.perf_counter()
    if source not in SOURCES:
        raise DataError(f"unknown source {source!r}; choose one of: {', '.join(SOURCES)}")
    if split not in SPLIT_CHOICES:
        raise DataError(f"unknown --split {split!r}; choose one of: {', '.join(SPLIT_CHOICES)}")
    if not 0.0 <= test_fraction < 1.0:
        raise DataError(f"--test-fraction must be in [0, 1), got {test_fraction}")
    root, out = Path(root).absolute(), Path(out).absolute()
    if not root.exists():
        raise DataError(f"--root {root} does not exist; point it at the unpacked {source} data")
    if root.is_file() and source not in ("jsonl", "medr1"):
        raise DataError(f"--root {root} is a file; give the {source} data directory")
    _check_paths(root, out, overwrite)
    created = [p for p in [out.parent, *out.parent.parents] if not p.exists()]  # removed again on failure
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    staging.chmod(0o777 & ~_umask())  # mkdtemp makes it private; OUT gets the usual permissions
    try:
        opts = SourceOptions(include_restricted=include_restricted, lang=lang, split=split,
                             image_root=Path(image_root).absolute() if image_root else None, out_dir=staging)
        result = read_source(source, root, opts)
        skipped = list(result.skipped)
        rows, seen = [], set()
        for row in result.rows:
            if row["id"] in seen:
                skipped.append({"id": row["id"], "reason": f"duplicate id: {row['id']} (the first one is kept)"})
                continue
            seen.add(row["id"])
            rows.append(row)

        def on_disk(path: str) -> str:
            return path if os.path.isabs(path) else str(staging / path)

        bad = check_images(list(dict.fromkeys(on_disk(r["image"]) for r in rows)), not no_check_images, workers, progress)
        if bad:
            kept = []
            for row in rows:
                reason = bad.get(on_disk(row["image"]))
                if reason is None:
                    kept.append(row)
                    continue
                hint = RESTRICTED_HINT if row["source"] == "omnimedvqa-restricted" else ""
                skipped.append({"id": row["id"], "reason": f"image {reason}: {row['image']}{hint}"})
            rows = kept
        unknown = Counter(r["modality"] for r in rows if r["modality"] and r["modality"] not in CANONICAL_MODALITIES)
        if strict and (skipped or unknown):
            problems = [f"{'id' if 'id' in s else 'file'} {s.get('id', s.get('file'))}: {s['reason']}" for s in skipped]
            problems += [f"unknown modality {label!r} on {n} row(s)" for label, n in unknown.items()]
            raise StrictError(problems)
        if not rows:
            common = Counter(_reason_kind(s["reason"]) for s in skipped).most_common(3)
            why = "; ".join(f"{kind} x{n}" for kind, n in common) or "no records found"
            raise DataError(f"no usable rows from {source} under {root}: {len(skipped)} skipped ({why})")
        if embed_images:
            _embed(rows, staging)

        method = result.default_split if split == "auto" else split
        notes = list(result.notes)
        if method == result.official_axis:
            method = "official"
        if method == "official" and not all("_split" in row for row in rows):
            if split == "official":
                raise DataError(f"{source} under {root} has no official split for every row; "
                                "use --split modality, question_type or none")
            notes.append("no official split for every row: split ~80/20 per modality instead")
            method = "modality"
        parts = _assign_splits(rows, method, test_fraction, seed)
        overlap = image_overlap(parts)
        if overlap["overlap"] and method == "official":
            notes.append(f"the official split shares {overlap['overlap']} image(s) between its splits (as published; "
                         f"e.g. {overlap['overlap_examples'][0]}): those test images were seen in training")
        empty = [name for name, part in parts.items() if not part]
        if method != "none" and empty and len(empty) < len(parts):  # datasets cannot reload an empty saved split
            notes.append(f"split {', '.join(empty)} is empty (all questions of an image stay on one side, and "
                         f"{overlap['images'].get('train', 0)} image(s) cannot be split further): not written; "
                         "add images, or prepare with --split none")
            parts = {name: part for name, part in parts.items() if part}
        if method == "none":
            data = _to_dataset(parts["all"])
        else:
            data = datasets.DatasetDict({name: _to_dataset(part) for name, part in parts.items()})
        _quiet_save(data, staging)
        if isinstance(data, datasets.DatasetDict):
            for axis in AXES:
                write_manifests(data, axis, staging)

        report = {
            "source": source,
            "root": str(root),
            "out": str(out),
            "options": {"split": split, "split_method": method, "test_fraction": test_fraction, "seed": seed,
                        "check_images": "exists" if no_check_images else "decode", "strict": strict,
                        "include_restricted": include_restricted, "embed_images": embed_images, "lang": lang},
            "kept": len(rows),
            "skipped_count": len(skipped),
            "skipped_by_reason": dict(Counter(_reason_kind(s["reason"]) for s in skipped).most_common()),
            "filtered": result.filtered,
            "splits": {name: len(part) for name, part in parts.items()},
            "images": overlap["images"],
            "image_overlap": overlap["overlap"],
            "counts": {name: _counts(part) for name, part in parts.items()},
            "unknown_modalities": dict(unknown.most_common()),
            "notes": notes,
            "seconds": round(time.perf_counter() - started, 3),
            "skipped": skipped,
        }
        with open(staging / REPORT_NAME, "w", encoding="utf-8", errors="backslashreplace") as handle:  # lone surrogates
            json.dump(report, handle, indent=1, ensure_ascii=False)
        if out.exists():
            shutil.rmtree(out)  # checked above: empty, or a previous prepare output with --overwrite
        os.replace(staging, out)
        return report
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
        if not out.exists():  # failed: leave no empty folders behind either
            for folder in created:
                try:
                    folder.rmdir()
                except OSError:
                    break


def image_line(report: dict) -> str:
    """'images per split: train 40, test 11; images in more than one split: 0 (...)'."""
    per = ", ".join(f"{name} {n:,}" for name, n in report["images"].items())
    how = ("as published by the source" if report["options"].get("split_method") == "official"
           else "all questions of an image on one side")
    return f"images per split: {per}; images in more than one split: {report['image_overlap']:,} ({how})"


def summary(report: dict) -> str:
    """A few human-readable lines about a prepare report."""
    splits = ", ".join(f"{name} {n:,}" for name, n in report["splits"].items())
    lines = [f"prepared {report['kept']:,} rows from {report['source']} into {report['out']} ({splits}) "
             f"in {report['seconds']:.1f}s"]
    if "images" in report and len(report["images"]) > 1:
        lines.append(image_line(report))
    if report["skipped_count"]:
        kinds = "; ".join(f"{kind} x{n}" for kind, n in list(report["skipped_by_reason"].items())[:6])
        lines.append(f"skipped {report['skipped_count']:,}: {kinds} (details in {REPORT_NAME})")
    if report["filtered"]:
        lines.append("left out on purpose: " + ", ".join(f"{k} x{n}" for k, n in report["filtered"].items()))
    if report["unknown_modalities"]:
        lines.append("unknown modalities (kept as given): "
                     + ", ".join(f"{k!r} x{n}" for k, n in report["unknown_modalities"].items()))
    lines += [f"note: {note}" for note in report["notes"]]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m medvqa_data.prepare",
        description="Convert a medical VQA dataset on disk into a prepared dataset (save_to_disk) plus a report.",
    )
    parser.add_argument("--source", required=True, help=f"one of: {', '.join(SOURCES)}")
    parser.add_argument("--root", required=True, help="the unpacked dataset folder (never written to)")
    parser.add_argument("--out", required=True, help="output folder (must not exist or be empty)")
    parser.add_argument("--split", default="auto", choices=SPLIT_CHOICES,
                        help="auto: the official split if the source has one, else modality (default)")
    parser.add_argument("--test-fraction", type=float, default=0.2, help="test share per stratum (default 0.2)")
    parser.add_argument("--seed", type=int, default=42, help="split seed (default 42)")
    parser.add_argument("--strict", action="store_true", help="fail (exit 1, nothing written) on any problem")
    parser.add_argument("--no-check-images", action="store_true", help="check images exist, without decoding")
    parser.add_argument("--include-restricted", action="store_true",
                        help="omnimedvqa: also read QA_information/Restricted-access")
    parser.add_argument("--embed-images", action="store_true", help="copy the images into OUT/images/")
    parser.add_argument("--lang", default="en", choices=("en", "zh", "all"), help="slake: question language")
    parser.add_argument("--workers", type=int, default=None, help="image-check threads (default: CPU count)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it is a previous prepare output")
    parser.add_argument("--image-root", default=None, help="medr1: folder the Images/... paths are relative to")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        report = prepare(
            args.source, args.root, args.out, split=args.split, test_fraction=args.test_fraction, seed=args.seed,
            strict=args.strict, no_check_images=args.no_check_images,
            include_restricted=args.include_restricted, embed_images=args.embed_images, lang=args.lang,
            workers=args.workers, overwrite=args.overwrite, image_root=args.image_root,
        )
    except StrictError as exc:
        for problem in exc.problems[:50]:
            print(f"problem: {problem}", file=sys.stderr)
        if len(exc.problems) > 50:
            print(f"... and {len(exc.problems) - 50} more", file=sys.stderr)
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(summary(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
