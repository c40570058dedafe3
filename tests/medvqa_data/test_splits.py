"""Seeded stratified and grouped splits, and generalization manifests."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medvqa_data.errors import DataError
from medvqa_data.prepare import prepare
from medvqa_data.schema import load_prepared
from medvqa_data.splits import load_manifest, read_manifest, split_by, write_manifests
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
    assert set(ct_train["modality"]) == {"CT"} and len(ct_train) == 9  # 11 CT rows (the corrupt one kept), 2 to test
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
    rows = [{"modality": "CT"}, {"modality": "MRI"}, {"modality": "MRI"}]
    _, test = split_by(rows, "modality", 0.5, 0, groups=["g", "g", None])
    assert test in ([0, 1], [2])


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
