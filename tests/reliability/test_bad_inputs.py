"""The bad-input corpus (tests/data/make_bad_corpus.py) through `python -m medvqa_data.prepare`:
every bad record or file is skipped with a reason that names it, the rest is processed, the user's
files are untouched, and what is kept loads for training. Plus hypothesis fuzzing of the source
readers (random JSON/CSV/JSONL) and of the answer parser."""

from __future__ import annotations

import hashlib
import json
import os
import string
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medvqa_data.errors import DataError
from tests.conftest import ROOT, run_cli

sys.path.insert(0, str(ROOT / "tests" / "data"))
import make_bad_corpus  # noqa: E402

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                      HealthCheck.function_scoped_fixture])


def tree_digest(root: Path) -> dict[str, str]:
    """{relative path: sha256 of the content, or 'dir' + mode} for every entry under root."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames):
            p = Path(dirpath, name)
            out[str(p.relative_to(root))] = f"dir {p.stat().st_mode:o}"
        for name in sorted(filenames):
            p = Path(dirpath, name)
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest() + f" {p.stat().st_mode:o}"
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad") / "bad"
    return root, make_bad_corpus.build(root)


@pytest.mark.parametrize("layout", list(make_bad_corpus.LAYOUTS))
def test_each_bad_input_is_named_and_the_rest_processed(corpus, tmp_path, layout):
    import datasets

    root, expected = corpus
    exp = expected[layout]
    before = tree_digest(root)
    out = tmp_path / "out"
    proc = run_cli(["-m", "medvqa_data.prepare", "--source", exp["source"], "--root", str(root / layout),
                    "--out", str(out)], timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert tree_digest(root) == before  # the user's files: same names, bytes and modes
    report = json.loads((out / "prepare_report.json").read_text())
    skipped = {s.get("id") or s.get("file"): s["reason"] for s in report["skipped"]}
    ds = datasets.load_from_disk(str(out))
    kept = set()
    for split in ds:
        kept |= set(ds[split]["id"])
    for rid in exp["kept"]:
        assert rid in kept, f"{rid} should be kept; skipped as: {skipped.get(rid)}"
    for rid, reason in {**exp["skipped"], **exp["files_skipped"]}.items():
        assert rid in skipped, f"{rid} should be skipped with {reason!r}" + (" (it was kept)" if rid in kept else "")
        assert reason in skipped[rid], f"{rid}: expected {reason!r} in {skipped[rid]!r}"
    assert not set(skipped) - set(exp["skipped"]) - set(exp["files_skipped"]), "unexpected skips"
    assert kept == set(exp["kept"])
    assert f"skipped {len(skipped)}" in proc.stdout  # the summary says how many, the report says which


def test_kept_odd_inputs_load_for_training_and_evaluation(corpus, tmp_path):
    """16-bit, CMYK, palette, RGBA and 1x1 images, unicode/RTL/NUL text: all become model inputs."""
    from medvqa_data.dataset import load_row_image, prompt_text
    from medvqa_data.prepare import prepare
    from medvqa_data.schema import load_prepared

    root, _ = corpus
    for layout, source in (("omnimedvqa", "omnimedvqa"), ("jsonl", "jsonl"), ("pmc-vqa", "pmc-vqa")):
        out = tmp_path / layout
        prepare(source, root / layout, out, split="none", progress=False)
        rows = load_prepared(out)
        assert len(rows) > 0
        for row in rows:
            img = load_row_image(row["image"], 3136, 12544)
            assert img.mode == "RGB" and img.size[0] % 28 == 0 and img.size[1] % 28 == 0
            for template in ("think", "no-think"):
                assert row["question"] in prompt_text(row, template) or len(row["question"]) > 1000


def test_strict_mode_lists_every_problem_and_writes_nothing(corpus, tmp_path):
    root, expected = corpus
    out = tmp_path / "strict"
    proc = run_cli(["-m", "medvqa_data.prepare", "--source", "omnimedvqa", "--root", str(root / "omnimedvqa"),
                    "--out", str(out), "--strict"], timeout=300)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert not out.exists()
    exp = expected["omnimedvqa"]
    problems = [line for line in proc.stderr.splitlines() if line.startswith("problem:")]
    assert len(problems) >= min(50, len(exp["skipped"]) + len(exp["files_skipped"]))
    assert "long-question" in proc.stderr and "duplicate-options" in proc.stderr


# ----------------------------------------------------------------------------- fuzzing
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats(allow_nan=True) |
    st.text(max_size=30) | st.sampled_from(["Images/x.png", "x.png", "", "A", "CT", "yes", "<answer>A</answer>",
                                            "Q? A)CT, B)MRI", "\ud800", "\u202e", "\x00"]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["question_id", "question", "gt_answer", "option_A", "option_B", "option_C", "image_path",
                         "modality_type", "dataset", "id", "image", "answer", "options", "answer_letter",
                         "answer_type", "split", "qid", "img_name", "q_lang", "problem", "solution",
                         "image_name", "phrase_type", "qid_linked_id", "modality", "content_type"])
        | st.text(max_size=8), children, max_size=8),
    max_leaves=25,
)
RECORD = st.fixed_dictionaries({}, optional={
    k: JSON for k in ("question_id", "question", "gt_answer", "option_A", "option_B", "image_path", "modality_type",
                      "id", "image", "answer", "options", "answer_letter", "answer_type", "split", "qid", "img_name",
                      "problem", "solution", "image_name", "q_lang")})


def _dump(value) -> str:
    return json.dumps(value, allow_nan=True)


def _read(source: str, root: Path) -> None:
    from medvqa_data.sources import SourceOptions, read_source

    try:
        result = read_source(source, root, SourceOptions(out_dir=root.parent / "out"))
    except DataError:
        return  # our own clear error
    for row in result.rows:  # whatever is kept must be storable (valid UTF-8 text, no containers)
        for key in ("id", "image", "question", "answer", "answer_letter", "answer_type", "modality"):
            assert isinstance(row[key], str)
            row[key].encode("utf-8")
        assert all(isinstance(o, str) and o for o in row["options"])


def _fresh(tmp_path: Path, name: str) -> Path:
    import shutil
    import uuid

    root = tmp_path / f"{name}-{uuid.uuid4().hex[:8]}"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    return root


@FUZZ
@given(data=st.one_of(st.lists(RECORD | JSON, max_size=6), JSON))
def test_fuzz_json_readers(tmp_path, data):
    """omnimedvqa, slake, vqa-rad and medr1 files holding random JSON: rows, skips or DataError."""
    text = _dump(data)
    for source, rel in (("omnimedvqa", "QA_information/Open-access/Fuzz.json"), ("slake", "train.json"),
                        ("vqa-rad", "VQA_RAD Dataset Public.json"), ("medr1", "Splits/modality/train/CT_train.json")):
        root = _fresh(tmp_path, source)
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
        _read(source, root)


@FUZZ
@given(lines=st.lists(st.one_of(RECORD.map(_dump), JSON.map(_dump), st.text(max_size=40)), max_size=8))
def test_fuzz_jsonl_readers(tmp_path, lines):
    """Our jsonl source and the Hub-style jsonl copies (PathVQA) with random lines."""
    for source, rel in (("jsonl", "data.jsonl"), ("pathvqa", "train.jsonl")):
        root = _fresh(tmp_path, source)
        (root / rel).write_text("\n".join(lines), encoding="utf-8", errors="surrogatepass")
        _read(source, root)


CSV_CELL = st.text(alphabet=string.printable + "é\u202e\x00", max_size=15)


@FUZZ
@given(rows=st.lists(st.lists(CSV_CELL, max_size=9), max_size=6), header=st.booleans())
def test_fuzz_csv_readers(tmp_path, rows, header):
    """PMC-VQA and PathVQA CSV files with random cells (quotes, commas, newlines, NUL)."""
    head = "Figure_path,Question,Answer,Choice A,Choice B,Choice C,Choice D,Answer_label\n" if header else ""
    body = head + "\n".join(",".join(r) for r in rows)
    for source, rel in (("pmc-vqa", "train.csv"), ("pathvqa", "train.csv")):
        root = _fresh(tmp_path, source)
        (root / rel).write_text(body if source == "pmc-vqa" else body.replace("Figure_path", "image")
                                .replace("Question", "question").replace("Answer,", "answer,"))
        _read(source, root)


@FUZZ
@given(records=st.lists(RECORD, min_size=1, max_size=5))
def test_fuzz_prepare_end_to_end(tmp_path, records):
    """Random OmniMedVQA records (one pointing at a real image) through prepare(): a report or a DataError."""
    from medvqa_data.prepare import prepare

    root = _fresh(tmp_path, "omni")
    (root / "QA_information" / "Open-access").mkdir(parents=True)
    (root / "Images").mkdir()
    make_bad_corpus._gradient().save(root / "Images" / "x.png")
    good = {"question_id": "ok", "question": "Which?", "gt_answer": "CT", "option_A": "CT", "option_B": "MRI",
            "image_path": "Images/x.png", "modality_type": "CT"}
    fixed = [{**good, **r} for r in records] + [good]
    (root / "QA_information" / "Open-access" / "F.json").write_text(_dump(fixed))
    try:
        report = prepare("omnimedvqa", root, root.parent / f"{root.name}-out", split="none", progress=False)
    except DataError:
        return
    assert report["kept"] + report["skipped_count"] == len(fixed)


COMPLETION = st.lists(st.sampled_from(["<think>", "</think>", "<answer>", "</answer>", "A", "B)", "(c)", " ", "\n",
                                       "option", "the answer is", "CT", "MRI", "\u202e", "\x00", "\ud800", "é"])
                      | st.text(max_size=20), max_size=25).map("".join)


@settings(max_examples=300, deadline=None)
@given(text=COMPLETION, options=st.lists(st.text(min_size=1, max_size=10), max_size=5),
       letter=st.sampled_from(["", "A", "B", "Z", "AA"]), gold=st.text(max_size=10))
def test_fuzz_answer_parser(text, options, letter, gold):
    """The shared parser (rewards and evaluation) never raises on any completion, options or gold."""
    from qlora_grpo import parsing

    for template in parsing.TEMPLATES:
        for mode in parsing.MODES:
            parsing.parse_completion(text, template, mode)
            score, _, _ = parsing.score_closed(text, options, letter, template, mode)
            assert 0.0 <= score <= 1.0
            score, _ = parsing.score_open(text, gold, template, mode)
            assert 0.0 <= score <= 1.0
    parsing.match_choice(text, options)
