"""Unit tests of the pieces the fault tests rely on: the checkpoint commit protocol, rotation, the
run lock, the final save, the disk-full message and the NaN/inf guard (no training, fast)."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from qlora_grpo import callbacks, rundir
from qlora_grpo.errors import UserError

ROOT = Path(__file__).resolve().parents[2]


def _ckpt(out: Path, step: int, complete: bool = True) -> Path:
    d = out / f"checkpoint-{step}"
    (d / "ref").mkdir(parents=True)
    for name, size in (("adapter_model.safetensors", 100), ("optimizer.pt", 200), ("trainer_state.json", 10),
                       ("ref/adapter_model.safetensors", 50)):
        (d / name).write_bytes(b"x" * size)
    if complete:
        rundir.mark_complete(d)
    return d


def test_manifest_marks_a_checkpoint_complete_only_while_its_files_are_whole(tmp_path):
    c1, c2 = _ckpt(tmp_path, 1), _ckpt(tmp_path, 2)
    manifest = json.loads((c2 / rundir.COMPLETE).read_text())
    assert manifest["step"] == 2 and manifest["files"]["optimizer.pt"] == 200
    assert "ref/adapter_model.safetensors" in manifest["files"]
    assert rundir.resolve_resume(tmp_path, "auto", False) == str(c2)
    (c2 / "optimizer.pt").write_bytes(b"x" * 10)  # truncated after the commit (disk trouble)
    assert not rundir.is_complete(c2)
    assert rundir.resolve_resume(tmp_path, "auto", False) == str(c1)
    with pytest.raises(UserError, match="files missing or truncated"):
        rundir.resolve_resume(tmp_path, str(c2), False)
    (c1 / "ref" / "adapter_model.safetensors").unlink()
    assert rundir.last_complete_checkpoint(tmp_path) is None


def test_legacy_plain_marker_is_still_trusted(tmp_path):
    d = _ckpt(tmp_path, 3, complete=False)
    (d / rundir.COMPLETE).write_text("ok\n")
    assert rundir.last_complete_checkpoint(tmp_path) == d


def test_rotation_keeps_the_newest_complete_and_unmarks_before_deleting(tmp_path):
    for s in (1, 2, 3):
        _ckpt(tmp_path, s)
    _ckpt(tmp_path, 4, complete=False)  # being written: never counted, never deleted by rotation
    removed = rundir.rotate(tmp_path, keep=2)
    assert [p.name for p in removed] == ["checkpoint-1"]
    assert [p.name for p in rundir.checkpoints(tmp_path, complete_only=False)] == [
        "checkpoint-2", "checkpoint-3", "checkpoint-4"]
    assert rundir.rotate(tmp_path, keep=1, protect=tmp_path / "checkpoint-2") == []
    assert rundir.rotate(tmp_path, keep=None) == []


def test_train_start_removes_half_written_and_moves_newer_checkpoints_aside(tmp_path):
    for s in (1, 2, 3):
        _ckpt(tmp_path, s)
    _ckpt(tmp_path, 4, complete=False)
    msgs = rundir.tidy_checkpoints(tmp_path, start_step=2)  # e.g. resume: checkpoint-2 given explicitly
    assert any("removed checkpoint-4" in m for m in msgs) and any("superseded-checkpoint-3" in m for m in msgs)
    assert [p.name for p in rundir.checkpoints(tmp_path)] == ["checkpoint-1", "checkpoint-2"]
    assert (tmp_path / "superseded-checkpoint-3" / "optimizer.pt").is_file()
    assert rundir.tidy_checkpoints(tmp_path, start_step=2) == []


def test_save_final_moves_whole_files_into_place(tmp_path):
    class Acc:
        is_main_process = True

        def wait_for_everyone(self):
            pass

    class Trainer:
        accelerator = Acc()

        def save_model(self, path):
            Path(path, "ref").mkdir(parents=True, exist_ok=True)
            Path(path, "adapter_model.safetensors").write_bytes(b"new")
            Path(path, "ref", "adapter_model.safetensors").write_bytes(b"newref")

    class Processor:
        def save_pretrained(self, path):
            Path(path, "tokenizer.json").write_text("{}")

    (tmp_path / "adapter_model.safetensors").write_bytes(b"old")
    (tmp_path / rundir.FINAL_TMP).mkdir()
    (tmp_path / rundir.FINAL_TMP / "stale").write_text("left by a kill")
    rundir.save_final(Trainer(), Processor(), tmp_path)
    assert (tmp_path / "adapter_model.safetensors").read_bytes() == b"new"
    assert (tmp_path / "ref" / "adapter_model.safetensors").read_bytes() == b"newref"
    assert (tmp_path / "tokenizer.json").is_file() and not (tmp_path / "stale").exists()
    assert not (tmp_path / rundir.FINAL_TMP).exists()


def test_disk_full_is_recognised_through_wrappers_and_explained(tmp_path):
    _ckpt(tmp_path, 1)
    _ckpt(tmp_path, 2, complete=False)
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "checkpoint-2" / "optimizer.pt"))
        except OSError as inner:
            raise RuntimeError("[enforce fail at inline_container.cc] unexpected pos") from inner
    except RuntimeError as e:
        err = rundir.disk_full_error(tmp_path, e)
    assert isinstance(err, UserError)
    msg = str(err)
    assert "disk full (No space left on device)" in msg and "optimizer.pt" in msg
    assert "half-written checkpoint-2 was removed" in msg and "checkpoint-1 is intact" in msg
    assert "resumes from checkpoint-1" in msg and not (tmp_path / "checkpoint-2").exists()
    assert rundir.is_disk_full(Exception("Error while serializing: IoError(Os { code: 28, kind: StorageFull })"))
    assert rundir.disk_full_error(tmp_path, ValueError("something else")) is None


def test_lock_is_held_by_a_live_process_and_freed_by_its_death(tmp_path):
    code = ("import sys, time; sys.path.insert(0, sys.argv[2]); from qlora_grpo import rundir; "
            "rundir.RunLock(sys.argv[1]).acquire(); print('locked', flush=True); time.sleep(60)")
    child = subprocess.Popen([sys.executable, "-c", code, str(tmp_path), str(ROOT)], stdout=subprocess.PIPE,
                             text=True)
    try:
        assert child.stdout.readline().strip() == "locked"
        with pytest.raises(UserError, match=rf"another run \(.*:{child.pid}\)"):
            rundir.RunLock(tmp_path).acquire()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    lock = rundir.RunLock(tmp_path).acquire()  # SIGKILL freed the flock; the pid in the file is dead
    assert lock.path.read_text().strip().endswith(f":{os.getpid()}")
    with pytest.raises(UserError, match="another run"):  # and we hold it now
        rundir.RunLock(tmp_path).acquire()
    lock.release()
    assert not lock.path.exists()


def test_lock_of_a_reused_pid_is_taken_over(tmp_path):
    import socket

    start = rundir._proc_start(os.getppid())
    if start is None:
        pytest.skip("no /proc")
    # a live pid (our parent) whose start time differs from the one recorded: the holder died, pid reused
    (tmp_path / rundir.LOCK).write_text(f"start_ticks={int(start) + 12345}\n{socket.gethostname()}:{os.getppid()}\n")
    rundir.RunLock(tmp_path).acquire().release()
    (tmp_path / rundir.LOCK).write_text(f"{socket.gethostname()}-elsewhere:1\n")  # another host: assumed alive
    with pytest.raises(UserError, match="another run"):
        rundir.RunLock(tmp_path).acquire()


# ----------------------------------------------------------------------------- NaN/inf guard
class _State:
    def __init__(self, step=4):
        self.global_step = step
        self.log_history = []
        self.is_world_process_zero = True


class _Control:
    should_training_stop = False
    should_save = True


def _model(bad: bool):
    m = torch.nn.Linear(2, 2)
    for p in m.parameters():
        p.grad = torch.full_like(p, float("nan") if bad else 1.0)
    return m


def test_guard_drops_a_nan_update_and_stops(capsys):
    g = callbacks.NonFiniteGuard("stop")
    m, control, state = _model(bad=True), _Control(), _State(4)
    g.on_pre_optimizer_step(None, state, control, model=m)
    assert all(p.grad is None for p in m.parameters())  # optimizer.step() will skip every parameter
    assert control.should_training_stop and g.stopped_at == 5
    state.global_step = 5
    control.should_save = True
    g.on_step_end(None, state, control)
    assert not control.should_save  # the bad step is never checkpointed
    assert "non-finite gradients" in capsys.readouterr().err
    assert "at step 5" in g.message("/nonexistent")


def test_guard_skip_mode_goes_on_then_stops_when_it_keeps_happening():
    g = callbacks.NonFiniteGuard("skip", max_consecutive_skips=3)
    control = _Control()
    for step in (0, 1, 3, 4):  # two bad steps, a good one (resets the count), two bad ones: goes on
        g.on_pre_optimizer_step(None, _State(step), control, model=_model(bad=True))
        if step == 1:
            g.on_pre_optimizer_step(None, _State(2), control, model=_model(bad=False))
        assert not control.should_training_stop
    g.on_pre_optimizer_step(None, _State(5), control, model=_model(bad=True))  # 3rd bad step in a row
    assert control.should_training_stop and g.stopped_at == 6 and g.skipped == [1, 2, 4, 5, 6]
    state, logs = _State(6), {"loss": 0.1}
    state.log_history.append({"loss": 0.1, "step": 6})
    g.on_log(None, state, _Control(), logs=logs)
    assert logs["nonfinite_steps"] == 5 and state.log_history[-1]["nonfinite_steps"] == 5


def test_guard_leaves_fp16_overflows_to_the_grad_scaler():
    class Args:
        fp16 = True

    g = callbacks.NonFiniteGuard("stop", max_fp16_overflows=3)
    control = _Control()
    for step in range(2):  # overflows: the scaler skips them and lowers the scale; gradients untouched
        m = _model(bad=True)
        g.on_pre_optimizer_step(Args(), _State(step), control, model=m)
        assert all(p.grad is not None for p in m.parameters()) and not control.should_training_stop
    g.on_log(Args(), _State(2), control, logs={"loss": 0.3, "grad_norm": float("inf")})
    assert not control.should_training_stop
    g.on_pre_optimizer_step(Args(), _State(2), control, model=_model(bad=True))  # 3rd in a row: the loss is bad
    assert control.should_training_stop and g.stopped_at == 3 and "fp16 overflows" in g.events[-1]


def test_guard_catches_a_nonfinite_logged_reward():
    g = callbacks.NonFiniteGuard("stop")
    control = _Control()
    g.on_log(None, _State(7), control, logs={"loss": 0.0, "reward": float("inf")})
    assert control.should_training_stop and g.stopped_at == 7 and "reward at step 7" in g.events[-1]
    with pytest.raises(ValueError):
        callbacks.NonFiniteGuard("ignore")


def test_lock_waits_for_nothing(tmp_path):
    t0 = time.perf_counter()
    with rundir.RunLock(tmp_path):
        pass
    assert time.perf_counter() - t0 < 5


def test_disk_full_message_word_for_word(tmp_path, monkeypatch):
    from types import SimpleNamespace

    monkeypatch.setattr(rundir.shutil, "disk_usage", lambda path: SimpleNamespace(free=3 * 2**30))
    _ckpt(tmp_path, 1)
    _ckpt(tmp_path, 2, complete=False)
    (tmp_path / rundir.FINAL_TMP).mkdir()
    err = rundir.disk_full_error(tmp_path, OSError(errno.ENOSPC, "No space left on device", "opt.pt"))
    assert str(err) == (f"disk full (No space left on device) writing opt.pt while saving to {tmp_path} (3.0 GiB "
                        "free now); the half-written checkpoint-2 was removed; the last complete checkpoint "
                        "checkpoint-1 is intact; free some space (or lower save_total_limit) and rerun the same "
                        "command: it resumes from checkpoint-1")
    assert not (tmp_path / rundir.FINAL_TMP).exists()

    def no_usage(path):
        raise OSError("gone")

    monkeypatch.setattr(rundir.shutil, "disk_usage", no_usage)
    empty = tmp_path / "empty"
    empty.mkdir()
    err = rundir.disk_full_error(empty, OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert str(err) == (f"disk full (No space left on device) while saving to {empty} (free space unknown); no "
                        "complete checkpoint yet; free some space (or lower save_total_limit) and rerun the same "
                        "command")
    for text in ("No space left on device", "StorageFull", "Disk quota exceeded"):
        assert rundir.is_disk_full(RuntimeError(f"x {text} y"))
    assert not rundir.is_disk_full(OSError(errno.EACCES, "Permission denied"))
    assert not rundir.is_disk_full(RuntimeError("no room"))
