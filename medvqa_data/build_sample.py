"""Rebuild the bundled OmniMedVQA-layout sample from real medical images shipped inside PyPI wheels.

Usage::

    python -m medvqa_data.build_sample [--out medvqa_data/sample/omnimedvqa] [--seed 0]

The tree it writes mirrors OmniMedVQA's open-access release::

    OUT/Images/<Dataset>/<name>.png
    OUT/QA_information/Open-access/<Dataset>.json

Each JSON file is a list of records with exactly OmniMedVQA's keys (``question_id, dataset,
question_type, question, gt_answer, option_A, option_B, option_C, option_D, modality_type,
image_path``); ``gt_answer`` is the option text, ``option_C``/``option_D`` are omitted for 2- and
3-option questions, ``image_path`` is relative to OUT and ``modality_type`` uses OmniMedVQA's
verbatim strings (typos included).

Sources (all offline, see ``medvqa_data/sample/NOTICE.md`` for provenance and licences):
pydicom test files (CT, MR, ultrasound), nibabel's ``anatomical.nii`` (T1 brain MRI) and
scikit-image's ``retina``/``microaneurysms`` (fundus) and ``cell``/``immunohistochemistry``
(microscopy). Several windows, slices, frames and crops of each give ~60 questions of two
OmniMedVQA question types: "Modality Recognition" and "Anatomy Identification".

Deterministic: the same package versions give byte-identical PNG and JSON files on every run
(PIL PNG with fixed parameters and no metadata; a seeded ``random.Random`` for options).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

# --------------------------------------------------------------------------------------------
# OmniMedVQA schema constants (shared with medvqa_data.phantoms)
# --------------------------------------------------------------------------------------------

OMNI_KEYS: tuple[str, ...] = (
    "question_id",
    "dataset",
    "question_type",
    "question",
    "gt_answer",
    "option_A",
    "option_B",
    "option_C",
    "option_D",
    "modality_type",
    "image_path",
)
OPTION_KEYS: tuple[str, ...] = ("option_A", "option_B", "option_C", "option_D")
LETTERS: str = "ABCD"

# OmniMedVQA's verbatim modality_type strings (typos included: "Mag-netic", missing ")" for OCT).
MODALITY_CT = "CT(Computed Tomography)"
MODALITY_MR = "MR (Mag-netic Resonance Imaging)"
MODALITY_US = "ultrasound"
MODALITY_XRAY = "X-Ray"
MODALITY_DERM = "Dermoscopy"
MODALITY_MICRO = "Microscopy Images"
MODALITY_FUNDUS = "Fundus Photography"
MODALITY_OCT = "OCT (Optical Coherence Tomography"

QT_MODALITY = "Modality Recognition"
QT_ANATOMY = "Anatomy Identification"
QT_DIAGNOSIS = "Disease Diagnosis"
QT_GRADING = "Lesion Grading"
QT_OTHER = "Other Biological Attributes"

DEFAULT_OUT = Path(__file__).resolve().parent / "sample" / "omnimedvqa"
MAX_SIDE = 224  # downsize anything larger so that the whole tree stays far below 3 MB
MIN_SIDE = 112  # upscale tiny images (64x64 MR, 2 mm NIfTI slices) so that they are legible
PNG_PARAMS = {"format": "PNG", "optimize": False, "compress_level": 9}


class BalancedOptions:
    """Build multiple-choice options whose correct letter is balanced per option count.

    For every option count k the correct position is drawn from shuffled blocks of
    ``range(k)`` (block randomisation), so after each full block every letter has been right
    exactly once; the distractors fill the other positions in random order. ``rng`` is any
    object with ``shuffle`` and ``sample`` (``random.Random``) or a ``numpy.random.Generator``.
    """

    def __init__(self, rng: random.Random | np.random.Generator):
        self.rng = rng
        self._blocks: dict[int, list[int]] = {}

    def _shuffle(self, items: list) -> list:
        items = list(items)
        if isinstance(self.rng, np.random.Generator):
            order = self.rng.permutation(len(items))
            return [items[i] for i in order]
        self.rng.shuffle(items)
        return items

    def position(self, k: int) -> int:
        block = self._blocks.get(k)
        if not block:
            block = self._shuffle(list(range(k)))
            self._blocks[k] = block
        return block.pop()

    def make(self, answer: str, distractor_pool: Sequence[str], k: int) -> list[str]:
        pool = [d for d in dict.fromkeys(distractor_pool) if d != answer]
        if not 2 <= k <= 4:
            raise ValueError(f"k must be 2..4, got {k}")
        if len(pool) < k - 1:
            raise ValueError(f"need {k - 1} distractors for {answer!r}, have {pool}")
        distractors = self._shuffle(pool)[: k - 1]
        pos = self.position(k)
        return distractors[:pos] + [answer] + distractors[pos:]


def make_record(
    question_id: str,
    dataset: str,
    question_type: str,
    question: str,
    answer: str,
    options: Sequence[str],
    modality_type: str,
    image_path: str,
) -> dict:
    """One OmniMedVQA record with the keys in OmniMedVQA's order (absent options omitted)."""
    if answer not in options:
        raise ValueError(f"{question_id}: answer {answer!r} not among options {options}")
    rec: dict = {
        "question_id": question_id,
        "dataset": dataset,
        "question_type": question_type,
        "question": question,
        "gt_answer": answer,
    }
    for key, text in zip(OPTION_KEYS, options):
        rec[key] = text
    rec["modality_type"] = modality_type
    rec["image_path"] = image_path
    return rec


