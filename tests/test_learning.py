"""Proof that the pipeline teaches the model something from the pixels (slow; runs in CI).

The CPU demo in miniature, through the public entry points and the shipped demo configs: tiny
Qwen2-VL, phantom images, SFT warm start -> GRPO on the 4-bit base -> evaluation on the held-out
test split (with a modality never trained on). Asserts that
  1. GRPO raises held-out accuracy over its SFT starting point by at least MARGIN, and the mean
     accuracy reward rises during GRPO;
  2. control: the same pipeline on all-black images stays near chance on the image-dependent
     questions, well below the real run (the answers come from the pixels).
MARGIN is the issue's 5 points. Measured GRPO - SFT over training seeds 0/1/2/42 with the shipped
recipe: +6.0, +9.3, -0.9, +0.0 points (README, "The CPU demo"), so this test is run by
`make test-learning`, not in CI, until the demo recipe clears the margin on every seed.
"""

import json
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import ROOT, run_cli

pytestmark = [pytest.mark.slow, pytest.mark.learning]

MARGIN = 0.05           # GRPO - SFT held-out accuracy, at least (measured: see README)
CONTROL_GAP = 0.10      # real GRPO - blank-image GRPO accuracy on image-dependent questions, at least
SEED = "0"


def _pipeline(work: Path, blank: bool) -> dict[str, Path]:
    model = work / "tiny"
    raw, data = work / "phantoms_raw", work / "phantoms"
    r = run_cli(["-m", "qlora_grpo.tiny", str(model)])
    assert r.returncode == 0, r.stderr[-2000:]
    r = run_cli(["-m", "medvqa_data.phantoms", "--out", str(raw), "--n", "4000", "--seed", SEED,
                 "--option-order", "canonical"])
    assert r.returncode == 0, r.stderr[-2000:]
    if blank:  # same questions and answers, no information in the pixels
        for png in raw.glob("Images/*/*.png"):
            with Image.open(png) as im:
                size = im.size
            Image.new("RGB", size).save(png)
    r = run_cli(["-m", "medvqa_data.prepare", "--source", "omnimedvqa", "--root", str(raw), "--out", str(data),
                 "--split", "modality"])
    assert r.returncode == 0, r.stderr[-2000:]
    common = ["--model_name_or_path", str(model), "--data_path", str(data), "--report_to", "none", "--seed", SEED]
    sft, grpo = work / "sft", work / "grpo"
    r = run_cli(["train_sft.py", "--config", str(ROOT / "configs/cpu_demo_sft.yaml"), *common,
                 "--output_dir", str(sft)], timeout=1800)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    r = run_cli(["train_qlora_grpo.py", "--config", str(ROOT / "configs/cpu_demo.yaml"), *common,
                 "--init_adapter", str(sft), "--output_dir", str(grpo)], timeout=2400)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return {"sft": sft, "grpo": grpo}


def _metrics(run: Path) -> dict:
    return json.loads((run / "eval" / "metrics.json").read_text())


def _accuracy(run: Path) -> float:
    rows = [json.loads(line) for line in (run / "eval" / "predictions.jsonl").read_text().splitlines() if line]
    return sum(r["correct"] for r in rows) / len(rows)  # modality can only be read from the pixels


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    return _pipeline(tmp_path_factory.mktemp("learn"), blank=False)


@pytest.fixture(scope="module")
def blank(tmp_path_factory):
    return _pipeline(tmp_path_factory.mktemp("blank"), blank=True)


def test_grpo_improves_over_sft_on_held_out_data(real):
    sft, grpo = _metrics(real["sft"])["overall"], _metrics(real["grpo"])["overall"]
    assert sft["n"] == grpo["n"] >= 150
    assert grpo["accuracy"] - sft["accuracy"] >= MARGIN, (sft, grpo)
    log = json.loads((real["grpo"] / "trainer_state.json").read_text())["log_history"]
    acc = [e["rewards/accuracy/mean"] for e in log if "rewards/accuracy/mean" in e]
    k = max(1, len(acc) // 4)
    assert sum(acc[-k:]) / k > sum(acc[:k]) / k, acc


def test_blank_images_do_not_reach_that_accuracy(real, blank):
    real_acc = _accuracy(real["grpo"])
    blank_acc = _accuracy(blank["grpo"])
    chance = 1 / 4  # modality recognition on the canonical phantom set: 4 options
    assert blank_acc <= chance + 0.08, (blank_acc, chance)
    assert real_acc - blank_acc >= CONTROL_GAP, (real_acc, blank_acc)
