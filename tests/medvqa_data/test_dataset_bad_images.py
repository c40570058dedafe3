"""A training image that became unreadable after prepare: its row is skipped (replaced by the next
readable row, always the same one), a warning names it and says "re-run prepare"; training goes on."""

import os
import shutil
import subprocess
import sys

import pytest

from medvqa_data.dataset import select_training_rows, to_trl
from tests.conftest import ROOT


@pytest.fixture()
def corrupt_copy(tmp_path):
    """The bundled sample prepared from a copy, so one of its images can be broken."""
    from medvqa_data.prepare import prepare

    src = tmp_path / "src"
    shutil.copytree(ROOT / "medvqa_data" / "sample" / "omnimedvqa", src)
    prepare("omnimedvqa", src, tmp_path / "data", split="modality")
    return tmp_path / "data"


def test_unreadable_training_image_is_skipped_with_a_warning(corrupt_copy, capsys):
    rows = select_training_rows(str(corrupt_copy), "train", max_rows=4, seed=42)
    ds = to_trl(rows, "think", min_pixels=3136, max_pixels=12544)
    bad_path = rows[0]["image"]
    with open(bad_path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    first, again = ds[0], ds[0]
    assert first["id"] != rows[0]["id"] and first["image"].size[0] > 0  # another row, with its image
    assert again["id"] == first["id"]  # always the same substitute
    substitute = next(r for r in rows if r["id"] == first["id"])
    assert first["answer"] == substitute["answer"] and first["question"] == substitute["question"]
    err = capsys.readouterr().err
    assert err.count("warning: training image") == 1 and bad_path in err and "medvqa_data.prepare" in err
    assert "1 unreadable training image(s)" in err
    batch = ds[0:4]  # a batch as the trainer fetches it: 4 rows, all with images
    assert len(batch["image"]) == 4 and all(img.size[0] > 0 for img in batch["image"])


@pytest.mark.slow
def test_grpo_run_goes_on_past_an_unreadable_image(corrupt_copy, tiny_model, tmp_path):
    from tests.qlora_grpo.test_train import tiny_grpo_config

    rows = select_training_rows(str(corrupt_copy), "train", max_rows=2, seed=42)
    for r in rows.select([0]):
        with open(r["image"], "wb") as f:
            f.write(b"not an image")
    config = tiny_grpo_config(tmp_path, tiny_model, corrupt_copy, max_train_samples=2, max_steps=2)
    proc = subprocess.run([sys.executable, "train_qlora_grpo.py", "--config", str(config), "--output_dir",
                           str(tmp_path / "run")], cwd=ROOT, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "warning: training image" in proc.stderr and "re-run `python -m medvqa_data.prepare`" in proc.stderr
    assert (tmp_path / "run" / "adapter_model.safetensors").is_file()
