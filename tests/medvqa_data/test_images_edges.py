"""More images.py corner cases: DICOM windows, frames, colour and palette files, limits, resizing boundaries."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from medvqa_data.errors import ImageError
from medvqa_data.images import fit_pixels, load_image, smart_resize
from tests.medvqa_data.test_images import png_header_only, write_dicom


def red(path) -> list:
    """The red channel of the decoded image as nested lists (gray images have R = G = B)."""
    img = load_image(path)
    assert img.mode == "RGB"
    return np.asarray(img)[..., 0].tolist()


def edit_dicom(path, **elements):
    """Set elements of an existing DICOM file."""
    import pydicom

    ds = pydicom.dcmread(path)
    for key, value in elements.items():
        setattr(ds, key, value)
    ds.save_as(path)
    return path


# ----------------------------------------------------------------------------- DICOM grayscale windowing

STORED = np.array([[0, 1], [2, 3]], dtype=np.uint16)  # no rescale: the values are used as they are
MIN_MAX = [[0, 85], [170, 255]]


@pytest.mark.parametrize(
    ("window", "expected"),
    [
        ({"WindowCenter": 1}, MIN_MAX),  # a centre without a width: min/max
        ({"WindowCenter": 1, "WindowWidth": 0}, MIN_MAX),  # a zero width is no window: min/max
        ({"WindowCenter": 1.5, "WindowWidth": 1}, [[0, 0], [255, 255]]),  # width 1 is a real (hard) window
        ({"WindowCenter": 1, "WindowWidth": 0.5}, [[0, 128], [255, 255]]),  # [0.75, 1.25]: 1 is mid-grey
    ],
)
def test_dicom_window_needs_a_centre_and_a_positive_width(tmp_path, window, expected):
    path = write_dicom(tmp_path / "w.dcm", STORED, **window)
    assert red(path) == expected


def test_dicom_multi_valued_window_uses_the_first_pair(tmp_path):
    stored = np.array([[0, 1024], [1184, 4000]], dtype=np.uint16)  # HU -1024, 0, 160, 2976
    path = write_dicom(tmp_path / "ct.dcm", stored, RescaleSlope=1, RescaleIntercept=-1024,
                       WindowCenter=[40, 500], WindowWidth=[400, 2000])
    assert red(path) == [[0, round(160 / 400 * 255)], [round(320 / 400 * 255), 255]]  # window [-160, 240], not the 2nd


def test_float_pixel_dicom_is_windowed_in_double_precision(tmp_path):
    import pydicom

    path = write_dicom(tmp_path / "map.dcm", np.zeros((1, 3), dtype=np.uint8))
    ds = pydicom.dcmread(path)
    del ds.PixelData, ds.BitsStored, ds.HighBit, ds.PixelRepresentation
    ds.BitsAllocated = 32
    ds.FloatPixelData = np.array([[1e8, 1e8 + 8, 1e8 + 16]], dtype=np.float32).tobytes()
    ds.WindowCenter, ds.WindowWidth = 1e8 + 8, 20  # window [1e8 - 2, 1e8 + 18]: not a float32 number
    ds.save_as(path)
    assert pydicom.dcmread(path).pixel_array.dtype == np.float32
    assert red(path) == [[round(2 / 20 * 255), round(10 / 20 * 255), round(18 / 20 * 255)]]


# ----------------------------------------------------------------------------- DICOM frames and size


def test_dicom_with_two_frames_shows_the_second(tmp_path):
    frames = np.zeros((2, 2, 2), dtype=np.uint8)
    frames[0, 0, :] = 50  # frame 0: top row bright
    frames[1, :, 1] = 200  # frame 1 (the middle one: 2 // 2): right column bright
    path = write_dicom(tmp_path / "two.dcm", frames, NumberOfFrames=2)
    assert red(path) == [[0, 255], [0, 255]]


@pytest.mark.filterwarnings("ignore:A value of 'None' for .* 'Number of Frames' is invalid")
def test_dicom_with_an_empty_number_of_frames_is_a_single_frame(tmp_path):
    path = write_dicom(tmp_path / "nf.dcm", np.array([[0, 100], [255, 50]], dtype=np.uint8))
    edit_dicom(path, NumberOfFrames="")
    assert red(path) == [[0, 100], [255, 50]]


def test_dicom_pixel_limit_names_the_file_and_its_size(tmp_path, monkeypatch):
    import medvqa_data.images as images

    monkeypatch.setattr(images, "MAX_DECODE_PIXELS", 100)
    path = write_dicom(tmp_path / "wide.dcm", np.zeros((5, 25), dtype=np.uint8))  # 5 rows x 25 columns
    with pytest.raises(ImageError) as err:
        load_image(path)
    assert err.value.path == str(path)
    assert err.value.reason == "image is 25x5 = 125 pixels, over the 100-pixel limit (possible decompression bomb)"


def test_grayscale_dicom_three_columns_wide_is_not_taken_for_colour(tmp_path):
    path = write_dicom(tmp_path / "g3.dcm", np.array([[0, 51, 102], [153, 204, 255]], dtype=np.uint8))
    img = load_image(path)
    assert img.size == (3, 2)
    assert np.asarray(img).tolist() == [[[v, v, v] for v in row] for row in [[0, 51, 102], [153, 204, 255]]]


# ----------------------------------------------------------------------------- DICOM colour


def test_palette_dicom_maps_indices_through_its_8_bit_lut(tmp_path):
    path = write_dicom(tmp_path / "pal.dcm", np.array([[0, 1], [2, 1]], dtype=np.uint8))
    import pydicom

    ds = pydicom.dcmread(path)
    ds.PhotometricInterpretation = "PALETTE COLOR"
    luts = {"Red": [10, 200, 40, 0], "Green": [20, 30, 40, 0], "Blue": [50, 60, 70, 0]}
    for offset, values in enumerate(luts.values()):
        ds.add_new(0x00281101 + offset, "US", [len(values), 0, 8])  # descriptor: entries, first index, bits
        ds.add_new(0x00281201 + offset, "OW", bytes(values))  # one byte per entry
    ds.save_as(path)
    img = load_image(path)
    assert img.mode == "RGB" and img.size == (2, 2)
    assert np.asarray(img).tolist() == [[[10, 20, 50], [200, 30, 60]], [[40, 40, 70], [200, 30, 60]]]


def rgb_dicom(path, pixels: np.ndarray):
    """A colour (RGB) DICOM file holding `pixels` (h, w, 3) at their own bit depth."""
    import pydicom

    path = write_dicom(path, np.zeros((1, 2), dtype=np.uint8))
    ds = pydicom.dcmread(path)
    ds.set_pixel_data(pixels, photometric_interpretation="RGB", bits_stored=pixels.dtype.itemsize * 8)
    ds.save_as(path)
    return path


def test_8_bit_rgb_dicom_keeps_its_values(tmp_path):
    pixels = np.array([[[10, 20, 30], [100, 50, 0]]], dtype=np.uint8)
    path = rgb_dicom(tmp_path / "rgb.dcm", pixels)
    assert np.asarray(load_image(path)).tolist() == pixels.tolist()  # not stretched to 0..255


def test_16_bit_rgb_dicom_is_rescaled_by_min_max(tmp_path):
    path = rgb_dicom(tmp_path / "rgb16.dcm", np.array([[[0, 1000, 65535], [300, 300, 300]]], dtype=np.uint16))
    img = load_image(path)
    assert img.mode == "RGB" and img.size == (2, 1)
    scaled = [round(v * 255 / 65535) for v in (0, 1000, 65535, 300)]
    assert np.asarray(img).tolist() == [[scaled[:3], [scaled[3]] * 3]]


# ----------------------------------------------------------------------------- other formats


def test_4d_nifti_shows_the_first_volume_at_its_place(tmp_path):
    import nibabel as nib

    volume = np.zeros((4, 5, 3, 2), dtype=np.float32)
    volume[1, 2, 1, 0] = 100.0  # middle slice, first volume: x = 1, y = 2
    volume[3, 4, 1, 1] = 100.0  # middle slice, second volume: must not show up
    nib.save(nib.Nifti1Image(volume, np.eye(4)), tmp_path / "v4.nii")
    values = np.array(red(tmp_path / "v4.nii"))
    assert values.shape == (5, 4) and values.sum() == 255
    assert values[5 - 1 - 2, 1] == 255  # anterior (high y) is up: row 4 - y, column x


def test_float_image_with_extreme_values_does_not_overflow(tmp_path):
    Image.fromarray(np.array([[-3e38, 0.0, 3e38]], dtype=np.float32)).save(tmp_path / "huge.tif")
    assert red(tmp_path / "huge.tif") == [[0, 128, 255]]


def test_pillow_own_bomb_limit_names_the_file(tmp_path):
    path = png_header_only(tmp_path / "bomb.png", 20000, 20000)  # over Pillow's hard limit: refused by Image.open
    with pytest.raises(ImageError) as err:
        load_image(path)
    assert err.value.path == str(path)
    assert err.value.reason.startswith("decompression bomb refused by Pillow: ")


def test_unreadable_file_without_dicom_suffix_is_not_read_as_dicom(tmp_path):
    path = write_dicom(tmp_path / "scan", np.zeros((2, 2), dtype=np.uint8))  # DICM preamble, no suffix
    path.chmod(0)
    try:
        path.open("rb").close()
        pytest.skip("this user can read a mode-000 file (root)")
    except PermissionError:
        pass
    with pytest.raises(ImageError) as err:
        load_image(path)
    assert err.value.path == str(path)
    assert err.value.reason.startswith("cannot decode image ([Errno 13] Permission denied")


def test_half_transparent_premultiplied_image_is_composited_on_black():
    from medvqa_data.images import _pil_to_rgb  # how qlora_grpo.infer turns a caller's PIL image into RGB

    img = Image.new("RGBa", (2, 1))
    img.putpixel((0, 0), (100, 60, 20, 128))  # premultiplied: the colour (199, 119, 39) at half opacity
    img.putpixel((1, 0), (100, 60, 20, 255))
    out = _pil_to_rgb(img)
    assert out.mode == "RGB" and list(out.getdata()) == [(100, 60, 20), (100, 60, 20)]


# ----------------------------------------------------------------------------- resizing


def test_fit_pixels_error_names_the_file_the_image_came_from(tmp_path):
    Image.new("L", (1000, 2)).save(tmp_path / "wide.png")
    with Image.open(tmp_path / "wide.png") as img, pytest.raises(ImageError) as err:
        fit_pixels(img, 3136, 401408)
    assert err.value.path == str(tmp_path / "wide.png")
    assert err.value.reason.startswith("absolute aspect ratio must be smaller than 200")


def test_fit_pixels_fixed_side_resizes_bilinearly():
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8))
    out = fit_pixels(img, 3136, 401408, fixed_side=28)
    assert out.size == (28, 28)
    assert np.array_equal(np.asarray(out), np.asarray(img.resize((28, 28), Image.Resampling.BILINEAR)))
    assert not np.array_equal(np.asarray(out), np.asarray(img.resize((28, 28), Image.Resampling.BICUBIC)))


@pytest.mark.parametrize(
    ("args", "expected"),  # (height, width, min_pixels, max_pixels): rounded area exactly at a limit stays
    [
        ((50, 42, 3136, 401408), (56, 56)),  # 56 * 56 == min_pixels: no upscaling
        ((434, 882, 3136, 401408), (448, 896)),  # 448 * 896 == max_pixels: no downscaling
    ],
)
def test_smart_resize_area_exactly_at_the_limit(args, expected):
    assert smart_resize(*args[:2], 28, *args[2:]) == expected  # same as transformers' qwen2_vl smart_resize


def test_pixel_data_the_conversion_does_not_support_is_a_clear_image_error(tmp_path):
    import nibabel as nib

    from medvqa_data.images import check_image

    rgb = np.zeros((4, 4, 1), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])  # NIfTI datatype RGB24
    path = tmp_path / "colour.nii.gz"
    nib.save(nib.Nifti1Image(rgb, np.eye(4)), path)
    reason = check_image(path)  # an ImageError, not a crash of the whole prepare run
    assert reason.startswith("unsupported pixel data (TypeError: Cannot cast array data")
    with pytest.raises(ImageError) as err:
        load_image(path)
    assert err.value.path == str(path)
