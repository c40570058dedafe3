"""The shared source helpers (`medvqa_data.sources.base`), the PathVQA reader and `read_source`, called in-process.

`test_sources.py` runs every adapter through `prepare`; here each helper gets small inputs and the exact
records, skip reasons and error texts it must produce.
"""

from __future__ import annotations

import hashlib
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from medvqa_data.errors import DataError, RowError
from medvqa_data.sources import SOURCES, pathvqa, read_source
from medvqa_data.sources.base import (
    ImageFinder,
    SourceOptions,
    SourceResult,
    extract_image,
    image_field,
    iter_table,
    read_json,
    read_qa_tables,
    relative,
    split_from_path,
    yes_no_type,
)
from tests.medvqa_data.test_sources import image, image_bytes

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 200
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 200
DICOM = b"\x00" * 128 + b"DICM" + b"\x00" * 50


def extracted(data: bytes, dataset: str, suffix: str) -> str:
    return f"images/_extracted/{dataset}/{hashlib.sha1(data).hexdigest()[:20]}{suffix}"


# --------------------------------------------------------------------------- read_source


def test_read_source_unknown_name_lists_every_source(tmp_path):
    with pytest.raises(DataError) as caught:
        read_source("path-vqa", tmp_path, SourceOptions())
    assert str(caught.value) == (
        "unknown source 'path-vqa'; choose one of: omnimedvqa, medr1, vqa-rad, slake, pathvqa, pmc-vqa, jsonl"
    )
    assert SOURCES == ("omnimedvqa", "medr1", "vqa-rad", "slake", "pathvqa", "pmc-vqa", "jsonl")


# --------------------------------------------------------------------------- extracted images


@pytest.mark.parametrize(("data", "suffix"), [
    (PNG, ".png"),
    (JPEG, ".jpg"),
    (DICOM, ".dcm"),
    (b"\x00" * 129 + b"DICM", ".img"),  # the DICOM magic one byte late
    (b"\x00" * 127 + b"DICM", ".img"),  # one byte early
    (b"\x00" * 128 + b"dicm", ".img"),
    (b"\x89png" + b"\x00" * 10, ".img"),
    (b"GIF89a" + b"\x00" * 10, ".img"),
])
def test_extract_image_names_the_file_by_content_hash_and_format(tmp_path, data, suffix):
    opts = SourceOptions(out_dir=tmp_path / "out")
    rel = extract_image(data, opts, "pathvqa")
    assert rel == extracted(data, "pathvqa", suffix)
    assert (tmp_path / "out" / rel).read_bytes() == data


def test_extract_image_writes_identical_bytes_once(tmp_path):
    opts = SourceOptions(out_dir=tmp_path / "out")
    rel = extract_image(PNG, opts, "vqa-rad")
    (tmp_path / "out" / rel).write_bytes(b"marker: not rewritten")
    assert extract_image(PNG, opts, "vqa-rad") == rel
    assert (tmp_path / "out" / rel).read_bytes() == b"marker: not rewritten"


def test_extract_image_without_output_directory_says_so():
    with pytest.raises(RowError) as caught:
        extract_image(PNG, SourceOptions(), "pathvqa")
    assert str(caught.value) == "image bytes embedded in the data file but no output directory to extract them to"


# --------------------------------------------------------------------------- image cells


def test_image_field_resolves_bytes_paths_and_names(tmp_path):
    root = tmp_path / "root"
    image(root / "images" / "a.png")
    finder = ImageFinder(root, ("images",))
    opts = SourceOptions(out_dir=tmp_path / "out")
    assert image_field({"bytes": PNG, "path": "a.png"}, opts, "ds", finder) == extracted(PNG, "ds", ".png")
    assert image_field({"bytes": None, "path": "a.png"}, opts, "ds", finder) == str(root / "images" / "a.png")
    assert image_field({"bytes": b"", "path": "a.png"}, opts, "ds", finder) == str(root / "images" / "a.png")
    assert image_field({"path": "a.png"}, opts, "ds", finder) == str(root / "images" / "a.png")
    assert image_field("a.png", opts, "ds", finder) == str(root / "images" / "a.png")
    assert image_field(7, opts, "ds", finder) == str(root / "images" / "7")  # a number is a file name too
    for empty in ({"bytes": None, "path": None}, {"bytes": None}, {}, "", None):
        with pytest.raises(RowError) as caught:
            image_field(empty, opts, "ds", finder)
        assert str(caught.value) == "no image"


# --------------------------------------------------------------------------- ImageFinder


