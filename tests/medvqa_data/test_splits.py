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
from medvqa_data.splits import (
    image_groups,
    image_overlap,
    load_manifest,
    read_manifest,
    split_by,
    write_manifests,
)
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


def test_test_count_is_rounded_not_floored_for_odd_sizes():
    # 13 * 0.2 = 2.6 -> 3, 9 * 0.2 = 1.8 -> 2, 7 * 0.2 = 1.4 -> 1, 2 -> 1 (both sides non-empty), 1 -> 0
    rows = make_rows({"CT": 13, "MRI": 9, "OCT": 7, "US": 2, "Fundus": 1, "PET": 12})
    train, test = split_by(rows, "modality", 0.2, seed=3)
    assert Counter(rows[i]["modality"] for i in test) == {"CT": 3, "MRI": 2, "OCT": 1, "US": 1, "PET": 2}
    assert Counter(rows[i]["modality"] for i in split_by(rows, "modality", 0.5, seed=3)[1]) == {
        "CT": 6, "MRI": 4, "OCT": 4, "US": 1, "PET": 6}  # round half to even: 6.5 -> 6, 4.5 -> 4, 3.5 -> 4
    assert split_by(rows, "modality", 0.0, seed=3) == (list(range(len(rows))), [])
    assert train == sorted(train) and test == sorted(test) and not set(train) & set(test)


def test_a_stratum_that_sorts_first_does_not_move_the_others():
    """Each stratum has its own random generator: a new value that sorts before the others
    (and so is shuffled first) leaves their test rows unchanged, for several seeds."""
    base = make_rows({"CT": 21, "MRI": 17})
    extended = make_rows({"CT": 21, "MRI": 17, "AAA": 9})  # "AAA" sorts before CT and MRI
    for seed in range(5):
        assert split_by(base, "modality", 0.3, seed)[1] == [i for i in split_by(extended, "modality", 0.3, seed)[1] if i < 38]


def test_each_stratum_is_split_as_if_alone():
    """The test rows of one value do not depend on the other values' rows or on row order."""
    mixed = [{"modality": v} for v in ("CT", "MRI", "AAA") * 11]
    _, test = split_by(mixed, "modality", 0.25, seed=7)
    for value in ("AAA", "CT", "MRI"):
        positions = [i for i, r in enumerate(mixed) if r["modality"] == value]
        alone = [{"modality": value}] * len(positions)
        _, alone_test = split_by(alone, "modality", 0.25, seed=7)
        assert [i for i in test if mixed[i]["modality"] == value] == [positions[k] for k in alone_test]


def test_expected_test_ids_for_a_fixed_seed():
    """Pinned output for seed 42 (regenerate deliberately if the split algorithm changes: it moves
    every published split). Strata shuffle in sorted order, 'AAA' first, each with its own RNG."""
    rows = make_rows({"MRI": 7, "CT": 11, "AAA": 5})  # MRI 0-6, CT 7-17, AAA 18-22
    train, test = split_by(rows, "modality", 0.2, seed=42)
    assert test == EXPECTED_TEST_SEED42
    assert train == [i for i in range(len(rows)) if i not in EXPECTED_TEST_SEED42]


# Regenerate (after a deliberate change of the split algorithm) with:
#   PYTHONPATH=. python -c "from tests.medvqa_data.test_splits import make_rows; from medvqa_data.splits import split_by; \
#   print(split_by(make_rows({'MRI': 7, 'CT': 11, 'AAA': 5}), 'modality', 0.2, seed=42)[1])"
EXPECTED_TEST_SEED42 = [1, 11, 14, 18]


def test_a_group_that_would_overshoot_the_target_stays_in_train():
    """Three 3-question images at 45 %: target round(4.05) = 4 rows. One image (3) is closer to 4 than two
    (6), whatever the shuffle: test gets exactly one image."""
    rows = make_rows({"CT": 9})
    for seed in range(5):
        train, test = split_by(rows, "modality", 0.45, seed, groups=["a"] * 3 + ["b"] * 3 + ["c"] * 3)
        assert len(test) == 3 and test in ([0, 1, 2], [3, 4, 5], [6, 7, 8]), (seed, test)


def test_groups_all_larger_than_the_target_still_give_test_one_group():
    """Two 3-question images at 20 %: target 1 row, no image fits it, yet test must not be empty; the image
    taken is the first of the stratum's seeded shuffle (pinned for seeds 42 and 7)."""
    rows, groups = make_rows({"CT": 6}), ["a"] * 3 + ["b"] * 3
    assert split_by(rows, "modality", 0.2, 42, groups=groups) == ([0, 1, 2], [3, 4, 5])
    assert split_by(rows, "modality", 0.2, 7, groups=groups) == ([3, 4, 5], [0, 1, 2])


def test_image_groups_join_transitively_and_keep_other_groups_apart():
    rows = [{"image": "c.png", "_group": "b"}, {"image": "d.png", "_group": "a"},
            {"image": "c.png", "_group": "a"},  # joins b's and a's groups: c -> b -> a, a two-step chain
            {"image": "e.png"}, {"image": "f.png", "_group": "case-1"}, {"image": "g.png", "_group": "case-2"},
            {"image": "h.png", "_group": "case-1"}]
    keys = image_groups(rows)
    assert keys[0] == keys[1] == keys[2]
    assert keys[4] == keys[6]
    # one key per group: e alone, case-1 and case-2 (similar names) apart
    assert len({keys[0], keys[3], keys[4], keys[5]}) == 4
    assert image_groups(rows[::-1])[::-1] == keys  # the key does not depend on the row order


