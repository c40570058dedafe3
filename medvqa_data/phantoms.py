"""Synthetic medical "phantom" VQA task in the OmniMedVQA layout (a task a tiny model can learn).

Usage::

    python -m medvqa_data.phantoms --out DIR [--n 2000] [--seed 0] [--size 112]

or ``generate_phantoms(out, n, seed, size=112) -> dict``. Writes::

    DIR/Images/Phantom<Modality>/<index>.png
    DIR/QA_information/Open-access/Phantom<Modality>.json   (OmniMedVQA records, exact keys)
    DIR/phantom_manifest.json                                (counts, seed, size, mappings)

Five procedurally drawn "modalities", one OmniMedVQA dataset each (``modality_type`` uses
OmniMedVQA's verbatim strings):

=====================  =============================  ==============================================
dataset                modality_type                  look (lesion)
=====================  =============================  ==============================================
PhantomCT              CT(Computed Tomography)        grey ellipse body on black, fat rim, darker
                                                      kidneys/bowel, aorta, small bright spine dot
                                                      (lesion: bright hyperdense blob)
PhantomXRay            X-Ray                          light thorax, two dark lungs, ribs, spine
                                                      and heart shadow (lesion: white nodule)
PhantomFundus          Fundus Photography             orange-red disc on black, vignetting, bright
                                                      yellow optic disc, dark-red vessels
                                                      (lesion: dark haemorrhage blob)
PhantomMicroscopy      Microscopy Images              pink background with many small purple cells
                                                      (lesion: large brown DAB-like blob)
PhantomUltrasound      ultrasound                     grey speckle fan sector on black, echogenic
                                                      bands (lesion: anechoic black blob);
                                                      suggested held-out modality
=====================  =============================  ==============================================

Every image holds 1-3 lesions of radius 8-14 px (at 112 px; scaled with ``size``), each centred
well inside its own image quadrant (never on a midline), in a colour or intensity no anatomy of
that modality has. Each image gets one question of one of four kinds; the kind maps one-to-one
onto an OmniMedVQA ``question_type`` so that per-type metrics and the question-type
generalisation matrix work unchanged:

=============  ================================  =======================================  ===========
kind           question_type                     question                                 options
=============  ================================  =======================================  ===========
modality       Modality Recognition              "Which imaging modality is this?"        2-4 of 5
location       Anatomy Identification            "In which quadrant of the image is the    2-4 of 4
                                                 lesion located?" (exactly 1 lesion)
count          Lesion Grading                    "How many lesions are visible in this     2-3 of 1/2/3
                                                 image?" (lesion burden as a grade)
laterality     Other Biological Attributes       "On which side of the image is the        left/right
                                                 abnormality located?" (1-2 lesions,
                                                 all on that side)
=============  ================================  =======================================  ===========

Left/right and quadrants are the viewer's (image) sides, not the patient's. Question texts come
from a fixed list per kind, chosen independently of the answer, so they never leak it.

Balance: (modality, kind) pairs, the answer value of each kind and the correct letter (per
option count) are drawn from shuffled blocks, so no letter is right more often than chance.
Deterministic: a ``numpy.random.Generator`` seeded from ``seed`` plans the records and image i is
drawn with ``default_rng([seed, i])``; no global random state is used.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from medvqa_data.build_sample import (
    LETTERS,
    MODALITY_CT,
    MODALITY_FUNDUS,
    MODALITY_MICRO,
    MODALITY_US,
    MODALITY_XRAY,
    OPTION_KEYS,
    QT_ANATOMY,
    QT_GRADING,
    QT_MODALITY,
    QT_OTHER,
    BalancedOptions,
    make_record,
    write_json,
)

GENERATOR_VERSION = 1
MANIFEST_NAME = "phantom_manifest.json"
PNG_PARAMS = {"format": "PNG", "optimize": False, "compress_level": 1}

# dataset name -> (OmniMedVQA modality_type, option text)
MODALITIES: dict[str, tuple[str, str]] = {
    "PhantomCT": (MODALITY_CT, "CT"),
    "PhantomXRay": (MODALITY_XRAY, "X-ray"),
    "PhantomFundus": (MODALITY_FUNDUS, "Fundus photography"),
    "PhantomMicroscopy": (MODALITY_MICRO, "Microscopy"),
    "PhantomUltrasound": (MODALITY_US, "Ultrasound"),
}
HELD_OUT_SUGGESTION = "PhantomUltrasound"

KINDS: tuple[str, ...] = ("modality", "location", "count", "laterality")
QUESTION_TYPE_OF_KIND: dict[str, str] = {
    "modality": QT_MODALITY,
    "location": QT_ANATOMY,
    "count": QT_GRADING,
    "laterality": QT_OTHER,
}
KIND_OF_QUESTION_TYPE: dict[str, str] = {v: k for k, v in QUESTION_TYPE_OF_KIND.items()}
QUESTION_TEMPLATES: dict[str, tuple[str, ...]] = {
    "modality": ("Which imaging modality is this?", "What imaging modality was used to acquire this image?"),
    "location": (
        "In which quadrant of the image is the lesion located?",
        "Which quadrant of the image contains the lesion?",
    ),
    "count": (
        "How many lesions are visible in this image?",
        "How many distinct lesions does this image show?",
    ),
    "laterality": (
        "On which side of the image is the abnormality located?",
        "Which side of the image shows the abnormality?",
    ),
}
QUADRANTS: tuple[str, ...] = ("upper left", "upper right", "lower left", "lower right")
SIDES: tuple[str, ...] = ("left", "right")
COUNTS: tuple[str, ...] = ("1", "2", "3")

# Lesion geometry, as fractions of the image side (0.22 * 112 = 24.6 px from the midlines).
QUADRANT_OFFSET = 0.22
JITTER = 0.03
RADIUS_RANGE = (8.0 / 112.0, 14.0 / 112.0)


# --------------------------------------------------------------------------------------------
# drawing primitives (float RGB canvas in [0, 1], shape (S, S, 3))
# --------------------------------------------------------------------------------------------


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``(xx, yy)`` of a ``size`` x ``size`` image (cached, read-only)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + np.float32(0.5)
    xx.flags.writeable = False
    yy.flags.writeable = False
    return xx, yy


@lru_cache(maxsize=8)
def _fundus_maps(size: int) -> tuple[np.ndarray, np.ndarray, dict[int, np.ndarray]]:
    """Static fundus maps: eye mask, vignetting x eye, macula darkening per optic-disc side."""
    xx, yy = _grid(size)
    c, r_eye = size / 2.0, size * 0.47
    d = np.sqrt((xx - c) ** 2 + (yy - c) ** 2)
    eye = np.clip((r_eye - d) + 0.5, 0.0, 1.0)
    shade = eye * (1.0 - 0.35 * np.minimum((d / r_eye) ** 2, 1.0))
    mac = {}
    for side in (-1, 1):
        mx = c - side * size * 0.12
        mac[side] = (1.0 - 0.15 * np.exp(-((xx - mx) ** 2 + (yy - c) ** 2) / (2 * (size * 0.05) ** 2)))[
            ..., None
        ]
    return eye, shade[..., None], mac


@lru_cache(maxsize=8)
def _fan_maps(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Static ultrasound maps: normalised depth from the apex, sector mask, depth attenuation."""
    xx, yy = _grid(size)
    ax, ay = size / 2.0, -0.3 * size  # apex above the image: the sector edges show in the upper half
    rho = np.sqrt((xx - ax) ** 2 + (yy - ay) ** 2) / size
    theta = np.arctan2(xx - ax, yy - ay)
    half = np.deg2rad(38.0)
    fan = np.clip((half - np.abs(theta)) * rho * size + 0.5, 0, 1) * np.clip((rho - 0.32) * size + 0.5, 0, 1)
    echo = 1.15 - 0.4 * np.clip((rho - 0.32) / 1.0, 0, 1)  # depth attenuation
    return rho.astype(np.float32), fan.astype(np.float32), echo.astype(np.float32)