def test_image_finder_prefers_subdirs_in_order_then_root(tmp_path):
    root = tmp_path / "root"
    for folder in ("images", "imgs", "."):
        image(root / folder / "both.png")
    image(root / "imgs" / "second.png")
    image(root / "only_root.png")
    finder = ImageFinder(root, ("images", "imgs"))
    assert finder.find("both.png") == str(root / "images" / "both.png")
    assert finder.find("second.png") == str(root / "imgs" / "second.png")
    assert finder.find("only_root.png") == str(root / "only_root.png")
    assert finder.find("imgs/second.png") == str(root / "imgs" / "second.png")


def test_image_finder_falls_back_to_the_file_name_anywhere_under_root(tmp_path):
    root = tmp_path / "root"
    image(root / "b" / "dup.png")
    image(root / "a" / "dup.png")  # the first in sorted order wins
    image(root / "deep" / "er" / "SCAN.PNG")  # upper-case suffix is still an image
    (root / "notes").mkdir()
    (root / "notes" / "readme.txt").write_text("not an image")
    (root / "folder.png").mkdir()  # a folder with an image-like name is not an image
    finder = ImageFinder(root, ("images",))
    assert finder.find("elsewhere/dup.png") == str(root / "a" / "dup.png")
    assert finder.find("SCAN.PNG") == str(root / "deep" / "er" / "SCAN.PNG")
    # not found: the most likely path (under the first base), for the image check to report
    assert finder.find("readme.txt") == str(root / "images" / "readme.txt")
    assert finder.find("folder.png") == str(root / "images" / "folder.png")
    assert finder.find("gone/missing.png") == str(root / "images" / "gone" / "missing.png")
    assert ImageFinder(root).find("missing.png") == str(root / "missing.png")


def test_image_finder_name_too_long_for_the_filesystem_is_not_found(tmp_path):
    root = tmp_path / "root"
    image(root / "x.png")
    name = "n" * 300 + ".png"
    assert ImageFinder(root).find(name) == str(root / name)


def test_image_finder_keeps_the_path_the_user_gave(tmp_path):
    real = tmp_path / "real"
    image(real / "sub" / "a.png")
    link = tmp_path / "link"
    link.symlink_to(real)
    finder = ImageFinder(link)
    assert finder.find("sub/a.png") == str(link / "sub" / "a.png")
    assert finder.find("a.png") == str(link / "sub" / "a.png")


# --------------------------------------------------------------------------- small helpers


def test_relative_inside_and_outside_root(tmp_path):
    assert relative(tmp_path / "a" / "b.json", tmp_path) == os.path.join("a", "b.json")
    assert relative(tmp_path / "a" / "b.json", tmp_path / "other") == str(tmp_path / "a" / "b.json")


@pytest.mark.parametrize(("rel", "split"), [
    ("data/test.jsonl", "test"),
    ("data/train-00000-of-00001.parquet", "train"),
    ("validation/part-1.csv", "validation"),  # the folder, when the file name says nothing
    ("dev/more/part.csv", "validation"),  # the nearest folder that names a split
    ("train/test.jsonl", "test"),  # the file name first
    ("test/val/records.jsonl", "validation"),  # then the nearest folder
    ("data/records.csv", None),
    ("records.jsonl", None),  # the root's own name ("train") does not count
])
def test_split_from_path(tmp_path, rel, split):
    root = tmp_path / "train"
    assert split_from_path(root / rel, root) == split


def test_split_from_path_drops_the_suffix_of_the_file_only(tmp_path):
    root = tmp_path / "root"
    assert split_from_path(root / "data" / "records.val", root) is None  # ".val" is the file's suffix
    assert split_from_path(root / "x.train" / "records.csv", root) == "train"  # a folder's whole name counts


@pytest.mark.parametrize(("answer", "kind"), [
    ("yes", "closed"), ("No", "closed"), (" YES ", "closed"), ("no.", "open"), ("yes, left", "open"),
    ("hepatocytes", "open"), ("", "open"),
])
def test_yes_no_type(answer, kind):
    assert yes_no_type(answer) == kind


# --------------------------------------------------------------------------- read_json / iter_table


