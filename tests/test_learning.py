"""Proof that the pipeline teaches the model something from the pixels (slow; runs in CI).

`make demo` in miniature, through the public entry points and the shipped demo configs (same seed):
tiny Qwen2-VL, phantom images, SFT warm start -> GRPO on the 4-bit base -> evaluation on the
held-out test split (new images; plus a modality never trained on). Asserts that
  1. GRPO raises held-out accuracy over its SFT starting point by at least MARGIN, both over all
     test questions and over the trained modalities' new images, and the mean accuracy reward
     rises during GRPO;
  2. control: the same pipeline on all-black images gets no further than the best answer a model
     can give without pixels (the majority answer for each option list, learnt from the training
     questions), far below the real run: the answers come from the images.
MARGIN is twice the issue's 5 points and well below every measured gain. Measured GRPO - SFT over
all 216 test questions with this recipe (20-step SFT, 200 GRPO steps): +38.9 (seed 42, this test's
seed; 21.8% -> 60.6%), +63.9 / +49.5 / +33.3 (seeds 0 / 1 / 2) - README, "The CPU demo".
Runs with OMP_NUM_THREADS=1, as `make demo` does. Runs are not bit-identical from run to run: the
20-step SFT start of seed 42 landed between 0.5% and 30.6% on repeated runs; GRPO took 0.9% and
21.8% starts to 63.9% and 60.6%.
"""

import json
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import ROOT, run_cli

pytestmark = [pytest.mark.slow, pytest.mark.learning]

MARGIN = 0.10           # GRPO - SFT held-out accuracy, at least (measured: +33 to +64 points)
CONTROL_SLACK = 0.08    # blank-image run: at most this far above the no-pixel baseline
CONTROL_GAP = 0.25      # real GRPO - blank-image GRPO on the trained modalities' test images, at least
SEED = "42"             # make demo's seed (configs/cpu_demo*.yaml)
HELD_OUT = "Ultrasound"  # exclude_modalities of the demo configs
ENV = {"OMP_NUM_THREADS": "1"}


def _pipeline(work: Path, blank: bool) -> dict[str, Path]:
    model = work / "tiny"
    raw, data = work / "phantoms_raw", work / "phantoms"
    r = run_cli(["-m", "qlora_grpo.tiny", str(model)])
    assert r.returncode == 0, r.stderr[-2000:]
    r = run_cli(["-m", "medvqa_data.phantoms", "--out", str(raw), "--n", "4000", "--seed", "0",
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
                 "--output_dir", str(sft)], timeout=1800, env=ENV)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    r = run_cli(["train_qlora_grpo.py", "--config", str(ROOT / "configs/cpu_demo.yaml"), *common,
                 "--init_adapter", str(sft), "--output_dir", str(grpo)], timeout=2400, env=ENV)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return {"sft": sft, "grpo": grpo, "data": data}


def _predictions(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "eval" / "predictions.jsonl").read_text().splitlines() if line]


def _accuracy(rows: list[dict]) -> float:
    return sum(r["correct"] for r in rows) / len(rows)


def _trained(rows: list[dict]) -> list[dict]:
    """Test questions on the modalities that were trained on (new images)."""
    return [r for r in rows if r["modality"] != HELD_OUT]


def _no_pixel_baseline(data: Path) -> float:
    """Best accuracy without the image: per option list, the most frequent training answer."""
    from medvqa_data.dataset import select_eval_rows, select_training_rows

    cell = "question_type=Modality Recognition"
    votes: dict[tuple, Counter] = defaultdict(Counter)
    for r in select_training_rows(str(data), "train", cell, [HELD_OUT]):
        votes[tuple(r["options"])][r["answer"]] += 1
    test = [r for r in select_eval_rows(str(data), "test", cell) if r["modality"] != HELD_OUT]
    hits = [bool(votes[tuple(r["options"])]) and votes[tuple(r["options"])].most_common(1)[0][0] == r["answer"]
            for r in test]
    return sum(hits) / len(hits)


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    return _pipeline(tmp_path_factory.mktemp("learn"), blank=False)


@pytest.fixture(scope="module")
def blank(tmp_path_factory):
    return _pipeline(tmp_path_factory.mktemp("blank"), blank=True)


def test_grpo_improves_over_sft_on_held_out_data(real):
    sft, grpo = _predictions(real["sft"]), _predictions(real["grpo"])
    assert len(sft) == len(grpo) >= 150
    assert [r["id"] for r in sft] == [r["id"] for r in grpo]
    assert _accuracy(grpo) - _accuracy(sft) >= MARGIN, (_accuracy(sft), _accuracy(grpo))
    assert _accuracy(_trained(grpo)) - _accuracy(_trained(sft)) >= MARGIN
    metrics = json.loads((real["grpo"] / "eval" / "metrics.json").read_text())["overall"]
    assert abs(metrics["accuracy"] - _accuracy(grpo)) < 1e-3  # the report's number is this one
    log = json.loads((real["grpo"] / "trainer_state.json").read_text())["log_history"]
    acc = [e["rewards/accuracy/mean"] for e in log if "rewards/accuracy/mean" in e]
    k = max(1, len(acc) // 4)
    assert sum(acc[-k:]) / k > sum(acc[:k]) / k + MARGIN, acc


def test_blank_images_do_not_reach_that_accuracy(real, blank):
    baseline = _no_pixel_baseline(real["data"])
    assert 0.2 < baseline < 0.45, baseline  # 3-4 options per list: about a third without pixels
    real_acc = _accuracy(_trained(_predictions(real["grpo"])))
    blank_acc = _accuracy(_trained(_predictions(blank["grpo"])))
    assert blank_acc <= baseline + CONTROL_SLACK, (blank_acc, baseline)
    assert real_acc - blank_acc >= CONTROL_GAP, (real_acc, blank_acc)
