"""Generate the bad-input corpus: broken images and malformed records in several source layouts.

    python tests/data/make_bad_corpus.py [OUT]        # default OUT: tests/data/bad

Deterministic (no randomness). OUT gets one folder per source layout plus ``expected.json``:
for each layout, the record ids that `python -m medvqa_data.prepare` must keep, the record ids
it must skip with a substring of the reason, and the files it must skip (whole-file problems).
The tests in tests/reliability/test_bad_inputs.py generate it into a temporary folder; the copy
in tests/data/bad/ is for looking at (and for `bench/fault_report.py`).
"""

from __future__ import annotations

import io
import json
import shutil
import struct
import sys
import zlib
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
LONG = 100_000  # characters of the "100k-character question"


# ----------------------------------------------------------------------------- images
def _png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A 60-byte PNG whose header claims 10 gigapixels (decoding it would need ~30 GB)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 1024)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def _text_bomb_png() -> bytes:
    """A valid 8x8 PNG with a zTXt chunk that inflates to 8 MB (Pillow refuses text chunks over 1 MB)."""
    good = _png_bytes(Image.new("RGB", (8, 8), (90, 90, 90)))
    ztxt = _chunk(b"zTXt", b"Comment\0\0" + zlib.compress(b"A" * (8 << 20), 9))
    return good[:33] + ztxt + good[33:]  # after the signature (8) and IHDR (25)


def _gradient(size=(64, 64), mode="RGB") -> Image.Image:
    w, h = size
    img = Image.new("RGB", size)
    img.putdata([((x * 4) % 256, (y * 4) % 256, ((x + y) * 2) % 256) for y in range(h) for x in range(w)])
    return img.convert(mode) if mode != "RGB" else img


