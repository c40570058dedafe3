"""The VQA-RAD and jsonl readers called directly: every field of the rows they make, and their exact skip texts.

test_sources.py runs each adapter through `prepare` on its real layout; here the reader's own output
(rows with their private `_split` / `_group` keys, skip entries, notes, default split) is pinned.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from medvqa_data.errors import DataError
from medvqa_data.sources import jsonl, vqa_rad
from medvqa_data.sources.base import SourceOptions
from tests.medvqa_data.test_sources import image

RELEASE = "VQA_RAD Dataset Public.json"
FOLDER = "VQA_RAD Image Folder"


def rad_row(root: Path, id: str, img: str, question: str, answer: str, answer_type: str, question_type: str = "",
            *, split: str = "train", group: str | None = None, folder: str = FOLDER) -> dict:
    row = {"id": id, "image": os.path.abspath(root / folder / img), "question": question, "options": [],
           "answer": answer, "answer_letter": "", "answer_type": answer_type, "modality": "",
           "question_type": question_type, "dataset": "VQA-RAD", "source": "vqa-rad"}
    if group is not None:
        row["_group"] = group
    row["_split"] = split
    return row


def write_release(root: Path, records: list, name: str = RELEASE) -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records))
    return path


# --------------------------------------------------------------------------- VQA-RAD original release


def test_vqa_rad_release_rows_labels_groups_splits_and_skips(tmp_path):
    root = tmp_path / "VQA_RAD"
    image(root / FOLDER / "synpic1.jpg")
    image(root / FOLDER / "synpic2.jpg")
    write_release(root, [
        {"qid": 1, "image_name": "synpic1.jpg", "question": "Is the lesion on the left or right?", "answer": " left ",
         "answer_type": "CLOSED", "question_type": "POS", "qid_linked_id": "L1", "phrase_type": "freeform"},
        {"qid": 2, "image_name": "synpic1.jpg", "question": "Is there a mass?", "answer": "No",
         "answer_type": " Open ", "question_type": "PRES", "qid_linked_id": "L1", "phrase_type": "para"},
        "a stray string",
        {"qid": 40, "image_name": "", "question": "Where?", "answer": "", "answer_type": "OPEN"},
        # no answer_type: yes/no answers are closed, others open; no question_type, qid or qid_linked_id
        {"image_name": "synpic2.jpg", "question": "Is this normal?", "answer": "Yes", "phrase_type": "test_freeform"},
        {"qid": 6, "image_name": "synpic2.jpg", "question": "Which organ?", "answer": "liver", "answer_type": "",
         "question_type": None, "qid_linked_id": "", "phrase_type": "test_para"},
        {"qid": 7, "image_name": "synpic_missing.jpg", "question": "How many?", "answer": 2, "answer_type": "other",
         "question_type": "COUNT", "qid_linked_id": 7},
    ])
    result = vqa_rad.read(root, SourceOptions())
    assert result.default_split == "modality"
    assert result.notes == [f"original VQA-RAD release read from {RELEASE}; grouped by qid_linked_id"]
    assert result.skipped == [
        {"id": "vqa-rad-#2", "reason": "record is not a JSON object"},
        {"id": "vqa-rad-40", "reason": "missing field(s): image_name, answer"},
    ]
    assert result.rows == [
        rad_row(root, "vqa-rad-1", "synpic1.jpg", "Is the lesion on the left or right?", "left", "closed", "POS",
                group="L1"),
        rad_row(root, "vqa-rad-2", "synpic1.jpg", "Is there a mass?", "No", "open", "PRES", group="L1"),
        rad_row(root, "vqa-rad-4", "synpic2.jpg", "Is this normal?", "Yes", "closed", split="test"),
        rad_row(root, "vqa-rad-6", "synpic2.jpg", "Which organ?", "liver", "open", split="test"),
        # a missing image keeps its most likely path (the image check reports it), inside the image folder
        rad_row(root, "vqa-rad-7", "synpic_missing.jpg", "How many?", "2", "open", "COUNT", group="7"),
    ]


def test_vqa_rad_single_record_release(tmp_path):
    root = tmp_path / "VQA_RAD"
    image(root / FOLDER / "synpic9.jpg")
    write_release(root, [{"qid": 9, "image_name": "synpic9.jpg", "question": "Is there air?", "answer": "no",
                          "answer_type": "CLOSED", "question_type": "PRES", "phrase_type": "test_freeform"}])
    result = vqa_rad.read(root, SourceOptions())
    assert result.skipped == []
    assert result.rows == [rad_row(root, "vqa-rad-9", "synpic9.jpg", "Is there air?", "no", "closed", "PRES",
                                   split="test")]


def test_vqa_rad_release_file_wins_over_other_json(tmp_path):
    """A macOS `._` shadow file, a metadata object and another image_name list do not hide the release."""
    root = tmp_path / "VQA_RAD"
    image(root / FOLDER / "synpic1.jpg")
    (root / f"._{RELEASE}").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        \xff\xfe")
    (root / "VQA_RAD Dataset Metadata.json").write_text(json.dumps({"name": "VQA-RAD", "version": 1}))
    write_release(root, [{"image_name": "synpic1.jpg", "question": "Derived?", "answer": "yes"}], "Annotations.json")
    write_release(root, [{"qid": 1, "image_name": "synpic1.jpg", "question": "Original?", "answer": "yes",
                          "answer_type": "CLOSED"}])
    result = vqa_rad.read(root, SourceOptions())
    assert result.notes == [f"original VQA-RAD release read from {RELEASE}; grouped by qid_linked_id"]
    assert [row["question"] for row in result.rows] == ["Original?"]


def test_vqa_rad_two_release_copies_pick_the_first_path_not_the_listing_order(tmp_path):
    root = tmp_path / "VQA_RAD"
    image(root / FOLDER / "synpic1.jpg")
    write_release(root, [{"qid": 1, "image_name": "synpic1.jpg", "question": "Top level?", "answer": "yes"}])
    write_release(root, [{"qid": 1, "image_name": "synpic1.jpg", "question": "In 2019/?", "answer": "yes"}],
                  f"2019/{RELEASE}")
    result = vqa_rad.read(root, SourceOptions())
    assert result.notes == [f"original VQA-RAD release read from 2019/{RELEASE}; grouped by qid_linked_id"]
    assert [row["question"] for row in result.rows] == ["In 2019/?"]


def test_vqa_rad_images_folder_wins_over_a_same_named_copy_elsewhere(tmp_path):
    root = tmp_path / "VQA_RAD"
    image(root / "images" / "synpic1.jpg")
    image(root / "augmented" / "synpic1.jpg", (0, 0, 0))
    write_release(root, [{"qid": 1, "image_name": "synpic1.jpg", "question": "Q?", "answer": "yes"}])
    (row,) = vqa_rad.read(root, SourceOptions()).rows
    assert row["image"] == os.path.abspath(root / "images" / "synpic1.jpg")


def test_vqa_rad_broken_first_json_does_not_stop_the_search(tmp_path):
    root = tmp_path / "VQA_RAD"
    image(root / FOLDER / "synpic1.jpg")
    (root / "VQA_RAD Dataset Broken.json").write_text("[{")
    write_release(root, [{"qid": 1, "image_name": "synpic1.jpg", "question": "Q?", "answer": "yes"}])
    assert [row["id"] for row in vqa_rad.read(root, SourceOptions()).rows] == ["vqa-rad-1"]


def test_vqa_rad_hub_copy_keeps_its_official_split(tmp_path):
    root = tmp_path / "vqa-rad-hub"
    image(root / "images" / "a.png")
    (root / "data").mkdir()
    (root / "data" / "test.jsonl").write_text(json.dumps({"image": "a.png", "question": "Is it CT?", "answer": "yes"}))
    result = vqa_rad.read(root, SourceOptions(out_dir=tmp_path / "out"))
    assert result.default_split == "official" and result.notes == [] and result.skipped == []
    assert result.rows == [{
        "id": "data/test#0", "image": os.path.abspath(root / "images" / "a.png"), "question": "Is it CT?",
        "options": [], "answer": "yes", "answer_letter": "", "answer_type": "closed", "modality": "",
        "question_type": "", "dataset": "VQA-RAD", "source": "vqa-rad", "_split": "test",
    }]


# --------------------------------------------------------------------------- jsonl (our schema)


def jsonl_row(id: str, img: str, question: str, *, options: list | None = None, answer: str = "",
              letter: str = "", answer_type: str = "open", modality: str = "", question_type: str = "",
              dataset: str = "", split: str | None = None, group: str | None = None) -> dict:
    row = {"id": id, "image": img, "question": question, "options": options or [], "answer": answer,
           "answer_letter": letter, "answer_type": answer_type, "modality": modality,
           "question_type": question_type, "dataset": dataset, "source": "jsonl"}
    if split is not None:
        row["_split"] = split
    if group is not None:
        row["_group"] = group
    return row


def test_jsonl_single_file_rows_splits_groups_and_skips(tmp_path):
    root = tmp_path / "mine"
    image(root / "imgs" / "0.png")
    img = os.path.abspath(root / "imgs" / "0.png")
    lines = [
        {"id": "mc", "image": "imgs/0.png", "question": "Which?", "options": ["CT", "MRI"], "answer": "mri",
         "modality": "CT", "question_type": "Modality Recognition", "dataset": "mine", "split": "val",
         "group": "patient7"},
        {"image": "imgs/0.png", "question": "Organ?", "answer": "liver", "split": "holdout", "group": ""},
        "",
        {"id": "", "image": "imgs/0.png", "question": "Is it normal?", "answer": "yes", "answer_type": "closed"},
        [1, 2],
        "{not json",
        {"id": "two_missing", "options": ["a", "b"], "answer": "a"},
        {"id": "bad_options", "image": "imgs/0.png", "question": "Q?", "options": "a, b", "answer": "a"},
        {"id": "null_image", "image": None, "question": "Q?", "answer": "a"},
        {"id": "last", "image": str(root / "imgs" / "0.png"), "question": "Last?", "answer_letter": "A",
         "options": ["x", "y"], "answer_type": "open", "split": "testing"},
    ]
    path = root / "data.jsonl"
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    result = jsonl.read(path, SourceOptions())
    assert result.default_split == "official"
    assert result.skipped == [
        {"id": "data.jsonl:5", "reason": "line is not a JSON object"},
        {"file": "data.jsonl:6", "reason": "invalid JSON: Expecting property name enclosed in double quotes"},
        {"id": "two_missing", "reason": "no 'image', 'question' key; each line needs id, image, question and "
                                        "answer or answer_letter (see medvqa_data/sources/jsonl.py)"},
        {"id": "bad_options", "reason": "options must be a JSON list of strings"},
        {"id": "null_image", "reason": "no image path"},
    ]
    assert result.rows == [
        jsonl_row("mc", img, "Which?", options=["CT", "MRI"], answer="MRI", letter="B", answer_type="closed",
                  modality="CT", question_type="Modality Recognition", dataset="mine", split="validation",
                  group="jsonl:patient7"),
        jsonl_row("data.jsonl:2", img, "Organ?", answer="liver", split="holdout"),
        jsonl_row("data.jsonl:4", img, "Is it normal?", answer="yes", answer_type="closed"),
        jsonl_row("last", img, "Last?", options=["x", "y"], answer="x", letter="A", split="test"),
    ]


def test_jsonl_folder_reads_every_file_and_skips_unreadable_ones(tmp_path):
    root = tmp_path / "mine"
    image(root / "0.png")
    img = os.path.abspath(root / "0.png")
    (root / "a_latin1.jsonl").write_bytes('{"id": "café"}\n'.encode("latin-1"))
    (root / "b_bom.jsonl").write_text(json.dumps({"id": "bom", "image": "0.png", "question": "Q?", "answer": "a"}),
                                      encoding="utf-8-sig")
    (root / "sub").mkdir()
    (root / "sub" / "train.jsonl").write_text(
        json.dumps({"id": "t1", "image": "../0.png", "question": "Q1?", "answer": "b"}) + "\n\n"
        + json.dumps({"id": "t2", "image": "../0.png", "question": "Q2?", "answer": "c", "split": "dev"}) + "\n")
    result = jsonl.read(root, SourceOptions())
    assert result.skipped == [{"file": "a_latin1.jsonl", "reason": "cannot read file: 'utf-8' codec can't decode "
                                                                   "byte 0xe9 in position 11: invalid continuation byte"}]
    assert result.rows == [
        jsonl_row("bom", img, "Q?", answer="a"),
        jsonl_row("t1", img, "Q1?", answer="b", split="train"),
        jsonl_row("t2", img, "Q2?", answer="c", split="validation"),
    ]


def test_jsonl_empty_folder_names_the_folder(tmp_path):
    with pytest.raises(DataError) as info:
        jsonl.read(tmp_path, SourceOptions())
    assert str(info.value) == f"no *.jsonl files under {tmp_path}"


def test_jsonl_numeric_answers_are_kept_as_text(tmp_path):
    image(tmp_path / "a.png")
    lines = [{"id": "n0", "image": "a.png", "question": "How many nodules?", "answer": 0},
             {"id": "n3", "image": "a.png", "question": "How many nodules?", "answer": 3}]
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    result = jsonl.read(tmp_path / "data.jsonl", SourceOptions())
    assert result.skipped == [] and [row["answer"] for row in result.rows] == ["0", "3"]