def write_json(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records, indent=4, ensure_ascii=False) + "\n", encoding="utf-8")


def save_png(img: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **PNG_PARAMS)


# --------------------------------------------------------------------------------------------
# image helpers
# --------------------------------------------------------------------------------------------


def _to_uint8(a: np.ndarray, lo: float, hi: float) -> np.ndarray:
    a = (a.astype(np.float64) - lo) / max(hi - lo, 1e-9)
    return np.round(np.clip(a, 0.0, 1.0) * 255.0).astype(np.uint8)


def _window(a: np.ndarray, center: float, width: float) -> np.ndarray:
    return _to_uint8(a, center - width / 2.0, center + width / 2.0)


def _percentile(a: np.ndarray, lo: float = 0.5, hi: float = 99.5) -> np.ndarray:
    p_lo, p_hi = np.percentile(a.astype(np.float64), [lo, hi])
    return _to_uint8(a, float(p_lo), float(p_hi))


def _fit(img: Image.Image) -> Image.Image:
    """Downsize to MAX_SIDE, or upscale small images until the short side reaches MIN_SIDE."""
    w, h = img.size
    if max(w, h) > MAX_SIDE:
        s = MAX_SIDE / max(w, h)
        method = Image.Resampling.LANCZOS
    elif min(w, h) < MIN_SIDE:
        s = min(MIN_SIDE / min(w, h), MAX_SIDE / max(w, h))
        method = Image.Resampling.BICUBIC
    else:
        return img
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return img.resize(size, method)


def _pil(a: np.ndarray) -> Image.Image:
    a = np.ascontiguousarray(a)
    if a.ndim == 2:
        return Image.fromarray(a.astype(np.uint8), mode="L")
    return Image.fromarray(a[..., :3].astype(np.uint8), mode="RGB")


def _dicom(name: str):
    import pydicom
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name, download=False)
    if path is None:
        raise FileNotFoundError(f"pydicom test file {name} is not installed")
    return pydicom.dcmread(path)


def _nibabel_anatomical() -> np.ndarray:
    import nibabel as nib

    path = Path(nib.__file__).parent / "tests" / "data" / "anatomical.nii"
    img = nib.as_closest_canonical(nib.load(str(path)))  # RAS+: x=left->right, y=post->ant, z=inf->sup
    return np.asarray(img.dataobj, dtype=np.float64)


