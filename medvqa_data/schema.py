"""The row schema every source is converted to, and the loader for prepared datasets.

Columns (a contract: training, evaluation and tests rely on the names):

=============  ==============================================================
id             unique string id (the source's own id where it has one)
image          path to the image file: absolute, or relative to the prepared
               OUT dir (``--embed-images`` and images extracted from parquet);
               `load_prepared` makes every path absolute
question       question text, without the options
options        list of option texts, in letter order; empty when the source has
               no choices (VQA-RAD, SLAKE, PathVQA)
answer         gold answer text (for multiple choice: the option text)
answer_letter  "A".."Z" for multiple choice, "" otherwise
answer_type    "closed" or "open" as the source labels it; a closed question
               may have no options (yes/no questions of VQA-RAD/SLAKE)
modality       canonical modality (`CANONICAL_MODALITIES`), the source's own
               label when it has no canonical equivalent, "" when unknown
question_type  OmniMedVQA's 5 types; other sets keep their own labels or ""
dataset        original dataset name (OmniMedVQA's sub-dataset, "SLAKE", ...)
source         the prepare adapter that produced the row ("omnimedvqa", ...)
=============  ==============================================================

Invariant: a row is multiple choice exactly when ``options`` is non-empty, and
then ``answer_letter`` is set and ``answer == options[letter_index]``.
"""

from __future__ import annotations

import json
import math
import numbers
import os
from collections.abc import Iterable
from pathlib import Path

import datasets
import pyarrow as pa

from medvqa_data.errors import DataError, RowError

COLUMNS = [
    "id",
    "image",
    "question",
    "options",
    "answer",
    "answer_letter",
    "answer_type",
    "modality",
    "question_type",
    "dataset",
    "source",
]

CANONICAL_MODALITIES = ["CT", "MRI", "X-Ray", "Ultrasound", "Dermoscopy", "Fundus", "OCT", "Microscopy"]

QUESTION_TYPES = [
    "Anatomy Identification",
    "Disease Diagnosis",
    "Lesion Grading",
    "Modality Recognition",
    "Other Biological Attributes",
]

ANSWER_TYPES = ("closed", "open")

REPORT_NAME = "prepare_report.json"

FEATURES = datasets.Features(
    {
        "id": datasets.Value("string"),
        "image": datasets.Value("string"),
        "question": datasets.Value("string"),
        "options": datasets.List(datasets.Value("string")),
        "answer": datasets.Value("string"),
        "answer_letter": datasets.Value("string"),
        "answer_type": datasets.Value("string"),
        "modality": datasets.Value("string"),
        "question_type": datasets.Value("string"),
        "dataset": datasets.Value("string"),
        "source": datasets.Value("string"),
    }
)

# Lower-cased, whitespace-collapsed label -> canonical modality. Includes
# OmniMedVQA's verbatim `modality_type` strings, typos and all.
_MODALITY_ALIASES = {
    "ct(computed tomography)": "CT",
    "ct (computed tomography)": "CT",
    "computed tomography": "CT",
    "ct": "CT",
    "mr (mag-netic resonance imaging)": "MRI",
    "mr (magnetic resonance imaging)": "MRI",
    "magnetic resonance imaging": "MRI",
    "mri": "MRI",
    "mr": "MRI",
    "x-ray": "X-Ray",
    "xray": "X-Ray",
    "x ray": "X-Ray",
    "x_ray": "X-Ray",
    "ultrasound": "Ultrasound",
    "ultrasonography": "Ultrasound",
    "us": "Ultrasound",
    "dermoscopy": "Dermoscopy",
    "dermatoscopy": "Dermoscopy",
    "fundus photography": "Fundus",
    "fundus": "Fundus",
    "oct (optical coherence tomography": "OCT",
    "oct (optical coherence tomography)": "OCT",
    "optical coherence tomography": "OCT",
    "oct": "OCT",
    "microscopy images": "Microscopy",
    "microscopy": "Microscopy",
}


def normalize_modality(raw: str) -> str:
    """Map a source's modality label to a canonical name; unknown labels are returned stripped."""
    text = str(raw).strip()
    return _MODALITY_ALIASES.get(" ".join(text.lower().split()), text)


def answer_index(letter: str) -> int:
    """"A" -> 0, "B" -> 1, ...; -1 when `letter` is not a single capital letter."""
    letter = letter.strip().upper()
    if len(letter) == 1 and "A" <= letter <= "Z":
        return ord(letter) - ord("A")
    return -1


