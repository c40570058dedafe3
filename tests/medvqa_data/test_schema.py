"""The column contract, modality mapping, row building and `load_prepared`'s errors."""

from __future__ import annotations

import datasets
import pytest

from medvqa_data.errors import DataError, RowError
from medvqa_data.schema import (
    CANONICAL_MODALITIES,
    COLUMNS,
    FEATURES,
    QUESTION_TYPES,
    load_prepared,
    make_row,
    normalize_modality,
)


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("MR (Mag-netic Resonance Imaging)", "MRI"),
        ("CT(Computed Tomography)", "CT"),
        ("ultrasound", "Ultrasound"),
        ("X-Ray", "X-Ray"),
        ("Dermoscopy", "Dermoscopy"),
        ("Microscopy Images", "Microscopy"),
        ("Fundus Photography", "Fundus"),
        ("OCT (Optical Coherence Tomography", "OCT"),
        ("CT", "CT"),
        ("MRI", "MRI"),
        ("  x-ray ", "X-Ray"),
        ("PET", "PET"),
        ("unknown", "unknown"),
    ],
)
def test_normalize_modality(raw, canonical):
    assert normalize_modality(raw) == canonical


def test_contract_names():
    assert list(FEATURES) == COLUMNS
    assert len(CANONICAL_MODALITIES) == 8 and len(QUESTION_TYPES) == 5
    assert all(normalize_modality(m) == m for m in CANONICAL_MODALITIES)


def test_make_row_multiple_choice():
    row = make_row(id=1, image="/x.png", question=" Q? ", options=["a ", "b"], answer="b", modality="ultrasound")
    assert list(row) == COLUMNS
    assert row["options"] == ["a", "b"] and row["answer_letter"] == "B" and row["answer_type"] == "closed"
    assert row["question"] == "Q?" and row["modality"] == "Ultrasound" and row["id"] == "1"
    assert make_row(id="2", image="i", question="Q", options=["Yes", "No"], answer="yes")["answer_letter"] == "A"
    by_letter = make_row(id="3", image="i", question="Q", options=["x", "y"], answer="ignored", answer_letter="B")
    assert by_letter["answer"] == "y"


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"options": ["a", "b"], "answer": "c"}, "gold answer not among the options"),
        ({"options": ["a", "b"], "answer_letter": "C"}, "answer letter not among the options"),
        ({"options": ["a"], "answer": "a"}, "too few options"),
        ({"question": "  "}, "empty question"),
        ({"answer": ""}, "empty answer"),
        ({"answer": "x", "answer_type": "maybe"}, "invalid answer_type"),
    ],
)
def test_make_row_rejects(kwargs, reason):
    base = {"id": "r", "image": "/x.png", "question": "Q?", "answer": "yes"}
    with pytest.raises(RowError, match=reason):
        make_row(**(base | kwargs))


def test_open_row():
    row = make_row(id="o", image="/x.png", question="Which organ?", answer="liver")
    assert row["answer_type"] == "open" and row["options"] == [] and row["answer_letter"] == ""


def save(rows: list[dict], path, split_names=None):
    ds = datasets.Dataset.from_list(rows, features=FEATURES)
    if split_names:
        datasets.DatasetDict({name: ds for name in split_names}).save_to_disk(str(path))
    else:
        ds.save_to_disk(str(path))


ROW = make_row(id="a", image="images/a.png", question="Q?", options=["x", "y"], answer="x", source="jsonl")


def test_load_prepared_dict_and_relative_paths(tmp_path):
    save([ROW], tmp_path / "dd", ["train", "test"])
    train = load_prepared(tmp_path / "dd")
    assert train[0]["image"] == str(tmp_path / "dd" / "images" / "a.png")
    assert load_prepared(tmp_path / "dd", "test")[0]["id"] == "a"
    with pytest.raises(DataError, match=r"no split 'validation'; its splits are \['train', 'test'\]"):
        load_prepared(tmp_path / "dd", "validation")


def test_load_prepared_plain_dataset(tmp_path):
    save([ROW], tmp_path / "plain")
    assert len(load_prepared(tmp_path / "plain")) == 1
    assert len(load_prepared(tmp_path / "plain", "train")) == 1
    with pytest.raises(DataError, match="unsplit dataset .* no 'test' split"):
        load_prepared(tmp_path / "plain", "test")


def test_load_prepared_names_missing_columns(tmp_path):
    datasets.Dataset.from_dict({"image": ["a.png"], "problem": ["Q A)x, B)y"], "solution": ["<answer> A </answer>"]}
                               ).save_to_disk(str(tmp_path / "medr1style"))
    with pytest.raises(DataError) as info:
        load_prepared(tmp_path / "medr1style")
    message = str(info.value)
    assert "id, question, options, answer, answer_letter" in message and "python -m medvqa_data.prepare" in message


def test_load_prepared_on_raw_data_says_how_to_prepare(tmp_path):
    raw = tmp_path / "OmniMedVQA"
    (raw / "QA_information" / "Open-access").mkdir(parents=True)
    with pytest.raises(DataError) as info:
        load_prepared(raw)
    message = str(info.value)
    assert "neither a Dataset directory nor a DatasetDict" in message
    assert f"python -m medvqa_data.prepare --source omnimedvqa --root {raw} --out OUT_DIR" in message
    with pytest.raises(DataError, match="does not exist.*python -m medvqa_data.prepare --source SOURCE"):
        load_prepared(tmp_path / "nowhere")
