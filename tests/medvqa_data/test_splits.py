"""Seeded stratified and grouped splits, and generalization manifests."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medvqa_data.errors import DataError
from medvqa_data.prepare import prepare
from medvqa_data.schema import load_prepared
from medvqa_data.splits import load_manifest, read_manifest, split_by
from tests.medvqa_data.test_sources import CANONICAL, QTYPES, build_omnimedvqa


def make_rows(sizes: dict[str, int]) -> list[dict]:
    return [{"modality": value} for value, n in sizes.items() for _ in range(n)]


def test_stratified_about_80_20_per_value():
    rows = make_rows({"CT": 100, "MRI": 51, "OCT": 7, "US": 2, "Fundus": 1})
    train, test = split_by(rows, "modality", 0.2, seed=42)
    per_value = Counter(rows[i]["modality"] for i in test)
    assert per_value == {"CT": 20, "MRI": 10, "OCT": 1, "US": 1}
    assert sorted(train + test) == list(range(len(rows)))


def test_same_seed_same_split_other_seed_other_split():
    rows = make_rows({"CT": 50, "MRI": 50})
    assert split_by(rows, "modality", 0.2, 1) == split_by(rows, "modality", 0.2, 1)
    assert split_by(rows, "modality", 0.2, 1) != split_by(rows, "modality", 0.2, 2)


def test_strata_are_independent():
    """Adding rows of one modality does not move rows of another."""
    small = make_rows({"CT": 30, "MRI": 30})
    big = make_rows({"CT": 30, "MRI": 30, "OCT": 40})
    assert split_by(small, "modality", 0.2, 5)[1] == [i for i in split_by(big, "modality", 0.2, 5)[1] if i < 60]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 9), min_size=1, max_size=80), st.integers(0, 1000))
def test_groups_never_straddle(group_ids, seed):
    rows = [{"modality": "CT" if g % 2 else "MRI"} for g in group_ids]
    train, test = split_by(rows, "modality", 0.3, seed, groups=[f"g{g}" for g in group_ids])
    train_groups = {group_ids[i] for i in train}
    assert not train_groups & {group_ids[i] for i in test}
    assert sorted(train + test) == list(range(len(rows)))


def test_bad_fraction():
    with pytest.raises(ValueError):
        split_by([{"modality": "CT"}], "modality", 1.0, 0)


def test_manifests_train_on_one_test_on_all(tmp_path):
    out = tmp_path / "out"
    prepare("omnimedvqa", build_omnimedvqa(tmp_path), out, no_check_images=True)
    manifest = read_manifest(out, "modality")
    assert set(manifest["values"]) == set(CANONICAL)
    ct_train = load_manifest(out, "modality", "CT", "train")
    assert set(ct_train["modality"]) == {"CT"} and len(ct_train) == 8  # 11 CT rows (the corrupt one kept); one image's 3 to test
    total_test = sum(len(load_manifest(out, "modality", value, "test")) for value in CANONICAL)
    assert total_test == len(load_prepared(out, "test"))
    by_type = load_manifest(out, "question_type", QTYPES[0], "test")
    assert set(by_type["question_type"]) == {QTYPES[0]}
    with pytest.raises(DataError, match="values: "):
        load_manifest(out, "modality", "PET", "train")


# --------------------------------------------------------------------------- no image on both sides
def _images(out, split: str) -> set[str]:
    return set(load_prepared(out, split)["image"])


@pytest.mark.parametrize("axis", ["modality", "question_type"])
def test_bundled_sample_keeps_every_test_image_out_of_training(tmp_path, capsys, axis):
    """The sample has several questions per image: all of them land on one side (it leaked 9 of 11 before)."""
    from medvqa_data import inspect as inspect_cli
    from medvqa_data.prepare import main as prepare_main
    from tests.conftest import ROOT

    out = tmp_path / "out"
    assert prepare_main(["--source", "omnimedvqa", "--root", str(ROOT / "medvqa_data/sample/omnimedvqa"),
                         "--out", str(out), "--split", axis]) == 0
    printed = capsys.readouterr().out
    train, test = _images(out, "train"), _images(out, "test")
    assert train and test and not train & test
    report = json.loads((out / "prepare_report.json").read_text())
    assert report["image_overlap"] == 0 and report["images"] == {"train": len(train), "test": len(test)}
    assert f"images per split: train {len(train)}, test {len(test)}; images in more than one split: 0" in printed
    assert inspect_cli.main([str(out), "--n", "0"]) == 0
    assert f"images: train {len(train)}, test {len(test)}; in more than one split: 0" in capsys.readouterr().out
    counts = report["counts"]
    for value, n_test in counts["test"][axis].items():  # still stratified: every category on both sides
        assert counts["train"][axis].get(value, 0) > n_test > 0


def _many_questions_per_image(root, n_images: int = 40, per_image: int = 3, patients: bool = False):
    from tests.medvqa_data.test_sources import image

    lines = []
    for k in range(n_images):
        image(root / "imgs" / f"{k}.png", (k * 5 % 255, 0, 0))
        modality = ("CT", "MRI")[k % 2]
        for q in range(per_image):
            record = {"id": f"i{k}q{q}", "image": f"imgs/{k}.png", "question": f"Q{q} about {k}?",
                      "options": ["CT", "MRI"], "answer": modality, "modality": modality,
                      "question_type": ("Modality Recognition", "Disease Diagnosis")[q % 2]}
            if patients:
                record["group"] = f"patient{k // 4}"  # 4 images per patient
            lines.append(json.dumps(record))
    root.mkdir(parents=True, exist_ok=True)
    (root / "data.jsonl").write_text("\n".join(lines) + "\n")
    return root


@pytest.mark.parametrize("axis", ["modality", "question_type"])
def test_questions_of_one_image_never_straddle_and_split_stays_80_20(tmp_path, axis):
    root = _many_questions_per_image(tmp_path / "raw")
    report = prepare("jsonl", root, tmp_path / "a", split=axis, seed=7, no_check_images=True)
    train, test = _images(tmp_path / "a", "train"), _images(tmp_path / "a", "test")
    assert not train & test and report["image_overlap"] == 0
    assert report["images"] == {"train": 32, "test": 8}
    for value, n in report["counts"]["test"][axis].items():
        total = n + report["counts"]["train"][axis][value]
        assert 0.15 <= n / total <= 0.3, (value, n, total)
    prepare("jsonl", root, tmp_path / "b", split=axis, seed=7, no_check_images=True)
    prepare("jsonl", root, tmp_path / "c", split=axis, seed=8, no_check_images=True)
    ids = [sorted(load_prepared(tmp_path / name, "test")["id"]) for name in "abc"]
    assert ids[0] == ids[1] != ids[2]  # same seed, same split


def test_a_patient_group_from_jsonl_stays_on_one_side(tmp_path):
    root = _many_questions_per_image(tmp_path / "raw", patients=True)
    prepare("jsonl", root, tmp_path / "out", split="modality", no_check_images=True)
    def patients(split):
        return {int(Path(p).stem) // 4 for p in _images(tmp_path / "out", split)}
    assert patients("train") and patients("test") and not patients("train") & patients("test")


def test_official_split_is_kept_as_published_and_its_overlap_reported(tmp_path, capsys):
    from medvqa_data import inspect as inspect_cli
    from tests.medvqa_data.test_sources import image

    root = tmp_path / "raw"
    image(root / "imgs" / "a.png")
    image(root / "imgs" / "b.png", (9, 9, 9))
    rows = [("t1", "a", "train"), ("t2", "b", "train"), ("s1", "a", "test")]
    (root / "data.jsonl").write_text("".join(json.dumps({"id": i, "image": f"imgs/{img}.png", "question": "Q?",
                                                         "answer": "yes", "split": split}) + "\n"
                                             for i, img, split in rows))
    report = prepare("jsonl", root, tmp_path / "out")
    assert report["splits"] == {"train": 2, "test": 1}  # as published
    assert report["image_overlap"] == 1 and any("shares 1 image" in note for note in report["notes"])
    assert inspect_cli.main([str(tmp_path / "out"), "--n", "0"]) == 0
    assert "in more than one split: 1 (as published by the source" in capsys.readouterr().out
