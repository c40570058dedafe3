"""What every source adapter shares: options, result type and small file helpers.

An adapter is a function ``read(root: Path, opts: SourceOptions) -> SourceResult``.
It only reads under `root`; the one thing it may write is images extracted from
parquet files, into ``opts.out_dir`` (the prepare output, never the user's data).
Rows are `schema.make_row` dicts plus two optional private keys that `prepare`
consumes and drops: ``_split`` (the official split name) and ``_group`` (rows
sharing it must land in the same split).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from medvqa_data.errors import DataError, RowError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp", ".dcm", ".nii", ".gz")
EXTRACTED_DIR = "images/_extracted"


@dataclass
class SourceOptions:
    include_restricted: bool = False  # omnimedvqa: also read QA_information/Restricted-access
    lang: str = "en"  # slake: en, zh or all
    split: str | None = None  # the split the user asked for (medr1 picks its Splits tree from it)
    image_root: Path | None = None  # medr1: where the Images/ paths of the split files are relative to
    out_dir: Path | None = None  # where images embedded in parquet files may be extracted


@dataclass
class SourceResult:
    rows: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)  # {"id" or "file": ..., "reason": ...}
    default_split: str = "modality"  # what --split auto means: "official" when rows carry _split
    official_axis: str | None = None  # the axis the official split was stratified on, if any
    filtered: dict[str, int] = field(default_factory=dict)  # rows left out on purpose (e.g. other language)
    notes: list[str] = field(default_factory=list)

    def skip(self, reason: str, *, id: object = None, file: object = None) -> None:
        entry = {"id": str(id)} if id is not None else {"file": str(file)}
        entry["reason"] = reason
        self.skipped.append(entry)


def relative(path: Path, root: Path) -> str:
    """`path` relative to `root` when inside it (for report entries), else as given."""
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def read_json(path: Path) -> object:
    """Parse a JSON file; raise `RowError` with a one-line reason when it is unreadable."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as exc:
        raise RowError(f"invalid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise RowError(f"cannot read file: {exc}") from exc


_SPLIT_WORDS = {"train": "train", "training": "train", "test": "test", "testing": "test",
                "validation": "validation", "valid": "validation", "val": "validation", "dev": "validation"}


def split_from_name(name: str) -> str | None:
    """Official split named by a file or folder name: "train-0000.parquet" -> "train", "val" -> "validation"."""
    for word in re.split(r"[^a-z]+", name.lower()):
        if word in _SPLIT_WORDS:
            return _SPLIT_WORDS[word]
    return None


def split_from_path(path: Path, root: Path) -> str | None:
    """The official split named by the file name, else by the nearest folder under `root`."""
    parts = Path(relative(path, root)).parts
    for part in reversed(parts):
        split = split_from_name(Path(part).stem if part == parts[-1] else part)
        if split:
            return split
    return None


def abspath(path: Path | str) -> str:
    """Absolute path without resolving symlinks (so users see the path they gave)."""
    return os.path.abspath(path)


class ImageFinder:
    """Find an image by relative path or bare file name under `root` (the name index is built on first use)."""

    def __init__(self, root: Path, subdirs: tuple[str, ...] = ()):
        self.root = root
        self.bases = [root / sub for sub in subdirs] + [root]
        self._by_name: dict[str, Path] | None = None

    def find(self, name: str) -> str:
        """Absolute path of `name`; when not found, the most likely path (the image check reports it missing)."""
        for base in self.bases:
            candidate = base / name
            try:
                if candidate.is_file():
                    return abspath(candidate)
            except OSError:  # a name too long for the filesystem: not found
                pass
        if self._by_name is None:
            self._by_name = {}
            for path in sorted(self.root.rglob("*")):
                if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
                    self._by_name.setdefault(path.name, path)
        found = self._by_name.get(Path(name).name)
        return abspath(found if found is not None else self.bases[0] / name)


def _image_suffix(data: bytes) -> str:
    if data.startswith(b"\x89PNG"):
        return ".png"
    if data.startswith(b"\xff\xd8"):
        return ".jpg"
    if data[128:132] == b"DICM":
        return ".dcm"
    return ".img"


def extract_image(data: bytes, opts: SourceOptions, dataset: str) -> str:
    """Write image bytes found inside a data file to OUT/images/_extracted/<dataset>/<sha1>.<ext>.

    Returns the path relative to OUT (identical images are written once).
    """
    if opts.out_dir is None:
        raise RowError("image bytes embedded in the data file but no output directory to extract them to")
    digest = hashlib.sha1(data).hexdigest()[:20]
    rel = f"{EXTRACTED_DIR}/{dataset}/{digest}{_image_suffix(data)}"
    target = opts.out_dir / rel
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return rel


def iter_table(path: Path) -> Iterator[dict]:
    """Records of a .parquet, .jsonl/.json or .csv file, one dict each (a `RowError` in place of a
    jsonl line that is not valid JSON)."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches(batch_size=256):
            yield from batch.to_pylist()
    elif suffix == ".jsonl":
        with open(path, encoding="utf-8-sig") as handle:
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError as exc:  # one bad line: skipped, the rest is read
                        yield RowError(f"invalid JSON: line {number}: {exc.msg}")
    elif suffix == ".json":
        data = read_json(path)
        if not isinstance(data, list):
            raise RowError("expected a JSON list of records")
        yield from data
    elif suffix == ".csv":
        import csv

        with open(path, encoding="utf-8", newline="") as handle:
            yield from csv.DictReader(handle, strict=True)  # an unclosed quote is an error, not a merged row
    else:
        raise RowError(f"unsupported table format {suffix!r}")


def image_field(value: object, opts: SourceOptions, dataset: str, finder: ImageFinder) -> str:
    """Resolve an `image` cell: a {"bytes", "path"} struct (extracted to OUT) or a path/file name."""
    if isinstance(value, dict):
        if value.get("bytes"):
            return extract_image(value["bytes"], opts, dataset)
        value = value.get("path")
    if not value:
        raise RowError("no image")
    return finder.find(str(value))


def yes_no_type(answer: str) -> str:
    """Answer type for sets without one (PathVQA, VQA-RAD parquet): yes/no answers are closed."""
    return "closed" if answer.strip().lower() in ("yes", "no") else "open"


TABLE_SUFFIXES = (".parquet", ".jsonl", ".csv")


def read_qa_tables(root: Path, opts: SourceOptions, result: SourceResult, *, dataset: str, source: str,
                   modality: str = "") -> None:
    """Read the Hub-style ``image, question, answer`` copies (parquet/jsonl/csv) under `root` into `result`.

    The split comes from each file's name or folder (``train-00000-of-00001.parquet``,
    ``data/test.jsonl``); ``image`` is an embedded {"bytes", "path"} struct (extracted
    to OUT) or a path relative to the file or `root`; the answer type is "closed"
    for yes/no answers, else "open".
    """
    from medvqa_data.schema import make_row

    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in TABLE_SUFFIXES and p.is_file())
    if not files:
        raise DataError(f"no data files ({', '.join(TABLE_SUFFIXES)}) with image, question, answer columns under {root}")
    finder = ImageFinder(root, ("images", "imgs"))
    for path in files:
        name = relative(path, root)
        split = split_from_path(path, root)
        stem = Path(name).with_suffix("").as_posix()
        index = -1
        try:
            for index, record in enumerate(iter_table(path)):
                row_id = f"{stem}#{index}"
                try:
                    if isinstance(record, RowError):
                        raise record
                    if not isinstance(record, dict):
                        raise RowError("record is not a JSON object")
                    missing = [key for key in ("image", "question", "answer") if record.get(key) in (None, "")]
                    if missing:
                        raise RowError(f"missing field(s): {', '.join(missing)}")
                    answer = str(record["answer"]).strip()
                    row = make_row(
                        id=row_id,
                        image=image_field(record["image"], opts, source, finder),
                        question=record["question"],
                        answer=answer,
                        answer_type=yes_no_type(answer),
                        modality=modality,
                        dataset=dataset,
                        source=source,
                    )
                except RowError as exc:
                    result.skip(str(exc), id=row_id)
                    continue
                if split:
                    row["_split"] = split
                result.rows.append(row)
        except Exception as exc:  # pyarrow, csv and json raise many kinds; keep the rows read so far
            result.skip(f"unreadable after {index + 1} record(s): {type(exc).__name__}: {exc}", file=name)