class _Canvas:
    """Float canvas in [0, 1] of shape (size, size, channels); channels 1 (grey) or 3 (RGB)."""

    def __init__(self, size: int, channels: int):
        self.size, self.channels = size, channels
        self.xx, self.yy = _grid(size)
        self.img = np.zeros((size, size, channels), dtype=np.float32)

    def _color(self, color) -> np.ndarray:
        col = np.asarray(color, dtype=np.float32)
        if col.ndim <= 1:
            col = col.reshape(-1)
            if self.channels == 1 and col.size == 3:
                col = col.mean(keepdims=True)
        return col

    def fill(self, color) -> None:
        self.img[:] = self._color(color)

    def paint(self, mask: np.ndarray, color, sl=(slice(None), slice(None))) -> None:
        """Alpha-blend ``color`` (grey value, RGB triple or (h, w, C) array) with ``mask`` into ``sl``."""
        m = mask[..., None]
        region = self.img[sl]
        region += m * (self._color(color) - region)

    def _bbox(self, cx, cy, rx, ry):
        s = self.size
        x0, x1 = max(0, int(cx - rx - 2)), min(s, int(np.ceil(cx + rx + 2)))
        y0, y1 = max(0, int(cy - ry - 2)), min(s, int(np.ceil(cy + ry + 2)))
        if x0 >= x1 or y0 >= y1:
            return None
        return (slice(y0, y1), slice(x0, x1))

    def ellipse_mask(self, cx, cy, ax, ay, angle: float = 0.0, sl=(slice(None), slice(None))) -> np.ndarray:
        """Antialiased filled ellipse (pixel units) over region ``sl`` (default: whole canvas)."""
        dx, dy = self.xx[sl] - cx, self.yy[sl] - cy
        if angle:
            c, s = np.cos(angle), np.sin(angle)
            dx, dy = c * dx + s * dy, -s * dx + c * dy
        d = np.sqrt((dx / ax) ** 2 + (dy / ay) ** 2)
        return np.clip((1.0 - d) * min(ax, ay) + 0.5, 0.0, 1.0)

    def ellipse(self, cx, cy, ax, ay, color, angle: float = 0.0) -> None:
        r = max(ax, ay)
        sl = self._bbox(cx, cy, r, r)
        if sl is not None:
            self.paint(self.ellipse_mask(cx, cy, ax, ay, angle, sl), color, sl)

    def blob(self, cx, cy, r, color, wobble: float = 0.0, phase: float = 0.0, lobes: int = 3) -> None:
        """Antialiased (slightly irregular) disc, drawn only inside its bounding box."""
        pad = r * (1.0 + wobble)
        sl = self._bbox(cx, cy, pad, pad)
        if sl is None:
            return
        dx, dy = self.xx[sl] - cx, self.yy[sl] - cy
        rr = r
        if wobble:
            rr = r * (1.0 + wobble * np.sin(lobes * np.arctan2(dy, dx) + phase))
        mask = np.clip(rr - np.sqrt(dx * dx + dy * dy) + 0.5, 0.0, 1.0)
        self.paint(mask, color, sl)


