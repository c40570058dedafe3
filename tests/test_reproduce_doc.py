"""docs/reproduce.md: its commands run as written, on the tiny model with tiny sizes.

Every ```bash block of the document is run in order by bash in a scratch folder laid out like the
document expects (configs/, scripts/, train_qlora_grpo.py, models/Qwen2-VL-2B-Instruct -> the tiny
model, data/Med-R1 -> Med-R1's real split layout from tests/medvqa_data/fixtures/medr1,
data/OmniMedVQA -> an image per record). A `python` shell function appends the tiny sizes (one
GRPO step on 4 samples, 2 test rows per cell, 8 new tokens, 3136 pixels, fp32 on CPU) to each
command; nothing else is changed. The fast test checks that the document's table of the papers'
numbers is the one `eval.generalization --paper-table` prints.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from eval.paper_table import PAPER_NUMBERS, paper_table

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "reproduce.md"
FIXTURE = ROOT / "tests" / "medvqa_data" / "fixtures" / "medr1"


def doc_commands() -> list[str]:
    """The lines of the document's ```bash blocks, in order."""
    blocks = re.findall(r"^```bash\n(.*?)^```", DOC.read_text(), re.DOTALL | re.MULTILINE)
    return [line for block in blocks for line in block.splitlines() if line.strip()]


def test_doc_paper_table_is_what_paper_table_prints():
    doc = DOC.read_text()
    for axis in ("modality", "question_type", "rarl"):
        for row in paper_table(None, axis).splitlines()[2:]:
            assert row.replace(" – |", " |") in doc, row  # the document's "this project" column is empty
    assert len(PAPER_NUMBERS) == sum(1 for line in doc.splitlines() if line.startswith("| ") and
                                     line.rstrip().endswith("| |"))


def test_paper_table_fills_this_project_from_the_matrix():
    result = {"rows": ["base", "CT", "MRI"], "columns": ["CT", "MRI"],
              "accuracy": {"base": {"CT": 40.0, "MRI": 30.0}, "CT": {"CT": 80.0, "MRI": 60.0},
                           "MRI": {"CT": 50.0, "MRI": 90.0}}}
    table = paper_table(result, "modality")
    assert "| 69.91 | " in table and table.count("| 70.00 |") == 1 and table.count("| +35.00 |") == 1
    assert paper_table({**result, "rows": ["CT", "MRI"], "accuracy": {k: v for k, v in result["accuracy"].items()
                                                                       if k != "base"}},
                       "question_type").endswith("| – |")  # no base row: no gain


TINY_TRAIN = ("--max_steps 1 --max_train_samples 4 --num_generations 2 --per_device_train_batch_size 2 "
              "--gradient_accumulation_steps 1 --max_completion_length 8 --min_pixels 3136 --max_pixels 3136 "
              "--compute_dtype auto --gradient_checkpointing false --report_to none --save_steps 1000 "
              "--logging_steps 1 --eval_max_samples 2 --eval_max_new_tokens 8 --eval_batch_size 2")
TINY_EVAL = "--limit 2 --max-new-tokens 8 --batch-size 2 --min-pixels 3136 --max-pixels 3136"


def _workspace(tmp_path: Path, tiny_model: Path) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    for name in ("configs", "scripts", "train_qlora_grpo.py"):
        (work / name).symlink_to(ROOT / name)
    (work / "models").mkdir()
    (work / "models" / "Qwen2-VL-2B-Instruct").symlink_to(tiny_model)
    shutil.copytree(FIXTURE, work / "data" / "Med-R1")
    for path in FIXTURE.rglob("*.json"):
        for rec in json.loads(path.read_text()):
            image = work / "data" / "OmniMedVQA" / rec["image"]
            image.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (32, 32), (len(rec["problem"]) % 255, 90, 30)).save(image, format="PNG")
    return work


@pytest.mark.slow
def test_reproduce_doc_commands_run_on_the_tiny_model(tmp_path, tiny_model):
    work = _workspace(tmp_path, tiny_model)
    tiny_train = f"--model_name_or_path {shlex.quote(str(tiny_model))} {TINY_TRAIN}"
    script = "\n".join([
        "set -euo pipefail",
        f"PY={shlex.quote(sys.executable)}",
        "python() {",
        '  case "$1" in',
        f'    train_qlora_grpo.py) "$PY" "$@" {tiny_train} ;;',
        '    scripts/run_generalization.py) if [[ " $* " == *" -- "* ]]; then',
        f'        "$PY" "$@" {tiny_train}; else "$PY" "$@" -- {tiny_train}; fi ;;',
        '    -m) case "$2" in',
        f'          eval.generalization|eval.evaluate) "$PY" "$@" {TINY_EVAL} ;;',
        '          *) "$PY" "$@" ;;',
        "        esac ;;",
        '    *) "$PY" "$@" ;;',
        "  esac",
        "}",
        *[f"echo '+ {line[:120]}'\n{line}" for line in doc_commands()],
    ])
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    r = subprocess.run(["bash", "-c", script], cwd=work, env=env, capture_output=True, text=True, timeout=3000)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]

    runs = work / "runs"
    report = json.loads((runs / "data" / "medr1-modality" / "prepare_report.json").read_text())
    published = sum(len(json.loads(p.read_text())) for p in FIXTURE.glob("Splits/modality/test/*.json"))
    assert report["splits"]["test"] == published and report["splits"]["dataset_test"] == 4
    for variant in ("think", "no-think", "think-after"):
        for axis, name, cols in (("modality", "modality", {"CT", "Ultrasound"}),
                                 ("question_type", "qtype", {"Anatomy Identification", "Modality Recognition"})):
            res = json.loads((runs / "eval" / f"{name}-{variant}" / "generalization.json").read_text())
            assert res["axis"] == axis and set(res["columns"]) == cols and res["rows"][0] == "base" and len(res["rows"]) == 3
            assert {r["template"] for k, r in res["runs"].items() if k != "base"} == {variant}
            table = (runs / "eval" / f"{name}-{variant}" / "paper_table.md").read_text()
            assert re.search(r"\| [+-]\d+\.\d\d \|$", table, re.MULTILINE), table  # the gain is filled in
    assert r.stdout.count("| quantity | paper | source | this project |") == 6  # --paper-table printed it
    per_dataset = json.loads((runs / "eval" / "per-dataset-base" / "metrics.json").read_text())
    assert per_dataset["n_predictions"] == 2
    assert (runs / "rarl" / "adapter_config.json").is_file()
    rarl = (runs / "rarl" / "run_config.yaml").read_text()
    assert "reasoning" in rarl and "lora_r: 8" in rarl
