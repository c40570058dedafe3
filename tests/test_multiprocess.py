"""2-process data-parallel GRPO on CPU with the hf backend, through `accelerate launch` and the shipped DDP config.

`accelerate launch --cpu --num_processes 2` starts a single process in accelerate 1.15 (its CPU multi-process
mode needs mpirun); configs/accelerate/ddp.yaml goes through torchrun and really starts two, which our entry
points then run on the gloo backend (use_cpu follows from the absence of a GPU).
"""

import json
import os
import socket
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.qlora_grpo.test_train import tiny_grpo_config

ACCELERATE = [sys.executable, "-m", "accelerate.commands.launch"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(config, out, *extra, timeout=600):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    cmd = [*ACCELERATE, "--config_file", "configs/accelerate/ddp.yaml", "--num_processes", "2",
           "--main_process_port", str(free_port()), "train_qlora_grpo.py", "--config", str(config),
           "--output_dir", str(out), *extra]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_two_process_training_on_cpu(tiny_model, sample_prepared, tmp_path):
    config = tiny_grpo_config(tmp_path, tiny_model, sample_prepared, sample_log_steps=1)
    out = tmp_path / "ddp"
    proc = launch(config, out)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "processes: 2" in proc.stdout  # both ranks joined one process group
    assert proc.stdout.count("resolved config:") == 1  # only rank 0 reports, writes and evaluates
    assert proc.stdout.count("adapter saved to") == 1
    assert (out / "adapter_model.safetensors").is_file() and (out / "run_config.yaml").is_file()
    assert (out / "samples.jsonl").is_file() and not (out / ".run.lock").exists()
    state = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["global_step"] == 2
    assert (out / "checkpoint-2" / "COMPLETE").is_file()


@pytest.mark.slow
def test_two_process_training_resumes_on_every_rank(tiny_model, sample_prepared, tmp_path):
    """A run stopped after checkpoint-2 (before its final adapter) continued to 3 steps: both ranks pick the same
    checkpoint, rank 1 takes no lock. (A finished run refuses a new max_steps: tests/qlora_grpo/test_run_identity.py.)
    (transformers loads the optimizer with map_location=cpu:0 on multi-process CPU runs, which torch.load
    rejects; cpu_compat.fix_multiprocess_cpu_resume maps it to "cpu".)"""
    config = tiny_grpo_config(tmp_path, tiny_model, sample_prepared)
    out = tmp_path / "ddp"
    assert launch(config, out).returncode == 0
    for name in ("adapter_config.json", "adapter_model.safetensors"):  # as if killed before the final save
        (out / name).unlink()
    proc = launch(config, out, "--max_steps", "3")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert f"resuming from {out}/checkpoint-2" in proc.stdout
    assert proc.stdout.count("continuing the unfinished run") == 1  # rank 0 only
    state = json.loads((out / "checkpoint-3" / "trainer_state.json").read_text())
    assert state["global_step"] == 3
    assert [h["step"] for h in state["log_history"] if "loss" in h] == [1, 2, 3]
