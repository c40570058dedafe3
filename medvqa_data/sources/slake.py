"""SLAKE: ``train.json``, ``validation.json``, ``test.json`` and ``imgs/xmlabN/source.jpg``.

Records have ``img_id, img_name, question, answer, q_lang (en|zh), location,
modality (CT|MRI|X-Ray), answer_type (OPEN|CLOSED), base_type, content_type,
triple, qid``. English only by default (``--lang zh`` or ``--lang all``); rows of
other languages are counted under ``filtered`` in the report, not ``skipped``.
The official splits are kept; ``question_type`` holds ``content_type``.
"""

from __future__ import annotations

from pathlib import Path

from medvqa_data.errors import DataError, RowError
from medvqa_data.schema import make_row
from medvqa_data.sources.base import SourceOptions, SourceResult, abspath, read_json

SPLIT_FILES = {"train": "train.json", "validation": "validation.json", "test": "test.json"}
LANGS = ("en", "zh", "all")


def read(root: Path, opts: SourceOptions) -> SourceResult:
    if opts.lang not in LANGS:
        raise DataError(f"unknown --lang {opts.lang!r}; choose one of: {', '.join(LANGS)}")
    present = {split: root / name for split, name in SPLIT_FILES.items() if (root / name).is_file()}
    if not present:
        raise DataError(f"{root} is not a SLAKE root: expected train.json, validation.json, test.json and imgs/")
    result = SourceResult(default_split="official")
    for split, path in present.items():
        try:
            records = read_json(path)
        except RowError as exc:
            result.skip(str(exc), file=path.name)
            continue
        if not isinstance(records, list):
            result.skip("expected a JSON list of QA records", file=path.name)
            continue
        for index, record in enumerate(records):
            qid = record.get("qid", f"#{index}") if isinstance(record, dict) else f"#{index}"
            row_id = f"slake-{split}-{qid}"
            try:
                if not isinstance(record, dict):
                    raise RowError("record is not a JSON object")
                lang = str(record.get("q_lang", "en"))
                if opts.lang != "all" and lang != opts.lang:
                    result.filtered[f"lang={lang}"] = result.filtered.get(f"lang={lang}", 0) + 1
                    continue
                missing = [key for key in ("img_name", "question", "answer") if record.get(key) in (None, "")]
                if missing:
                    raise RowError(f"missing field(s): {', '.join(missing)}")
                row = make_row(
                    id=row_id,
                    image=abspath(root / "imgs" / str(record["img_name"])),
                    question=record["question"],
                    answer=record["answer"],
                    answer_type=str(record.get("answer_type", "")).strip().lower() or None,
                    modality=str(record.get("modality", "") or ""),
                    question_type=str(record.get("content_type", "") or ""),
                    dataset="SLAKE",
                    source="slake",
                )
            except RowError as exc:
                result.skip(str(exc), id=row_id)
                continue
            row["_split"] = split
            result.rows.append(row)
    return result
