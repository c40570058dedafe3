"""Image decoding and resizing: the only place in the project where images are touched.

`load_image` turns any supported file into an 8-bit RGB `PIL.Image.Image`:

- PNG, JPEG, TIFF, BMP, ... through Pillow, with EXIF orientation applied;
  grayscale, palette and CMYK are converted; 16-bit and 32-bit integer/float
  images are rescaled to 8-bit by their min/max; transparent images are
  composited on black.
- DICOM (``.dcm``, or any file with the ``DICM`` preamble) through pydicom:
  rescale slope/intercept, then the first window centre/width when present
  (else min/max) to 8-bit; MONOCHROME1 is inverted; multi-frame files give
  the middle frame; colour and palette-colour files are supported.
- NIfTI (``.nii``, ``.nii.gz``) through nibabel: reoriented to RAS, middle
  axial slice (first volume of 4D data), min/max to 8-bit.

Images larger than `MAX_DECODE_PIXELS` are refused before decoding
(decompression bombs). Every failure raises `ImageError(path, reason)`.

`fit_pixels` resizes with Qwen2-VL's ``smart_resize`` rule so that training
and evaluation feed the model identical pixels.
"""

from __future__ import annotations

import math
import os
import stat
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from medvqa_data.errors import ImageError

MAX_DECODE_PIXELS = 50_000_000
"""Images with more pixels than this are rejected as decompression bombs."""

MAX_ASPECT_RATIO = 200
"""Longer side / shorter side above this is refused (Qwen2-VL's `smart_resize` raises on it)."""

_DICOM_SUFFIXES = (".dcm", ".dicom")
_NIFTI_SUFFIXES = (".nii", ".nii.gz")


def _to_uint8(array: np.ndarray) -> np.ndarray:
    """Min/max-rescale any numeric array to uint8 (a constant array becomes 0)."""
    array = np.asarray(array, dtype=np.float64)
    array = np.nan_to_num(array, nan=0.0, posinf=0.0, neginf=0.0)
    low, high = float(array.min()), float(array.max())
    if high <= low:
        return np.zeros(array.shape, dtype=np.uint8)
    return np.round((array - low) * (255.0 / (high - low))).astype(np.uint8)


def _gray_to_rgb(array: np.ndarray) -> Image.Image:
    return Image.fromarray(array, mode="L").convert("RGB")


def _pil_to_rgb(img: Image.Image) -> Image.Image:
    """Convert a decoded Pillow image of any mode to 8-bit RGB."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I", "F") or mode.startswith("I;"):
        return _gray_to_rgb(_to_uint8(np.asarray(img)))
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa"):  # ("La" cannot come from a file, nor convert to RGBA)
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (0, 0, 0))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return img.convert("RGB")


def _check_size(path: object, width: int, height: int) -> None:
    if width * height > MAX_DECODE_PIXELS:
        raise ImageError(
            path,
            f"image is {width}x{height} = {width * height:,} pixels, over the {MAX_DECODE_PIXELS:,}-pixel "
            "limit (possible decompression bomb)",
        )


def _load_pil(path: Path) -> Image.Image:
    try:
        with Image.open(path) as img:
            _check_size(path, *img.size)
            img.load()
            img = ImageOps.exif_transpose(img)
            return _pil_to_rgb(img)
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError(path, f"decompression bomb refused by Pillow: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise ImageError(path, "unknown or unsupported image format") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(path, f"cannot decode image ({exc})") from exc


def _window_to_uint8(array: np.ndarray, center: float, width: float) -> np.ndarray:
    """Linear window [center - width/2, center + width/2] -> 0..255."""
    low = center - width / 2.0
    scaled = (np.asarray(array, dtype=np.float64) - low) / max(width, 1e-6)
    return np.round(np.clip(scaled, 0.0, 1.0) * 255.0).astype(np.uint8)


def _first(value: object) -> float:
    """First number of a possibly multi-valued DICOM element."""
    try:
        return float(value[0])  # type: ignore[index]
    except TypeError:
        return float(value)  # type: ignore[arg-type]


def _load_dicom(path: Path) -> Image.Image:
    import pydicom
    from pydicom.pixels import apply_color_lut, apply_modality_lut

    try:
        ds = pydicom.dcmread(str(path))
        array = ds.pixel_array
    except Exception as exc:  # pydicom raises many kinds (missing codec, bad header, ...)
        raise ImageError(path, f"cannot decode DICOM ({type(exc).__name__}: {exc})") from exc
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if frames > 1:
        array = array[frames // 2]
    _check_size(path, array.shape[1], array.shape[0])
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(array, ds)
        return Image.fromarray(_to_uint8(rgb) if rgb.dtype != np.uint8 else rgb, mode="RGB")
    if array.ndim == 3 and array.shape[-1] in (3, 4):  # colour (pydicom already converted YBR to RGB)
        rgb = array[..., :3]
        return Image.fromarray(rgb if rgb.dtype == np.uint8 else _to_uint8(rgb), mode="RGB")
    values = apply_modality_lut(array, ds)
    center, width = getattr(ds, "WindowCenter", None), getattr(ds, "WindowWidth", None)
    if center is not None and width is not None and _first(width) > 0:
        gray = _window_to_uint8(values, _first(center), _first(width))
    else:
        gray = _to_uint8(values)
    if photometric == "MONOCHROME1":
        gray = 255 - gray
    return _gray_to_rgb(gray)


def _load_nifti(path: Path) -> Image.Image:
    import nibabel as nib

    try:
        volume = nib.load(str(path))
        if len(volume.shape) >= 3:
            volume = nib.as_closest_canonical(volume)
        shape = volume.shape
        index = (slice(None), slice(None)) + ((shape[2] // 2,) if len(shape) >= 3 else ()) + (0,) * (len(shape) - 3)
        plane = np.asarray(volume.dataobj[index])
    except Exception as exc:  # nibabel raises many kinds
        raise ImageError(path, f"cannot decode NIfTI ({type(exc).__name__}: {exc})") from exc
    if plane.ndim != 2:
        raise ImageError(path, f"NIfTI slice has shape {plane.shape}, expected 2-D")
    _check_size(path, plane.shape[0], plane.shape[1])
    # Array axes are (x: left->right, y: posterior->anterior); rotate so anterior is up.
    return _gray_to_rgb(_to_uint8(np.rot90(plane)))


def _is_dicom(path: Path) -> bool:
    if path.name.lower().endswith(_DICOM_SUFFIXES):
        return True
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def load_image(path: str | os.PathLike) -> Image.Image:
    """Decode `path` into an 8-bit RGB image; raise `ImageError` with the reason on any failure."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ImageError(path, "file not found") from None
    except OSError as exc:
        raise ImageError(path, f"cannot read file ({exc})") from exc
    if not path.is_file():
        raise ImageError(path, "not a regular file")
    if size == 0:
        raise ImageError(path, "empty file (0 bytes)")
    try:
        if path.name.lower().endswith(_NIFTI_SUFFIXES):
            return _load_nifti(path)
        if _is_dicom(path):
            return _load_dicom(path)
    except (ValueError, TypeError) as exc:  # decoded, but pixel data the conversion does not support
        raise ImageError(path, f"unsupported pixel data ({type(exc).__name__}: {exc})") from exc
    return _load_pil(path)


