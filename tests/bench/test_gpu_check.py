"""bench/gpu_check.sh (make gpu-check): refuses a CPU machine; its training command line is a valid
config; its summary table reads the results of every check."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "gpu_check.sh"


def test_refuses_without_a_gpu(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present")
    out = tmp_path / "out"
    r = subprocess.run(["bash", str(SCRIPT), str(out)], capture_output=True, text=True, timeout=300,
                       env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    assert r.returncode == 2
    assert r.stderr.startswith("error: make gpu-check needs a CUDA GPU") and len(r.stderr.splitlines()) == 1
    assert not out.exists()  # nothing written


def test_training_command_is_a_valid_config(tmp_path):
    """The shortened rtx_24gb command of each mode parses (a typo would only show on the GPU)."""
    from qlora_grpo.config import MedGRPOConfig, parse_config

    text = SCRIPT.read_text().replace("\\\n", " ")
    line = next(x for x in text.splitlines() if '"$PY" train_qlora_grpo.py' in x)
    values = {"PY": "python", "MODEL": "m", "DATA": "d", "run": str(tmp_path / "run"), "backend": "hf", "quant": "nf4",
              "dtype": "auto", "STEPS": "10"}
    line = re.sub(r'"\$(\w+)"', lambda m: values[m.group(1)], line)
    args = shlex.split(line.split("train_qlora_grpo.py", 1)[1])
    cfg = parse_config(args, MedGRPOConfig)
    assert cfg.max_steps == 10 and cfg.max_completion_length == 128 and cfg.resume == "never"
    assert cfg.evaluate_after_training is False and cfg.num_generations == 8  # rtx_24gb's G


def test_summary_table(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check_summary", ROOT / "bench" / "gpu_check_summary.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    main = mod.main

    (tmp_path / "status.tsv").write_text("train-qlora-hf\tpass\t61\ngpu-tests\tFAIL (rc 1)\t12\n")
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "results.json").write_text(json.dumps({"runs": [
        {"mode": "qlora-hf", "status": "ok", "peak_reserved_gb": 9.5, "step_s": 4.0, "generation_s": 3.0,
         "generated_tokens_per_s": 512.0, "trained_tokens_per_s": 2048.0}]}))
    ev = tmp_path / "runs" / "qlora-hf" / "eval"
    ev.mkdir(parents=True)
    (ev / "metrics.json").write_text(json.dumps({"overall": {"accuracy": 0.25}}))
    assert main([str(tmp_path)]) == 1  # one check failed
    md = (tmp_path / "summary.md").read_text()
    assert "Overall: **FAIL**" in md and "| gpu-tests | FAIL (rc 1) | 12 |" in md
    assert "| qlora-hf | 9.50 | 4.00 | 75% | 512.0 | 2048.0 | 25.0% |" in md
    assert "| qlora-unsloth | — |" in md
    assert "Other families" not in md  # no families benchmark ran
    (tmp_path / "bench-families").mkdir()
    (tmp_path / "bench-families" / "results.json").write_text(json.dumps({"runs": [
        {"model": "medgemma-4b", "mode": "qlora-unsloth", "status": "ok", "peak_reserved_gb": 7.25, "step_s": 5.0,
         "generation_s": 4.0, "generated_tokens_per_s": 300.0}]}))
    main([str(tmp_path)])
    assert "| medgemma-4b | qlora-unsloth | ok | 7.25 | 5.00 | 80% | 300.0 |" in (tmp_path / "summary.md").read_text()


def test_families_benchmark_command_parses():
    """The families step names models and modes the benchmark knows (a typo would only show on the GPU)."""
    from bench import memory_throughput as mt
    from bench.throughput.workload import MODES
    from qlora_grpo.tiny import ARCHS

    text = SCRIPT.read_text()
    default = re.search(r'FAMILIES=\$\{GPU_CHECK_FAMILIES-([^}]*)\}', text).group(1).split()
    assert set(default) == {"qwen3-vl-2b", "medgemma-4b"} and all(m in ARCHS for m in default)
    line = next(x for x in text.replace("\\\n", " ").splitlines() if "--out \"$OUT/bench-families\"" in x)
    modes = line.split("--modes", 1)[1].split("--warmup-steps")[0].split()
    assert modes == ["qlora-hf", "qlora-unsloth"] and all(m in MODES for m in modes)
    args = mt.parse_args(["--models", *default, "--modes", *modes, "--no-fit", "--measured-steps", "2"])
    assert args.models == default and args.modes == modes