def _match_option(answer: str, options: list[str]) -> int:
    """Index of `answer` among `options` (exact after strip, then case-insensitive), or -1."""
    if answer in options:
        return options.index(answer)
    folded = [opt.casefold() for opt in options]
    key = answer.casefold()
    return folded.index(key) if key in folded else -1


MAX_QUESTION_CHARS = 10_000
"""Longer questions are refused (a 100k-character question is ~25k tokens: no prompt budget fits it)."""
MAX_ANSWER_CHARS = 2_000


def _text(value: object, field: str) -> str:
    """A text field of a source record: strings, numbers and booleans are taken as text; anything else
    (a list, a dict, NaN) or text that cannot be stored as UTF-8 (a lone surrogate) is a RowError."""
    if value is None:
        return ""
    if isinstance(value, float) and not math.isfinite(value):
        raise RowError(f"{field} must be text or a number: got {value!r}")
    if not isinstance(value, (str, numbers.Number)):
        raise RowError(f"{field} must be text: got {type(value).__name__} {str(value)[:60]!r}")
    text = str(value).strip()
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise RowError(f"invalid unicode in {field} (a lone surrogate): {text[:60]!r}") from None
    return text


def make_row(
    *,
    id: str,
    image: str,
    question: str,
    options: Iterable[object] = (),
    answer: object = "",
    answer_letter: str = "",
    answer_type: str | None = None,
    modality: str = "",
    question_type: str = "",
    dataset: str = "",
    source: str = "",
    allow_duplicate_options: bool = False,
) -> dict:
    """Build one schema row, or raise `RowError` with the reason it cannot be used.

    For multiple choice give `options` and either the gold `answer` text or its
    `answer_letter` (the letter wins when both are given); the other is filled in.
    Options equal up to letter case are refused unless `allow_duplicate_options` and the gold is
    given as a letter (then nothing is ambiguous for letter scoring; Med-R1's published test files).
    """
    question = _text(question, "question")
    if not question:
        raise RowError("empty question")
    if len(question) > MAX_QUESTION_CHARS:
        raise RowError(f"question too long: {len(question):,} characters (limit {MAX_QUESTION_CHARS:,})")
    image = _text(image, "image path")
    if not image:
        raise RowError("no image path")
    options = [_text(opt, "option") for opt in options]
    answer = _text(answer, "answer")
    answer_letter = _text(answer_letter, "answer_letter")
    if max([len(answer), *map(len, options)]) > MAX_ANSWER_CHARS:
        raise RowError(f"answer or option too long: over {MAX_ANSWER_CHARS:,} characters")
    letter = ""
    if options:
        if len(options) < 2:
            raise RowError(f"too few options: {len(options)} (multiple choice needs at least 2)")
        if len(options) > 26:
            raise RowError(f"too many options: {len(options)} (at most 26)")
        if any(not opt for opt in options):
            raise RowError(f"empty option: {options}")
        folded = [opt.casefold() for opt in options]
        duplicates = sorted({opt for opt, key in zip(options, folded) if folded.count(key) > 1})
        if duplicates and not (allow_duplicate_options and answer_letter):
            raise RowError(f"duplicate options: {duplicates} in {options} (the gold answer would be ambiguous)")
        if answer_letter:
            index = answer_index(answer_letter)
            if not 0 <= index < len(options):
                raise RowError(f"answer letter not among the options: {answer_letter!r} for {len(options)} options")
        else:
            index = _match_option(answer, options)
            if index < 0:
                raise RowError(f"gold answer not among the options: {answer!r} not in {options}")
        letter = chr(ord("A") + index)
        answer = options[index]
    elif not answer:
        raise RowError("empty answer")
    kind = (_text(answer_type, "answer_type") or ("closed" if options else "open")).lower()
    if kind not in ANSWER_TYPES:
        raise RowError(f"invalid answer_type: {answer_type!r} (use closed or open)")
    return {
        "id": _text(str(id), "id"),
        "image": image,
        "question": question,
        "options": options,
        "answer": answer,
        "answer_letter": letter,
        "answer_type": kind,
        "modality": normalize_modality(_text(modality, "modality")) if modality else "",
        "question_type": _text(question_type or "", "question_type"),
        "dataset": _text(dataset or "", "dataset"),
        "source": source,
    }