# --------------------------------------------------------------------------------------------
# sources: each yields (file stem, PIL image, anatomy label or None, source description)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """One provenance entry for NOTICE.md."""

    package: str
    file: str
    licence: str
    description: str


SOURCES: dict[str, Source] = {
    "CT_small.dcm": Source(
        "pydicom",
        "pydicom/data/test_files/CT_small.dcm",
        "shipped in pydicom (MIT); pydicom's test_files/README.txt: downsized to 128x128 from "
        "NEMA WG04 sample 'CT1_UNC' (ftp://medical.nema.org/MEDICAL/Dicom/DataSets/WG04/); "
        "'I believe there is no restriction on using any of these files in this manner.'",
        "axial CT slice through a vertebra",
    ),
    "MR_small.dcm": Source(
        "pydicom",
        "pydicom/data/test_files/MR_small.dcm",
        "shipped in pydicom (MIT); README.txt: downsized to 64x64 from NEMA WG04 sample 'MR1_UNC'",
        "small MR image",
    ),
    "examples_overlay.dcm": Source(
        "pydicom",
        "pydicom/data/test_files/examples_overlay.dcm",
        "shipped in pydicom (MIT); README.txt: MR-SIEMENS-DICOM-WithOverlays.dcm from GDCM with "
        "cropped pixel data; GDCM datasets are used under GDCM's BSD-3-Clause licence "
        "(Copyright (c) 2006-2016 Mathieu Malaterre, (c) 1993-2005 CREATIS), reproduced in "
        "pydicom's test_files/README.txt",
        "axial abdominal MR (liver lesion), DICOM BodyPartExamined=ABDOMEN",
    ),
    "examples_rgb_color.dcm": Source(
        "pydicom",
        "pydicom/data/test_files/examples_rgb_color.dcm",
        "shipped in pydicom (MIT); README.txt: US1_UNCR.dcm (NEMA WG04 'US1') with cropped pixel data",
        "colour-Doppler ultrasound of a lymph node",
    ),
    "examples_ybr_color.dcm": Source(
        "pydicom",
        "pydicom/data/test_files/examples_ybr_color.dcm",
        "shipped in pydicom (MIT); README.txt: color3d_jpeg_baseline.dcm with reduced frames and "
        "rescaled pixel data (JPEG baseline, decoded with Pillow)",
        "echocardiography cine loop (30 frames)",
    ),
    "examples_palette.dcm": Source(
        "pydicom",
        "pydicom/data/test_files/examples_palette.dcm",
        "shipped in pydicom (MIT); README.txt: OBXXXX1A.dcm with cropped pixel data, taken from "
        "https://github.com/pydicom/pydicom/issues/205 ('supposedly from a Philips machine')",
        "palette-colour obstetric ultrasound",
    ),
    "anatomical.nii": Source(
        "nibabel",
        "nibabel/tests/data/anatomical.nii",
        "shipped in nibabel; nibabel's licence (COPYING): 'The nibabel package, including all "
        "examples, code snippets and attached documentation is covered by the MIT license.' (the "
        "file is not among the third-party data listed there)",
        "T1-weighted brain MRI volume, 33x41x25 voxels of 2 mm",
    ),
    "retina.jpg": Source(
        "scikit-image",
        "skimage/data/retina.jpg (skimage.data.retina())",
        "CC0 1.0 (public domain dedication), per skimage.data.retina's docstring: downloaded "
        "from Wikimedia Commons 'Fundus_photograph_of_normal_left_eye.jpg' (Mikael Haggstrom); "
        "scikit-image itself is BSD-3-Clause",
        "fundus photograph of a normal left eye",
    ),
    "microaneurysms.png": Source(
        "scikit-image",
        "skimage/data/microaneurysms.png (skimage.data.microaneurysms())",
        "CC0 given by owner (Andreas Maier), per skimage.data.microaneurysms's docstring; crop "
        "(green channel) of image 07_dr.JPG of the High-Resolution Fundus (HRF) Image Database",
        "fundus detail with microaneurysms (green channel)",
    ),
    "cell.png": Source(
        "scikit-image",
        "skimage/data/cell.png (skimage.data.cell())",
        "CC0 (public domain), per skimage.data.cell's docstring; quantitative phase image "
        "from Mueller et al., Optics Express 26(8) 2018",
        "cell floating in saline (quantitative phase microscopy)",
    ),
    "ihc.png": Source(
        "scikit-image",
        "skimage/data/ihc.png (skimage.data.immunohistochemistry())",
        "'No known copyright restrictions', per skimage.data.immunohistochemistry's docstring "
        "(Center for Microscopy And Molecular Imaging, CMMI); scikit-image is BSD-3-Clause",
        "IHC (DAB + hematoxylin) stained colonic glands",
    ),
}


