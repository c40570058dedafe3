"""Each source adapter on a small fixture in its real on-disk layout, quirks included, through `prepare`."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from medvqa_data.errors import DataError
from medvqa_data.prepare import prepare
from medvqa_data.schema import COLUMNS, load_prepared

OMNI_MODALITIES = [
    "MR (Mag-netic Resonance Imaging)",
    "CT(Computed Tomography)",
    "ultrasound",
    "X-Ray",
    "Dermoscopy",
    "Microscopy Images",
    "Fundus Photography",
    "OCT (Optical Coherence Tomography",
]
CANONICAL = ["MRI", "CT", "Ultrasound", "X-Ray", "Dermoscopy", "Microscopy", "Fundus", "OCT"]
QTYPES = [
    "Disease Diagnosis",
    "Anatomy Identification",
    "Modality Recognition",
    "Other Biological Attributes",
    "Lesion Grading",
]


def image(path: Path, color: tuple[int, int, int] = (40, 80, 120), fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), color).save(path, format=fmt)
    return path


def image_bytes(color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buffer, format="PNG")
    return buffer.getvalue()


def snapshot(root: Path) -> list[tuple[str, int, int]]:
    """Everything under `root` with size and mtime, to prove prepare wrote nothing there."""
    return sorted((str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*"))


def split_ids(out: Path, split: str = "test") -> list[str]:
    return sorted(load_prepared(out, split)["id"])


def report_reasons(report: dict) -> list[str]:
    return [entry["reason"] for entry in report["skipped"]]


# --------------------------------------------------------------------------- OmniMedVQA


def build_omnimedvqa(base: Path, per_modality: int = 10) -> Path:
    """Raw OmniMedVQA tree: 8 typo'd modality strings, 2-4 options, and every quirk of the brief."""
    root = base / "OmniMedVQA"
    qa = root / "QA_information" / "Open-access"
    qa.mkdir(parents=True)
    for k, modality in enumerate(OMNI_MODALITIES):
        for j in range(3):
            image(root / "Images" / f"DS{k}" / f"{j}.png", (k * 20, j * 50, 9))
        records = []
        for i in range(per_modality):
            record = {
                "question_id": f"DS{k}_{i:03d}",
                "dataset": f"DS{k}",
                "question_type": QTYPES[i % 5],
                "question": f"Question {i} about modality {k}?",
                "option_A": "alpha",
                "option_B": "beta",
                "modality_type": modality,
                "image_path": f"Images/DS{k}/{i % 3}.png",
            }
            if i % 2 == 0:  # 4 options; odd ones keep only A/B (no option_C/D keys at all)
                record.update(option_C="gamma", option_D="delta")
            record["gt_answer"] = ["alpha", "beta", "gamma", "delta"][i % 4] if i % 2 == 0 else "beta"
            records.append(record)
        (qa / f"DS{k}.json").write_text(json.dumps(records))
    image(root / "Images" / "Quirks" / "ok.png")
    (root / "Images" / "Quirks" / "corrupt.png").write_bytes(b"this is not a PNG file")
    quirk = {"dataset": "Quirks", "question_type": "Disease Diagnosis", "question": "Q?", "option_A": "a",
             "option_B": "b", "gt_answer": "a", "modality_type": "X-Ray", "image_path": "Images/Quirks/ok.png"}
    modality_key = dict(quirk, question_id="Q_modkey", modality="CT(Computed Tomography)")
    del modality_key["modality_type"]
    quirks = [
        modality_key,
        dict(quirk, question_id="Q_gold", gt_answer="banana"),
        dict(quirk, question_id="Q_noimage", image_path="Images/Quirks/missing.png"),
        dict(quirk, question_id="Q_corrupt", image_path="Images/Quirks/corrupt.png"),
        {k: v for k, v in dict(quirk, question_id="Q_noquestion").items() if k != "question"},
    ]
    (qa / "Quirks.json").write_text(json.dumps(quirks))
    (qa / "Broken.json").write_text('[{"question_id": "x", ')
    restricted = root / "QA_information" / "Restricted-access"
    restricted.mkdir()
    (restricted / "Secret.json").write_text(json.dumps([dict(quirk, question_id="R1", image_path="Images/Secret/1.png")]))
    return root