def _smooth(a: np.ndarray, passes: int = 1) -> np.ndarray:
    """Cheap separable 3x3 box blur (edge-replicated), applied ``passes`` times on a 2-D array."""
    for _ in range(passes):
        p = np.pad(a, 1, mode="edge")
        a = (p[:-2] + p[1:-1] + p[2:]) / 3.0
        a = (a[:, :-2] + a[:, 1:-1] + a[:, 2:]) / 3.0
    return a


def _disc_mask(size: int, discs: Sequence[tuple[float, float, float]], supersample: int = 2) -> np.ndarray:
    """Antialiased union of many discs ``(x, y, r)`` (pixel units), drawn with PIL at 2x and box-averaged."""
    k = supersample
    im = Image.new("L", (size * k, size * k), 0)
    draw = ImageDraw.Draw(im)
    for x, y, r in discs:
        draw.ellipse([(x - r) * k, (y - r) * k, (x + r) * k - 1, (y + r) * k - 1], fill=255)
    if k > 1:
        im = im.resize((size, size), Image.Resampling.BOX)
    return np.asarray(im, dtype=np.float32) * (1.0 / 255.0)


# --------------------------------------------------------------------------------------------
# modalities: draw anatomy, then lesions (render_phantom), then noise
# --------------------------------------------------------------------------------------------


