"""images.py on generated files of every kind: modes, EXIF, DICOM, NIfTI, broken files, bombs, resizing."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medvqa_data.errors import DataError, ImageError
from medvqa_data.images import check_image, fit_pixels, load_image, smart_resize


def rgb(path: Path) -> Image.Image:
    img = load_image(path)
    assert img.mode == "RGB"
    return img


def test_grayscale_and_1x1(tmp_path):
    Image.new("L", (3, 2), 77).save(tmp_path / "g.png")
    Image.new("RGB", (1, 1), (1, 2, 3)).save(tmp_path / "one.png")
    assert rgb(tmp_path / "g.png").getpixel((0, 0)) == (77, 77, 77)
    one = rgb(tmp_path / "one.png")
    assert one.size == (1, 1) and one.getpixel((0, 0)) == (1, 2, 3)


def test_16bit_png_is_rescaled_by_min_max(tmp_path):
    array = np.array([[0, 1000], [30000, 65535]], dtype=np.uint16)
    Image.fromarray(array).save(tmp_path / "d16.png")
    img = rgb(tmp_path / "d16.png")
    assert img.getpixel((0, 0)) == (0, 0, 0) and img.getpixel((1, 1)) == (255, 255, 255)
    assert img.getpixel((1, 0))[0] == round(1000 * 255 / 65535)


def test_float_tiff(tmp_path):
    Image.fromarray(np.array([[-1.5, 0.0], [0.5, 2.5]], dtype=np.float32)).save(tmp_path / "f.tif")
    img = rgb(tmp_path / "f.tif")
    assert img.getpixel((0, 0)) == (0, 0, 0) and img.getpixel((1, 1)) == (255, 255, 255)


def test_palette_with_and_without_transparency(tmp_path):
    Image.new("RGB", (4, 4), (200, 10, 10)).convert("P", palette=Image.Palette.ADAPTIVE).save(tmp_path / "p.png")
    assert rgb(tmp_path / "p.png").getpixel((0, 0)) == (200, 10, 10)
    pal = Image.new("P", (2, 1))
    pal.putpalette([255, 255, 255, 0, 255, 0] + [0] * 762)
    pal.putpixel((0, 0), 0)
    pal.putpixel((1, 0), 1)
    pal.save(tmp_path / "pt.png", transparency=0)
    img = rgb(tmp_path / "pt.png")
    assert img.getpixel((0, 0)) == (0, 0, 0) and img.getpixel((1, 0)) == (0, 255, 0)


def test_rgba_and_la_are_composited_on_black(tmp_path):
    rgba = Image.new("RGBA", (2, 1))
    rgba.putpixel((0, 0), (255, 0, 0, 255))
    rgba.putpixel((1, 0), (0, 255, 0, 0))
    rgba.save(tmp_path / "a.png")
    img = rgb(tmp_path / "a.png")
    assert img.getpixel((0, 0)) == (255, 0, 0) and img.getpixel((1, 0)) == (0, 0, 0)
    Image.new("LA", (2, 2), (100, 0)).save(tmp_path / "la.png")
    assert rgb(tmp_path / "la.png").getpixel((0, 0)) == (0, 0, 0)


def test_cmyk_jpeg(tmp_path):
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "c.jpg")
    red, green, blue = rgb(tmp_path / "c.jpg").getpixel((4, 4))
    assert red > 200 and green < 60 and blue < 60


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (20, 10), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    img.save(tmp_path / "r.jpg", exif=exif)
    assert rgb(tmp_path / "r.jpg").size == (10, 20)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (None, "file not found"),
        (b"", "empty file (0 bytes)"),
        (b"hello, I am not an image", "unknown or unsupported image format"),
    ],
)
def test_unusable_files(tmp_path, content, reason):
    path = tmp_path / "x.png"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ImageError) as info:
        load_image(path)
    assert info.value.reason == reason and info.value.path == str(path)
    assert isinstance(info.value, DataError)
    assert check_image(path) == reason


def test_truncated_png(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="cannot decode image"):
        load_image(tmp_path / "cut.png")
    assert check_image(tmp_path / "cut.png", decode=False) is None  # existence-only check passes
    assert check_image(tmp_path / "cut.png") is not None


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A tiny PNG whose header declares a huge size (a decompression bomb)."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("side", [8000, 20000])  # over our 50M cap; over Pillow's own hard limit
def test_decompression_bomb_is_refused(tmp_path, side):
    path = png_header_only(tmp_path / "bomb.png", side, side)
    assert path.stat().st_size < 200
    with pytest.raises(ImageError, match="decompression bomb"):
        load_image(path)


def write_dicom(path: Path, array: np.ndarray, **elements) -> Path:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.set_pixel_data(array, photometric_interpretation="MONOCHROME2", bits_stored=array.dtype.itemsize * 8)
    for key, value in elements.items():
        setattr(ds, key, value)
    ds.save_as(path, enforce_file_format=True)
    return path


def test_dicom_rescale_and_window(tmp_path):
    stored = np.array([[0, 1024], [1184, 4000]], dtype=np.uint16)  # HU -1024, 0, 160, 2976
    path = write_dicom(tmp_path / "ct.dcm", stored, RescaleSlope=1, RescaleIntercept=-1024,
                       WindowCenter=40, WindowWidth=400)
    img = rgb(path)
    assert img.getpixel((0, 0))[0] == 0  # below the window
    assert img.getpixel((1, 0))[0] == round((0 + 160) / 400 * 255)
    assert img.getpixel((1, 1))[0] == 255  # above the window


def test_dicom_without_window_uses_min_max_and_middle_frame(tmp_path):
    frames = np.zeros((3, 2, 2), dtype=np.uint8)
    frames[1, :, 1] = 200  # only the middle frame has contrast
    path = write_dicom(tmp_path / "multi", frames, NumberOfFrames=3)  # no suffix: found by the DICM preamble
    img = rgb(path)
    assert img.getpixel((0, 0)) == (0, 0, 0) and img.getpixel((1, 0)) == (255, 255, 255)


def test_dicom_monochrome1_is_inverted(tmp_path):
    path = write_dicom(tmp_path / "cr.dcm", np.array([[0, 255]], dtype=np.uint8))
    import pydicom

    ds = pydicom.dcmread(path)
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.save_as(path)
    img = rgb(path)
    assert img.getpixel((0, 0)) == (255, 255, 255) and img.getpixel((1, 0)) == (0, 0, 0)


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "examples_ybr_color.dcm", "examples_palette.dcm"])
def test_bundled_dicom_files(name):
    from pydicom.data import get_testdata_file

    img = rgb(get_testdata_file(name, download=False))
    assert min(img.size) > 1 and img.getextrema()[0][1] > 0


def test_nifti_middle_axial_slice(tmp_path):
    import nibabel as nib

    volume = np.zeros((4, 5, 7), dtype=np.float32)
    volume[1, 2, 3] = 100.0  # the middle slice (z = 3) has two marks
    volume[0, 0, 3] = 40.0
    volume[3, 4, 0] = 900.0  # another slice: must not show up
    for name in ("v.nii", "v.nii.gz"):
        nib.save(nib.Nifti1Image(volume, np.eye(4)), tmp_path / name)
        img = rgb(tmp_path / name)
        values = np.asarray(img)[..., 0]
        assert img.size == (4, 5)
        assert sorted(np.unique(values).tolist()) == [0, 102, 255]


def test_bundled_4d_nifti():
    import os

    import nibabel

    path = os.path.join(os.path.dirname(nibabel.__file__), "tests", "data", "example4d.nii.gz")
    assert rgb(path).size == (128, 96)


def test_broken_nifti(tmp_path):
    (tmp_path / "bad.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(ImageError, match="cannot decode NIfTI"):
        load_image(tmp_path / "bad.nii.gz")


# (height, width, min_pixels, max_pixels) -> transformers 5.17 qwen2_vl smart_resize (factor 28)
SMART_RESIZE_CASES = [
    ((1, 1, 3136, 401408), (56, 56)),
    ((28, 28, 3136, 401408), (56, 56)),
    ((56, 56, 3136, 401408), (56, 56)),
    ((384, 384, 3136, 401408), (392, 392)),
    ((512, 512, 3136, 401408), (504, 504)),
    ((1080, 1920, 3136, 401408), (448, 840)),
    ((2000, 300, 3136, 401408), (1624, 224)),
    ((100, 4000, 3136, 401408), (84, 4004)),
    ((224, 224, 3136, 12845056), (224, 224)),
    ((4096, 4096, 3136, 12845056), (3584, 3584)),
    ((30, 1000, 3136, 401408), (28, 1008)),
    ((640, 480, 3136, 200704), (504, 364)),
]


@pytest.mark.parametrize(("args", "expected"), SMART_RESIZE_CASES)
def test_smart_resize_matches_transformers(args, expected):
    height, width, low, high = args
    assert smart_resize(height, width, 28, low, high) == expected
    resized = fit_pixels(Image.new("RGB", (width, height)), low, high)
    assert resized.size == (expected[1], expected[0])


def test_fit_pixels_returns_conforming_image_unchanged():
    img = Image.new("RGB", (56, 84))
    assert fit_pixels(img, 3136, 401408) is img


def test_fit_pixels_rejects_extreme_aspect_ratio():
    with pytest.raises(ImageError, match="aspect ratio"):
        fit_pixels(Image.new("RGB", (1000, 2)), 3136, 401408)


@pytest.mark.slow
def test_smart_resize_against_transformers_random_sizes():
    qwen = pytest.importorskip("transformers.models.qwen2_vl.image_processing_qwen2_vl")
    rng = np.random.default_rng(0)
    for _ in range(2000):
        height, width = (int(v) for v in rng.integers(1, 4000, 2))
        if max(height, width) / min(height, width) > 200:
            continue
        assert smart_resize(height, width, 28, 3136, 401408) == qwen.smart_resize(height, width, 28, 3136, 401408)


# ----------------------------------------------------------------------------- edges found by mutation testing


def test_check_without_decoding_names_each_problem(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "one.png").write_bytes(b"x")
    (tmp_path / "dir.png").mkdir()
    assert check_image(tmp_path / "missing.png", decode=False) == "file not found"
    assert check_image(tmp_path / "dir.png", decode=False) == "not a regular file"
    assert check_image(tmp_path / "empty.png", decode=False) == "empty file (0 bytes)"
    assert check_image(tmp_path / "one.png", decode=False) is None  # not decoded: any non-empty file
    with pytest.raises(ImageError) as err:
        load_image(tmp_path / "dir.png")
    assert (err.value.path, err.value.reason) == (str(tmp_path / "dir.png"), "not a regular file")


def test_aspect_ratio_limit_is_200_to_1(tmp_path):
    Image.new("L", (200, 1)).save(tmp_path / "ok.png")
    Image.new("L", (1, 201)).save(tmp_path / "thin.png")
    assert check_image(tmp_path / "ok.png") is None
    assert check_image(tmp_path / "thin.png") == ("aspect ratio 1x201 is over 200:1 (Qwen2-VL's resize refuses it; "
                                                  "crop or pad the image)")


def test_pixel_limit_message_and_boundary(tmp_path, monkeypatch):
    import medvqa_data.images as images

    monkeypatch.setattr(images, "MAX_DECODE_PIXELS", 100)
    Image.new("L", (10, 10)).save(tmp_path / "ok.png")
    Image.new("L", (25, 5)).save(tmp_path / "big.png")
    assert check_image(tmp_path / "ok.png") is None
    with pytest.raises(ImageError) as err:
        load_image(tmp_path / "big.png")
    assert err.value.path == str(tmp_path / "big.png")
    assert err.value.reason == "image is 25x5 = 125 pixels, over the 100-pixel limit (possible decompression bomb)"
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.ones((25, 5, 3), dtype=np.float32), np.eye(4)), tmp_path / "big.nii")
    with pytest.raises(ImageError) as err:
        load_image(tmp_path / "big.nii")
    assert err.value.path == str(tmp_path / "big.nii")
    assert err.value.reason == "image is 25x5 = 125 pixels, over the 100-pixel limit (possible decompression bomb)"


def test_non_finite_pixels_count_as_zero_and_a_constant_image_is_black(tmp_path):
    array = np.array([[np.nan, np.inf, -np.inf], [1.0, 2.0, 4.0]], dtype=np.float32)
    Image.fromarray(array).save(tmp_path / "f.tif")
    values = np.asarray(rgb(tmp_path / "f.tif"))[..., 0]
    assert values.tolist() == [[0, 0, 0], [64, 128, 255]]  # min 0 (the non-finite ones), max 4
    Image.fromarray(np.full((2, 3), 7, dtype=np.int32)).save(tmp_path / "const.tif")  # mode I
    assert Image.open(tmp_path / "const.tif").mode == "I"
    assert np.asarray(rgb(tmp_path / "const.tif")).max() == 0
    Image.fromarray(np.array([[5, 10], [15, 25]], dtype=np.int32)).save(tmp_path / "i.tif")
    assert np.asarray(rgb(tmp_path / "i.tif"))[..., 0].tolist() == [[0, 64], [128, 255]]


def test_gray_with_a_transparent_value_stays_gray(tmp_path):
    Image.new("L", (2, 1), 10).save(tmp_path / "t.png", transparency=10)
    assert Image.open(tmp_path / "t.png").info.get("transparency") == 10
    assert rgb(tmp_path / "t.png").getpixel((0, 0)) == (10, 10, 10)  # only palettes honour transparency


@pytest.mark.parametrize("mode", ["LA", "PA", "RGBa"])
def test_every_alpha_mode_is_composited_on_black(mode):
    from medvqa_data.images import _pil_to_rgb

    img = Image.new("RGBA", (2, 1))
    img.putpixel((0, 0), (200, 200, 200, 255))
    img.putpixel((1, 0), (200, 200, 200, 0))
    out = _pil_to_rgb(img.convert(mode) if mode != "PA" else img.convert("P").convert("PA"))
    assert out.mode == "RGB" and out.getpixel((1, 0)) == (0, 0, 0) and out.getpixel((0, 0))[0] > 0


def test_4d_nifti_takes_the_first_volume(tmp_path):
    import nibabel as nib

    volume = np.zeros((4, 5, 3, 2), dtype=np.float32)
    volume[1, 2, 1, 0] = 100.0  # middle slice, first volume
    volume[3, 4, 1, 1] = 50.0  # middle slice, second volume: must not show up
    nib.save(nib.Nifti1Image(volume, np.eye(4)), tmp_path / "v4.nii")
    values = np.asarray(rgb(tmp_path / "v4.nii"))[..., 0]
    assert values.sum() == 255 and values.shape == (5, 4)
    nib.save(nib.Nifti1Image(np.arange(20, dtype=np.float32).reshape(4, 5), np.eye(4)), tmp_path / "flat.nii")
    assert rgb(tmp_path / "flat.nii").size == (4, 5)  # a 2-D NIfTI is its own slice


def test_every_decoder_error_names_the_file_and_the_reason(tmp_path):
    Image.new("RGB", (64, 64), (9, 9, 9)).save(tmp_path / "full.png")
    cut = (tmp_path / "full.png").read_bytes()[:60]
    cases = {"bad.nii": "cannot decode NIfTI (", "bad.dcm": "cannot decode DICOM (", "bad.png": "cannot decode image (",
             "bad.bin": "unknown or unsupported image format"}
    for name, prefix in cases.items():
        (tmp_path / name).write_bytes(cut if name == "bad.png" else b"\x00garbage, not an image at all" * 20)
        with pytest.raises(ImageError) as err:
            load_image(tmp_path / name)
        assert err.value.path == str(tmp_path / name) and err.value.reason.startswith(prefix), name
        assert "NoneType" not in err.value.reason
    long_name = tmp_path / ("x" * 300 + ".png")  # stat fails with ENAMETOOLONG, not FileNotFoundError
    with pytest.raises(ImageError) as err:
        load_image(long_name)
    assert err.value.path == str(long_name) and err.value.reason.startswith("cannot read file ([Errno 36]")


def test_nifti_is_turned_to_the_canonical_orientation(tmp_path):
    import nibabel as nib

    volume = np.zeros((4, 5, 3), dtype=np.float32)
    volume[0, 1, 1] = 100.0
    nib.save(nib.Nifti1Image(volume, np.eye(4)), tmp_path / "ras.nii")
    nib.save(nib.Nifti1Image(volume, np.diag([-1.0, 1.0, 1.0, 1.0])), tmp_path / "las.nii")  # x runs right->left
    ras, las = np.asarray(rgb(tmp_path / "ras.nii")), np.asarray(rgb(tmp_path / "las.nii"))
    assert ras.max() == 255 and np.array_equal(las, ras[:, ::-1])


def test_smart_resize_defaults_and_aspect_limit():
    assert smart_resize(100, 100) == (112, 112)  # factor 28 by default
    assert smart_resize(28, 5600, min_pixels=0) == (28, 5600)  # 200:1 is allowed
    with pytest.raises(ValueError, match=r"^absolute aspect ratio must be smaller than 200, got 201\.0$"):
        smart_resize(28, 5628)
    img = Image.new("RGB", (90, 60))
    fixed = fit_pixels(img, 3136, 401408, fixed_side=56)
    assert fixed.size == (56, 56) and fit_pixels(fixed, 0, 0, fixed_side=56) is fixed
    assert fit_pixels(img, 3136, 401408).size == (84, 56)
    with pytest.raises(ImageError) as err:
        fit_pixels(Image.new("RGB", (1000, 2)), 3136, 401408)
    assert err.value.path == "<image>"
