"""Users' own data in our schema: one or more ``*.jsonl`` files (ROOT may be a file or a folder).

One JSON object per line with the schema columns: ``id``, ``image`` and
``question`` are required; ``options`` (list), ``answer`` and/or
``answer_letter``, ``answer_type``, ``modality``, ``question_type``, ``dataset``
are optional (``source`` is set to "jsonl"). A relative ``image`` is relative
to the jsonl file's folder. The split comes from a ``split`` key, else from the
file name (``train.jsonl``, ``test.jsonl``); when every row has one, the
default ``--split`` keeps it. An optional ``group`` (a patient or case id) keeps
all questions of that group on one side of any split `prepare` makes (questions
of one image always are). A bad line is skipped with its file and line number.
"""

from __future__ import annotations

import json
from pathlib import Path

from medvqa_data.errors import DataError, RowError
from medvqa_data.schema import make_row
from medvqa_data.sources.base import SourceOptions, SourceResult, abspath, relative, split_from_name

OPTIONAL = ("answer", "answer_letter", "answer_type", "modality", "question_type", "dataset")


def read(root: Path, opts: SourceOptions) -> SourceResult:
    files = [root] if root.is_file() else sorted(root.rglob("*.jsonl"))
    if not files:
        raise DataError(f"no *.jsonl files under {root}")
    base = root.parent if root.is_file() else root
    result = SourceResult(default_split="official")
    for path in files:
        name = relative(path, base)
        file_split = split_from_name(path.stem)
        try:
            lines = path.read_text(encoding="utf-8-sig").splitlines()  # -sig: a byte-order mark is not data
        except (OSError, UnicodeDecodeError) as exc:
            result.skip(f"cannot read file: {exc}", file=name)
            continue
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                result.skip(f"invalid JSON: {exc.msg}", file=f"{name}:{number}")
                continue
            row_id = record.get("id") if isinstance(record, dict) else None
            row_id = str(row_id) if row_id not in (None, "") else f"{name}:{number}"
            try:
                if not isinstance(record, dict):
                    raise RowError("line is not a JSON object")
                missing = [k for k in ("image", "question") if k not in record]
                if not any(k in record for k in ("answer", "answer_letter")):
                    missing.append("answer (or answer_letter)")
                if missing:  # say so, rather than "empty question" / "gold answer not among the options"
                    raise RowError(f"no {', '.join(repr(k) for k in missing)} key; each line needs id, image, "
                                   "question and answer or answer_letter (see medvqa_data/sources/jsonl.py)")
                options = record.get("options") or []
                if not isinstance(options, list):
                    raise RowError("options must be a JSON list of strings")
                image = str(record.get("image") or "")
                row = make_row(
                    id=row_id,
                    image=abspath(path.parent / image) if image else "",
                    question=record.get("question", ""),
                    options=options,
                    **{key: record.get(key) for key in OPTIONAL if key != "answer_type"},  # make_row: text
                    answer_type=record.get("answer_type") or None,
                    source="jsonl",
                )
            except RowError as exc:
                result.skip(str(exc), id=row_id)
                continue
            split = record.get("split") or file_split
            if split:
                row["_split"] = split_from_name(str(split)) or str(split)
            if record.get("group") not in (None, ""):
                row["_group"] = f"jsonl:{record['group']}"
            result.rows.append(row)
    return result