def write_images(folder: Path) -> dict[str, tuple[str, str]]:
    """Image files -> (expected outcome, reason substring or note)."""
    folder.mkdir(parents=True, exist_ok=True)
    good = _png_bytes(_gradient())
    jpeg = io.BytesIO()
    _gradient().save(jpeg, format="JPEG", quality=90)
    files = {
        "good.png": (good, "kept", "a plain RGB PNG"),
        "good2.png": (_png_bytes(_gradient((48, 80))), "kept", "another plain PNG"),
        "truncated.png": (good[: len(good) // 2], "skip", "cannot decode image"),
        "truncated.jpg": (jpeg.getvalue()[: len(jpeg.getvalue()) // 3], "skip", "cannot decode image"),
        "zero.png": (b"", "skip", "empty file"),
        "text_named.png": (b"this is not an image\n" * 10, "skip", "unknown or unsupported image format"),
        "png_named.jpg": (good, "kept", "a PNG with a .jpg name: decoded by content"),
        "jpeg_named.dcm": (jpeg.getvalue(), "skip", "cannot decode DICOM"),
        "bomb.png": (_bomb_png(), "skip", "decompression bomb"),
        "text_bomb.png": (_text_bomb_png(), "skip", "cannot decode image"),
        "aspect_1x400.png": (_png_bytes(Image.new("L", (400, 1), 128)), "skip", "aspect ratio"),
        "one_by_one.png": (_png_bytes(Image.new("RGB", (1, 1), (200, 10, 10))), "kept", "1x1: upscaled"),
    }
    gray16 = Image.new("I;16", (64, 64))
    gray16.putdata([x * 1000 % 65536 for x in range(64 * 64)])
    cmyk = io.BytesIO()
    _gradient(mode="CMYK").save(cmyk, format="JPEG")
    transparent = _gradient(mode="P")
    transparent.info["transparency"] = 0
    files.update({
        "gray16.png": (_png_bytes(gray16), "kept", "16-bit grayscale: rescaled to 8-bit"),
        "cmyk.jpg": (cmyk.getvalue(), "kept", "CMYK JPEG: converted to RGB"),
        "palette.png": (_png_bytes(_gradient(mode="P")), "kept", "palette PNG"),
        "palette_transparent.png": (_png_bytes(transparent), "kept", "palette PNG with transparency"),
        "rgba.png": (_png_bytes(_gradient(mode="RGBA")), "kept", "RGBA: composited on black"),
    })
    (folder / "a_folder.png").mkdir(exist_ok=True)
    (folder / "a_folder.png" / ".keep").write_text("a folder named like an image (git keeps no empty folder)\n")
    out = {}
    for name, (data, outcome, note) in files.items():
        (folder / name).write_bytes(data)
        out[name] = (outcome, note)
    out["a_folder.png"] = ("skip", "not a regular file")
    out["missing.png"] = ("skip", "file not found")
    return out


# ----------------------------------------------------------------------------- omnimedvqa layout
def _omni(qid, image, question="What imaging modality is used for this image?", options=("CT", "MRI"),
          answer="CT", **extra):
    rec = {"question_id": qid, "dataset": "Bad", "question_type": "Modality Recognition", "question": question,
           "gt_answer": answer, "modality_type": "CT(Computed Tomography)", "image_path": image}
    for letter, opt in zip("ABCD", options):
        rec[f"option_{letter}"] = opt
    rec.update(extra)
    return rec


def omnimedvqa(root: Path) -> dict:
    images = write_images(root / "Images" / "Bad")
    qa = root / "QA_information" / "Open-access"
    qa.mkdir(parents=True, exist_ok=True)
    records, kept, skipped = [], [], {}

    def add(rec, outcome, reason=""):
        records.append(rec)
        rid = rec.get("question_id") if isinstance(rec, dict) else None
        if outcome == "kept":
            kept.append(rid)
        elif rid is not None:
            skipped[rid] = reason

    for i, (name, (outcome, note)) in enumerate(sorted(images.items())):
        add(_omni(f"img-{i:02d}-{name}", f"Images/Bad/{name}"), outcome, note)
    img = "Images/Bad/good.png"
    add(_omni("unicode", img, question="Ist das ein CT-Bild? 这是CT图像吗？ 🩻 e\u0301 \u200d", options=("Ja ✓", "Nein ✗"),
              answer="Ja ✓"), "kept")
    add(_omni("bidi-override", img, question="\u202eWhat modality is this?\u202c \u2067بالعربية\u2069"), "kept")
    add(_omni("rtl-ok", img, question="ما هي طريقة التصوير المستخدمة؟ מה אופן ההדמיה?",
              options=("التصوير المقطعي", "תהודה מגנטית"), answer="תהודה מגנטית"), "kept")
    add(_omni("nul-char", img, question="What modality\u0000 is this?"), "kept")
    add(_omni("long-question", img, question="Is this a CT? " + "x" * LONG), "skip", "question too long")
    add(_omni("duplicate-options", img, options=("CT", "MRI", "CT"), answer="CT"), "skip", "duplicate options")
    add(_omni("duplicate-options-case", img, options=("Normal", "normal "), answer="Normal"), "skip",
        "duplicate options")
    add(_omni("number-question", img, question=12345), "kept")
    add(_omni("number-answer", img, options=(5, 6), answer=5), "kept")
    add(_omni("dict-question", img, question={"text": "What is this?"}), "skip", "question must be text")
    add(_omni("list-option", img, options=(["CT"], "MRI"), answer="MRI"), "skip", "option must be text")
    add(_omni("list-answer", img, answer=["CT"]), "skip", "answer must be text")
    add(_omni("int-image-path", 123), "skip", "image_path must be")
    add(_omni("null-image-path", None), "skip", "missing field")
    add(_omni("dict-image-path", {"path": "Images/Bad/good.png"}), "skip", "image_path must be")
    add(_omni("nan-answer", img, options=("CT", "MRI"), answer=float("nan")), "skip", "answer must be")
    add(_omni("lone-surrogate", img, question="Is this a CT? \ud800"), "skip", "invalid unicode")
    add(_omni("empty-question", img, question="   "), "skip", "empty question")
    add(_omni("one-option", img, options=("CT",)), "skip", "too few options")
    add(_omni("answer-not-in-options", img, answer="PET"), "skip", "gold answer not among the options")
    add(_omni("bool-fields", img, question=True, options=(True, False), answer=True), "kept")
    add(_omni("wrong-type-modality", img, modality_type=["CT"]), "skip", "modality must be text")
    missing = _omni("missing-answer", img)
    del missing["gt_answer"]
    add(missing, "skip", "missing field")
    missing = _omni("missing-question", img)
    del missing["question"]
    add(missing, "skip", "missing field")
    missing = _omni("missing-image", img)
    del missing["image_path"]
    add(missing, "skip", "missing field")
    add(_omni("good-1", img), "kept")
    add(_omni("good-1", "Images/Bad/good2.png"), "skip", "duplicate id")
    records.append("a string, not a record")
    records.append(None)
    records.append([1, 2, 3])
    skipped["Bad#" + str(len(records) - 3)] = "record is not a JSON object"
    skipped["Bad#" + str(len(records) - 2)] = "record is not a JSON object"
    skipped["Bad#" + str(len(records) - 1)] = "record is not a JSON object"
    (qa / "Bad.json").write_text(json.dumps(records, indent=1))  # \uXXXX escapes (a lone surrogate is legal JSON)
    files = {
        "Truncated.json": (json.dumps([_omni("t1", img)])[:40], "invalid JSON"),
        "NotAList.json": (json.dumps({"question_id": "x"}), "expected a JSON list"),
        "Empty.json": ("", "invalid JSON"),
    }
    for name, (content, _) in files.items():
        (qa / name).write_text(content)
    (qa / "Latin1.json").write_bytes(json.dumps([_omni("latin", img, question="Qué es?")], ensure_ascii=False)
                                     .encode("latin-1"))
    files_skipped = {f"QA_information/Open-access/{n}": r for n, (_, r) in files.items()}
    files_skipped["QA_information/Open-access/Latin1.json"] = "cannot read file"
    return {"source": "omnimedvqa", "kept": kept, "skipped": skipped, "files_skipped": files_skipped}


# ----------------------------------------------------------------------------- jsonl layout
def jsonl(root: Path) -> dict:
    root.mkdir(parents=True, exist_ok=True)
    (root / "x.png").write_bytes(_png_bytes(_gradient()))
    base = {"image": "x.png", "question": "Is there a fracture?", "answer": "yes", "answer_type": "closed",
            "modality": "X-Ray"}
    lines, kept, skipped = [], [], {}

    def add(line, rid=None, outcome="kept", reason=""):
        lines.append(line)
        if rid is None:
            return
        if outcome == "kept":
            kept.append(rid)
        else:
            skipped[rid] = reason

    add(json.dumps({**base, "id": "j-good"}), "j-good")
    add("", None)
    add("   ", None)
    add('{"id": "j-broken", "image": "x.png", "question": "cut', None)
    add("[1, 2, 3]", None)
    add('"just a string"', None)
    add("null", None)
    add(json.dumps({**base, "id": "j-options-string", "options": "yes,no"}), "j-options-string", "skip",
        "options must be a JSON list")
    add(json.dumps({**base, "id": "j-options-null-item", "options": ["yes", None], "answer": "yes"}),
        "j-options-null-item", "skip", "empty option")
    add(json.dumps({**base, "id": "j-no-image", "image": ""}), "j-no-image", "skip", "no image path")
    add(json.dumps({**base, "id": "j-int-image", "image": 5}), "j-int-image", "skip", "image")
    add(json.dumps({**base, "id": "j-nan-answer", "answer": float("nan")}), "j-nan-answer", "skip", "answer must be")
    add(json.dumps({**base, "id": "j-bad-letter", "options": ["a", "b"], "answer_letter": "AA"}), "j-bad-letter",
        "skip", "answer letter not among the options")
    add(json.dumps({**base, "id": "j-bad-type", "answer_type": "maybe"}), "j-bad-type", "skip", "invalid answer_type")
    add(json.dumps({**base, "id": "j-long", "question": "q" * LONG}), "j-long", "skip", "question too long")
    add(json.dumps({**base, "id": "j-rtl", "question": "האם יש שבר? هل يوجد كسر؟", "answer": "כן"}), "j-rtl")
    add(json.dumps({**base, "id": "j-dup-options", "options": ["yes", "no", "Yes"], "answer": "no"}),
        "j-dup-options", "skip", "duplicate options")
    add(json.dumps({**base, "id": "j-open", "question": "What is shown?", "answer": "a fracture",
                    "answer_type": "open"}), "j-open")
    text = "\ufeff" + "\r\n".join(lines) + "\r\n"  # a byte-order mark and Windows line ends
    (root / "data.jsonl").write_text(text, encoding="utf-8")
    kept_first = json.dumps({**base, "id": "j-after-bom"})
    (root / "more.jsonl").write_text("\ufeff" + kept_first + "\n", encoding="utf-8")
    kept.append("j-after-bom")
    lines_skipped = {"data.jsonl:4": "invalid JSON", "data.jsonl:5": "not a JSON object",
                     "data.jsonl:6": "not a JSON object", "data.jsonl:7": "not a JSON object"}
    return {"source": "jsonl", "kept": kept, "skipped": {**skipped, **lines_skipped}, "files_skipped": {}}


# ----------------------------------------------------------------------------- pmc-vqa layout (CSV)
def pmc_vqa(root: Path) -> dict:
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "images" / "f1.jpg").write_bytes(_png_bytes(_gradient()))
    header = "Figure_path,Question,Answer,Choice A,Choice B,Choice C,Choice D,Answer_label\n"
    rows = [
        'f1.jpg,What is shown?,B:Lung,A:Heart,B:Lung,C:Liver,D:Bone,B\n',  # pmc-vqa-train-0
        ',No figure?,A:x,A:x,B:y,,,A\n',  # 1: missing Figure_path
        'f1.jpg,Bad label?,A:x,A:x,B:y,,,Z\n',  # 2: Z is no option and the answer text says A:x -> kept via text? no
        'f1.jpg,"Commas, ""quotes"" and\nnewlines",A:yes,A:yes,B:no,,,A\n',  # 3: quoted fields, kept
        'f1.jpg,Too few columns\n',  # 4: missing fields
        'f1.jpg,Extra columns,A:a,A:a,B:b,,,A,extra,more\n',  # 5: extra columns: kept
        'f1.jpg,مرحبا؟,A:نعم,A:نعم,B:لا,,,A\n',  # 6: RTL, kept
        'f1.jpg,Dup options,A:same,A:same,B:Same,,,A\n',  # 7: duplicate options
        'f1.jpg,"Unclosed quote here,A:x,A:x,B:y,,,A\n',  # 8: unclosed quote: swallows the rest
        'f1.jpg,Lost row after the quote,A:x,A:x,B:y,,,A\n',
    ]
    (root / "train.csv").write_text(header + "".join(rows), encoding="utf-8")
    (root / "test.csv").write_bytes((header + "f1.jpg,Qué?,A:sí,A:sí,B:no,,,A\n").encode("latin-1"))
    return {
        "source": "pmc-vqa",
        "kept": ["pmc-vqa-train-0", "pmc-vqa-train-2", "pmc-vqa-train-3", "pmc-vqa-train-5", "pmc-vqa-train-6"],
        "skipped": {"pmc-vqa-train-1": "missing field", "pmc-vqa-train-4": "empty answer",
                    "pmc-vqa-train-7": "duplicate option"},
        "files_skipped": {"train.csv": "unexpected end of data", "test.csv": "cannot read CSV"},
        "lost_rows_reported_with_file": ["pmc-vqa-train-8", "pmc-vqa-train-9"],
    }


# ----------------------------------------------------------------------------- pathvqa layout (jsonl copy)
def pathvqa(root: Path) -> dict:
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "images" / "p.png").write_bytes(_png_bytes(_gradient()))
    lines = [
        json.dumps({"image": "p.png", "question": "Is this a tumor?", "answer": "yes"}),
        '{"image": "p.png", "question": "broken',
        "[1, 2]",
        json.dumps({"image": "p.png", "question": "What stain?", "answer": "H&E"}),
        json.dumps({"image": None, "question": "No image?", "answer": "no"}),
        json.dumps({"image": {"bytes": None, "path": None}, "question": "Empty struct?", "answer": "no"}),
        json.dumps({"image": "p.png", "question": "Numbers?", "answer": 3}),
    ]
    (root / "train.jsonl").write_text("\n".join(lines) + "\n")
    return {"source": "pathvqa", "kept": ["train#0", "train#3", "train#6"],
            "skipped": {"train#1": "invalid JSON", "train#2": "not a JSON object", "train#4": "missing field",
                        "train#5": "no image"},
            "files_skipped": {}}


LAYOUTS = {"omnimedvqa": omnimedvqa, "jsonl": jsonl, "pmc-vqa": pmc_vqa, "pathvqa": pathvqa}


def build(out: str | Path) -> dict:
    """Write the corpus into `out` (replaced) and return the expectations (also in expected.json)."""
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    expected = {name: make(out / name) for name, make in LAYOUTS.items()}
    (out / "expected.json").write_text(json.dumps(expected, indent=1, ensure_ascii=False) + "\n")
    return expected


def count(expected: dict) -> int:
    """Bad inputs in the corpus: every record or file expected to be skipped, plus the odd-but-valid
    records that must be kept (16-bit, CMYK, palette, 1x1, unicode, RTL, wrong-but-coercible types)."""
    n = 0
    for layout in expected.values():
        n += len(layout["skipped"]) + len(layout["files_skipped"])
        n += sum(1 for k in layout["kept"] if "good" not in str(k))
    return n


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "tests" / "data" / "bad"
    exp = build(target)
    print(f"wrote the bad-input corpus to {target} ({count(exp)} bad inputs; expectations in expected.json)")