def _draw_ct(cv: _Canvas, rng: np.random.Generator) -> None:
    s = cv.size
    c = s / 2.0
    cv.fill(0.02)
    ax, ay = s * rng.uniform(0.45, 0.48), s * rng.uniform(0.39, 0.42)
    cy = c + s * rng.uniform(-0.01, 0.01)
    cv.ellipse(c, cy, ax, ay, 0.30)  # subcutaneous fat
    tissue = rng.uniform(0.50, 0.56)
    cv.ellipse(c, cy, ax - s * 0.035, ay - s * 0.035, tissue)
    organ = tissue - rng.uniform(0.13, 0.17)
    for sx in (-1, 1):  # kidneys, beside the spine
        cv.ellipse(c + sx * s * 0.2, cy + s * 0.16, s * 0.055, s * 0.08, organ, sx * 0.4)
    cv.ellipse(c + s * rng.uniform(-0.04, 0.04), cy - s * 0.12, s * 0.1, s * 0.06, organ - 0.05)  # bowel
    cv.blob(c, cy + s * 0.07, s * 0.03, 0.68)  # aorta
    cv.blob(c, cy + s * 0.25, s * 0.045, 0.95)  # vertebral body: the bright spine dot


def _draw_xray(cv: _Canvas, rng: np.random.Generator) -> None:
    s = cv.size
    c = s / 2.0
    cv.fill(0.10)
    soft = rng.uniform(0.68, 0.76)
    thorax = cv.ellipse_mask(c, c + s * 0.1, s * 0.47, s * 0.62)
    cv.paint(thorax, soft)
    lung = rng.uniform(0.14, 0.2)
    for sx in (-1, 1):
        cv.ellipse(c + sx * s * 0.215, c, s * 0.185, s * 0.385, lung)
    # ribs: faint bright curved bands across the thorax
    phase = rng.uniform(0, 2 * np.pi)
    curve = 0.12 * ((cv.xx - c) / s) ** 2 * s
    ribs = 0.09 * (np.sin(2 * np.pi * (cv.yy - curve) / (s * 0.14) + phase) > 0.55)
    cv.img += (_smooth(ribs) * thorax)[..., None]
    cv.ellipse(c, c, s * 0.045, s * 0.6, soft + 0.1)  # spine / mediastinum
    cv.ellipse(c + s * 0.03, c + s * 0.19, s * 0.1, s * 0.085, soft + 0.04)  # heart


def _draw_fundus(cv: _Canvas, rng: np.random.Generator) -> None:
    s = cv.size
    c = s / 2.0
    eye, shade, macula = _fundus_maps(s)
    base = np.array([rng.uniform(0.82, 0.92), rng.uniform(0.33, 0.42), rng.uniform(0.1, 0.16)], np.float32)
    cv.img[:] = shade * base  # orange-red disc on black, darker towards the rim
    # optic disc on the horizontal midline (left or right, like left and right eyes)
    side = 1 if rng.random() < 0.5 else -1
    dx, dy = c + side * s * 0.1, c + s * rng.uniform(-0.02, 0.02)
    # vessels: curved lines radiating from the optic disc
    vmask = Image.new("L", (s, s), 0)
    draw = ImageDraw.Draw(vmask)
    t = np.linspace(0.0, 1.0, 12)
    for k in range(6):
        theta = (k / 6.0) * 2 * np.pi + rng.uniform(-0.3, 0.3)
        ang = theta + rng.uniform(-0.9, 0.9) * t
        rad = s * rng.uniform(0.3, 0.45) * t
        pts = list(zip((dx + rad * np.cos(ang)).tolist(), (dy + rad * np.sin(ang)).tolist()))
        draw.line(pts, fill=255, width=max(1, round(s / 80)))
    vm = np.asarray(vmask, dtype=np.float32) * (0.85 / 255.0) * eye
    cv.paint(vm, (0.55, 0.1, 0.05))
    cv.blob(dx, dy, s * 0.07, (1.0, 0.92, 0.62))  # optic disc
    cv.img *= macula[side]  # faint macula on the other side of the centre


def _draw_microscopy(cv: _Canvas, rng: np.random.Generator) -> None:
    s = cv.size
    bg = np.array([rng.uniform(0.93, 0.98), rng.uniform(0.78, 0.84), rng.uniform(0.85, 0.9)], np.float32)
    f1, f2 = rng.uniform(0.5, 1.5, size=2)
    wave = 0.03 * np.sin(2 * np.pi * (cv.xx / s * f1 + cv.yy / s * f2))
    cv.img[:] = bg + wave[..., None]
    n_cells = int(rng.integers(28, 42))
    xy = rng.uniform(0, s, size=(n_cells, 2))
    r = rng.uniform(2.5, 4.5, size=n_cells) * (s / 112.0)
    cyto = _disc_mask(s, [(x, y, 1.6 * ri) for (x, y), ri in zip(xy.tolist(), r.tolist())])
    cv.paint(cyto, (0.86, 0.62, 0.8))
    nuclei = _disc_mask(s, [(x, y, ri) for (x, y), ri in zip(xy.tolist(), r.tolist())])
    cv.paint(nuclei, (rng.uniform(0.38, 0.5), rng.uniform(0.2, 0.3), rng.uniform(0.55, 0.68)))


