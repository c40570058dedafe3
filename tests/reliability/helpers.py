"""Helpers shared by the reliability tests and bench/fault_report.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OFFLINE = Path(__file__).resolve().parent / "offline"  # sitecustomize.py that blocks sockets

FAST_KILLS = "write:optimizer.pt:2,before_marker::2,final::1"  # torn write, uncommitted save, final save


def offline_env(net_log: Path, **extra: str) -> dict:
    """Environment of a subprocess with all network connections blocked (and recorded in net_log)."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(PYTHONPATH=f"{OFFLINE}{os.pathsep}{ROOT}", BLOCKED_NET_LOG=str(net_log), PYTHONUNBUFFERED="1",
               OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", **extra)
    return env


def run_harness(work: Path, *args: str, timeout: int = 1800) -> dict:
    out = work / "results.json"
    net_log = work / "network-attempts.log"
    proc = subprocess.run([sys.executable, "-m", "tests.reliability.faultlib", "--workdir", str(work),
                           "--json", str(out), *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env=offline_env(net_log))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    results = json.loads(out.read_text())
    results["network_attempts"] = net_log.read_text() if net_log.exists() else ""
    return results


# The training config of every reliability run (independent of the shipped configs/ profiles,
# which change): GRPO on the 4-bit tiny model, a checkpoint after every step, text logged every step.
TRAIN_CONFIG = {
    "backend": "hf", "quantization": "nf4", "compute_dtype": "auto", "gradient_checkpointing": False,
    "lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.0,
    "train_split": "train", "eval_split": "test", "template": "think", "prompt_mode": "default",
    "min_pixels": 3136, "max_pixels": 12544,
    "reward_funcs": ["format", "accuracy"], "reward_weights": [1.0, 1.0],
    "num_generations": 2, "per_device_train_batch_size": 2, "max_completion_length": 8,
    "temperature": 1.0, "beta": 0.04, "learning_rate": 5.0e-4, "lr_scheduler_type": "constant", "seed": 42,
    "logging_steps": 1, "save_steps": 1, "save_total_limit": 2, "sample_log_steps": 1,
    "report_to": ["tensorboard"], "evaluate_after_training": False, "resume": "auto",
}


def write_train_config(path: Path, **overrides) -> Path:
    import yaml

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({**TRAIN_CONFIG, **overrides}, sort_keys=False))
    return path