def test_read_json_reports_the_position_of_a_syntax_error(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('[\n  {"a": 1,}\n]')
    with pytest.raises(RowError) as caught:
        read_json(path)
    assert str(caught.value) == "invalid JSON: Expecting property name enclosed in double quotes at line 2, column 11"


def test_read_json_reports_unreadable_files(tmp_path):
    missing = tmp_path / "missing.json"
    with pytest.raises(RowError) as caught:
        read_json(missing)
    assert str(caught.value) == f"cannot read file: [Errno 2] No such file or directory: '{missing}'"
    latin1 = tmp_path / "latin1.json"
    latin1.write_bytes('["caf\u00e9"]'.encode("latin-1"))
    with pytest.raises(RowError) as caught:
        read_json(latin1)
    assert str(caught.value) == (
        "cannot read file: 'utf-8' codec can't decode byte 0xe9 in position 5: invalid continuation byte"
    )


def test_iter_table_jsonl_skips_blank_lines_and_flags_bad_ones(tmp_path):
    path = tmp_path / "Data.JSONL"
    path.write_text('\ufeff{"a": 1}\n\n   \n{broken\n[2]\n{"a": 3}\n', encoding="utf-8")
    records = list(iter_table(path))
    assert records[0] == {"a": 1}
    assert isinstance(records[1], RowError)
    assert str(records[1]) == "invalid JSON: line 4: Expecting property name enclosed in double quotes"
    assert records[2:] == [[2], {"a": 3}]


def test_iter_table_json_csv_and_parquet(tmp_path):
    (tmp_path / "a.json").write_text('[{"a": 1}, {"a": 2}]')
    assert list(iter_table(tmp_path / "a.json")) == [{"a": 1}, {"a": 2}]
    (tmp_path / "b.csv").write_bytes(b'image,question,answer\r\nx.png,"Q, with comma?",yes\r\ny.png,"two\r\nlines",no\r\n')
    assert list(iter_table(tmp_path / "b.csv")) == [  # a line break inside quotes is kept as written
        {"image": "x.png", "question": "Q, with comma?", "answer": "yes"},
        {"image": "y.png", "question": "two\r\nlines", "answer": "no"},
    ]
    pq.write_table(pa.table({"n": list(range(600))}), tmp_path / "c.parquet")  # more than one batch
    assert list(iter_table(tmp_path / "c.parquet")) == [{"n": n} for n in range(600)]


def test_tables_are_read_as_utf8_whatever_the_locale(tmp_path, ascii_locale):
    (tmp_path / "a.json").write_text('[{"answer": "caf\u00e9"}]', encoding="utf-8")
    assert read_json(tmp_path / "a.json") == [{"answer": "caf\u00e9"}]
    assert list(iter_table(tmp_path / "a.json")) == [{"answer": "caf\u00e9"}]
    (tmp_path / "b.csv").write_text("answer\ncaf\u00e9\n", encoding="utf-8")
    assert list(iter_table(tmp_path / "b.csv")) == [{"answer": "caf\u00e9"}]
    (tmp_path / "c.jsonl").write_text('{"answer": "caf\u00e9"}\n', encoding="utf-8")
    assert list(iter_table(tmp_path / "c.jsonl")) == [{"answer": "caf\u00e9"}]


def test_iter_table_errors(tmp_path):
    (tmp_path / "obj.json").write_text('{"a": 1}')
    with pytest.raises(RowError, match=r"^expected a JSON list of records$"):
        list(iter_table(tmp_path / "obj.json"))
    (tmp_path / "table.tsv").write_text("a\tb\n")
    with pytest.raises(RowError) as caught:
        list(iter_table(tmp_path / "table.tsv"))
    assert str(caught.value) == "unsupported table format '.tsv'"
    (tmp_path / "open.csv").write_text('image,question,answer\nx.png,"unclosed,yes\n')
    with pytest.raises(Exception, match="unexpected end of data"):  # strict: not one merged row
        list(iter_table(tmp_path / "open.csv"))


# --------------------------------------------------------------------------- read_qa_tables / PathVQA


def build_qa_tables(base):
    """Hub-style PathVQA copies in every supported format, with a bad record of each kind."""
    root = base / "pathvqa"
    image(root / "images" / "p1.png")
    image(root / "slides" / "p2.png")
    (root / "data").mkdir()
    pq.write_table(pa.table({
        "image": [{"bytes": image_bytes((1, 2, 3)), "path": "ignored.png"}, {"bytes": None, "path": "p1.png"},
                  {"bytes": None, "path": None}],
        "question": ["Is this liver?", "What cells?", "No image?"],
        "answer": [" Yes ", "hepatocytes", "no"],
    }), root / "data" / "train-00000-of-00001.parquet")
    (root / "data" / "test.jsonl").write_text("\n".join([
        json.dumps({"image": "p2.png", "question": "Stained?", "answer": "no"}),
        "",
        "{broken",
        json.dumps(["not", "an", "object"]),
        json.dumps({"image": "p1.png", "question": "", "answer": ""}),
        json.dumps({"question": "Count?", "answer": 3, "image": "p1.png", "extra": True}),
        json.dumps({"image": "p1.png", "question": None}),
    ]) + "\n")
    (root / "val").mkdir()
    (root / "val" / "part.csv").write_text('image,question,answer\np1.png,Q1?,yes\np2.png,"Q2?,no\n')
    (root / "extra.csv").write_text("image,question,answer\nslides/p2.png,Unsplit?,maybe\n")
    (root / "readme.txt").write_text("ignored: not a table")
    return root


def row(id, image, question, answer, answer_type, split=None):
    record = {"id": id, "image": image, "question": question, "options": [], "answer": answer,
              "answer_letter": "", "answer_type": answer_type, "modality": "Microscopy", "question_type": "",
              "dataset": "PathVQA", "source": "pathvqa"}
    if split:
        record["_split"] = split
    return record


def test_pathvqa_reads_every_table_format_with_exact_rows_and_skips(tmp_path):
    root = build_qa_tables(tmp_path)
    out = tmp_path / "out"
    result = pathvqa.read(root, SourceOptions(out_dir=out))
    p1, p2 = str(root / "images" / "p1.png"), str(root / "slides" / "p2.png")
    embedded = extracted(image_bytes((1, 2, 3)), "pathvqa", ".png")
    assert result.rows == [
        row("data/test#0", p2, "Stained?", "no", "closed", "test"),
        row("data/test#4", p1, "Count?", "3", "open", "test"),
        row("data/train-00000-of-00001#0", embedded, "Is this liver?", "Yes", "closed", "train"),
        row("data/train-00000-of-00001#1", p1, "What cells?", "hepatocytes", "open", "train"),
        row("extra#0", p2, "Unsplit?", "maybe", "open"),
        row("val/part#0", p1, "Q1?", "yes", "closed", "validation"),
    ]
    assert (out / embedded).read_bytes() == image_bytes((1, 2, 3))
    assert result.skipped == [
        {"id": "data/test#1", "reason": "invalid JSON: line 3: Expecting property name enclosed in double quotes"},
        {"id": "data/test#2", "reason": "record is not a JSON object"},
        {"id": "data/test#3", "reason": "missing field(s): question, answer"},
        {"id": "data/test#5", "reason": "missing field(s): question, answer"},
        {"id": "data/train-00000-of-00001#2", "reason": "no image"},
        {"file": "val/part.csv", "reason": "unreadable after 1 record(s): Error: unexpected end of data"},
    ]
    assert result.default_split == "official" and result.official_axis is None
    assert result.filtered == {} and result.notes == []


def test_read_qa_tables_missing_image_and_unreadable_first_record(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "a.jsonl").write_text(json.dumps({"question": "Q?", "answer": "yes", "image": ""}) + "\n")
    (root / "b.json").write_text("ignored: .json is not a table suffix here")
    pq_path = root / "c.parquet"
    pq_path.write_bytes(b"PAR1 not really")
    result = SourceResult()
    read_qa_tables(root, SourceOptions(), result, dataset="D", source="s")
    assert result.rows == []
    assert result.skipped[0] == {"id": "a#0", "reason": "missing field(s): image"}
    assert [entry.get("file") for entry in result.skipped] == [None, "c.parquet"]
    assert result.skipped[1]["reason"].startswith("unreadable after 0 record(s): ArrowInvalid: ")


def test_read_qa_tables_embedded_bytes_without_output_directory_skip_the_row(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    pq.write_table(pa.table({"image": [{"bytes": PNG, "path": None}], "question": ["Q?"], "answer": ["no"]}),
                   root / "test.parquet")
    result = SourceResult()
    read_qa_tables(root, SourceOptions(), result, dataset="D", source="s")
    assert result.rows == []
    assert result.skipped == [{"id": "test#0", "reason": (
        "image bytes embedded in the data file but no output directory to extract them to")}]


def test_read_qa_tables_looks_in_images_then_imgs_then_by_name_and_keeps_the_modality_empty(tmp_path):
    root = tmp_path / "root"
    for folder in ("images", "imgs", "a"):
        image(root / folder / "both.png")
    for folder in ("imgs", "a"):
        image(root / folder / "imgs_only.png")
    image(root / "a" / "elsewhere.png")
    lines = [{"image": name, "question": f"{name}?", "answer": "no"}
             for name in ("both.png", "imgs_only.png", "elsewhere.png", "missing.png")]
    (root / "test.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    result = SourceResult()
    read_qa_tables(root, SourceOptions(), result, dataset="D", source="s")
    assert [(row["image"], row["modality"]) for row in result.rows] == [
        (str(root / "images" / "both.png"), ""),
        (str(root / "imgs" / "imgs_only.png"), ""),
        (str(root / "a" / "elsewhere.png"), ""),
        (str(root / "images" / "missing.png"), ""),  # not found: the image check reports this path
    ]
    assert {(row["dataset"], row["source"], row["_split"]) for row in result.rows} == {("D", "s", "test")}


def test_read_qa_tables_without_data_files_names_the_formats(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "records.json").write_text("[]")
    (tmp_path / "folder.csv").mkdir()  # a folder with a table-like name is not a data file
    with pytest.raises(DataError) as caught:
        read_source("pathvqa", tmp_path, SourceOptions())
    assert str(caught.value) == (
        f"no data files (.parquet, .jsonl, .csv) with image, question, answer columns under {tmp_path}"
    )