def _draw_ultrasound(cv: _Canvas, rng: np.random.Generator) -> None:
    s = cv.size
    rho, fan, echo = _fan_maps(s)
    h = (s + 1) // 2
    speckle = rng.rayleigh(0.32, size=(h, h)).astype(np.float32)
    speckle = _smooth(np.repeat(np.repeat(speckle, 2, axis=0), 2, axis=1)[:s, :s])
    for r0 in rng.uniform(0.45, 1.25, size=2):  # echogenic tissue interfaces (arcs)
        echo = echo + 0.35 * np.exp(-(((rho - r0) * s) ** 2) / (2 * (s * 0.012) ** 2))
    cv.img[..., 0] = np.clip(speckle * echo, 0, 1) * fan


# dataset -> (drawer, channels)
DRAWERS = {
    "PhantomCT": (_draw_ct, 1),
    "PhantomXRay": (_draw_xray, 1),
    "PhantomFundus": (_draw_fundus, 3),
    "PhantomMicroscopy": (_draw_microscopy, 3),
    "PhantomUltrasound": (_draw_ultrasound, 1),
}


def _lesion_color(dataset: str, rng: np.random.Generator) -> tuple[float, float, float]:
    j = rng.uniform(-0.03, 0.03)
    return {
        "PhantomCT": 0.96 + j,
        "PhantomXRay": 0.97 + j,
        "PhantomFundus": (0.2 + j, 0.03, 0.02),
        "PhantomMicroscopy": (0.45 + j, 0.25 + j, 0.07),
        "PhantomUltrasound": 0.03,
    }[dataset]


def quadrant_center(quadrant: str, size: int) -> tuple[float, float]:
    """Nominal (x, y) pixel centre of a lesion in ``quadrant`` (before jitter)."""
    c = size / 2.0
    sx = -1 if quadrant.endswith("left") else 1
    sy = -1 if quadrant.startswith("upper") else 1
    return c + sx * QUADRANT_OFFSET * size, c + sy * QUADRANT_OFFSET * size


def render_phantom(
    dataset: str, quadrants: Sequence[str], rng: np.random.Generator, size: int = 112, lesions: bool = True
) -> tuple[np.ndarray, list[dict]]:
    """Draw one phantom image: ``(uint8 array, lesion list)``.

    The array is (size, size) for grey modalities (CT, X-ray, ultrasound; saved as 8-bit grey
    PNG) and (size, size, 3) for colour ones (fundus, microscopy).

    ``quadrants``: one lesion per listed quadrant (distinct). ``lesions=False`` draws the same
    image (same random draws) without the lesions, for tests and visual checks.
    """
    drawer, channels = DRAWERS[dataset]
    cv = _Canvas(size, channels)
    drawer(cv, rng)
    info = []
    for q in quadrants:
        x, y = quadrant_center(q, size)
        x += rng.uniform(-JITTER, JITTER) * size
        y += rng.uniform(-JITTER, JITTER) * size
        r = rng.uniform(*RADIUS_RANGE) * size
        color = _lesion_color(dataset, rng)
        wobble, phase = rng.uniform(0.0, 0.12), rng.uniform(0, 2 * np.pi)
        if lesions:
            if dataset == "PhantomUltrasound":  # thin bright rim around the anechoic cyst
                cv.blob(x, y, r + max(1.0, size / 112.0), 0.85, wobble, phase)
            cv.blob(x, y, r, color, wobble, phase)
        info.append(
            {"quadrant": q, "x": round(float(x), 2), "y": round(float(y), 2), "r": round(float(r), 2)}
        )
    noise = rng.normal(0.0, 0.02, size=(size, size, 1)).astype(np.float32)
    img = np.clip(cv.img + noise, 0.0, 1.0)
    img = np.round(img * 255.0).astype(np.uint8)
    return (img[..., 0] if channels == 1 else img), info


# --------------------------------------------------------------------------------------------
# question planning
# --------------------------------------------------------------------------------------------


