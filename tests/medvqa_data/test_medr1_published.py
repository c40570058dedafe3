"""`prepare --source medr1` keeps Med-R1's published test sets exactly and reads the per-dataset files.

The fixture (tests/medvqa_data/fixtures/medr1) is Med-R1's real layout with real records copied from
github.com/Yuxiang-Lai117/Med-R1 @ 88d76c7: Splits/{modality,question_type}/{train,test}/<value>_<split>.json
and src/eval_vqa/prompts/<dataset>_filtered_test.json, including test records whose options differ
only in letter case ("B)Thyroid Gland, ..., D)Thyroid gland") and a training record with a repeated
option ("A)SPECT, ..., C)SPECT").
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

from PIL import Image

from medvqa_data.prepare import main as prepare_main
from medvqa_data.schema import load_prepared, normalize_modality
from qlora_grpo.parsing import match_choice

FIXTURE = Path(__file__).parent / "fixtures" / "medr1"


def _records(pattern: str) -> dict[Path, list]:
    return {p: json.loads(p.read_text()) for p in sorted(FIXTURE.glob(pattern))}


def _checkout(tmp_path: Path) -> tuple[Path, Path]:
    """(Med-R1 checkout, OmniMedVQA root with a tiny image for every record)."""
    root = tmp_path / "Med-R1"
    shutil.copytree(FIXTURE, root)
    images = tmp_path / "OmniMedVQA"
    for recs in _records("**/*.json").values():
        for rec in recs:
            (images / rec["image"]).parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8), (90, 90, 90)).save(images / rec["image"], format="PNG")
    return root, images


def test_official_test_split_is_every_published_record(tmp_path, capsys):
    root, images = _checkout(tmp_path)
    out = tmp_path / "prepared"
    assert prepare_main(["--source", "medr1", "--root", str(root), "--out", str(out), "--split", "official",
                         "--image-root", str(images)]) == 0
    report = json.loads((out / "prepare_report.json").read_text())
    tests = _records("Splits/modality/test/*.json")
    assert report["splits"]["test"] == sum(len(r) for r in tests.values()) == 5
    per_modality = {normalize_modality(p.stem.removesuffix("_test")): len(r) for p, r in tests.items()}
    assert report["counts"]["test"]["modality"] == per_modality  # {"Ultrasound": 3, "CT": 2}
    test_rows = load_prepared(out, "test")
    flagged = [r for r in test_rows if len({o.casefold() for o in r["options"]}) < len(r["options"])]
    assert len(flagged) == 2
    note = next(n for n in report["notes"] if "test record(s) kept" in n)
    assert note.startswith("3 test record(s)")  # 2 in test, 1 in a per-dataset file
    for row in flagged:
        assert row["id"] in note
    # training drops the record whose options repeat (reason in the report), keeps the others
    train = _records("Splits/modality/train/*.json")
    assert report["splits"]["train"] == sum(len(r) for r in train.values()) - 1
    assert report["skipped_by_reason"] == {"duplicate options": 1}
    assert "1 training record(s) skipped for options equal up to letter case" in " ".join(report["notes"])
    # per-dataset evaluation files: their own split, dataset from the file name
    per_dataset = _records("src/eval_vqa/prompts/*_filtered_test.json")
    rows = load_prepared(out, "dataset_test")
    assert Counter(r["dataset"] for r in rows) == {p.stem.removesuffix("_filtered_test"): len(r)
                                                     for p, r in per_dataset.items()}
    assert {r["modality"] for r in rows if r["dataset"] == "RadImageNet"} == {"Ultrasound"}
    assert "dataset_test" in capsys.readouterr().out


def test_text_answer_matching_two_options_is_never_awarded():
    options = ["Right Atrium", "Thyroid Gland", "common bile duct", "Thyroid gland"]
    assert match_choice("Thyroid gland", options) is None
    assert match_choice("thyroid GLAND", options) is None
    assert match_choice("common bile duct", options) == "C"
    assert match_choice("D", options) == "D"  # the letter stays unambiguous
