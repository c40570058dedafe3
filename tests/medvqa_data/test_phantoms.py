"""Synthetic phantom VQA generator: determinism, schema, balance, visibility of the lesions."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medvqa_data import phantoms as ph
from medvqa_data.build_sample import LETTERS, OMNI_KEYS, OPTION_KEYS


def _records(root: Path) -> list[dict]:
    out = []
    for f in sorted((root / "QA_information" / "Open-access").glob("*.json")):
        out.extend(json.loads(f.read_text(encoding="utf-8")))
    return sorted(out, key=lambda r: r["question_id"].rsplit("_", 1)[1])


def _options(r: dict) -> list[str]:
    return [r[k] for k in OPTION_KEYS if k in r]


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def gen400(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("phantoms") / "p400"
    return out, ph.generate_phantoms(out, 400, seed=0)


def test_determinism(tmp_path):
    runs = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        ph.generate_phantoms(tmp_path / name, 25, seed=seed)
        runs[name] = _files(tmp_path / name)
    assert runs["a"] == runs["b"]  # same seed: byte-identical PNG, JSON and manifest
    a, c = runs["a"], runs["c"]
    shared_png = [k for k in a if k in c and k.endswith(".png")]
    assert shared_png and all(a[k] != c[k] for k in shared_png)
    assert a["QA_information/Open-access/PhantomCT.json"] != c.get(
        "QA_information/Open-access/PhantomCT.json"
    )


def test_layout_keys_and_manifest(gen400):
    root, manifest = gen400
    recs = _records(root)
    assert len(recs) == 400 == manifest["n"]
    assert json.loads((root / ph.MANIFEST_NAME).read_text()) == manifest
    assert manifest["seed"] == 0 and manifest["size"] == 112
    assert set(manifest["datasets"]) == set(ph.MODALITIES)
    assert sum(manifest["question_types"].values()) == 400
    for r in recs:
        opts = _options(r)
        assert list(r) == [k for k in OMNI_KEYS if k not in OPTION_KEYS[len(opts) :]]
        assert 2 <= len(opts) <= 4 and len(set(opts)) == len(opts)
        assert r["gt_answer"] in opts
        assert r["modality_type"] == ph.MODALITIES[r["dataset"]][0]
        assert r["question_type"] in ph.KIND_OF_QUESTION_TYPE
        with Image.open(root / r["image_path"]) as im:
            assert im.size == (112, 112) and im.format == "PNG"
    # every modality present with every question kind
    combos = Counter((r["dataset"], r["question_type"]) for r in recs)
    assert len(combos) == len(ph.MODALITIES) * len(ph.KINDS)
    assert min(combos.values()) >= 15


def test_answer_letters_balanced(gen400):
    recs = _records(gen400[0])
    by_k: dict[int, Counter] = {}
    for r in recs:
        opts = _options(r)
        by_k.setdefault(len(opts), Counter())[LETTERS[opts.index(r["gt_answer"])]] += 1
    assert set(by_k) == {2, 3, 4}
    crit = {2: 10.83, 3: 13.82, 4: 16.27}  # chi-square, p = 0.001, df = k - 1
    for k, counts in by_k.items():
        n = sum(counts.values())
        expected = n / k
        chi2 = sum((counts[c] - expected) ** 2 / expected for c in LETTERS[:k])
        assert chi2 < crit[k], (k, dict(counts))
    # overall, no letter is right more often than chance (sum of 1/k over questions)
    overall = Counter()
    for counts in by_k.values():
        overall.update(counts)
    for i, letter in enumerate(LETTERS):
        chance = sum(sum(c.values()) / k for k, c in by_k.items() if k > i)
        assert overall[letter] <= chance + 3 * np.sqrt(chance), (letter, overall[letter], chance)
    # answer values within a kind are balanced too (quadrants, counts, sides)
    for kind in ("location", "count", "laterality"):
        vals = Counter(r["gt_answer"] for r in recs if ph.KIND_OF_QUESTION_TYPE[r["question_type"]] == kind)
        assert max(vals.values()) - min(vals.values()) <= 2, (kind, vals)


def test_questions_do_not_leak_answer(gen400):
    recs = _records(gen400[0])
    by_answer: dict[str, dict[str, set]] = {}
    for r in recs:
        kind = ph.KIND_OF_QUESTION_TYPE[r["question_type"]]
        assert r["question"] in ph.QUESTION_TEMPLATES[kind]
        q = r["question"].lower()
        hits = [o for o in _options(r) if o.lower() in q]
        assert not hits or len(hits) == len(_options(r)), (r["question"], _options(r))
        by_answer.setdefault(kind, {}).setdefault(r["gt_answer"], set()).add(r["question"])
    for kind, per_answer in by_answer.items():  # the same phrasings serve every answer
        assert len({frozenset(v) for v in per_answer.values()}) == 1, kind


def test_lesions_visible_in_labelled_quadrant(gen400):
    root = gen400[0]
    recs = [r for r in _records(root) if ph.KIND_OF_QUESTION_TYPE[r["question_type"]] == "location"]
    by_ds: dict[str, list] = {}
    for r in recs:
        with Image.open(root / r["image_path"]) as im:
            a = np.asarray(im.convert("RGB"), dtype=np.float32)
        by_ds.setdefault(r["dataset"], []).append((a, r["gt_answer"]))
    hits = total = 0
    for items in by_ds.values():
        mean = np.mean([a for a, _ in items], axis=0)
        for a, quadrant in items:
            dev = np.abs(a - mean).mean(axis=2)
            h = a.shape[0] // 2
            quads = {
                "upper left": dev[:h, :h].mean(),
                "upper right": dev[:h, h:].mean(),
                "lower left": dev[h:, :h].mean(),
                "lower right": dev[h:, h:].mean(),
            }
            hits += max(quads, key=quads.get) == quadrant
            total += 1
    assert hits / total >= 0.9, (hits, total)


@pytest.mark.parametrize("dataset", list(ph.MODALITIES))
def test_render_lesion_contrast_and_position(dataset):
    for seed in range(4):
        quads = [ph.QUADRANTS[seed], ph.QUADRANTS[(seed + 1) % 4]]
        with_l, info = ph.render_phantom(dataset, quads, np.random.default_rng(seed))
        without, info2 = ph.render_phantom(dataset, quads, np.random.default_rng(seed), lesions=False)
        assert info == info2
        diff = np.abs(with_l.astype(np.float32) - without.astype(np.float32))
        diff = diff if diff.ndim == 2 else diff.max(axis=2)
        s = with_l.shape[0]
        for les in info:
            r_px = les["r"]
            assert 8 <= r_px <= 14
            # centred inside its quadrant, clear of both midlines
            x, y = les["x"], les["y"]
            assert min(abs(x - s / 2), abs(y - s / 2)) >= r_px + 5
            assert (x < s / 2) == les["quadrant"].endswith("left")
            assert (y < s / 2) == les["quadrant"].startswith("upper")
            yy, xx = np.mgrid[0:s, 0:s] + 0.5
            core = (xx - x) ** 2 + (yy - y) ** 2 <= (0.6 * r_px) ** 2
            assert diff[core].mean() > 60, (dataset, seed, diff[core].mean())
        # lesions change nothing on the midlines
        assert diff[:, s // 2].max() == 0 and diff[s // 2, :].max() == 0


def test_modalities_look_distinct(gen400):
    root = gen400[0]
    stats: dict[str, list] = {}
    for r in _records(root)[:200]:
        with Image.open(root / r["image_path"]) as im:
            a = np.asarray(im.convert("RGB"), dtype=np.float32)
        stats.setdefault(r["dataset"], []).append(np.r_[a.mean(axis=(0, 1)), a.std(axis=(0, 1))])
    centroids = {d: np.mean(v, axis=0) for d, v in stats.items()}
    names = list(centroids)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert np.abs(centroids[a] - centroids[b]).max() > 10, (a, b)


def test_cli_and_output_dir_guard(tmp_path, capsys):
    out = tmp_path / "cli"
    assert ph.main(["--out", str(out), "--n", "12", "--seed", "1", "--size", "56"]) == 0
    m = json.loads((out / ph.MANIFEST_NAME).read_text())
    assert m["n"] == 12 and m["size"] == 56
    # regenerating into a previous phantom set replaces it (no stale files)
    assert ph.main(["--out", str(out), "--n", "5", "--seed", "1", "--size", "56"]) == 0
    assert len(list((out / "Images").rglob("*.png"))) == 5
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("x")
    assert ph.main(["--out", str(foreign), "--n", "5"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert ph.main(["--out", str(tmp_path / "x"), "--n", "5", "--datasets", "PhantomCT,Nope"]) == 2


def test_subset_of_datasets(tmp_path):
    m = ph.generate_phantoms(tmp_path / "sub", 40, seed=0, datasets=["PhantomCT", "PhantomFundus"])
    assert set(m["datasets"]) == {"PhantomCT", "PhantomFundus"}
    assert m["held_out_suggestion"] is None