def check_image(path: str | os.PathLike, decode: bool = True) -> str | None:
    """None when `path` is usable, else the reason. `decode=False` only checks it is a non-empty file."""
    if decode:
        try:
            img = load_image(path)
        except ImageError as exc:
            return exc.reason
        width, height = img.size
        if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
            return (f"aspect ratio {width}x{height} is over {MAX_ASPECT_RATIO}:1 (Qwen2-VL's resize refuses it; "
                    "crop or pad the image)")
        return None
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return "file not found"
    except OSError as exc:
        return f"cannot read file ({exc})"
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file"
    if info.st_size == 0:
        return "empty file (0 bytes)"
    return None


def smart_resize(
    height: int, width: int, factor: int = 28, min_pixels: int = 56 * 56, max_pixels: int = 14 * 14 * 4 * 1280
) -> tuple[int, int]:
    """Qwen2-VL's target (height, width): multiples of `factor`, area in [min_pixels, max_pixels].

    Same arithmetic as ``transformers.models.qwen2_vl.image_processing_qwen2_vl.smart_resize``
    (kept here so the data layer does not import transformers).
    """
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"absolute aspect ratio must be smaller than 200, got {max(height, width) / min(height, width)}")
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def fit_pixels(img: Image.Image, min_pixels: int, max_pixels: int, factor: int = 28,
               fixed_side: int | None = None) -> Image.Image:
    """Resize `img` to the size the model's processor would give it; unchanged if it already has that size.

    The numbers come from the model family (qlora_grpo.families, handed down as plain ints):
    `factor` = patch x merge pixels (Qwen2-VL/2.5-VL 28, Qwen3-VL 32) with the `smart_resize` rule
    (bicubic, as Qwen's processor); `fixed_side` = a square input (Gemma 3's SigLIP: 896) that the
    processor reaches by a bilinear resize ignoring the aspect ratio, so min/max_pixels do not apply.
    """
    width, height = img.size
    if fixed_side:
        if (width, height) == (fixed_side, fixed_side):
            return img
        return img.resize((fixed_side, fixed_side), Image.Resampling.BILINEAR)
    try:
        new_height, new_width = smart_resize(height, width, factor, min_pixels, max_pixels)
    except ValueError as exc:
        raise ImageError(getattr(img, "filename", "") or "<image>", str(exc)) from exc
    # A tiny image can round to 0 when min_pixels is 0; never produce an empty image.
    new_height, new_width = max(factor, new_height), max(factor, new_width)
    if (new_width, new_height) == (width, height):
        return img
    return img.resize((new_width, new_height), Image.Resampling.BICUBIC)
