"""The committed OmniMedVQA-layout sample (medvqa_data/sample) and its rebuild script."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from medvqa_data import build_sample as bs

SAMPLE_DIR = Path(bs.__file__).resolve().parent / "sample"
TREE = SAMPLE_DIR / "omnimedvqa"
NOTICE = SAMPLE_DIR / "NOTICE.md"
QA_DIR = TREE / "QA_information" / "Open-access"

OMNI_MODALITIES = {
    "MR (Mag-netic Resonance Imaging)",
    "CT(Computed Tomography)",
    "ultrasound",
    "X-Ray",
    "Dermoscopy",
    "Microscopy Images",
    "Fundus Photography",
    "OCT (Optical Coherence Tomography",
}
OMNI_QUESTION_TYPES = {
    "Disease Diagnosis",
    "Anatomy Identification",
    "Modality Recognition",
    "Other Biological Attributes",
    "Lesion Grading",
}


def _records() -> list[dict]:
    files = sorted(QA_DIR.glob("*.json"))
    assert files, f"no QA files under {QA_DIR}; run python -m medvqa_data.build_sample"
    out = []
    for f in files:
        recs = json.loads(f.read_text(encoding="utf-8"))
        assert isinstance(recs, list) and recs
        for r in recs:
            assert r["dataset"] == f.stem
        out.extend(recs)
    return out


def _options(r: dict) -> list[str]:
    return [r[k] for k in bs.OPTION_KEYS if k in r]


def test_layout_and_exact_keys():
    recs = _records()
    assert 40 <= len(recs) <= 80
    assert len({r["question_id"] for r in recs}) == len(recs)
    for r in recs:
        opts = _options(r)
        expected = [k for k in bs.OMNI_KEYS if k not in bs.OPTION_KEYS[len(opts) :]]
        assert list(r) == expected, r["question_id"]
        assert 2 <= len(opts) <= 4
        assert "option_D" not in r or "option_C" in r
        assert len(set(opts)) == len(opts)
        assert r["gt_answer"] in opts
        assert r["modality_type"] in OMNI_MODALITIES
        assert r["question_type"] in OMNI_QUESTION_TYPES
        assert r["image_path"].startswith(f"Images/{r['dataset']}/") and r["image_path"].endswith(".png")
        assert r["gt_answer"] not in r["question"]
    assert {r["question_type"] for r in recs} == {"Modality Recognition", "Anatomy Identification"}
    assert {
        "CT(Computed Tomography)",
        "MR (Mag-netic Resonance Imaging)",
        "ultrasound",
        "Fundus Photography",
        "Microscopy Images",
    } <= {r["modality_type"] for r in recs}


def test_images_exist_and_open():
    recs = _records()
    paths = {r["image_path"] for r in recs}
    for rel in paths:
        p = TREE / rel
        assert p.is_file(), rel
        with Image.open(p) as im:
            assert im.format == "PNG"
            im.load()
            assert max(im.size) <= bs.MAX_SIDE and min(im.size) >= 56
    on_disk = {p.relative_to(TREE).as_posix() for p in (TREE / "Images").rglob("*") if p.is_file()}
    assert on_disk == paths, "every committed image is referenced and vice versa"


def test_size_under_3mb():
    total = sum(p.stat().st_size for p in SAMPLE_DIR.rglob("*") if p.is_file())
    assert total < 3 * 1024 * 1024, total


def test_answer_letters_balanced():
    recs = _records()
    by_k: dict[int, Counter] = {}
    for r in recs:
        opts = _options(r)
        by_k.setdefault(len(opts), Counter())[bs.LETTERS[opts.index(r["gt_answer"])]] += 1
    for k, counts in by_k.items():
        n = sum(counts.values())
        for letter in bs.LETTERS[:k]:
            assert abs(counts[letter] - n / k) <= max(2.0, 0.25 * n / k), (k, dict(counts))


def test_notice_lists_every_source_and_image():
    text = NOTICE.read_text(encoding="utf-8")
    for key, src in bs.SOURCES.items():
        assert f"`{key}`" in text, key
        assert src.package in text
    for rel in {r["image_path"] for r in _records()}:
        assert f"`{rel}`" in text, rel
    for licence in ("MIT", "BSD-3-Clause", "CC0"):
        assert licence in text


def test_balanced_options_block_randomisation():
    import random

    b = bs.BalancedOptions(random.Random(1))
    positions = Counter()
    for _ in range(40):
        opts = b.make("yes", ["a", "b", "c", "d"], 4)
        positions[opts.index("yes")] += 1
        assert len(set(opts)) == 4
    assert set(positions.values()) == {10}
    with pytest.raises(ValueError):
        b.make("x", ["y"], 3)


def test_rebuild_is_byte_identical(tmp_path):
    out = tmp_path / "sample" / "omnimedvqa"
    summary = bs.build_sample(out)
    assert summary["records"] == len(_records())
    built = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    committed = sorted(p.relative_to(TREE).as_posix() for p in TREE.rglob("*") if p.is_file())
    assert built == committed
    for rel in built:
        a, b = (out / rel).read_bytes(), (TREE / rel).read_bytes()
        if a != b and rel.endswith(".png"):
            with Image.open(out / rel) as x, Image.open(TREE / rel) as y:
                same_pixels = x.tobytes() == y.tobytes()
            pytest.fail(
                f"{rel} differs from the committed file (pixels identical: {same_pixels}); "
                "re-run python -m medvqa_data.build_sample and commit"
            )
        assert a == b, rel
    assert (tmp_path / "sample" / "NOTICE.md").read_bytes() == NOTICE.read_bytes()
