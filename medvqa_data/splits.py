"""Deterministic train/test splits and the manifests for "train on one, test on all" runs.

`split_by` stratifies by a column (Med-R1: ~80/20 per modality, and separately
per question type). Each stratum is shuffled by its own `random.Random` seeded
with ``"{seed}:{value}"``, so the same seed always gives the same split and
adding data to one stratum never moves rows of another. With `groups` (VQA-RAD's
``qid_linked_id``) whole groups go to one side, so paraphrases never straddle.

Manifests (written by `prepare` for both axes) are one JSON file per axis,
``OUT/manifests/<axis>.json``::

    {"axis": "modality", "values": {"CT": {"train": [ids...], "test": [ids...]}, ...}}

`load_manifest(out, "modality", "CT", "train")` gives the CT training subset;
``load_manifest(out, "modality", "MRI", "test")`` one of the test sets of the
8x8 (or 5x5) generalization matrix.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Mapping, Sequence
from pathlib import Path

import datasets

from medvqa_data.errors import DataError

AXES = ("modality", "question_type")
MANIFEST_DIR = "manifests"


def _column(rows: Sequence[Mapping] | datasets.Dataset, key: str) -> list:
    if isinstance(rows, datasets.Dataset):
        return rows.data.column(key).to_pylist()
    return [row[key] for row in rows]


def _test_count(n: int, test_fraction: float) -> int:
    count = int(round(n * test_fraction))
    if test_fraction > 0 and n >= 2:
        count = min(max(count, 1), n - 1)  # keep both sides non-empty
    return min(count, n)


def split_by(
    rows: Sequence[Mapping] | datasets.Dataset,
    key: str,
    test_fraction: float = 0.2,
    seed: int = 42,
    groups: Sequence[object] | None = None,
) -> tuple[list[int], list[int]]:
    """Stratified, seeded split: (train indices, test indices), both sorted.

    About `test_fraction` of each value of `key` goes to test. With `groups`
    (one group key per row; None = the row alone) whole groups move together,
    each counted in the stratum of its first row.
    """
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    values = _column(rows, key)
    units: dict[object, list[int]] = {}  # group key -> row indices, in first-seen order
    for index in range(len(values)):
        group = groups[index] if groups is not None else None
        unit = ("row", index) if group is None or group == "" else ("group", group)
        units.setdefault(unit, []).append(index)
    strata: dict[str, list[list[int]]] = {}
    for members in units.values():
        strata.setdefault(str(values[members[0]]), []).append(members)
    test: list[int] = []
    for value in sorted(strata):
        stratum = strata[value]
        random.Random(f"{seed}:{value}").shuffle(stratum)
        target = _test_count(sum(len(m) for m in stratum), test_fraction)
        taken = 0
        for members in stratum:
            if taken >= target:
                break
            test.extend(members)
            taken += len(members)
    test_set = set(test)
    return [i for i in range(len(values)) if i not in test_set], sorted(test)


def write_manifests(ds_dict: Mapping[str, datasets.Dataset], axis: str, out: str | os.PathLike) -> Path:
    """Write ``OUT/manifests/<axis>.json``: per value of `axis`, the ids of each split; returns its path."""
    if axis not in AXES:
        raise ValueError(f"unknown axis {axis!r}; choose one of: {', '.join(AXES)}")
    values: dict[str, dict[str, list[str]]] = {}
    for split, ds in ds_dict.items():
        for row_id, value in zip(_column(ds, "id"), _column(ds, axis)):
            values.setdefault(value, {}).setdefault(split, []).append(row_id)
    for per_split in values.values():
        for split in ds_dict:
            per_split.setdefault(split, [])
    path = Path(out) / MANIFEST_DIR / f"{axis}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump({"axis": axis, "splits": list(ds_dict), "values": dict(sorted(values.items()))}, handle)
    return path


def read_manifest(out: str | os.PathLike, axis: str) -> dict:
    """The parsed ``OUT/manifests/<axis>.json``; `DataError` when absent."""
    path = Path(out) / MANIFEST_DIR / f"{axis}.json"
    if not path.is_file():
        raise DataError(
            f"no {axis} manifest at {path}; prepare the data with a split "
            f"(python -m medvqa_data.prepare ... --split {axis if axis in AXES else 'modality'})"
        )
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def load_manifest(out: str | os.PathLike, axis: str, value: str, split: str) -> datasets.Dataset:
    """The rows of `split` whose `axis` equals `value` (e.g. the CT training set), in stored order."""
    from medvqa_data.schema import load_prepared

    manifest = read_manifest(out, axis)
    if value not in manifest["values"]:
        raise DataError(f"{axis} {value!r} is not in the manifest; values: {', '.join(manifest['values'])}")
    ids = manifest["values"][value].get(split)
    if ids is None:
        raise DataError(f"split {split!r} is not in the manifest; splits: {', '.join(manifest['splits'])}")
    ds = load_prepared(out, split)
    position = {row_id: i for i, row_id in enumerate(_column(ds, "id"))}
    missing = [row_id for row_id in ids if row_id not in position]
    if missing:
        raise DataError(f"{len(missing)} id(s) of the {axis}={value} manifest are not in {out} ({split}), e.g. {missing[0]}")
    return ds.select([position[row_id] for row_id in ids])