class _Blocks:
    """Draw values from shuffled blocks so that every value is used equally often."""

    def __init__(self, values: Sequence, rng: np.random.Generator):
        self.values, self.rng, self.block = list(values), rng, []

    def draw(self):
        if not self.block:
            self.block = [self.values[i] for i in self.rng.permutation(len(self.values))]
        return self.block.pop()


def _canonical(options: list[str], pool: Sequence[str]) -> list[str]:
    """The same options, listed in the pool's fixed order (upper left, upper right, ...; 1, 2, 3)."""
    order = {v: i for i, v in enumerate(pool)}
    return sorted(options, key=lambda o: order[o])


def _plan(n: int, seed: int, datasets: Sequence[str], option_order: str = "shuffled") -> list[dict]:
    rng = np.random.default_rng(seed)
    combos = _Blocks([(d, k) for d in datasets for k in KINDS], rng)
    answers = {
        "location": _Blocks(QUADRANTS, rng),
        "count": _Blocks(COUNTS, rng),
        "laterality": _Blocks(SIDES, rng),
    }
    options = BalancedOptions(rng)
    modality_texts = [MODALITIES[d][1] for d in MODALITIES]
    plan = []
    for i in range(n):
        dataset, kind = combos.draw()
        if kind == "modality":
            answer = MODALITIES[dataset][1]
            k = int(rng.integers(2, 5))
            pool = modality_texts
            n_lesions = int(rng.integers(1, 4))
            quads = [QUADRANTS[j] for j in sorted(rng.choice(4, n_lesions, replace=False))]
        elif kind == "location":
            answer = answers["location"].draw()
            k, pool, quads = int(rng.integers(2, 5)), QUADRANTS, [answer]
        elif kind == "count":
            answer = answers["count"].draw()
            k, pool = int(rng.integers(2, 4)), COUNTS
            quads = [QUADRANTS[j] for j in sorted(rng.choice(4, int(answer), replace=False))]
        else:  # laterality
            answer = answers["laterality"].draw()
            k, pool = 2, SIDES
            side = [q for q in QUADRANTS if q.endswith(answer)]
            quads = side if rng.random() < 0.5 else [side[int(rng.integers(0, 2))]]
        if option_order == "canonical":  # fixed option lists: as many options as the pool has (max 4)
            k = min(4, len(pool))
        question = QUESTION_TEMPLATES[kind][int(rng.integers(0, len(QUESTION_TEMPLATES[kind])))]
        plan.append(
            {
                "index": i,
                "dataset": dataset,
                "kind": kind,
                "question": question,
                "answer": answer,
                "options": (_canonical(options.make(answer, pool, k), pool) if option_order == "canonical"
                            else options.make(answer, pool, k)),
                "quadrants": quads,
            }
        )
    return plan


def _prepare_out(out: Path) -> None:
    """Create ``out``; clear a previous phantom set there; refuse to write into other data."""
    if out.exists() and any(out.iterdir()):
        if not (out / MANIFEST_NAME).is_file():
            raise FileExistsError(
                f"{out} is not empty and holds no {MANIFEST_NAME}; choose an empty or new --out directory"
            )
        for d in MODALITIES:
            shutil.rmtree(out / "Images" / d, ignore_errors=True)
            (out / "QA_information" / "Open-access" / f"{d}.json").unlink(missing_ok=True)
        (out / MANIFEST_NAME).unlink()
    out.mkdir(parents=True, exist_ok=True)


