"""The Med-R1 reader (`medvqa_data.sources.medr1`) called directly: exact rows, skip reasons and notes.

tests/medvqa_data/test_sources.py and test_medr1_published.py go through `prepare`; here each quirk of
Med-R1's split files has a small tree of its own and the reader's output is compared field by field.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medvqa_data.errors import DataError, RowError
from medvqa_data.sources.base import SourceOptions
from medvqa_data.sources.medr1 import _dataset_name, _file_info, _image_base, parse_problem, read
from tests.medvqa_data.test_sources import image

FIXTURE = Path(__file__).parent / "fixtures" / "medr1"


def write(path: Path, records: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records, indent=4))
    return path


def rec(img: str, problem: str, gold: str) -> dict:
    return {"image": img, "problem": problem, "solution": f"<answer> {gold} </answer>"}


def row(root: Path, id: str, img: str, question: str, options: list[str], letter: str, *, split: str | None,
        modality: str = "", question_type: str = "", dataset: str = "") -> dict:
    """The row the reader must produce (images resolve under ROOT when they exist nowhere)."""
    expected = {"id": id, "image": str(root / img), "question": question, "options": options,
                "answer": options[ord(letter) - ord("A")], "answer_letter": letter, "answer_type": "closed",
                "modality": modality, "question_type": question_type, "dataset": dataset, "source": "medr1"}
    if split:
        expected["_split"] = split
    return expected


# --------------------------------------------------------------------------- parse_problem


def test_parse_problem_splits_question_and_options():
    assert parse_problem("Is there a lesion? A)No, It's normal, B)Tumor, C)Cyst") == (
        "Is there a lesion?", ["No, It's normal", "Tumor", "Cyst"])
    assert parse_problem("A)x, B)y") == ("", ["x", "y"])  # no question text before the options


def test_parse_problem_uses_the_last_a_that_has_a_b_after_it():
    # a later " A)" with no ", B)" after it is part of the last option, not a new option list
    assert parse_problem("Pick A)x, B)y, C)see A)note") == ("Pick", ["x", "y", "see A)note"])


def test_parse_problem_ignores_option_markers_inside_the_question():
    assert parse_problem("Options a, B) and b? A)x, B)y") == ("Options a, B) and b?", ["x", "y"])


def test_parse_problem_takes_the_first_marker_of_each_letter():
    # a repeated ", B)" after C) stays inside option C
    assert parse_problem("Q A)x, B)y, C)z, B)w") == ("Q", ["x", "y", "z, B)w"])


def test_parse_problem_without_options_names_the_problem():
    with pytest.raises(RowError) as exc:
        parse_problem("What is shown?")
    assert str(exc.value) == "no 'A)..., B)...' options in problem: 'What is shown?'"
    long = "W" * 100
    with pytest.raises(RowError) as exc:
        parse_problem(long)
    assert str(exc.value) == f"no 'A)..., B)...' options in problem: {'W' * 80!r}"  # cut to 80 characters


# --------------------------------------------------------------------------- small helpers


def test_file_info_from_folders_and_names(tmp_path):
    base = tmp_path / "Splits"
    assert _file_info(base / "modality" / "train" / "unknown_train.json", base) == ("modality", "train", "unknown")
    assert _file_info(base / "modality" / "unknown_test.json", base) == ("modality", "test", "unknown")
    nested = base / "release" / "question_type" / "train" / "Other_train.json"
    assert _file_info(nested, base) == ("question_type", "train", "Other")
    # no axis folder: the value says which axis it is, if any
    assert _file_info(base / "CT_test.json", base) == ("modality", "test", "CT")
    assert _file_info(base / "Disease Diagnosis_train.json", base) == ("question_type", "train", "Disease Diagnosis")
    assert _file_info(base / "Whatever_train.json", base) == (None, "train", "Whatever")
    per_dataset = tmp_path / "src" / "eval_vqa" / "prompts" / "Chest CT Scan_filtered_test.json"
    assert _file_info(per_dataset, base) == ("dataset", "dataset_test", "Chest CT Scan")


def test_dataset_name_from_image_path():
    assert _dataset_name("Images/ChestCT/0.png") == "ChestCT"
    assert _dataset_name("data/DS/x.png") == "data"
    assert _dataset_name("DS/x.png") == "DS"
    assert _dataset_name("Images/x.png") == "Images"
    assert _dataset_name("x.png") == ""


def test_image_base_is_the_first_candidate_holding_the_first_three_images(tmp_path):
    near, far = tmp_path / "near", tmp_path / "far"
    for name in ("1.png", "2.png", "3.png"):
        image(far / name)
    image(near / "4.png")  # only the 4th record's image is near: not looked at
    records = [{"image": n} for n in ("1.png", "2.png", "3.png", "4.png")]
    assert _image_base(records, [near, far]) == far
    assert _image_base(["not a record", {"image": 5}, {"image": "1.png"}], [near, far]) == far
    assert _image_base([{"image": "missing.png"}], [near, far]) == near  # found nowhere: the first candidate


# --------------------------------------------------------------------------- read: both trees + per-dataset files

CT_TRAIN = [
    rec("Images/DS1/a.png", "Is it? A)yes, B)no", "A"),
    {"image": "Images/DS1/b.png", "problem": "Organ? A)Liver, B)Lung", "solution": "<answer>Lung</answer>"},
    rec("Images/DS1/c.png", "Which? A)SPECT, B)CT, C)spect", "B"),
    rec("Images/DS1/c.png", "Again? A)PET, B)pet", "A"),
    "oops",
    {"image": "Images/DS1/c.png", "problem": "", "solution": None},
    {"image": "Images/DS1/c.png", "problem": 5, "solution": ["B"]},
    {"image": "Images/DS1/c.png", "problem": "Q? A)x, B)y", "solution": "B"},
    rec("Images/DS1/c.png", "What is this?", "A"),
]
UNKNOWN_TRAIN = [rec("Images/DS1/d.png", "Mod? A)MRI, B)CT", "B"), rec("Images/DS9/e.png", "Mod? A)MRI, B)CT", "A")]
US_TEST = [rec("Images/DS2/f.png", "Where? A)Thyroid Gland, B)aorta, C)Thyroid gland", "B")]
PER_DATASET = [CT_TRAIN[0], rec("Images/DS2/g.png", "Which? A)Aorta, B)aorta, C)Liver", "C")]
OTHER_EVAL = [rec("Images/Other/z.png", "Seen? A)yes, B)no", "B")]


def build_tree(base: Path) -> Path:
    root = base / "Med-R1"
    splits = root / "Splits"
    write(splits / "modality" / "test" / "0notes_test.json", {"note": "not a list"})  # sorted first
    write(splits / "modality" / "test" / "ultrasound_test.json", US_TEST)
    write(splits / "modality" / "train" / "CT(Computed Tomography)_train.json", CT_TRAIN)
    write(splits / "modality" / "train" / "unknown_train.json", UNKNOWN_TRAIN)
    write(splits / "question_type" / "train" / "Disease Diagnosis_train.json",
          [CT_TRAIN[0], {"problem": "no image"}, {"image": "Images/DS1/a.png"}, "junk"])
    write(splits / "question_type" / "train" / "Anatomy Identification_train.json", [CT_TRAIN[1]])
    write(splits / "question_type" / "test" / "Anatomy Identification_test.json", US_TEST)
    prompts = root / "src" / "eval_vqa" / "prompts"
    write(prompts / "MyEval_filtered_test.json", PER_DATASET)
    write(prompts / "OtherEval_filtered_test.json", OTHER_EVAL)
    return root


def test_read_both_trees_and_per_dataset_files(tmp_path):
    root = build_tree(tmp_path)
    result = read(root, SourceOptions())
    assert result.default_split == "official" and result.official_axis == "modality"
    ct, unknown, us = "modality/train/CT(Computed Tomography)_train", "modality/train/unknown_train", \
        "modality/test/ultrasound_test"
    my, other = "src/eval_vqa/prompts/MyEval_filtered_test", "src/eval_vqa/prompts/OtherEval_filtered_test"
    assert result.rows == [
        row(root, f"{us}#0", "Images/DS2/f.png", "Where?", ["Thyroid Gland", "aorta", "Thyroid gland"], "B",
            split="test", modality="Ultrasound", question_type="Anatomy Identification", dataset="DS2"),
        row(root, f"{ct}#0", "Images/DS1/a.png", "Is it?", ["yes", "no"], "A", split="train", modality="CT",
            question_type="Disease Diagnosis", dataset="DS1"),
        row(root, f"{ct}#1", "Images/DS1/b.png", "Organ?", ["Liver", "Lung"], "B", split="train", modality="CT",
            question_type="Anatomy Identification", dataset="DS1"),  # gold given as text
        # Med-R1's "unknown" modality: DS1's only modality; DS9 has none to take
        row(root, f"{unknown}#0", "Images/DS1/d.png", "Mod?", ["MRI", "CT"], "B", split="train", modality="CT",
            dataset="DS1"),
        row(root, f"{unknown}#1", "Images/DS9/e.png", "Mod?", ["MRI", "CT"], "A", split="train",
            modality="unknown", dataset="DS9"),
        # per-dataset files: dataset from the file name, modality / question type joined by (image, problem)
        row(root, f"{my}#0", "Images/DS1/a.png", "Is it?", ["yes", "no"], "A", split="dataset_test",
            modality="CT", question_type="Disease Diagnosis", dataset="MyEval"),
        row(root, f"{my}#1", "Images/DS2/g.png", "Which?", ["Aorta", "aorta", "Liver"], "C",
            split="dataset_test", modality="CT", dataset="MyEval"),
        row(root, f"{other}#0", "Images/Other/z.png", "Seen?", ["yes", "no"], "B", split="dataset_test",
            dataset="OtherEval"),
    ]
    assert result.skipped == [
        {"file": "modality/test/0notes_test.json",
         "reason": "expected a JSON list of {image, problem, solution} records"},
        {"id": f"{ct}#2", "reason": "duplicate options: ['SPECT', 'spect'] in ['SPECT', 'CT', 'spect'] "
                                    "(the gold answer would be ambiguous)"},
        {"id": f"{ct}#3", "reason": "duplicate options: ['PET', 'pet'] in ['PET', 'pet'] "
                                    "(the gold answer would be ambiguous)"},
        {"id": f"{ct}#4", "reason": "record is not a JSON object"},
        {"id": f"{ct}#5", "reason": "missing field(s): problem, solution"},
        {"id": f"{ct}#6", "reason": "field(s) must be strings: problem, solution"},
        {"id": f"{ct}#7", "reason": "no <answer>...</answer> in solution: 'B'"},
        {"id": f"{ct}#8", "reason": "no 'A)..., B)...' options in problem: 'What is this?'"},
    ]
    assert result.notes == [
        "3 records of Med-R1's per-dataset evaluation files (*_filtered_test.json) in split 'dataset_test', "
        "dataset from the file name",
        "2 training record(s) skipped for options equal up to letter case (ambiguous as a training target; "
        "test records with such options are kept)",
        f"2 test record(s) kept with options equal up to letter case (gold is a letter; a text answer matching "
        f"two options is never awarded): {us}#0, {my}#1",
        "rows from the Splits/modality tree; question_type filled in from the Splits/question_type tree",
    ]


def test_read_question_type_tree_on_request(tmp_path):
    root = build_tree(tmp_path)
    result = read(root, SourceOptions(split="question_type"))
    assert result.official_axis == "question_type"
    by_id = {r["id"]: r for r in result.rows}
    first = by_id["question_type/train/Disease Diagnosis_train#0"]
    assert (first["modality"], first["question_type"], first["_split"]) == ("CT", "Disease Diagnosis", "train")
    assert result.notes[-1] == "rows from the Splits/question_type tree; modality filled in from the " \
                               "Splits/modality tree"


def test_read_question_type_tree_alone(tmp_path):
    root = tmp_path / "Med-R1"
    write(root / "Splits" / "question_type" / "test" / "Disease Diagnosis_test.json",
          [rec("Images/DS1/a.png", "Is it? A)yes, B)no", "B")])
    result = read(root, SourceOptions())
    assert result.official_axis == "question_type"
    assert result.rows == [row(root, "question_type/test/Disease Diagnosis_test#0", "Images/DS1/a.png", "Is it?",
                               ["yes", "no"], "B", split="test", question_type="Disease Diagnosis",
                               dataset="DS1")]
    assert result.notes == []


def test_read_modality_tree_alone_has_no_join_note(tmp_path):
    root = tmp_path / "Med-R1"
    write(root / "Splits" / "modality" / "test" / "CT_test.json", [rec("Images/DS1/a.png", "Is it? A)yes, B)no", "B")])
    result = read(root, SourceOptions())
    assert result.official_axis == "modality"
    assert result.rows == [row(root, "modality/test/CT_test#0", "Images/DS1/a.png", "Is it?", ["yes", "no"], "B",
                               split="test", modality="CT", dataset="DS1")]
    assert result.notes == []


def test_read_a_single_split_file(tmp_path):
    path = write(tmp_path / "subset.json", [rec("Images/DS1/a.png", "Is it? A)yes, B)no", "A")])
    result = read(path, SourceOptions())
    assert result.default_split == "official" and result.official_axis is None
    # no split in the name: no _split; images looked for next to the file
    assert result.rows == [row(tmp_path, "subset#0", "Images/DS1/a.png", "Is it?", ["yes", "no"], "A", split=None,
                               dataset="DS1")]
    assert result.skipped == [] and result.notes == []


def test_read_root_without_splits_folder_reads_the_per_dataset_files_once(tmp_path):
    root = tmp_path / "release"
    write(root / "modality" / "test" / "CT_test.json", [rec("Images/DS1/a.png", "Is it? A)yes, B)no", "A")])
    write(root / "src" / "eval_vqa" / "prompts" / "E_filtered_test.json",
          [rec("Images/DS1/a.png", "Is it? A)yes, B)no", "A")])
    result = read(root, SourceOptions())
    assert [(r["id"], r["_split"], r["modality"], r["dataset"]) for r in result.rows] == [
        ("modality/test/CT_test#0", "test", "CT", "DS1"),
        ("src/eval_vqa/prompts/E_filtered_test#0", "dataset_test", "CT", "E"),
    ]


def test_read_looks_for_images_in_three_parent_folders_at_most(tmp_path):
    root = tmp_path / "a" / "b" / "c" / "d" / "Med-R1"
    write(root / "Splits" / "modality" / "test" / "CT_test.json", [rec("Images/DS/x.png", "Is it? A)yes, B)no", "A")])
    image(tmp_path / "a" / "Images" / "DS" / "x.png")  # the 4th parent: too far
    assert read(root, SourceOptions()).rows[0]["image"] == str(root / "Images" / "DS" / "x.png")
    image(tmp_path / "a" / "b" / "Images" / "DS" / "x.png")  # the 3rd parent
    assert read(root, SourceOptions()).rows[0]["image"] == str(tmp_path / "a" / "b" / "Images" / "DS" / "x.png")


@pytest.mark.parametrize("count", [20, 21])
def test_case_duplicate_test_records_note_lists_twenty_ids(tmp_path, count):
    root = tmp_path / "Med-R1"
    records = [rec(f"Images/DS/{i}.png", f"Q{i}? A)Thyroid Gland, B)Thyroid gland", "A") for i in range(count)]
    write(root / "Splits" / "modality" / "test" / "CT_test.json", records)
    result = read(root, SourceOptions())
    assert len(result.rows) == count
    shown = ", ".join(f"modality/test/CT_test#{i}" for i in range(20)) + (" ..." if count > 20 else "")
    assert result.notes == [f"{count} test record(s) kept with options equal up to letter case (gold is a letter; "
                            f"a text answer matching two options is never awarded): {shown}"]


def test_read_empty_root_names_it(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError) as exc:
        read(tmp_path / "empty", SourceOptions())
    assert str(exc.value) == f"no Med-R1 split files (*.json) under {tmp_path / 'empty'}"


def test_published_fixture_per_dataset_rows(tmp_path):
    result = read(FIXTURE, SourceOptions(image_root=tmp_path))
    per_dataset = [(r["id"], r["dataset"], r["_split"]) for r in result.rows if r["_split"] == "dataset_test"]
    assert per_dataset == [
        ("src/eval_vqa/prompts/Covid CT_filtered_test#0", "Covid CT", "dataset_test"),
        ("src/eval_vqa/prompts/Covid CT_filtered_test#1", "Covid CT", "dataset_test"),
        ("src/eval_vqa/prompts/RadImageNet_filtered_test#0", "RadImageNet", "dataset_test"),
        ("src/eval_vqa/prompts/RadImageNet_filtered_test#1", "RadImageNet", "dataset_test"),
    ]
    assert all(r["source"] == "medr1" for r in result.rows)