@dataclass
class SampleImage:
    dataset: str
    stem: str
    image: Image.Image
    anatomy: str | None  # None: modality question only (anatomy not reliably identifiable)
    source: str  # key of SOURCES
    detail: str


def _ct_images() -> list[SampleImage]:
    from pydicom.pixels import apply_rescale

    ds = _dicom("CT_small.dcm")
    hu = apply_rescale(ds.pixel_array, ds)
    views = [
        ("soft-tissue window (L40/W400)", _window(hu, 40, 400)),
        ("bone window (L400/W1800)", _window(hu, 400, 1800)),
        ("wide window (L0/W2000)", _window(hu, 0, 2000)),
        ("soft-tissue window, central 96x96 crop", _window(hu, 40, 400)[16:112, 16:112]),
        ("bone window, central 96x96 crop", _window(hu, 400, 1800)[16:112, 16:112]),
    ]
    return [
        SampleImage("PydicomCT", f"ct_{i:03d}", _fit(_pil(a)), "Spine", "CT_small.dcm", d)
        for i, (d, a) in enumerate(views)
    ]


def _mr_images() -> list[SampleImage]:
    out: list[SampleImage] = []
    mr = _dicom("MR_small.dcm").pixel_array
    out.append(SampleImage("PydicomMR", "mr_000", _fit(_pil(_percentile(mr))), None, "MR_small.dcm", "full"))
    ov = _dicom("examples_overlay.dcm").pixel_array  # 300x484 axial abdomen
    views = [
        ("full, DICOM window L450/W790", _window(ov, 450, 790)),
        ("full, percentile window", _percentile(ov)),
        ("central 240x360 crop", _window(ov, 450, 790)[30:270, 62:422]),
    ]
    for i, (d, a) in enumerate(views, start=1):
        out.append(
            SampleImage("PydicomMR", f"mr_{i:03d}", _fit(_pil(a)), "Abdomen", "examples_overlay.dcm", d)
        )
    return out