def generate_phantoms(
    out: str | os.PathLike, n: int, seed: int, size: int = 112, datasets: Sequence[str] | None = None,
    option_order: str = "shuffled",
) -> dict:
    """Generate ``n`` phantom images with one question each under ``out``; return the manifest.

    ``datasets``: subset of :data:`MODALITIES` keys (default: all five).
    ``option_order``: ``shuffled`` (2-4 options, correct letter drawn independently of the answer,
    as in OmniMedVQA) or ``canonical`` (fixed option lists in a fixed order: the four quadrants,
    1/2/3, left/right, four of the five modalities). Canonical keeps letters balanced (answers are
    uniform) and spares a tiny model the text lookup option -> letter: the CPU demo uses it.
    """
    if option_order not in ("shuffled", "canonical"):
        raise ValueError(f"option_order must be shuffled or canonical, got {option_order!r}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if size < 32:
        raise ValueError(f"size must be >= 32 px, got {size}")
    datasets = list(datasets or MODALITIES)
    unknown = [d for d in datasets if d not in MODALITIES]
    if unknown:
        raise ValueError(f"unknown phantom datasets {unknown}; choose from {list(MODALITIES)}")
    out = Path(out)
    _prepare_out(out)
    plan = _plan(n, seed, datasets, option_order)
    records: dict[str, list[dict]] = {d: [] for d in datasets}
    for d in datasets:
        (out / "Images" / d).mkdir(parents=True, exist_ok=True)
    for item in plan:
        i, dataset = item["index"], item["dataset"]
        img, _ = render_phantom(dataset, item["quadrants"], np.random.default_rng([seed, i]), size)
        rel = f"Images/{dataset}/{i:05d}.png"
        Image.fromarray(img).save(out / rel, **PNG_PARAMS)
        records[dataset].append(
            make_record(
                f"{dataset}_{i:05d}",
                dataset,
                QUESTION_TYPE_OF_KIND[item["kind"]],
                item["question"],
                item["answer"],
                item["options"],
                MODALITIES[dataset][0],
                rel,
            )
        )
    for dataset, recs in records.items():
        write_json(out / "QA_information" / "Open-access" / f"{dataset}.json", recs)
    manifest = _summary(plan, records, n=n, seed=seed, size=size)
    manifest["option_order"] = option_order
    (out / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def _summary(plan: list[dict], records: dict[str, list[dict]], *, n: int, seed: int, size: int) -> dict:
    letters: Counter = Counter()
    per_k: dict[str, Counter] = {}
    for recs in records.values():
        for r in recs:
            opts = [r[k] for k in OPTION_KEYS if k in r]
            letter = LETTERS[opts.index(r["gt_answer"])]
            letters[letter] += 1
            per_k.setdefault(str(len(opts)), Counter())[letter] += 1
    return {
        "generator": "medvqa_data.phantoms",
        "version": GENERATOR_VERSION,
        "seed": seed,
        "n": n,
        "size": size,
        "held_out_suggestion": HELD_OUT_SUGGESTION if HELD_OUT_SUGGESTION in records else None,
        "question_type_of_kind": dict(QUESTION_TYPE_OF_KIND),
        "datasets": {
            d: {
                "modality_type": MODALITIES[d][0],
                "option_text": MODALITIES[d][1],
                "n": len(recs),
                "question_types": dict(sorted(Counter(r["question_type"] for r in recs).items())),
                "file": f"QA_information/Open-access/{d}.json",
            }
            for d, recs in records.items()
        },
        "question_types": dict(sorted(Counter(QUESTION_TYPE_OF_KIND[p["kind"]] for p in plan).items())),
        "answers": {
            k: dict(sorted(Counter(p["answer"] for p in plan if p["kind"] == k).items())) for k in KINDS
        },
        "lesions_per_image": dict(sorted(Counter(str(len(p["quadrants"])) for p in plan).items())),
        "answer_letters": dict(sorted(letters.items())),
        "answer_letters_by_option_count": {k: dict(sorted(v.items())) for k, v in sorted(per_k.items())},
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Generate the synthetic phantom VQA set (OmniMedVQA layout)."
    )
    parser.add_argument(
        "--out", required=True, help="output directory (new, empty, or a previous phantom set)"
    )
    parser.add_argument("--n", type=int, default=2000, help="number of images = number of questions")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument(
        "--size", type=int, default=112, help="image side in px (112 = 4x4 Qwen2-VL merged tokens)"
    )
    parser.add_argument("--datasets", default=None, help=f"comma-separated subset of {','.join(MODALITIES)}")
    parser.add_argument("--option-order", default="shuffled", choices=("shuffled", "canonical"),
                        help="canonical: options in a fixed order (the CPU demo); shuffled: OmniMedVQA-like")
    args = parser.parse_args(argv)
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()] if args.datasets else None
    try:
        m = generate_phantoms(args.out, args.n, args.seed, args.size, datasets, args.option_order)
    except (ValueError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {m['n']} phantom questions (seed {m['seed']}, {m['size']} px) to {args.out}")
    for d, info in m["datasets"].items():
        print(f"  {d} ({info['modality_type']}): {info['n']}")
    print(f"  question types: {m['question_types']}")
    print(f"  manifest: {Path(args.out) / MANIFEST_NAME}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