def test_image_overlap_over_three_splits():
    row = lambda image: {"image": image}  # noqa: E731
    shared = [f"s{i}.png" for i in range(7)]
    report = image_overlap({"train": [row(x) for x in ["t.png", "v.png", *shared]],
                            "validation": [row("v.png"), row("v.png")],
                            "test": [row(x) for x in ["x.png", *shared]]})
    assert report["images"] == {"train": 9, "validation": 1, "test": 8}
    assert report["overlap"] == 8  # v.png (train/validation) and the 7 shared with test
    assert report["overlap_examples"] == ["s0.png", "s1.png", "s2.png", "s3.png", "s4.png"]
    assert image_overlap({"train": [row("a")], "validation": [row("a")], "test": [row("b")]})["overlap"] == 1


def test_split_by_edges():
    rows = make_rows({"CT": 6})
    with pytest.raises(ValueError, match=r"test_fraction must be in \[0, 1\), got -0.1"):
        split_by(rows, "modality", -0.1, 0)
    # "" and None group keys mean "the row alone"; a real key moves its rows together
    groups = ["", None, "g", "g", "", None]
    train, test = split_by(rows, "modality", 0.5, 1, groups=groups)
    assert (2 in test) == (3 in test) and len(test) in (3, 4)
    assert split_by(rows, "modality", 0.5, 1, groups=[None] * 6) == split_by(rows, "modality", 0.5, 1)
    assert split_by(rows, "modality", 0.5, 1, groups=[""] * 6) == split_by(rows, "modality", 0.5, 1)
    # the defaults: 20 % to test, seed 42
    assert split_by(make_rows({"CT": 10}), "modality") == split_by(make_rows({"CT": 10}), "modality", 0.2, 42)
    assert split_by(make_rows({"CT": 10}), "modality")[1] == split_by(make_rows({"CT": 10}), "modality", 0.2)[1]
    assert len(split_by(make_rows({"CT": 10}), "modality")[1]) == 2
    # a large fraction still leaves one row for training: 2 rows at 0.8 -> round(1.6) = 2 -> 1
    assert [len(part) for part in split_by(make_rows({"CT": 2}), "modality", 0.8, 0)] == [1, 1]
    # a datasets.Dataset gives the same split as the list of rows
    import datasets

    mixed = make_rows({"CT": 7, "MRI": 4})
    assert split_by(datasets.Dataset.from_list(mixed), "modality", 0.3, 9) == split_by(mixed, "modality", 0.3, 9)
    # a group is counted in the stratum of its first row
    # (and a stratum with a single group keeps it in training: CT's only group "g" takes row 1 along)
    rows = [{"modality": "CT"}, {"modality": "MRI"}, {"modality": "MRI"}, {"modality": "MRI"}]
    _, test = split_by(rows, "modality", 0.5, 0, groups=["g", "g", None, None])
    assert test in ([2], [3])


def _dd():
    import datasets

    from medvqa_data.schema import FEATURES

    def part(ids, mods):
        rows = [{name: "x" for name in FEATURES} | {"id": i, "modality": m, "question_type": "Q", "options": ["a"],
                                                     "image": "/img.png"} for i, m in zip(ids, mods)]
        return datasets.Dataset.from_list(rows, features=FEATURES)

    return datasets.DatasetDict({"train": part(["a", "b", "c"], ["MRI", "CT", "MRI"]),
                                 "test": part(["d"], ["MRI"])})


def test_write_and_read_manifests(tmp_path):
    import json

    assert write_manifests(_dd(), "modality", tmp_path / "new" / "out").is_file()  # parents are created
    path = write_manifests(_dd(), "modality", tmp_path)
    assert path == tmp_path / "manifests" / "modality.json"
    m = json.loads(path.read_text())
    assert m == read_manifest(tmp_path, "modality")
    assert m == {"axis": "modality", "splits": ["train", "test"],
                 "values": {"CT": {"train": ["b"], "test": []}, "MRI": {"train": ["a", "c"], "test": ["d"]}}}
    assert list(m["values"]) == ["CT", "MRI"]
    with pytest.raises(ValueError, match="unknown axis 'organ'; choose one of: modality, question_type"):
        write_manifests(_dd(), "organ", tmp_path)
    with pytest.raises(DataError, match=r"no question_type manifest at .*question_type.json; prepare the data "
                                        r"with a split \(python -m medvqa_data.prepare \.\.\. --split question_type\)"):
        read_manifest(tmp_path, "question_type")
    with pytest.raises(DataError, match=r"--split modality\)"):
        read_manifest(tmp_path, "organ")


def test_load_manifest_subsets_and_errors(tmp_path):
    import json

    dd = _dd()
    dd.save_to_disk(str(tmp_path))
    write_manifests(dd, "modality", tmp_path)
    assert load_manifest(tmp_path, "modality", "MRI", "train")["id"] == ["a", "c"]
    assert load_manifest(tmp_path, "modality", "CT", "test")["id"] == []
    with pytest.raises(DataError, match="modality 'PET' is not in the manifest; values: CT, MRI"):
        load_manifest(tmp_path, "modality", "PET", "train")
    with pytest.raises(DataError, match="split 'val' is not in the manifest; splits: train, test"):
        load_manifest(tmp_path, "modality", "MRI", "val")
    path = tmp_path / "manifests" / "modality.json"
    m = json.loads(path.read_text())
    m["values"]["MRI"]["train"] = ["a", "zz", "yy"]
    path.write_text(json.dumps(m))
    with pytest.raises(DataError, match=r"2 id\(s\) of the modality=MRI manifest are not in .* \(train\), e\.g\. zz"):
        load_manifest(tmp_path, "modality", "MRI", "train")
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