def test_omnimedvqa_rows_report_and_quirks(tmp_path):
    root = build_omnimedvqa(tmp_path)
    before = snapshot(root)
    out = tmp_path / "out"
    report = prepare("omnimedvqa", root, out)
    assert snapshot(root) == before  # nothing written under ROOT
    assert report["kept"] == 8 * 10 + 1
    assert report["splits"] == {"train": 54, "test": 27}  # 3 images per modality: 1 of them (~1/3 of rows) to test
    reasons = {entry.get("id", entry.get("file")): entry["reason"] for entry in report["skipped"]}
    assert set(reasons) == {"Q_gold", "Q_noimage", "Q_corrupt", "Q_noquestion", "QA_information/Open-access/Broken.json"}
    assert reasons["Q_gold"].startswith("gold answer not among the options")
    assert reasons["Q_noimage"].startswith("image file not found")
    assert "unknown or unsupported image format" in reasons["Q_corrupt"]
    assert reasons["Q_noquestion"] == "missing field(s): question"
    assert reasons["QA_information/Open-access/Broken.json"].startswith("invalid JSON")
    assert report["unknown_modalities"] == {}
    all_modalities = set(report["counts"]["train"]["modality"]) | set(report["counts"]["test"]["modality"])
    assert all_modalities == set(CANONICAL)
    assert report["counts"]["test"]["modality"]["MRI"] == 3  # one of the 3 MRI images, with all its questions

    train = load_prepared(out, "train")
    assert train.column_names == COLUMNS
    rows = {row["id"]: row for row in train} | {row["id"]: row for row in load_prepared(out, "test")}
    assert rows["Q_modkey"]["modality"] == "CT"  # the record that says `modality`
    two = rows["DS0_001"]
    assert two["options"] == ["alpha", "beta"] and two["answer_letter"] == "B" and two["answer"] == "beta"
    four = rows["DS0_002"]
    assert four["options"] == ["alpha", "beta", "gamma", "delta"] and four["answer_letter"] == "C"
    assert four["modality"] == "MRI" and four["question_type"] == "Modality Recognition"
    assert four["dataset"] == "DS0" and four["source"] == "omnimedvqa" and four["answer_type"] == "closed"
    assert Path(four["image"]).is_absolute() and Path(four["image"]).is_file()


def test_omnimedvqa_split_is_seeded(tmp_path):
    root = build_omnimedvqa(tmp_path)
    prepare("omnimedvqa", root, tmp_path / "a", seed=42, no_check_images=True)
    prepare("omnimedvqa", root, tmp_path / "b", seed=42, no_check_images=True)
    prepare("omnimedvqa", root, tmp_path / "c", seed=7, no_check_images=True)
    assert split_ids(tmp_path / "a") == split_ids(tmp_path / "b")
    assert split_ids(tmp_path / "a") != split_ids(tmp_path / "c")
    by_type = prepare("omnimedvqa", root, tmp_path / "q", split="question_type", no_check_images=True)
    assert by_type["options"]["split_method"] == "question_type"
    assert set(by_type["counts"]["test"]["question_type"]) == set(QTYPES)


def test_omnimedvqa_no_check_images_keeps_corrupt_but_not_missing(tmp_path):
    report = prepare("omnimedvqa", build_omnimedvqa(tmp_path), tmp_path / "out", no_check_images=True)
    ids = {entry.get("id") for entry in report["skipped"]}
    assert "Q_noimage" in ids and "Q_corrupt" not in ids
    assert report["options"]["check_images"] == "exists"


def test_omnimedvqa_restricted_access(tmp_path):
    report = prepare("omnimedvqa", build_omnimedvqa(tmp_path), tmp_path / "out", include_restricted=True)
    entry = next(e for e in report["skipped"] if e.get("id") == "R1")
    assert entry["reason"].startswith("image file not found") and "Restricted-access" in entry["reason"]


def test_omnimedvqa_parent_folder_is_accepted(tmp_path):
    build_omnimedvqa(tmp_path / "data")
    report = prepare("omnimedvqa", tmp_path / "data", tmp_path / "out", no_check_images=True)
    assert report["kept"] == 82  # the corrupt image is only caught when decoding


# --------------------------------------------------------------------------- Med-R1 split files