def _brain_images() -> list[SampleImage]:
    vol = _nibabel_anatomical()  # RAS+ canonical, shape (x, y, z)
    vol8 = _percentile(vol, 1.0, 99.5)
    nx, ny, nz = vol8.shape
    out: list[SampleImage] = []
    # Display: rows top->bottom = anterior->posterior (axial) or superior->inferior (coronal, sagittal).
    views = [(f"axial slice z={k}", np.rot90(vol8[:, :, k]), "axial") for k in (nz // 2 - 3, nz // 2 + 3)]
    views += [
        (f"coronal slice y={k}", np.rot90(vol8[:, k, :]), "coronal") for k in (ny // 2 - 4, ny // 2 + 2)
    ]
    views += [(f"sagittal slice x={k}", np.rot90(vol8[k, :, :]), "sagittal") for k in (nx // 2, nx // 2 - 6)]
    for i, (d, a, plane) in enumerate(views):
        out.append(
            SampleImage(
                "NibabelBrainMRI", f"brain_{plane}_{i:03d}", _fit(_pil(a)), "Brain", "anatomical.nii", d
            )
        )
    return out


def _us_images() -> list[SampleImage]:
    from pydicom.pixels import apply_color_lut

    out: list[SampleImage] = []
    ybr = _dicom("examples_ybr_color.dcm").pixel_array  # (30, 240, 320, 3), converted to RGB by pydicom
    for f in (0, 10, 20):
        out.append(
            SampleImage(
                "PydicomUltrasound",
                f"us_{len(out):03d}",
                _fit(_pil(ybr[f])),
                "Heart",
                "examples_ybr_color.dcm",
                f"frame {f}",
            )
        )
    rgb = _dicom("examples_rgb_color.dcm").pixel_array  # (240, 320, 3)
    out.append(
        SampleImage(
            "PydicomUltrasound",
            f"us_{len(out):03d}",
            _fit(_pil(rgb)),
            "Lymph node",
            "examples_rgb_color.dcm",
            "full frame",
        )
    )
    out.append(
        SampleImage(
            "PydicomUltrasound",
            f"us_{len(out):03d}",
            _fit(_pil(rgb[60:160, 40:280])),
            None,
            "examples_rgb_color.dcm",
            "Doppler box crop",
        )
    )
    ds = _dicom("examples_palette.dcm")
    pal = apply_color_lut(ds.pixel_array, ds)
    if pal.dtype != np.uint8:
        pal = np.round(pal.astype(np.float64) / 257.0).astype(np.uint8)
    out.append(
        SampleImage(
            "PydicomUltrasound",
            f"us_{len(out):03d}",
            _fit(_pil(pal[55:215, 300:740])),
            None,
            "examples_palette.dcm",
            "sector crop",
        )
    )
    return out


def _fundus_images() -> list[SampleImage]:
    from skimage import data

    out: list[SampleImage] = []
    ret = data.retina()  # (1411, 1411, 3)
    views = [
        ("full", ret),
        ("optic-disc crop", ret[290:990, 0:700]),
        ("macula crop", ret[380:1080, 520:1220]),
    ]
    for d, a in views:
        out.append(
            SampleImage("SkimageFundus", f"fundus_{len(out):03d}", _fit(_pil(a)), "Retina", "retina.jpg", d)
        )
    mic = data.microaneurysms()  # (102, 102) grey (green channel)
    out.append(
        SampleImage(
            "SkimageFundus", f"fundus_{len(out):03d}", _fit(_pil(mic)), "Retina", "microaneurysms.png", "full"
        )
    )
    return out


def _microscopy_images() -> list[SampleImage]:
    from skimage import data

    out: list[SampleImage] = []
    cell = data.cell()  # (660, 550) grey
    for d, a in (("full", cell), ("central crop", cell[150:510, 95:455])):
        out.append(
            SampleImage("SkimageMicroscopy", f"micro_{len(out):03d}", _fit(_pil(a)), "Cell", "cell.png", d)
        )
    ihc = data.immunohistochemistry()  # (512, 512, 3)
    for r, c in ((0, 0), (0, 256), (256, 0), (256, 256)):
        out.append(
            SampleImage(
                "SkimageMicroscopy",
                f"micro_{len(out):03d}",
                _fit(_pil(ihc[r : r + 256, c : c + 256])),
                "Colon",
                "ihc.png",
                f"256x256 crop at row {r}, col {c}",
            )
        )
    return out


IMAGE_BUILDERS: tuple[Callable[[], list[SampleImage]], ...] = (
    _ct_images,
    _mr_images,
    _brain_images,
    _us_images,
    _fundus_images,
    _microscopy_images,
)

DATASET_MODALITY: dict[str, tuple[str, str]] = {
    # dataset -> (OmniMedVQA modality_type, option text)
    "PydicomCT": (MODALITY_CT, "CT"),
    "PydicomMR": (MODALITY_MR, "MRI"),
    "NibabelBrainMRI": (MODALITY_MR, "MRI"),
    "PydicomUltrasound": (MODALITY_US, "Ultrasound"),
    "SkimageFundus": (MODALITY_FUNDUS, "Fundus photography"),
    "SkimageMicroscopy": (MODALITY_MICRO, "Microscopy"),
}
MODALITY_OPTIONS = ("CT", "MRI", "Ultrasound", "Fundus photography", "Microscopy")
ANATOMY_OPTIONS = (
    "Brain",
    "Abdomen",
    "Chest",
    "Spine",
    "Heart",
    "Retina",
    "Cell",
    "Colon",
    "Lymph node",
    "Knee",
)
# Distractors that would be arguably correct (or too close) for a given answer.
ANATOMY_EXCLUDE = {
    "Spine": {"Abdomen", "Chest"},
    "Abdomen": {"Spine", "Colon"},
    "Heart": {"Chest"},
    "Cell": {"Colon"},
    "Colon": {"Cell", "Abdomen"},
    "Lymph node": {"Chest", "Abdomen"},
}
MODALITY_QUESTIONS = (
    "What imaging modality is used for this image?",
    "Which imaging modality was used to acquire this image?",
    "What is the modality of this image?",
)
ANATOMY_QUESTIONS = (
    "Which organ or region is shown in this image?",
    "What anatomical structure is shown in this image?",
)


def notice_text(images: Sequence[SampleImage], out_name: str = "omnimedvqa") -> str:
    """NOTICE.md: each source file's package, origin and licence, then every derived image."""
    lines = [
        "# Bundled sample data: provenance and licences",
        "",
        f"`{out_name}/` is a small OmniMedVQA-layout tree rebuilt by `python -m medvqa_data.build_sample`",
        "from real medical images that ship inside PyPI wheels (no download). Every image below was",
        "converted to PNG after windowing / frame or slice selection / cropping and resizing (longest",
        f"side at most {MAX_SIDE} px, small images upscaled to a {MIN_SIDE} px short side). The",
        "questions and options were written by this project (Modality Recognition and Anatomy",
        "Identification); they are not part of OmniMedVQA. The field names and `modality_type`",
        "strings follow OmniMedVQA's open-access release.",
        "",
        "The packages' own licences: pydicom (MIT, Copyright (c) 2008-2020 Darcy Mason and pydicom",
        "contributors), nibabel (MIT), scikit-image (BSD-3-Clause, Copyright 2009-2022 the",
        "scikit-image team). The individual data files carry the terms below, quoted from the",
        "installed packages (pydicom `data/test_files/README.txt`, nibabel `COPYING`, scikit-image",
        "`skimage.data` docstrings).",
        "",
        "## Source files",
        "",
        "| source file | package | content | origin and licence |",
        "|---|---|---|---|",
    ]
    used = list(dict.fromkeys(im.source for im in images))
    for key in used:
        src = SOURCES[key]
        lines.append(f"| `{key}` (`{src.file}`) | {src.package} | {src.description} | {src.licence} |")
    lines += [
        "",
        "## Derived images",
        "",
        "| image | source file | derivation | anatomy label |",
        "|---|---|---|---|",
    ]
    for im in images:
        rel = f"Images/{im.dataset}/{im.stem}.png"
        lines.append(
            f"| `{rel}` | `{im.source}` | {im.detail} | {im.anatomy or '(modality question only)'} |"
        )
    lines += [
        "",
        "## Inference examples",
        "",
        "Two unconverted files for the `python -m qlora_grpo.infer` examples (README, docs/inference.md):",
        "",
        "| file | copy of | licence |",
        "|---|---|---|",
        f"| `scan.dcm` | `CT_small.dcm`, byte for byte | {SOURCES['CT_small.dcm'].licence} |",
        f"| `scan.nii.gz` | `anatomical.nii`, gzip-compressed | {SOURCES['anatomical.nii'].licence} |",
    ]
    return "\n".join(lines) + "\n"


def build_sample(
    out: str | os.PathLike = DEFAULT_OUT, seed: int = 0, notice: str | os.PathLike | None = None
) -> dict:
    """Write the sample tree under ``out`` and return a summary (records per dataset and type).

    ``notice``: where to write NOTICE.md; default ``<out>/../NOTICE.md`` (for the committed
    tree: ``medvqa_data/sample/NOTICE.md``).
    """
    out = Path(out)
    rng = random.Random(seed)
    balancer = BalancedOptions(rng)
    images: list[SampleImage] = [im for build in IMAGE_BUILDERS for im in build()]
    for dataset in DATASET_MODALITY:  # drop stale files of our own datasets only
        shutil.rmtree(out / "Images" / dataset, ignore_errors=True)
        (out / "QA_information" / "Open-access" / f"{dataset}.json").unlink(missing_ok=True)

    records: dict[str, list[dict]] = {}
    summary: dict = {"records": 0, "images": len(images), "datasets": {}, "question_types": {}, "sources": []}
    for im in images:
        rel = f"Images/{im.dataset}/{im.stem}.png"
        save_png(im.image, out / rel)
        modality_type, modality_text = DATASET_MODALITY[im.dataset]
        questions = [
            (
                QT_MODALITY,
                rng.choice(MODALITY_QUESTIONS),
                modality_text,
                [m for m in MODALITY_OPTIONS if m != modality_text],
            )
        ]
        if im.anatomy is not None:
            excl = ANATOMY_EXCLUDE.get(im.anatomy, set())
            pool = [a for a in ANATOMY_OPTIONS if a != im.anatomy and a not in excl]
            questions.append((QT_ANATOMY, rng.choice(ANATOMY_QUESTIONS), im.anatomy, pool))
        recs = records.setdefault(im.dataset, [])
        for qtype, question, answer, pool in questions:
            k = rng.choice((2, 3, 4, 4))  # OmniMedVQA is mostly 4-option; keep some 2/3
            options = balancer.make(answer, pool, k)
            qid = f"{im.dataset}_{len(recs):04d}"
            recs.append(make_record(qid, im.dataset, qtype, question, answer, options, modality_type, rel))
            summary["question_types"][qtype] = summary["question_types"].get(qtype, 0) + 1
        if im.source not in summary["sources"]:
            summary["sources"].append(im.source)

    for dataset, recs in records.items():
        write_json(out / "QA_information" / "Open-access" / f"{dataset}.json", recs)
        summary["datasets"][dataset] = len(recs)
        summary["records"] += len(recs)
    notice_path = Path(notice) if notice is not None else out.parent / "NOTICE.md"
    notice_path.parent.mkdir(parents=True, exist_ok=True)
    notice_path.write_text(notice_text(images, out.name), encoding="utf-8")
    summary["notice"] = str(notice_path)
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="output root (OmniMedVQA layout)")
    parser.add_argument("--seed", type=int, default=0, help="seed for question phrasing and option order")
    parser.add_argument("--notice", default=None, help="where to write NOTICE.md (default: OUT/../NOTICE.md)")
    args = parser.parse_args(argv)
    try:
        summary = build_sample(args.out, args.seed, args.notice)
    except (ImportError, FileNotFoundError) as exc:
        print(f"error: {exc} (install numpy, pillow, pydicom, nibabel and scikit-image)", file=sys.stderr)
        return 1
    print(f"wrote {summary['records']} questions on {summary['images']} images to {args.out}")
    print(f"wrote {summary['notice']}")
    for dataset, n in summary["datasets"].items():
        print(f"  {dataset}: {n}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
