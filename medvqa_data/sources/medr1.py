"""Med-R1's split files: ``Splits/{modality,question_type}/{train,test}/<value>_{train,test}.json``.

Each file is a JSON list of ``{"image": "Images/...", "problem": "QUESTION A)..,
B)..", "solution": "<answer> B </answer>"}``. The options are parsed back out of
`problem`; the letter comes from `solution`. Modality or question type comes from
the file name (Med-R1 uses OmniMedVQA's verbatim strings, e.g.
``MR (Mag-netic Resonance Imaging)_train.json``) and the split from the folder.

When both trees are present the rows come from one of them (``--split
question_type`` picks that tree, else modality) and the other attribute is
filled in by matching (image, problem) against the other tree. Rows whose
modality is still unknown (Med-R1's ``unknown_train.json``) take the modality
all other rows of their sub-dataset share. ``image`` paths are relative to the
OmniMedVQA root: ``--image-root``, else the first of ROOT and its parents where
the images exist.

Med-R1's per-dataset evaluation files (``src/eval_vqa/prompts/<dataset>_filtered_test.json``, same
records; read when ROOT is the Med-R1 checkout or holds them) become the split ``dataset_test``,
with the dataset from the file name: a separate selection (17,721 records, most not in the
modality test files), so the official ``test`` split stays exactly the Splits test files.

Test records (``test`` and ``dataset_test``) are all kept, including those whose options differ
only in letter case ("Thyroid Gland", "Thyroid gland"; 4 of the 17,662 modality test records):
the gold is a letter, so letter scoring is unambiguous, and the text matcher never awards a text
that matches two options. They are listed in a report note. Training records with such options
are still skipped ("duplicate options"): their option text is ambiguous as a training target.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

from medvqa_data.errors import DataError, RowError
from medvqa_data.schema import CANONICAL_MODALITIES, QUESTION_TYPES, make_row, normalize_modality
from medvqa_data.sources.base import (
    SourceOptions,
    SourceResult,
    abspath,
    read_json,
    relative,
    split_from_path,
)

AXES = ("modality", "question_type")
_SUFFIX = re.compile(r"_(train|test|val|valid|validation)$", re.IGNORECASE)
PER_DATASET_SUFFIX = "_filtered_test"
PER_DATASET_SPLIT = "dataset_test"
PER_DATASET_DIR = Path("src") / "eval_vqa" / "prompts"
_TEST_SPLITS = ("test", PER_DATASET_SPLIT)
_ANSWER = re.compile(r"<answer>\s*(.*?)\s*</answer>", re.DOTALL)


def parse_problem(problem: str) -> tuple[str, list[str]]:
    """``"Q? A)x, B)y, C)z"`` -> ("Q?", ["x", "y", "z"]); options may contain commas."""
    starts = [m.end() for m in re.finditer(r"(?:^|\s)A\)", problem) if problem.find(", B)", m.end()) >= 0]
    if not starts:
        raise RowError(f"no 'A)..., B)...' options in problem: {problem[:80]!r}")
    position = starts[-1]
    question = problem[: position - 2].strip()
    options = []
    letter = "B"
    while True:
        marker = problem.find(f", {letter})", position)
        if marker < 0:
            options.append(problem[position:].strip())
            break
        options.append(problem[position:marker].strip())
        position = marker + 4
        letter = chr(ord(letter) + 1)
    return question, options


def _file_info(path: Path, base: Path) -> tuple[str | None, str | None, str]:
    """(axis, split, value) of a split file from its place in the tree ("dataset" axis: a per-dataset file)."""
    if path.stem.endswith(PER_DATASET_SUFFIX):
        return "dataset", PER_DATASET_SPLIT, path.stem[: -len(PER_DATASET_SUFFIX)]
    folders = [part.lower() for part in Path(relative(path, base)).parts[:-1]]
    value = _SUFFIX.sub("", path.stem)
    axis = next((a for a in AXES if a in folders), None)
    if axis is None:
        if normalize_modality(value) in CANONICAL_MODALITIES:
            axis = "modality"
        elif value in QUESTION_TYPES:
            axis = "question_type"
    return axis, split_from_path(path, base), value


def _image_base(records: list, candidates: list[Path]) -> Path:
    """The first candidate directory under which the first few images exist."""
    names = [r.get("image") for r in records[:3] if isinstance(r, dict) and isinstance(r.get("image"), str)]
    for candidate in candidates:
        if any((candidate / name).is_file() for name in names):
            return candidate
    return candidates[0]


def _dataset_name(image: str) -> str:
    parts = Path(image).parts
    if len(parts) >= 3 and parts[0] == "Images":
        return parts[1]
    return parts[0] if len(parts) >= 2 else ""


def _fill_modality_by_dataset(rows: list[dict]) -> None:
    """Rows with a non-canonical modality take the single canonical modality of their sub-dataset."""
    seen: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        if row["modality"] in CANONICAL_MODALITIES:
            seen[row["dataset"]].add(row["modality"])
    for row in rows:
        known = seen.get(row["dataset"], set())
        if row["modality"] not in CANONICAL_MODALITIES and len(known) == 1:
            row["modality"] = next(iter(known))


def read(root: Path, opts: SourceOptions) -> SourceResult:
    base = root / "Splits" if (root / "Splits").is_dir() else root
    files = [base] if base.is_file() else sorted(base.rglob("*.json"))
    if base != root and (root / PER_DATASET_DIR).is_dir():
        files += sorted((root / PER_DATASET_DIR).glob(f"*{PER_DATASET_SUFFIX}.json"))
    if not files:
        raise DataError(f"no Med-R1 split files (*.json) under {root}")
    names = {path: relative(path, base if base in path.parents else root) for path in files}
    info = {path: _file_info(path, base) for path in files}
    axes = {axis for axis, _, _ in info.values() if axis in AXES}
    wanted = opts.split if opts.split in AXES else None
    primary = wanted if wanted in axes else ("modality" if "modality" in axes else next(iter(axes), None))
    other = next((a for a in AXES if a != primary and a in axes), None)
    candidates = [opts.image_root] if opts.image_root else [root if root.is_dir() else root.parent, *root.parents[:3]]
    result = SourceResult(default_split="official", official_axis=primary)
    known_other: dict[tuple[str, str], str] = {}
    loaded: list[tuple[Path, list]] = []
    for path in files:
        name = names[path]
        try:
            records = read_json(path)
        except RowError as exc:
            result.skip(str(exc), file=name)
            continue
        if not isinstance(records, list):
            result.skip("expected a JSON list of {image, problem, solution} records", file=name)
            continue
        axis, _, value = info[path]
        if other is not None and axis == other:
            for rec in records:
                if isinstance(rec, dict) and isinstance(rec.get("image"), str) and isinstance(rec.get("problem"), str):
                    known_other[(rec["image"], rec["problem"])] = value
        else:
            loaded.append((path, records))
    attributes: dict[tuple[str, str], tuple[str, str]] = {}  # (image, problem) -> (modality, question_type)
    per_dataset: list[tuple[dict, tuple[str, str]]] = []
    flagged: list[str] = []
    dropped_duplicates = 0
    for path, records in loaded:
        axis, split, value = info[path]
        image_base = _image_base(records, candidates)
        stem = (Path(names[path]).with_suffix("").as_posix() if names[path] != "."
                else path.stem)  # ROOT is the file itself
        for index, rec in enumerate(records):
            row_id = f"{stem}#{index}"
            try:
                if not isinstance(rec, dict):
                    raise RowError("record is not a JSON object")
                missing = [key for key in ("image", "problem", "solution") if not rec.get(key)]
                if missing:
                    raise RowError(f"missing field(s): {', '.join(missing)}")
                wrong = [key for key in ("image", "problem", "solution") if not isinstance(rec[key], str)]
                if wrong:
                    raise RowError(f"field(s) must be strings: {', '.join(wrong)}")
                question, options = parse_problem(rec["problem"])
                folded = [option.casefold() for option in options]
                case_duplicates = len(set(folded)) < len(folded)
                match = _ANSWER.search(str(rec["solution"]))
                if not match:
                    raise RowError(f"no <answer>...</answer> in solution: {rec['solution']!r}")
                gold = match.group(1).strip()
                letter = gold if re.fullmatch(r"[A-Z]", gold) else ""
                joined = known_other.get((rec["image"], rec["problem"]), "")
                row = make_row(
                    id=row_id,
                    image=abspath(image_base / rec["image"]),
                    question=question,
                    options=options,
                    answer="" if letter else gold,
                    answer_letter=letter,
                    answer_type="closed",
                    modality=value if axis == "modality" else joined,
                    question_type=value if axis == "question_type" else joined,
                    dataset=value if axis == "dataset" else _dataset_name(rec["image"]),
                    source="medr1",
                    allow_duplicate_options=split in _TEST_SPLITS,
                )
            except RowError as exc:
                result.skip(str(exc), id=row_id)
                dropped_duplicates += str(exc).startswith("duplicate options")
                continue
            if split:
                row["_split"] = split
            if case_duplicates:
                flagged.append(row_id)
            key = (rec["image"], rec["problem"])
            if axis == "dataset":
                per_dataset.append((row, key))
            else:
                attributes.setdefault(key, (row["modality"], row["question_type"]))
            result.rows.append(row)
    for row, key in per_dataset:  # the per-dataset files carry no modality / question type: join them
        row["modality"], row["question_type"] = attributes.get(key, ("", ""))
    _fill_modality_by_dataset(result.rows)
    if per_dataset:
        result.notes.append(f"{len(per_dataset)} records of Med-R1's per-dataset evaluation files "
                            f"(*{PER_DATASET_SUFFIX}.json) in split {PER_DATASET_SPLIT!r}, dataset from the file name")
    if dropped_duplicates:
        result.notes.append(f"{dropped_duplicates} training record(s) skipped for options equal up to letter case "
                            "(ambiguous as a training target; test records with such options are kept)")
    if flagged:
        shown = ", ".join(flagged[:20]) + (" ..." if len(flagged) > 20 else "")
        result.notes.append(f"{len(flagged)} test record(s) kept with options equal up to letter case (gold is a "
                            f"letter; a text answer matching two options is never awarded): {shown}")
    if primary and other:
        result.notes.append(f"rows from the Splits/{primary} tree; {other} filled in from the Splits/{other} tree")
    return result