MEDR1_ITEMS = [  # (modality file value, question type, modality split, image, problem, letter)
    ("CT(Computed Tomography)", "Disease Diagnosis", "train", "Images/ChestCT/0.png",
     "Is there a lesion? A)No, It's normal, B)Tumor, C)Cyst", "B"),
    ("CT(Computed Tomography)", "Disease Diagnosis", "train", "Images/ChestCT/1.png",
     "What is seen? A)Cyst, B)No, It's normal", "A"),
    ("CT(Computed Tomography)", "Modality Recognition", "train", "Images/ChestCT/0.png",
     "Which modality? A)CT, B)MRI, C)X-ray, D)PET", "A"),
    ("CT(Computed Tomography)", "Modality Recognition", "train", "Images/ChestCT/0.png",
     "Bad letter? A)x, B)y", "E"),
    ("MR (Mag-netic Resonance Imaging)", "Anatomy Identification", "train", "Images/BrainMRI/0.png",
     "Which organ? A)Brain, B)Liver", "A"),
    ("MR (Mag-netic Resonance Imaging)", "Disease Diagnosis", "train", "Images/BrainMRI/0.png",
     "Abnormal? A)Glioma, B)No, It's normal, C)Meningioma", "C"),
    ("unknown", "Modality Recognition", "train", "Images/ChestCT/1.png",
     "What imaging technique was employed? A)Angiography, B)CT", "B"),
    ("CT(Computed Tomography)", "Disease Diagnosis", "test", "Images/ChestCT/1.png",
     "Diagnosis? A)Tumor, B)Cyst", "B"),
    ("CT(Computed Tomography)", "Modality Recognition", "test", "Images/ChestCT/0.png",
     "Modality? A)MRI, B)CT", "B"),
    ("MR (Mag-netic Resonance Imaging)", "Anatomy Identification", "test", "Images/BrainMRI/0.png",
     "Organ? A)Kidney, B)Brain", "B"),
]


def build_medr1(base: Path, with_images: bool = True) -> Path:
    """A Med-R1 checkout: Splits/{modality,question_type}/{train,test}/<value>_<split>.json (+ Images/)."""
    root = base / "Med-R1"
    trees: dict[Path, list] = {}
    for index, (modality, qtype, split, img, problem, letter) in enumerate(MEDR1_ITEMS):
        record = {"image": img, "problem": problem, "solution": f"<answer> {letter} </answer>"}
        trees.setdefault(root / "Splits" / "modality" / split / f"{modality}_{split}.json", []).append(record)
        qsplit = "test" if index == 0 else split  # the question-type split differs from the modality split
        trees.setdefault(root / "Splits" / "question_type" / qsplit / f"{qtype}_{qsplit}.json", []).append(record)
    for path, records in trees.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(records, indent=4))
    (root / "Splits" / "modality" / "train" / "X-Ray_train.json").write_text("[{broken")
    if with_images:
        for img in {item[3] for item in MEDR1_ITEMS}:
            image(root / img)
    return root


def test_medr1_modality_tree(tmp_path):
    root = build_medr1(tmp_path)
    before = snapshot(root)
    out = tmp_path / "out"
    report = prepare("medr1", root, out)
    assert snapshot(root) == before
    assert report["options"]["split_method"] == "official"
    assert report["kept"] == 9 and report["splits"] == {"train": 6, "test": 3}
    reasons = {entry.get("id", entry.get("file")): entry["reason"] for entry in report["skipped"]}
    assert reasons["modality/train/X-Ray_train.json"].startswith("invalid JSON")
    assert reasons["modality/train/CT(Computed Tomography)_train#3"].startswith("answer letter not among the options")
    assert report["counts"]["train"]["modality"] == {"CT": 4, "MRI": 2}  # "unknown" took its dataset's modality
    rows = {r["question"]: r for r in load_prepared(out, "train")}
    first = rows["Is there a lesion?"]
    assert first["options"] == ["No, It's normal", "Tumor", "Cyst"]
    assert first["answer_letter"] == "B" and first["answer"] == "Tumor"
    assert first["question_type"] == "Disease Diagnosis"  # joined from the question_type tree
    assert first["dataset"] == "ChestCT" and Path(first["image"]).is_file()
    unknown = rows["What imaging technique was employed?"]
    assert unknown["modality"] == "CT" and unknown["question_type"] == "Modality Recognition"


