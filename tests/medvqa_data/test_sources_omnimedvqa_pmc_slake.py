"""OmniMedVQA, PMC-VQA and SLAKE readers called in-process: exact records, report entries and error texts."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

from medvqa_data.errors import DataError
from medvqa_data.sources import omnimedvqa, pmc_vqa, slake
from medvqa_data.sources.base import SourceOptions
from tests.medvqa_data.test_sources import PMC_HEADER, image


def raises_exactly(message: str):
    return pytest.raises(DataError, match=f"^{re.escape(message)}$")


# --------------------------------------------------------------------------- OmniMedVQA


def build_small_omni(base: Path) -> Path:
    """Open-access A.json with one record per quirk, B.json that is not a list, C.json after it."""
    root = base / "OmniMedVQA"
    qa = root / "QA_information" / "Open-access"
    qa.mkdir(parents=True)
    image(root / "Images" / "A" / "0.png")
    full = {"question_id": "A_1", "dataset": "A", "question_type": "Disease Diagnosis", "question": "Which?",
            "option_A": "cyst", "option_B": "tumor", "option_C": "normal", "option_D": "",
            "gt_answer": "tumor", "modality_type": "CT(Computed Tomography)", "image_path": "Images/A/0.png"}
    bare = {"question": "Bare?", "option_A": "yes", "option_B": "no", "gt_answer": "no",
            "image_path": "Images/A/../A/0.png"}
    records = [
        full,
        bare,  # no question_id, modality, question_type or dataset
        dict(bare, question_id=""),
        "not a record",
        dict(full, question_id="A_int", image_path=5),
        dict(full, question_id="A_empty", question="", gt_answer="", image_path=""),
        {"question_id": "A_open", "question": "Open?", "gt_answer": "liver", "image_path": "Images/A/0.png"},
    ]
    (qa / "A.json").write_text(json.dumps(records))
    (qa / "B.json").write_text(json.dumps({"question": "not a list"}))
    (qa / "C.json").write_text(json.dumps([dict(full, question_id="C_1")]))
    return root


def test_omnimedvqa_reads_every_record_field_exactly(tmp_path):
    root = build_small_omni(tmp_path)
    result = omnimedvqa.read(root, SourceOptions())
    img = str(root / "Images" / "A" / "0.png")
    full = {"id": "A_1", "image": img, "question": "Which?", "options": ["cyst", "tumor", "normal"],
            "answer": "tumor", "answer_letter": "B", "answer_type": "closed", "modality": "CT",
            "question_type": "Disease Diagnosis", "dataset": "A", "source": "omnimedvqa"}
    bare = {"id": "A#1", "image": img, "question": "Bare?", "options": ["yes", "no"], "answer": "no",
            "answer_letter": "B", "answer_type": "closed", "modality": "", "question_type": "", "dataset": "",
            "source": "omnimedvqa"}
    no_options = {"id": "A_open", "image": img, "question": "Open?", "options": [], "answer": "liver",
                  "answer_letter": "", "answer_type": "closed", "modality": "", "question_type": "",
                  "dataset": "", "source": "omnimedvqa"}
    assert result.rows == [full, bare, dict(bare, id="A#2"), no_options, dict(full, id="C_1")]
    assert result.skipped == [
        {"id": "A#3", "reason": "record is not a JSON object"},
        {"id": "A_int", "reason": "image_path must be a string: got int"},
        {"id": "A_empty", "reason": "missing field(s): question, gt_answer, image_path"},
        {"file": "QA_information/Open-access/B.json", "reason": "expected a JSON list of QA records"},
    ]
    assert result.default_split == "modality" and result.notes == []


def test_omnimedvqa_record_to_row_keeps_the_record_id():
    record = {"question": "Q?", "option_A": "a", "option_B": "b", "gt_answer": "a", "image_path": "x.png"}
    assert omnimedvqa.record_to_row(dict(record, question_id="Q1"), "/data", "omnimedvqa")["id"] == "Q1"
    assert omnimedvqa.record_to_row(record, "/data", "omnimedvqa")["id"] == ""  # read() fills in file#index


def test_omnimedvqa_missing_restricted_folder_is_a_note(tmp_path):
    root = build_small_omni(tmp_path)
    result = omnimedvqa.read(root, SourceOptions(include_restricted=True))
    assert result.notes == [f"--include-restricted: no QA_information/Restricted-access folder under {root}"]
    assert len(result.rows) == 5


def test_omnimedvqa_layout_errors_name_the_missing_piece(tmp_path):
    (tmp_path / "empty").mkdir()
    with raises_exactly(f"{tmp_path / 'empty'} is not an OmniMedVQA root: expected "
                        "QA_information/Open-access/*.json and Images/ under it"):
        omnimedvqa.read(tmp_path / "empty", SourceOptions())
    root = tmp_path / "omni"
    (root / "QA_information" / "Restricted-access").mkdir(parents=True)
    with raises_exactly(f"{root} has no QA_information/Open-access folder"):
        omnimedvqa.read(root, SourceOptions(include_restricted=True))
    (root / "QA_information" / "Open-access").mkdir()
    with raises_exactly(f"no *.json files under {root}/QA_information/Open-access"):
        omnimedvqa.read(root, SourceOptions())


# --------------------------------------------------------------------------- PMC-VQA


def write_csv(path: Path, rows: list[list]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(PMC_HEADER)
        writer.writerows(rows)


def build_small_pmc(base: Path) -> Path:
    """train.csv with one row per quirk, test.csv broken after one row, and images in each documented folder
    plus same-named decoys elsewhere (the documented folders win)."""
    root = base / "PMC-VQA"
    for folder, name in (("images", "P0.jpg"), ("figures", "P1.jpg"), ("images_2/figures", "P2.jpg")):
        image(root / folder / name)
        image(root / "archive" / name)  # sorts before every documented folder
    write_csv(root / "train.csv", [
        [0, "P0.jpg", "Which uptake?", "", "A:Diffuse", " B:Focal", "C: None", "D.Ring", "b"],
        [1, "P1.jpg", "Which side?", "B:Right", "A:Left", "B:Right", "", "", ""],
        [2, "P2.jpg", "Line one\r\nline two?", "", "(A) yes", "(B) no", "", "", "A"],
        [3, "P0.jpg", "Open?", "Yes", "", "", "", "", ""],
        [4, "P0.jpg", "No answer?", "", "", "", "", "", "B"],
        [5, "", "  ", "x", "A:x", "B:y", "", "", "A"],
        [6],
        [7, "gone.jpg", "Missing image?", "", "A:x", "B:y", "", "", "A"],
    ])
    write_csv(root / "train_2.csv", [[0, "P0.jpg", "Second release only?", "", "A:x", "B:y", "", "", "A"]])
    (root / "test.csv").write_text(
        ",".join(PMC_HEADER) + '\r\n0,P0.jpg,Kept?,,A:x,B:y,,,B\r\n1,"P0.jpg"junk,Q,,A:x,B:y,,,A\r\n'
    )
    return root


def test_pmc_vqa_reads_every_record_field_exactly(tmp_path):
    root = build_small_pmc(tmp_path)
    result = pmc_vqa.read(root, SourceOptions())

    def row(id, folder, name, question, options, answer, letter, split="train"):
        return {"id": id, "image": str(root / folder / name), "question": question, "options": options,
                "answer": answer, "answer_letter": letter, "answer_type": "closed", "modality": "",
                "question_type": "", "dataset": "PMC-VQA", "source": "pmc-vqa", "_split": split}

    assert result.rows == [
        row("pmc-vqa-train-0", "images", "P0.jpg", "Which uptake?", ["Diffuse", "Focal", "None", "Ring"],
            "Focal", "B"),
        row("pmc-vqa-train-1", "figures", "P1.jpg", "Which side?", ["Left", "Right"], "Right", "B"),
        row("pmc-vqa-train-2", "images_2/figures", "P2.jpg", "Line one\r\nline two?", ["yes", "no"], "yes", "A"),
        row("pmc-vqa-train-3", "images", "P0.jpg", "Open?", [], "Yes", ""),
        row("pmc-vqa-train-7", "images", "gone.jpg", "Missing image?", ["x", "y"], "x", "A"),
        row("pmc-vqa-test-0", "images", "P0.jpg", "Kept?", ["x", "y"], "y", "B", split="test"),
    ]
    *rows, broken = result.skipped
    assert rows == [
        {"id": "pmc-vqa-train-4", "reason": "empty answer"},
        {"id": "pmc-vqa-train-5", "reason": "missing field(s): Figure_path, Question"},
        {"id": "pmc-vqa-train-6", "reason": "missing field(s): Figure_path, Question"},
    ]
    assert broken == {"file": "test.csv", "reason": "cannot read CSV: line 3: ',' expected after '\"' (the 1 row(s) "
                                                   "before it were read)"}  # the physical line of the bad row
    assert result.default_split == "official"


def test_pmc_vqa_undecodable_csv_is_reported_without_a_line(tmp_path):
    root = tmp_path / "PMC-VQA"
    root.mkdir()
    (root / "test.csv").write_bytes(b"Figure_path,Question\n\xff\xfe,Q\n")
    [entry] = pmc_vqa.read(root, SourceOptions()).skipped
    assert entry["file"] == "test.csv"
    assert entry["reason"].startswith("cannot read CSV: 'utf-8' codec can't decode byte 0xff")
    assert entry["reason"].endswith("(the 0 row(s) before it were read)")


def test_pmc_vqa_without_train_csv_reads_csvs_named_by_split(tmp_path):
    root = tmp_path / "PMC-VQA"
    image(root / "images" / "P0.jpg")
    write_csv(root / "v2" / "train_2.csv", [[0, "P0.jpg", "Train?", "", "A:x", "B:y", "", "", "A"]])
    write_csv(root / "test_2.csv", [[0, "P0.jpg", "Test?", "", "A:x", "B:y", "", "", "B"]])
    write_csv(root / "notes.csv", [[0, "P0.jpg", "Not a split?", "", "A:x", "B:y", "", "", "B"]])
    rows = pmc_vqa.read(root, SourceOptions()).rows
    assert [(r["id"], r["question"], r["_split"]) for r in rows] == [
        ("pmc-vqa-test_2-0", "Test?", "test"), ("pmc-vqa-train_2-0", "Train?", "train")]


def test_pmc_vqa_empty_root_error_and_answer_label_letter(tmp_path):
    with raises_exactly(f"{tmp_path} is not a PMC-VQA root: expected train.csv and test.csv (and images/)"):
        pmc_vqa.read(tmp_path, SourceOptions())
    assert [pmc_vqa.strip_choice_letter(label) for label in ("b", " (c)", "D:", "E", "", "Both")] == [
        "B", "C", "D", "", "", ""]


# --------------------------------------------------------------------------- SLAKE


def slake_record(number: int, **changes) -> dict:
    record = {"img_id": 1, "img_name": "xmlab1/source.jpg", "question": f"Question {number}?", "answer": "Lung",
              "q_lang": "en", "location": "Chest", "modality": "X-Ray", "answer_type": "OPEN",
              "base_type": "vqa", "content_type": "Organ", "triple": ["vhead", "_", "_"], "qid": number}
    record.update(changes)
    return {key: value for key, value in record.items() if value is not ...}  # `...` drops the key


def test_slake_reads_every_record_field_exactly(tmp_path):
    root = tmp_path / "Slake1.0"
    root.mkdir()
    records = [
        slake_record(1, answer_type="CLOSED", answer="Yes"),
        slake_record(2, qid=..., q_lang=..., answer_type=..., modality=..., content_type=...),
        slake_record(3, modality=None, content_type=""),
        "not a record",
        slake_record(5, question=..., answer=""),
        slake_record(6, q_lang="zh"),
        slake_record(7),
    ]
    (root / "train.json").write_text(json.dumps(records))
    result = slake.read(root, SourceOptions())
    img = str(root / "imgs" / "xmlab1" / "source.jpg")

    def row(id, question, answer="Lung", answer_type="open", modality="X-Ray", question_type="Organ"):
        return {"id": id, "image": img, "question": question, "options": [], "answer": answer, "answer_letter": "",
                "answer_type": answer_type, "modality": modality, "question_type": question_type,
                "dataset": "SLAKE", "source": "slake", "_split": "train"}

    assert result.rows == [
        row("slake-train-1", "Question 1?", answer="Yes", answer_type="closed"),
        row("slake-train-#1", "Question 2?", modality="", question_type=""),
        row("slake-train-3", "Question 3?", modality="", question_type=""),
        row("slake-train-7", "Question 7?"),
    ]
    assert result.skipped == [
        {"id": "slake-train-#3", "reason": "record is not a JSON object"},
        {"id": "slake-train-5", "reason": "missing field(s): question, answer"},
    ]
    assert result.filtered == {"lang=zh": 1}
    assert result.default_split == "official"


def test_slake_unreadable_split_files_are_skipped_and_the_rest_read(tmp_path):
    root = tmp_path / "Slake1.0"
    root.mkdir()
    (root / "train.json").write_text('[{"qid": 1, ')
    (root / "validation.json").write_text(json.dumps({"qid": 2}))
    (root / "test.json").write_text(json.dumps([slake_record(3)]))
    result = slake.read(root, SourceOptions())
    assert [(r["id"], r["_split"]) for r in result.rows] == [("slake-test-3", "test")]
    assert result.skipped == [
        {"file": "train.json", "reason": "invalid JSON: Expecting property name enclosed in double quotes "
                                         "at line 1, column 13"},
        {"file": "validation.json", "reason": "expected a JSON list of QA records"},
    ]


def test_slake_errors_name_the_choices_and_the_layout(tmp_path):
    with raises_exactly("unknown --lang 'fr'; choose one of: en, zh, all"):
        slake.read(tmp_path, SourceOptions(lang="fr"))
    with raises_exactly(f"{tmp_path} is not a SLAKE root: expected train.json, validation.json, test.json and imgs/"):
        slake.read(tmp_path, SourceOptions())


def test_pmc_vqa_csv_is_read_as_utf8_whatever_the_locale(tmp_path, ascii_locale):
    root = tmp_path / "PMC-VQA"
    image(root / "images" / "P0.jpg")
    write_csv(root / "train.csv", [[0, "P0.jpg", "Caf\u00e9?", "", "A:x", "B:y", "", "", "A"]])
    write_csv(root / "test.csv", [])
    assert [r["question"] for r in pmc_vqa.read(root, SourceOptions()).rows] == ["Caf\u00e9?"]
