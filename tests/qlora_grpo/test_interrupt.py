"""Ctrl-C (SIGINT) during GRPO training: one `error:` line naming the step, the last complete checkpoint
and the exact command that resumes; exit status 130; that command then finishes the run."""

import os
import shlex
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT
from tests.qlora_grpo.test_train import tiny_grpo_config


@pytest.mark.slow
def test_ctrl_c_names_step_checkpoint_and_resume_command(tiny_model, sample_prepared, tmp_path):
    out, steps = tmp_path / "run", 6
    config = tiny_grpo_config(tmp_path, tiny_model, sample_prepared, max_steps=steps, save_steps=2)
    args = [sys.executable, "train_qlora_grpo.py", "--config", str(config), "--output_dir", str(out),
            "--resume", "never"]  # the resume command must turn this into auto
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None and not (out / "checkpoint-2" / "COMPLETE").is_file():
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before Ctrl-C:\n" + proc.communicate()[1][-3000:]
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=300)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert proc.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    last = lines[-1]
    assert last.startswith("error: interrupted (Ctrl-C) at step ") and "checkpoint-" in last, last
    assert sum(line.startswith("error: ") for line in lines) == 1
    command = last.split("resume with: ", 1)[1]
    assert command.endswith("--resume auto") and "never" not in command
    assert command.startswith("python ")
    resumed = subprocess.run([sys.executable, *shlex.split(command)[1:]], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stdout
    assert (out / f"checkpoint-{steps}" / "COMPLETE").is_file()