def test_medr1_question_type_tree_and_image_root(tmp_path):
    root = build_medr1(tmp_path, with_images=False)
    images = tmp_path / "OmniMedVQA"
    for img in {item[3] for item in MEDR1_ITEMS}:
        image(images / img)
    with pytest.raises(DataError, match="no usable rows.*image file not found x9"):
        prepare("medr1", root, tmp_path / "no-images")  # Images/ is elsewhere: say so, write nothing
    assert not (tmp_path / "no-images").exists()
    report = prepare("medr1", root, tmp_path / "out", split="question_type", image_root=images)
    assert report["options"]["split_method"] == "official"
    assert report["splits"] == {"train": 5, "test": 4}
    test = {r["question"]: r for r in load_prepared(tmp_path / "out", "test")}
    assert test["Is there a lesion?"]["modality"] == "CT"
    assert set(report["counts"]["test"]["question_type"]) == {"Disease Diagnosis", "Modality Recognition",
                                                              "Anatomy Identification"}


def test_medr1_split_is_stable_across_seeds(tmp_path):
    root = build_medr1(tmp_path)
    prepare("medr1", root, tmp_path / "a", seed=1, no_check_images=True)
    prepare("medr1", root, tmp_path / "b", seed=2, no_check_images=True)
    assert split_ids(tmp_path / "a") == split_ids(tmp_path / "b")  # the official Med-R1 split, not a reshuffle


# --------------------------------------------------------------------------- VQA-RAD


def build_vqa_rad(base: Path) -> Path:
    """Original release: 'VQA_RAD Dataset Public.json' + 'VQA_RAD Image Folder/'; paraphrases share qid_linked_id."""
    root = base / "VQA_RAD"
    for k in range(4):
        image(root / "VQA_RAD Image Folder" / f"synpic{k}.jpg", (k * 50, 0, 0), fmt="JPEG")
    records = []
    for k in range(12):
        test = k >= 10
        answer: object = "yes" if k % 3 == 0 else ("left" if k % 3 == 1 else 2)
        base_record = {"image_name": f"synpic{k % 4}.jpg", "image_organ": "CHEST", "qid_linked_id": f"L{k}",
                       "answer": answer, "answer_type": "CLOSED" if k % 3 == 0 else "OPEN",
                       "question_type": "PRES", "evaluation": "given"}
        records.append(dict(base_record, qid=k, question=f"Is there finding {k}?",
                            phrase_type="test_freeform" if test else "freeform"))
        records.append(dict(base_record, qid=100 + k, question=f"Does the image show finding {k}?",
                            phrase_type="test_para" if test else "para"))
    records.append({"qid": 999, "image_name": "synpic_missing.jpg", "question": "Where?", "answer": "left",
                    "answer_type": "OPEN", "qid_linked_id": "L999", "phrase_type": "freeform"})
    (root / "VQA_RAD Dataset Public.json").write_text(json.dumps(records))
    return root


def test_vqa_rad_original_grouped_split(tmp_path):
    root = build_vqa_rad(tmp_path)
    before = snapshot(root)
    report = prepare("vqa-rad", root, tmp_path / "out")
    assert snapshot(root) == before
    assert report["kept"] == 24
    assert report["skipped"] == [{"id": "vqa-rad-999", "reason": report["skipped"][0]["reason"]}]
    assert report["skipped"][0]["reason"].startswith("image file not found")
    assert report["splits"]["test"] + report["splits"]["train"] == 24
    rows = list(load_prepared(tmp_path / "out", "train")) + list(load_prepared(tmp_path / "out", "test"))
    by_id = {row["id"]: row for row in rows}
    assert by_id["vqa-rad-2"]["answer"] == "2" and by_id["vqa-rad-2"]["answer_type"] == "open"
    assert by_id["vqa-rad-0"]["answer_type"] == "closed" and by_id["vqa-rad-0"]["options"] == []
    assert by_id["vqa-rad-0"]["answer_letter"] == "" and by_id["vqa-rad-0"]["modality"] == ""
    test_ids = set(split_ids(tmp_path / "out"))
    for k in range(12):  # a question and its paraphrase are always on the same side
        assert (f"vqa-rad-{k}" in test_ids) == (f"vqa-rad-{100 + k}" in test_ids)
    for seed, name in ((42, "same"), (0, "other")):
        prepare("vqa-rad", root, tmp_path / name, seed=seed, no_check_images=True)
    assert split_ids(tmp_path / "same") == split_ids(tmp_path / "out")
    assert split_ids(tmp_path / "other") != split_ids(tmp_path / "out")
    official = prepare("vqa-rad", root, tmp_path / "official", split="official", no_check_images=True)
    assert official["splits"] == {"train": 20, "test": 4}


