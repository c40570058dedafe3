import os
import subprocess
import sys

import pytest

from qlora_grpo import rundir
from qlora_grpo.errors import UserError


def test_only_complete_checkpoints_are_resumed(tmp_path):
    for n in (5, 10, 15):
        (tmp_path / f"checkpoint-{n}").mkdir()
    rundir.mark_complete(tmp_path / "checkpoint-5")
    rundir.mark_complete(tmp_path / "checkpoint-10")  # checkpoint-15 was cut mid-save
    assert rundir.last_complete_checkpoint(tmp_path).name == "checkpoint-10"
    assert rundir.resolve_resume(tmp_path, "auto", overwrite=False).endswith("checkpoint-10")
    with pytest.raises(UserError, match="not a complete checkpoint"):
        rundir.resolve_resume(tmp_path, str(tmp_path / "checkpoint-15"), overwrite=False)


def test_refuses_to_clobber_a_non_empty_dir(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty"):
        rundir.resolve_resume(tmp_path, "auto", overwrite=False)
    assert rundir.resolve_resume(tmp_path, "auto", overwrite=True) is None
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert rundir.resolve_resume(tmp_path / "new", "auto", overwrite=False) is None


def test_lock_refuses_a_live_holder_and_takes_over_a_dead_one(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        import socket

        (tmp_path / rundir.LOCK).write_text(f"{socket.gethostname()}:{child.pid}\n")
        with pytest.raises(UserError, match="another run"):
            rundir.RunLock(tmp_path).acquire()
    finally:
        child.kill()
        child.wait()
    lock = rundir.RunLock(tmp_path).acquire()  # holder is dead now
    assert (tmp_path / rundir.LOCK).read_text().strip().endswith(str(os.getpid()))
    lock.release()
    assert not (tmp_path / rundir.LOCK).exists()


def test_resume_command_continues_the_same_run(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    argv = ["train_qlora_grpo.py", "--config", "my cfg.yaml", "--resume", "never", "--restart_run", "true",
            "--resume=x", "--restart_run=true", "--seed", "3"]
    assert rundir.resume_command(argv) == "python train_qlora_grpo.py --config 'my cfg.yaml' --seed 3 --resume auto"
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert rundir.resume_command(["train_sft.py"]) == "accelerate launch --num_processes 2 train_sft.py --resume auto"
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setattr(sys, "argv", ["train_sft.py", "--max_steps", "5"])
    assert rundir.resume_command() == "python train_sft.py --max_steps 5 --resume auto"


def test_interrupted_message_names_step_checkpoint_and_command(tmp_path, monkeypatch):
    from types import SimpleNamespace

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(sys, "argv", ["train_qlora_grpo.py", "--config", "c.yaml"])
    closed = []
    bar = SimpleNamespace(close=lambda: closed.append(True))
    callback = SimpleNamespace(training_bar=bar)
    trainer = SimpleNamespace(state=SimpleNamespace(global_step=6),
                              callback_handler=SimpleNamespace(callbacks=[SimpleNamespace(), callback]))
    cfg = SimpleNamespace(output_dir=str(tmp_path), max_steps=10, save_steps=4)
    command = "resume with: python train_qlora_grpo.py --config c.yaml --resume auto"
    assert rundir.interrupted_message(trainer, cfg) == (
        "interrupted (Ctrl-C) at step 6 of 10; no complete checkpoint yet (save_steps=4), so a rerun starts from "
        f"step 0; {command}")
    assert closed == [True] and callback.training_bar is None  # the progress bar's line is ended first
    (tmp_path / "checkpoint-4").mkdir()
    rundir.mark_complete(tmp_path / "checkpoint-4")
    ckpt = tmp_path / "checkpoint-4"
    assert rundir.interrupted_message(trainer, cfg, saving=True) == (
        f"interrupted (Ctrl-C) while saving the final adapter; saved: {ckpt} (the last complete checkpoint, "
        f"step 4); steps after it are redone; {command}")
    assert rundir.interrupted_message(SimpleNamespace(), cfg).startswith("interrupted (Ctrl-C) at step 0 of 10; ")
