"""VQA-RAD: the original release or a Hub-style ``image, question, answer`` copy.

Original: ``VQA_RAD Dataset Public.json`` (a list of records with ``qid,
phrase_type, qid_linked_id, image_name, image_organ, question, answer,
answer_type (CLOSED/OPEN), question_type, ...``) and the images in
``VQA_RAD Image Folder/``. Rows sharing ``qid_linked_id`` (a question and its
paraphrases) are grouped, so the default seeded split never puts them on both
sides. ``--split official`` uses the release's own test questions
(``phrase_type`` starting with ``test``).

Copy: parquet/jsonl/csv files named by split (``train-*.parquet``,
``test-*.parquet``), used with their official split; images embedded as bytes are
extracted into OUT. VQA-RAD has no modality label: ``modality`` is "".
"""

from __future__ import annotations

from pathlib import Path

from medvqa_data.errors import RowError
from medvqa_data.schema import make_row
from medvqa_data.sources.base import (
    ImageFinder,
    SourceOptions,
    SourceResult,
    read_json,
    read_qa_tables,
    relative,
    yes_no_type,
)

DATASET = "VQA-RAD"
SOURCE = "vqa-rad"


def _original_json(root: Path) -> tuple[Path, list] | None:
    """The release JSON (a list of records with qid and image_name), if any."""
    candidates = sorted(root.rglob("*.json"), key=lambda p: ("vqa_rad" not in p.name.lower(), str(p)))
    for path in candidates:
        try:
            data = read_json(path)
        except RowError:
            continue
        if isinstance(data, list) and data and isinstance(data[0], dict) and "image_name" in data[0]:
            return path, data
    return None


def read(root: Path, opts: SourceOptions) -> SourceResult:
    found = _original_json(root)
    if found is None:
        result = SourceResult(default_split="official")
        read_qa_tables(root, opts, result, dataset=DATASET, source=SOURCE)
        return result
    path, records = found
    result = SourceResult(default_split="modality")
    result.notes.append(f"original VQA-RAD release read from {relative(path, root)}; grouped by qid_linked_id")
    finder = ImageFinder(root, ("VQA_RAD Image Folder", "images"))
    for index, record in enumerate(records):
        row_id = f"vqa-rad-{record.get('qid', index)}" if isinstance(record, dict) else f"vqa-rad-#{index}"
        try:
            if not isinstance(record, dict):
                raise RowError("record is not a JSON object")
            missing = [key for key in ("image_name", "question", "answer") if record.get(key) in (None, "")]
            if missing:
                raise RowError(f"missing field(s): {', '.join(missing)}")
            answer = str(record["answer"]).strip()
            kind = str(record.get("answer_type", "")).strip().lower()
            row = make_row(
                id=row_id,
                image=finder.find(str(record["image_name"])),
                question=record["question"],
                answer=answer,
                answer_type=kind if kind in ("closed", "open") else yes_no_type(answer),
                question_type=str(record.get("question_type", "") or ""),
                dataset=DATASET,
                source=SOURCE,
            )
        except RowError as exc:
            result.skip(str(exc), id=row_id)
            continue
        linked = record.get("qid_linked_id")
        if linked not in (None, ""):
            row["_group"] = str(linked)
        row["_split"] = "test" if str(record.get("phrase_type", "")).startswith("test") else "train"
        result.rows.append(row)
    return result