def guess_source(path: Path) -> str | None:
    """The source whose layout `path` looks like (a cheap look at the top level), or None.

    For the hint when a raw dataset folder is given where a prepared one is expected. It only looks at
    names, so it lives here rather than in `sources` (every source imports this module).
    """
    if not path.is_dir():
        return None
    children = {child.name for child in path.iterdir()}
    if "QA_information" in children or any((path / c / "QA_information").is_dir() for c in children):
        return "omnimedvqa"
    if "Splits" in children or path.name == "Splits" or {"modality", "question_type"} & children:
        return "medr1"
    if "imgs" in children and "train.json" in children:
        return "slake"
    if "train.csv" in children or "test.csv" in children:
        return "pmc-vqa"
    if any("vqa_rad" in c.lower() for c in children):
        return "vqa-rad"
    if any(c.endswith(".jsonl") for c in children):
        return "jsonl"
    return None


def _prepare_hint(path: Path) -> str:
    """The prepare command to suggest for `path`, guessing the source from its layout."""
    source = guess_source(path) if path.is_dir() else None
    if source:
        return (
            f"it looks like raw {source} data; convert it first with: python -m medvqa_data.prepare "
            f"--source {source} --root {path} --out OUT_DIR, then use OUT_DIR"
        )
    return (
        "make one with: python -m medvqa_data.prepare --source SOURCE --root YOUR_DATA_DIR "
        "--out OUT_DIR (SOURCE: omnimedvqa, medr1, vqa-rad, slake, pathvqa, pmc-vqa, jsonl), then use OUT_DIR"
    )


def _resolve_images(ds: datasets.Dataset, base: Path) -> datasets.Dataset:
    """Make relative `image` paths absolute against `base` (in memory; nothing is written)."""
    paths = ds.data.column("image").to_pylist()
    if all(os.path.isabs(p) for p in paths):
        return ds
    base_str = str(base.absolute())
    fixed = pa.array([p if os.path.isabs(p) else os.path.join(base_str, p) for p in paths], pa.string())
    table = ds.data.table.set_column(ds.column_names.index("image"), "image", fixed)
    return datasets.Dataset(table, info=ds.info.copy(), split=ds.split)


def load_prepared(path: str | os.PathLike, split: str | None = None) -> datasets.Dataset:
    """Load one split of a dataset written by ``python -m medvqa_data.prepare``.

    A DatasetDict gives `split` (default "train" when present, else its only split).
    An unsplit Dataset (prepared with ``--split none``) is returned for `split`
    None, "train" or "all"; naming any other split is an error rather than a
    silent train/test leak. Relative image paths become absolute. Raises `DataError`.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"no prepared dataset at {path}: the directory does not exist; {_prepare_hint(path)}")
    is_dict = (path / "dataset_dict.json").is_file()
    is_single = (path / "state.json").is_file() and (path / "dataset_info.json").is_file()
    if not (is_dict or is_single):
        raise DataError(
            f"{path} is neither a Dataset directory nor a DatasetDict made by save_to_disk; {_prepare_hint(path)}"
        )
    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as exc:  # a damaged save: say so in one line
        raise DataError(f"could not load the prepared dataset at {path}: {exc}") from exc
    if isinstance(loaded, datasets.DatasetDict):
        names = list(loaded.keys())
        if split is None:
            split = "train" if "train" in loaded else (names[0] if len(names) == 1 else None)
            if split is None:
                raise DataError(f"{path} has splits {names}; say which one to load")
        if split not in loaded:
            raise DataError(f"{path} has no split {split!r}; its splits are {names}")
        ds = loaded[split]
    else:
        if split not in (None, "train", "all"):
            raise DataError(
                f"{path} is an unsplit dataset (prepared with --split none) and has no {split!r} split; "
                "prepare it again with --split modality or --split question_type"
            )
        ds = loaded
    missing = [col for col in COLUMNS if col not in ds.column_names]
    if missing:
        raise DataError(
            f"{path} lacks the required column(s) {', '.join(missing)} (it has {', '.join(ds.column_names)}); "
            f"it was not made by medvqa_data.prepare: {_prepare_hint(path)}"
        )
    # Relative paths are relative to OUT, also when `path` is one split folder inside it.
    base = path.parent if (path.parent / REPORT_NAME).is_file() and not (path / REPORT_NAME).is_file() else path
    return _resolve_images(ds, base)


def read_report(out: str | os.PathLike) -> dict:
    """The prepare_report.json of a prepared OUT dir ({} when absent)."""
    report = Path(out) / REPORT_NAME
    if not report.is_file():
        return {}
    with open(report, encoding="utf-8") as handle:
        return json.load(handle)
