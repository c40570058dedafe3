"""Deterministic train/test splits and the manifests for "train on one, test on all" runs.

`split_by` stratifies by a column (Med-R1: ~80/20 per modality, and separately
per question type). Each stratum is shuffled by its own `random.Random` seeded
with ``"{seed}:{value}"``, so the same seed always gives the same split and
adding data to one stratum never moves rows of another. With `groups` whole groups go to
one side: `prepare` groups every question of one image (and VQA-RAD's ``qid_linked_id``
paraphrases, and a JSONL's ``group``, e.g. a patient or case id) with `image_groups`, so no
test image (or patient) is ever seen in training. `image_overlap` counts what two splits share.

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


def image_groups(rows: Sequence[Mapping]) -> list[str]:
    """One group key per row: rows that share an image, or a ``_group`` (paraphrase links, patient or
    case ids), are in one group, transitively (union-find), so a split can keep each group on one side."""
    parent: dict[str, str] = {}

    def find(key: str) -> str:
        root = key
        while parent.setdefault(root, root) != root:
            root = parent[root]
        while parent[key] != root:  # path compression
            parent[key], key = root, parent[key]
        return root

    keys = []
    for row in rows:
        links = [f"image:{row['image']}"] + ([f"group:{row['_group']}"] if row.get("_group") else [])
        for other in links[1:]:
            a, b = find(links[0]), find(other)
            if a != b:
                parent[max(a, b)] = min(a, b)  # order-independent root: deterministic
        keys.append(links[0])
    return [find(key) for key in keys]


def image_overlap(splits: Mapping[str, Sequence[Mapping]]) -> dict:
    """Images per split and the images that appear in more than one split (count + a few examples)."""
    images = {name: {row["image"] for row in rows} for name, rows in splits.items()}
    shared: set[str] = set()
    names = list(images)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            shared |= images[a] & images[b]
    return {"images": {name: len(found) for name, found in images.items()}, "overlap": len(shared),
            "overlap_examples": sorted(shared)[:5]}


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
    each counted in the stratum of its first row; a group is taken for test only while it brings
    the stratum's test rows closer to the target, and a stratum of two or more groups always keeps
    one in train.
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
        chosen: list[list[int]] = []
        taken = 0
        for members in stratum:
            if taken >= target or len(chosen) >= len(stratum) - 1:
                break
            if abs(taken + len(members) - target) <= abs(taken - target):
                chosen.append(members)
                taken += len(members)
        if not chosen and target > 0 and len(stratum) > 1:
            chosen.append(stratum[0])  # no group fits the target closely: test still gets one
        for members in chosen:
            test.extend(members)
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