def build_vqa_rad_parquet(base: Path) -> Path:
    """The Hub copy: data/{train,test}-00000-of-00001.parquet with image {bytes, path}, question, answer."""
    root = base / "vqa-rad-hub"
    (root / "data").mkdir(parents=True)
    for split, n in (("train", 5), ("test", 2)):
        table = pa.table({
            "image": [{"bytes": image_bytes((i * 40, 0, 0)), "path": f"{split}{i}.png"} for i in range(n)],
            "question": [f"{split} question {i}?" for i in range(n)],
            "answer": ["yes" if i % 2 else "right lung" for i in range(n)],
        })
        pq.write_table(table, root / "data" / f"{split}-00000-of-00001.parquet")
    return root


def test_vqa_rad_parquet_copy_extracts_images(tmp_path):
    root = build_vqa_rad_parquet(tmp_path)
    before = snapshot(root)
    out = tmp_path / "out"
    report = prepare("vqa-rad", root, out)
    assert snapshot(root) == before
    assert report["splits"] == {"train": 5, "test": 2} and report["options"]["split_method"] == "official"
    train = load_prepared(out, "train")
    assert all(Path(p).is_file() and str(p).startswith(str(out)) for p in train["image"])
    assert train[1]["answer_type"] == "closed" and train[0]["answer_type"] == "open"
    # extracted images are stored relative to OUT, so the folder can be moved
    moved = tmp_path / "moved"
    out.rename(moved)
    assert all(Path(p).is_file() for p in load_prepared(moved, "test")["image"])


# --------------------------------------------------------------------------- SLAKE


def build_slake(base: Path) -> Path:
    root = base / "Slake1.0"
    for k in (1, 2, 3):
        image(root / "imgs" / f"xmlab{k}" / "source.jpg", (k * 60, 10, 10), fmt="JPEG")

    def rec(qid, img, lang, modality, kind, answer):
        return {"img_id": img, "img_name": f"xmlab{img}/source.jpg", "question": f"Question {qid}?",
                "answer": answer, "q_lang": lang, "location": "Lung", "modality": modality,
                "answer_type": kind, "base_type": "vqa", "content_type": "Organ", "triple": ["vhead", "_", "_"],
                "qid": qid}

    splits = {
        "train": [rec(1, 1, "en", "CT", "CLOSED", "Yes"), rec(2, 2, "en", "MRI", "OPEN", "Brain"),
                  rec(3, 3, "en", "X-Ray", "OPEN", "Lung"), rec(4, 1, "zh", "CT", "CLOSED", "是"),
                  rec(5, 9, "en", "CT", "OPEN", "Liver")],  # xmlab9 does not exist
        "validation": [rec(6, 2, "en", "MRI", "OPEN", "Brain"), rec(7, 2, "zh", "MRI", "OPEN", "脑")],
        "test": [rec(8, 3, "en", "X-Ray", "CLOSED", "No"), rec(9, 1, "en", "CT", "OPEN", "Liver"),
                 rec(10, 3, "zh", "X-Ray", "CLOSED", "否")],
    }
    for split, records in splits.items():
        (root / f"{split}.json").write_text(json.dumps(records, ensure_ascii=False))
    return root


def test_slake_english_official_splits(tmp_path):
    root = build_slake(tmp_path)
    before = snapshot(root)
    report = prepare("slake", root, tmp_path / "out", seed=5)
    assert snapshot(root) == before
    assert report["splits"] == {"train": 3, "validation": 1, "test": 2}
    assert report["filtered"] == {"lang=zh": 3}
    assert [e["id"] for e in report["skipped"]] == ["slake-train-5"]
    assert report["counts"]["train"]["modality"] == {"CT": 1, "MRI": 1, "X-Ray": 1}
    train = {row["id"]: row for row in load_prepared(tmp_path / "out", "train")}
    closed = train["slake-train-1"]
    assert closed["answer_type"] == "closed" and closed["options"] == [] and closed["answer"] == "Yes"
    assert train["slake-train-2"]["question_type"] == "Organ" and train["slake-train-2"]["dataset"] == "SLAKE"
    again = prepare("slake", root, tmp_path / "again", seed=99)
    assert again["splits"] == report["splits"] and split_ids(tmp_path / "again") == split_ids(tmp_path / "out")


