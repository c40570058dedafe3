"""Walking skeleton, end to end through the public entry points on the tiny model and the bundled
real-image sample: SFT warm start -> GRPO with a 4-bit base -> evaluate the saved adapter.

A random model never writes `<answer>` tags, so its rewards are all 0, every GRPO advantage is 0
and no gradient flows: the short SFT warm start gives the rollouts reward variance, as in the demo.
The GRPO run then must change the adapter's LoRA weights and log a non-zero gradient norm; this is
what catches a silent zero gradient (e.g. bitsandbytes' CPU weight repacking).
"""

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from tests.conftest import ROOT, run_cli

COMMON = ["--model_name_or_path", None, "--data_path", None, "--template", "no-think",
          "--min_pixels", "3136", "--max_pixels", "3136", "--report_to", "none", "--seed", "0"]


def _common(model: Path, data: Path) -> list[str]:
    args = list(COMMON)
    args[1], args[3] = str(model), str(data)
    return args


@pytest.fixture(scope="module")
def sft_run(tiny_model, sample_prepared, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "sft"
    r = run_cli(["train_sft.py", "--config", str(ROOT / "configs/cpu_demo_sft.yaml"), *_common(tiny_model, sample_prepared),
                 "--output_dir", str(out), "--max_steps", "40", "--learning_rate", "5e-3", "--save_steps", "1000",
                 "--per_device_train_batch_size", "8",
                 "--eval_max_samples", "8", "--eval_max_new_tokens", "12"])
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert (out / "adapter_model.safetensors").is_file() and (out / "eval" / "metrics.json").is_file()
    return out


def test_sft_then_grpo_4bit_changes_lora_weights_and_evaluates(sft_run, tiny_model, sample_prepared, tmp_path):
    out = tmp_path / "grpo"
    r = run_cli(["train_qlora_grpo.py", "--config", str(ROOT / "configs/cpu_demo.yaml"),
                 *_common(tiny_model, sample_prepared), "--init_adapter", str(sft_run), "--output_dir", str(out),
                 "--max_steps", "2", "--num_generations", "4", "--per_device_train_batch_size", "8",
                 "--max_completion_length", "12", "--learning_rate", "5e-3", "--logging_steps", "1", "--sample_log_steps", "1",
                 "--save_steps", "1000", "--eval_max_samples", "8",
                 "--eval_max_new_tokens", "12"])
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    cfg = (out / "run_config.yaml").read_text()
    assert "quantization: nf4" in cfg  # the 4-bit base
    before = load_file(sft_run / "adapter_model.safetensors")
    after = load_file(out / "adapter_model.safetensors")
    lora = [k for k in after if "lora_" in k]
    assert lora and set(lora) <= set(before)
    changed = [k for k in lora if not (after[k] - before[k]).abs().max() == 0]
    assert len(changed) >= len(lora) // 2, f"only {len(changed)}/{len(lora)} LoRA tensors changed"
    log = json.loads((out / "trainer_state.json").read_text())["log_history"]
    grad_norms = [e["grad_norm"] for e in log if "grad_norm" in e]
    assert grad_norms and max(grad_norms) > 0, log
    assert any("rewards/format/mean" in e for e in log) and any("rewards/accuracy/mean" in e for e in log)
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert metrics["overall"]["n"] > 0 and "by_modality" in metrics
    assert (out / "eval" / "predictions.jsonl").is_file() and (out / "eval" / "report.md").is_file()
    samples = (out / "samples.jsonl").read_text().splitlines()
    assert samples and "rewards" in json.loads(samples[0])


def test_user_errors_are_one_line(tiny_model, tmp_path):
    cases = [
        (["--config", "configs/cpu_demo.yaml", "--model_name_or_path", str(tmp_path / "nope")], "model directory not found"),
        (["--config", "configs/cpu_demo.yaml", "--model_name_or_path", str(tiny_model),
          "--data_path", str(tmp_path / "nodata")], "prepare"),
        (["--config", "configs/cpu_demo.yaml", "--template", "telepathy"], "template='telepathy' is not valid"),
        (["--config", "configs/cpu_demo.yaml", "--lora_rank", "8"], "--lora_rank"),
    ]
    for args, needle in cases:
        r = run_cli(["train_qlora_grpo.py", *args, "--output_dir", str(tmp_path / "out")])
        assert r.returncode == 2, (args, r.stderr[-2000:])
        lines = [ln for ln in r.stderr.strip().splitlines() if ln.startswith("error:")]
        assert lines and needle in lines[0], (needle, r.stderr[-2000:])
        assert "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
