"""PMC-VQA: ``train.csv`` / ``test.csv`` and the figures in ``images/``.

Columns ``Figure_path, Question, Answer, Choice A, Choice B, Choice C, Choice D,
Answer_label``. Choices carry a letter prefix (``"B:Focal uptake pattern"``),
removed here; ``Answer_label`` (the letter) names the gold option, with the
``Answer`` text as fallback. Reads ``train.csv`` and ``test.csv`` when present,
else every ``*.csv`` with train/test in its name. Official splits are kept.
PMC-VQA has no modality or question-type labels ("").
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from medvqa_data.errors import DataError, RowError
from medvqa_data.schema import make_row
from medvqa_data.sources.base import ImageFinder, SourceOptions, SourceResult, relative, split_from_name

CHOICE_KEYS = ("Choice A", "Choice B", "Choice C", "Choice D")
_PREFIX = re.compile(r"^\s*\(?[A-Da-d]\s*[:.)]\s*")


def strip_choice(text: str) -> str:
    """``"B:Focal uptake"`` / ``" B. Focal uptake"`` -> ``"Focal uptake"``."""
    return _PREFIX.sub("", str(text)).strip()


def _csv_files(root: Path) -> list[tuple[Path, str]]:
    exact = [(root / f"{split}.csv", split) for split in ("train", "test") if (root / f"{split}.csv").is_file()]
    if exact:
        return exact
    found = []
    for path in sorted(root.rglob("*.csv")):
        split = split_from_name(path.stem)
        if split:
            found.append((path, split))
    return found


def read(root: Path, opts: SourceOptions) -> SourceResult:
    files = _csv_files(root)
    if not files:
        raise DataError(f"{root} is not a PMC-VQA root: expected train.csv and test.csv (and images/)")
    result = SourceResult(default_split="official")
    finder = ImageFinder(root, ("images", "figures", "images_2/figures"))
    for path, split in files:
        name = relative(path, root)
        records: list[dict] = []
        try:  # strict: an unclosed quote is an error, not one row that swallows the rest of the file
            with open(path, encoding="utf-8", newline="") as handle:
                reader = csv.DictReader(handle, strict=True)
                for record in reader:
                    records.append(record)
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            # csv's line_num counts the lines of the records read so far: the bad one starts on the next line
            where = f"line {reader.line_num + 1}: " if isinstance(exc, csv.Error) else ""
            result.skip(f"cannot read CSV: {where}{exc} (the {len(records)} row(s) before it were read)", file=name)
        for index, record in enumerate(records):
            row_id = f"pmc-vqa-{path.stem}-{index}"
            try:
                missing = [key for key in ("Figure_path", "Question") if not (record.get(key) or "").strip()]
                if missing:
                    raise RowError(f"missing field(s): {', '.join(missing)}")
                options = [strip_choice(record[key]) for key in CHOICE_KEYS if (record.get(key) or "").strip()]
                letter = strip_choice_letter(record.get("Answer_label") or "")
                row = make_row(
                    id=row_id,
                    image=finder.find(record["Figure_path"].strip()),
                    question=record["Question"],
                    options=options,
                    answer=strip_choice(record.get("Answer") or ""),
                    answer_letter=letter,
                    answer_type="closed",
                    dataset="PMC-VQA",
                    source="pmc-vqa",
                )
            except RowError as exc:
                result.skip(str(exc), id=row_id)
                continue
            row["_split"] = split
            result.rows.append(row)
    return result


def strip_choice_letter(label: str) -> str:
    """The letter of an ``Answer_label`` cell ("B", " B", "B:"), or "" when there is none."""
    match = re.match(r"^\s*\(?([A-Da-d])\b", label)
    return match.group(1).upper() if match else ""