def test_slake_languages(tmp_path):
    root = build_slake(tmp_path)
    zh = prepare("slake", root, tmp_path / "zh", lang="zh")
    assert zh["kept"] == 3 and zh["filtered"] == {"lang=en": 7}
    both = prepare("slake", root, tmp_path / "all", lang="all")
    assert both["kept"] == 9 and both["filtered"] == {}
    assert "是" in load_prepared(tmp_path / "all", "train")["answer"]


# --------------------------------------------------------------------------- PathVQA


def build_pathvqa(base: Path) -> Path:
    root = base / "path-vqa"
    (root / "data").mkdir(parents=True)
    answers = ["yes", "no", "hepatocytes", "yes"]
    for split, n in (("train", 4), ("validation", 2), ("test", 3)):
        table = pa.table({
            "image": [{"bytes": image_bytes((i * 30, 90, 0)), "path": None} for i in range(n)],
            "question": [None if (split == "train" and i == 3) else f"{split} q{i}?" for i in range(n)],
            "answer": [answers[i % 4] for i in range(n)],
        })
        pq.write_table(table, root / "data" / f"{split}-00000-of-00001.parquet")
    (root / "data" / "test-00001-of-00002.parquet").write_bytes(b"PAR1 definitely not parquet")
    return root


def test_pathvqa_parquet(tmp_path):
    root = build_pathvqa(tmp_path)
    before = snapshot(root)
    report = prepare("pathvqa", root, tmp_path / "out")
    assert snapshot(root) == before
    assert report["splits"] == {"train": 3, "validation": 2, "test": 3}
    skipped = {e.get("id", e.get("file")): e["reason"] for e in report["skipped"]}
    assert skipped["data/train-00000-of-00001#3"] == "missing field(s): question"
    assert skipped["data/test-00001-of-00002.parquet"].startswith("unreadable after 0 record(s)")
    rows = list(load_prepared(tmp_path / "out", "train"))
    assert [r["answer_type"] for r in rows] == ["closed", "closed", "open"]
    assert {r["modality"] for r in rows} == {"Microscopy"} and rows[0]["dataset"] == "PathVQA"
    again = prepare("pathvqa", root, tmp_path / "again", seed=1)
    assert again["splits"] == report["splits"] and split_ids(tmp_path / "again") == split_ids(tmp_path / "out")


# --------------------------------------------------------------------------- PMC-VQA

PMC_HEADER = ["index", "Figure_path", "Question", "Answer", "Choice A", "Choice B", "Choice C", "Choice D",
              "Answer_label"]


