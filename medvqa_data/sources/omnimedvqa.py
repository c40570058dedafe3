"""OmniMedVQA, raw release: ``QA_information/Open-access/<Dataset>.json`` + ``Images/<Dataset>/...``.

Each JSON file is a list of records with ``question_id, dataset, question_type,
question, gt_answer, option_A..option_D, modality_type, image_path``. Quirks
handled: ``gt_answer`` is the option text; ``option_C``/``option_D`` may be
absent (2-4 options); one record says ``modality`` instead of ``modality_type``;
the modality strings carry typos (mapped by `schema.normalize_modality`).
``--include-restricted`` also reads ``Restricted-access/`` (its images are not
distributed, so those rows are usually skipped as "image not found").
"""

from __future__ import annotations

import os
from pathlib import Path

from medvqa_data.errors import DataError, RowError
from medvqa_data.schema import make_row
from medvqa_data.sources.base import SourceOptions, SourceResult, abspath, read_json, relative

QA_DIR = "QA_information"
ACCESS_DIRS = {"Open-access": "omnimedvqa", "Restricted-access": "omnimedvqa-restricted"}
OPTION_KEYS = ("option_A", "option_B", "option_C", "option_D")
REQUIRED = ("question", "gt_answer", "image_path")


def find_root(root: Path) -> Path:
    """`root` itself, or its child holding QA_information (users often pass the parent); else DataError."""
    if (root / QA_DIR).is_dir():
        return root
    for child in sorted(p for p in root.iterdir() if p.is_dir()):
        if (child / QA_DIR).is_dir():
            return child
    raise DataError(
        f"{root} is not an OmniMedVQA root: expected {QA_DIR}/Open-access/*.json and Images/ under it"
    )


def record_to_row(record: dict, root: str, source: str) -> dict:
    """One OmniMedVQA record -> schema row; `root` is absolute (RowError when unusable)."""
    missing = [key for key in REQUIRED if record.get(key) in (None, "")]
    if missing:
        raise RowError(f"missing field(s): {', '.join(missing)}")
    if not isinstance(record["image_path"], str):
        raise RowError(f"image_path must be a string: got {type(record['image_path']).__name__}")
    options = [record[key] for key in OPTION_KEYS if record.get(key) not in (None, "")]
    return make_row(
        id=record.get("question_id", ""),
        image=os.path.normpath(os.path.join(root, record["image_path"])),
        question=record["question"],
        options=options,
        answer=record["gt_answer"],
        answer_type="closed",
        modality=record.get("modality_type") or record.get("modality") or "",
        question_type=record.get("question_type", ""),
        dataset=record.get("dataset", ""),
        source=source,
    )


def read(root: Path, opts: SourceOptions) -> SourceResult:
    root = find_root(root)
    result = SourceResult(default_split="modality")
    access_dirs = ["Open-access", "Restricted-access"] if opts.include_restricted else ["Open-access"]
    files = []
    for access in access_dirs:
        folder = root / QA_DIR / access
        if not folder.is_dir():
            if access == "Open-access":
                raise DataError(f"{root} has no {QA_DIR}/Open-access folder")
            result.notes.append(f"--include-restricted: no {QA_DIR}/{access} folder under {root}")
            continue
        files += [(path, ACCESS_DIRS[access]) for path in sorted(folder.glob("*.json"))]
    if not files:
        raise DataError(f"no *.json files under {root / QA_DIR / 'Open-access'}")
    root_dir = abspath(root)
    for path, source in files:
        name = relative(path, root)
        try:
            records = read_json(path)
        except RowError as exc:
            result.skip(str(exc), file=name)
            continue
        if not isinstance(records, list):
            result.skip("expected a JSON list of QA records", file=name)
            continue
        for index, record in enumerate(records):
            row_id = record.get("question_id", "") if isinstance(record, dict) else ""
            if row_id in (None, ""):
                row_id = f"{path.stem}#{index}"
            try:
                if not isinstance(record, dict):
                    raise RowError("record is not a JSON object")
                row = record_to_row(record, root_dir, source)
            except RowError as exc:
                result.skip(str(exc), id=row_id)
                continue
            row["id"] = str(row_id)
            result.rows.append(row)
    return result
