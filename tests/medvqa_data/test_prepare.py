"""The prepare and inspect command lines: errors, --strict, --overwrite, --embed-images, --split none."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import datasets
import pytest

from medvqa_data import inspect as inspect_cli
from medvqa_data import prepare as prepare_cli
from medvqa_data.schema import load_prepared
from tests.medvqa_data.test_sources import build_jsonl, build_omnimedvqa, build_slake, snapshot

REPO = Path(__file__).resolve().parents[2]


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = prepare_cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_success_prints_a_summary(tmp_path, capsys):
    root = build_omnimedvqa(tmp_path)
    code, out, _ = run(["--source", "omnimedvqa", "--root", str(root), "--out", str(tmp_path / "o")], capsys)
    assert code == 0
    assert "prepared 81 rows from omnimedvqa" in out and "train 54, test 27" in out
    assert "skipped 5: " in out and "gold answer not among the options x1" in out
    report = json.loads((tmp_path / "o" / "prepare_report.json").read_text())
    assert report["kept"] == 81 and len(report["skipped"]) == 5


def test_cli_unknown_source_and_missing_root(tmp_path, capsys):
    code, _, err = run(["--source", "mimic", "--root", str(tmp_path), "--out", str(tmp_path / "o")], capsys)
    assert code == 2
    assert err.strip() == ("error: unknown source 'mimic'; choose one of: omnimedvqa, medr1, vqa-rad, slake, "
                           "pathvqa, pmc-vqa, jsonl")
    code, _, err = run(["--source", "slake", "--root", str(tmp_path / "nope"), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and err.startswith("error: --root ") and "does not exist" in err
    with pytest.raises(SystemExit) as info:
        prepare_cli.main(["--source", "slake", "--out", str(tmp_path / "o")])
    assert info.value.code == 2
    assert "the following arguments are required: --root" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_cli_as_a_module_has_no_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "medvqa_data.prepare", "--source", "slake", "--root", str(tmp_path / "missing"),
         "--out", str(tmp_path / "o")],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: --root") and "Traceback" not in result.stderr


def test_strict_lists_problems_and_writes_nothing(tmp_path, capsys):
    root = build_omnimedvqa(tmp_path)
    out = tmp_path / "o"
    code, _, err = run(["--source", "omnimedvqa", "--root", str(root), "--out", str(out), "--strict"], capsys)
    assert code == 1
    assert "problem: id Q_gold: gold answer not among the options" in err
    assert "problem: file QA_information/Open-access/Broken.json: invalid JSON" in err
    assert err.strip().endswith("error: 5 problem(s) found with --strict; nothing was written")
    assert not out.exists() and not list(tmp_path.glob(".o.partial-*"))
    clean = build_slake(tmp_path / "clean")
    (clean / "train.json").write_text(
        json.dumps([r for r in json.loads((clean / "train.json").read_text()) if r["qid"] != 5]))
    assert run(["--source", "slake", "--root", str(clean), "--out", str(tmp_path / "s"), "--strict"], capsys)[0] == 0


def test_out_safety(tmp_path, capsys):
    root = build_slake(tmp_path)
    before = snapshot(root)
    code, _, err = run(["--source", "slake", "--root", str(root), "--out", str(root / "prepared")], capsys)
    assert code == 2 and "inside --root" in err
    code, _, err = run(["--source", "slake", "--root", str(root), "--out", str(tmp_path)], capsys)
    assert code == 2 and "contains --root" in err
    assert snapshot(root) == before
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    for extra in ([], ["--overwrite"]):
        code, _, err = run(["--source", "slake", "--root", str(root), "--out", str(foreign), *extra], capsys)
        assert code == 2
    assert "is not a prepare output" in err and (foreign / "thesis.tex").read_text() == "precious"
    out = tmp_path / "out"
    assert run(["--source", "slake", "--root", str(root), "--out", str(out)], capsys)[0] == 0
    code, _, err = run(["--source", "slake", "--root", str(root), "--out", str(out)], capsys)
    assert code == 2 and "--overwrite" in err
    code, _, _ = run(["--source", "slake", "--root", str(root), "--out", str(out), "--overwrite", "--lang", "all"],
                     capsys)
    assert code == 0 and json.loads((out / "prepare_report.json").read_text())["kept"] == 9


def test_embed_images_makes_a_movable_copy(tmp_path, capsys):
    root = build_jsonl(tmp_path)
    out = tmp_path / "out"
    assert run(["--source", "jsonl", "--root", str(root), "--out", str(out), "--embed-images"], capsys)[0] == 0
    stored = datasets.load_from_disk(str(out))["train"]["image"]
    assert all(not os.path.isabs(p) and p.startswith("images/") for p in stored)
    moved = tmp_path / "moved"
    out.rename(moved)
    paths = load_prepared(moved, "train")["image"]
    assert all(p.startswith(str(moved)) and Path(p).is_file() for p in paths)
    assert load_prepared(moved / "test")["image"] == load_prepared(moved, "test")["image"]  # one split's folder


def test_split_none_gives_one_dataset(tmp_path, capsys):
    root = build_omnimedvqa(tmp_path)
    out = tmp_path / "out"
    assert run(["--source", "omnimedvqa", "--root", str(root), "--out", str(out), "--split", "none",
                "--no-check-images", "--workers", "2"], capsys)[0] == 0
    assert isinstance(datasets.load_from_disk(str(out)), datasets.Dataset)
    assert len(load_prepared(out)) == 82 and not (out / "manifests").exists()


def test_inspect_prints_counts_and_prompts(tmp_path, capsys):
    root = build_omnimedvqa(tmp_path)
    out = tmp_path / "out"
    prepare_cli.prepare("omnimedvqa", root, out)
    assert inspect_cli.main([str(out), "--n", "2", "--template", "no-think", "--mode", "paper", "--phase", "eval"]) == 0
    text = capsys.readouterr().out
    assert "train 54 rows, test 27 rows" in text
    assert "modality" in text and "Ultrasound" in text and "Disease Diagnosis" in text and "DS7" in text
    assert text.count("prompt: ") == 2
    assert "Provide the correct single-letter choice (A, B, C, D,...) inside <answer>...</answer> tags.\n" in text
    assert inspect_cli.main([str(root)]) == 2
    assert "python -m medvqa_data.prepare --source omnimedvqa" in capsys.readouterr().err


def test_a_failed_prepare_leaves_no_empty_output_folders(tmp_path, capsys):
    root = tmp_path / "raw"
    root.mkdir()
    (root / "data.jsonl").write_text('{"id": "x", "image": "missing.png", "question": "Q?", "answer": "a"}\n')
    out = tmp_path / "new" / "deeper" / "out"
    code, _, err = run(["--source", "jsonl", "--root", str(root), "--out", str(out)], capsys)
    assert code == 2 and err.startswith("error: no usable rows")
    assert not (tmp_path / "new").exists()
    code, _, _ = run(["--source", "omnimedvqa", "--root", str(build_omnimedvqa(tmp_path)), "--out", str(out),
                      "--strict"], capsys)
    assert code == 1 and not (tmp_path / "new").exists()