def build_pmc_vqa(base: Path) -> Path:
    root = base / "PMC-VQA"
    for k in range(4):
        image(root / "images" / f"PMC{k}_fig.jpg", (0, k * 60, 0), fmt="JPEG")
    rows = {
        "train": [
            [0, "PMC0_fig.jpg", "What uptake?", "Focal uptake pattern", "A:Diffuse uptake",
             " B:Focal uptake pattern", " C:No uptake", " D:Ring uptake", "B"],
            [1, "PMC1_fig.jpg", "Which side?", "Left", "A:Left", "B:Right", "", "", "A"],
            [2, "PMC2_fig.jpg", "Bad label?", "Nothing", "A:One", "B:Two", "C:Three", "D:Four", ""],
            [3, "PMC_missing.jpg", "Missing image?", "One", "A:One", "B:Two", "", "", "A"],
        ],
        "test": [
            [0, "PMC3_fig.jpg", "What modality?", "MRI", "A:CT", "B:MRI", "C:PET", "D:US", "B"],
            [1, "PMC2_fig.jpg", "Label only?", "", "A:yes", "B:no", "", "", "B"],
        ],
    }
    for split, records in rows.items():
        with open(root / f"{split}.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(PMC_HEADER)
            writer.writerows(records)
    return root


def test_pmc_vqa_csv(tmp_path):
    root = build_pmc_vqa(tmp_path)
    before = snapshot(root)
    report = prepare("pmc-vqa", root, tmp_path / "out")
    assert snapshot(root) == before
    assert report["splits"] == {"train": 2, "test": 2}
    skipped = {e["id"]: e["reason"] for e in report["skipped"]}
    assert skipped["pmc-vqa-train-2"].startswith("gold answer not among the options")
    assert skipped["pmc-vqa-train-3"].startswith("image file not found")
    train = {row["id"]: row for row in load_prepared(tmp_path / "out", "train")}
    first = train["pmc-vqa-train-0"]
    assert first["options"] == ["Diffuse uptake", "Focal uptake pattern", "No uptake", "Ring uptake"]
    assert first["answer_letter"] == "B" and first["answer"] == "Focal uptake pattern"
    assert train["pmc-vqa-train-1"]["options"] == ["Left", "Right"]
    test = {row["id"]: row for row in load_prepared(tmp_path / "out", "test")}
    assert test["pmc-vqa-test-1"]["answer"] == "no"
    prepare("pmc-vqa", root, tmp_path / "again", seed=3)
    assert split_ids(tmp_path / "again") == split_ids(tmp_path / "out")


# --------------------------------------------------------------------------- jsonl (our schema)


def build_jsonl(base: Path, split_files: bool = True) -> Path:
    root = base / "private"
    for k in range(3):
        image(root / "imgs" / f"{k}.png", (k * 70, 0, 200))
    good = [
        {"id": f"p{i}", "image": f"imgs/{i % 3}.png", "question": f"Q{i}?", "options": ["CT", "MRI"],
         "answer": "MRI" if i % 2 else "CT", "modality": ["CT", "MRI"][i % 2], "question_type": "Modality Recognition",
         "dataset": "mine"}
        for i in range(10)
    ]
    good.append({"id": "open1", "image": "imgs/0.png", "question": "What organ?", "answer": "liver"})
    good.append({"id": "letter1", "image": "imgs/1.png", "question": "Pick", "options": ["x", "y"],
                 "answer_letter": "B"})
    bad = [{"id": "bad_gold", "image": "imgs/0.png", "question": "Q?", "options": ["a", "b"], "answer": "c"},
           {"id": "no_answer", "image": "imgs/0.png", "question": "Q?", "options": ["a", "b"]},
           {"id": "no_question", "image": "imgs/0.png", "options": ["a", "b"], "answer": "a"}]
    lines = [json.dumps(r) for r in good + bad] + ["{not json"]
    if split_files:
        (root / "train.jsonl").write_text("\n".join(lines[:8] + lines[12:]) + "\n")
        (root / "test.jsonl").write_text("\n".join(lines[8:12]) + "\n")
    else:
        (root / "data.jsonl").write_text("\n".join(lines) + "\n")
    return root


def test_jsonl_with_split_files(tmp_path):
    root = build_jsonl(tmp_path)
    report = prepare("jsonl", root, tmp_path / "out")
    assert report["splits"] == {"train": 8, "test": 4}
    skipped = {e.get("id", e.get("file")): e["reason"] for e in report["skipped"]}
    assert skipped["bad_gold"].startswith("gold answer not among the options")
    assert skipped["no_answer"].startswith("no 'answer (or answer_letter)' key")  # not "gold answer not among..."
    assert skipped["no_question"].startswith("no 'question' key")  # not "empty question"
    assert skipped["train.jsonl:12"].startswith("invalid JSON")
    rows = {r["id"]: r for r in load_prepared(tmp_path / "out", "test")}
    assert rows["open1"]["answer_type"] == "open" and rows["open1"]["options"] == []
    assert rows["letter1"]["answer"] == "y" and rows["letter1"]["source"] == "jsonl"


def test_jsonl_without_splits_is_split_by_modality(tmp_path):
    root = build_jsonl(tmp_path, split_files=False)
    a = prepare("jsonl", root, tmp_path / "a", seed=0)
    prepare("jsonl", root, tmp_path / "b", seed=0)
    prepare("jsonl", root, tmp_path / "c", seed=1)
    assert a["options"]["split_method"] == "modality"
    assert split_ids(tmp_path / "a") == split_ids(tmp_path / "b")
    # 3 images with 5, 4 and 3 questions: every seed sends the 3-question image (closest to 20%) to test
    assert split_ids(tmp_path / "c") == ["p2", "p5", "p8"] and a["image_overlap"] == 0
    assert a["counts"]["test"]["modality"] == {"CT": 2, "MRI": 1}


@pytest.mark.parametrize("source", ["omnimedvqa", "slake", "pmc-vqa", "medr1", "vqa-rad", "pathvqa", "jsonl"])
def test_empty_root_is_a_clear_error(tmp_path, source):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError):
        prepare(source, tmp_path / "empty", tmp_path / "out")
    assert not (tmp_path / "out").exists()
