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


# ----------------------------------------------------------------------------- training and the final save
class FakeTrainer:
    """What `rundir.train` and `rundir.save_final` use of a Trainer, recording the calls."""

    def __init__(self, max_steps=4, main=True, world_size=1):
        from types import SimpleNamespace

        self.args = SimpleNamespace(max_steps=max_steps, world_size=world_size)
        self.accelerator = SimpleNamespace(is_main_process=main, wait_for_everyone=lambda: self.calls.append("wait"))
        self.calls = []
        self.state = None

    def train(self, resume_from_checkpoint=None):
        self.calls.append(("train", resume_from_checkpoint))
        return "trained"

    def _load_from_checkpoint(self, path):
        self.calls.append(("load", path))

    def save_model(self, path):
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, "adapter_model.safetensors"), "w") as f:
            f.write("final weights")
        self.calls.append(("save_model", os.path.basename(path)))


def _checkpoint_with_state(tmp_path, step):
    from transformers import TrainerState

    ckpt = tmp_path / f"checkpoint-{step}"
    ckpt.mkdir()
    TrainerState(global_step=step, max_steps=step).save_to_json(str(ckpt / "trainer_state.json"))
    return ckpt


@pytest.mark.parametrize("step, max_steps", [(4, 4), (5, 4)])
def test_a_checkpoint_at_the_last_step_is_loaded_not_trained_past(tmp_path, capsys, step, max_steps):
    ckpt = _checkpoint_with_state(tmp_path, step)
    trainer = FakeTrainer(max_steps=max_steps)
    assert rundir.train(trainer, str(ckpt)) is None
    assert trainer.calls == [("load", str(ckpt))] and trainer.state.global_step == step
    assert capsys.readouterr().out == (f"checkpoint-{step} holds the last step (max_steps={max_steps}): nothing left "
                                       "to train; loading it for the final save\n")


@pytest.mark.parametrize("step, max_steps", [(3, 4), (4, -1), (4, 0), (None, 4)])
def test_other_starts_train_from_the_checkpoint(tmp_path, capsys, step, max_steps):
    resume_from = None if step is None else str(_checkpoint_with_state(tmp_path, step))
    trainer = FakeTrainer(max_steps=max_steps)
    assert rundir.train(trainer, resume_from) == "trained"
    assert trainer.calls == [("train", resume_from)] and capsys.readouterr().out == ""


def test_a_trainer_that_cannot_load_weights_alone_trains(tmp_path):
    class Minimal:  # no _load_from_checkpoint (an older or wrapped Trainer)
        args = FakeTrainer().args

        def train(self, resume_from_checkpoint=None):
            return ("trained", resume_from_checkpoint)

    ckpt = str(_checkpoint_with_state(tmp_path, 4))
    assert rundir.train(Minimal(), ckpt) == ("trained", ckpt)


class FakeProcessor:
    def __init__(self):
        self.saved = []

    def save_pretrained(self, folder):
        os.makedirs(os.path.join(folder, "sub"))
        with open(os.path.join(folder, "sub", "x"), "w") as f:
            f.write("x")
        self.saved.append(folder)


def test_save_final_replaces_the_adapter_through_a_temporary_folder(tmp_path):
    out = tmp_path / "run"
    (out / rundir.FINAL_TMP).mkdir(parents=True)
    (out / rundir.FINAL_TMP / "stale.bin").write_text("left by a killed save")
    (out / "adapter_model.safetensors").write_text("old")
    processor, trainer = FakeProcessor(), FakeTrainer()
    rundir.save_final(trainer, processor, out)
    assert trainer.calls == ["wait", ("save_model", rundir.FINAL_TMP), "wait"]
    assert processor.saved == [str(out / rundir.FINAL_TMP)]
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == [
        "adapter_model.safetensors", "sub", "sub/x"]  # the stale file is gone, the subfolder promoted
    assert (out / "adapter_model.safetensors").read_text() == "final weights"


def test_save_final_on_another_rank_leaves_the_folder_to_rank_0(tmp_path):
    out = tmp_path / "run"
    (out / rundir.FINAL_TMP).mkdir(parents=True)
    trainer = FakeTrainer(main=False)
    rundir.save_final(trainer, None, out)  # all ranks call save_model (it gathers); only rank 0 writes files
    assert trainer.calls == ["wait", ("save_model", rundir.FINAL_TMP), "wait"]
    assert (out / rundir.FINAL_TMP / "adapter_model.safetensors").is_file()
    assert not (out / "adapter_model.safetensors").exists()


def test_raise_if_disk_full_raises_only_for_a_full_disk(tmp_path):
    import errno

    rundir.raise_if_disk_full(tmp_path, ValueError("other"))  # returns: the caller re-raises its own error
    cause = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x.bin"))
    with pytest.raises(UserError, match=r"^disk full \(No space left on device\) writing .*x\.bin") as err:
        rundir.raise_if_disk_full(tmp_path, cause)
    assert err.value.__cause__ is cause


# ----------------------------------------------------------------------------- checkpoints
def committed(out, *steps: int) -> None:
    """Empty checkpoint-N folders of `out`, each committed (COMPLETE written)."""
    for step in steps:
        (out / f"checkpoint-{step}").mkdir()
        rundir.mark_complete(out / f"checkpoint-{step}")


def test_removing_a_checkpoint_twice_is_harmless(tmp_path):
    ckpt = tmp_path / "checkpoint-1"
    ckpt.mkdir()
    rundir.mark_complete(ckpt)
    rundir.remove_checkpoint(ckpt)
    rundir.remove_checkpoint(ckpt)  # another process (or a rerun) got there first
    assert not ckpt.exists()


def test_manifest_lists_every_file_but_its_own(tmp_path):
    import json

    ckpt = tmp_path / "checkpoint-7"
    (ckpt / "sub").mkdir(parents=True)
    (ckpt / "a.bin").write_bytes(b"abc")
    (ckpt / "sub" / "b.bin").write_bytes(b"hello")
    (ckpt / "COMPLETE.tmp").write_text("a leftover of an interrupted commit")
    rundir.mark_complete(ckpt)
    text = (ckpt / "COMPLETE").read_text()
    assert json.loads(text) == {"format": 1, "step": 7, "files": {"a.bin": 3, "sub/b.bin": 5}}
    assert text.startswith('{\n "format": 1,') and text.endswith("}\n")
    assert not (ckpt / "COMPLETE.tmp").exists()  # the commit wrote and renamed it


@pytest.mark.parametrize("text, complete", [
    ("ok", True),  # legacy marker
    ("[1, 2]", True),  # JSON but not a manifest: trusted like the legacy marker
    ('{"format": 1}', True),
    ('{"format": 1, "files": {"a.bin": 3}}', True),
    ('{"format": 1, "files": {"a.bin": 4}}', False),
    ('{"format": 1, "files": {"gone.bin": 1}}', False),
])
def test_is_complete_reads_the_manifest(tmp_path, text, complete):
    ckpt = tmp_path / "checkpoint-1"
    ckpt.mkdir()
    (ckpt / "a.bin").write_bytes(b"abc")
    (ckpt / "COMPLETE").write_text(text)
    assert rundir.is_complete(ckpt) is complete


def test_is_complete_is_false_for_an_unreadable_marker(tmp_path):
    ckpt = tmp_path / "checkpoint-1"
    (ckpt / "COMPLETE").mkdir(parents=True)  # a folder where the marker should be
    assert rundir.is_complete(ckpt) is False
    assert rundir.is_complete(tmp_path / "missing") is False


@pytest.mark.parametrize("keep, left", [(None, [1, 2, 3]), (0, [1, 2, 3]), (-1, [1, 2, 3]), (1, [3]), (2, [2, 3])])
def test_rotation_keeps_the_newest_keep_checkpoints(tmp_path, keep, left):
    committed(tmp_path, 1, 2, 3)
    removed = rundir.rotate(tmp_path, keep)
    assert [p.name for p in removed] == [f"checkpoint-{s}" for s in (1, 2, 3) if s not in left]
    assert [p.name for p in rundir.checkpoints(tmp_path)] == [f"checkpoint-{s}" for s in left]


def test_rotation_protects_the_resumed_checkpoint_and_the_newest(tmp_path):
    committed(tmp_path, 1, 2, 3, 4)
    removed = rundir.rotate(tmp_path, 2, protect=tmp_path / "checkpoint-1")
    assert [p.name for p in removed] == ["checkpoint-2", "checkpoint-3"]
    assert [p.name for p in rundir.checkpoints(tmp_path)] == ["checkpoint-1", "checkpoint-4"]


def test_newer_checkpoints_are_moved_aside_under_a_free_name(tmp_path):
    committed(tmp_path, 2, 5)
    (tmp_path / "superseded-checkpoint-5").mkdir()  # from an earlier restart
    (tmp_path / "superseded-checkpoint-5.2").mkdir()
    msgs = rundir.tidy_checkpoints(tmp_path, start_step=2)
    assert msgs == ["moved checkpoint-5 to superseded-checkpoint-5.3: it is newer than the step this run starts "
                    "at (2), so resume must not pick it (delete it when no longer needed)"]
    assert (tmp_path / "superseded-checkpoint-5.3" / "COMPLETE").is_file()
    assert [p.name for p in rundir.checkpoints(tmp_path)] == ["checkpoint-2"]


def test_resume_refusals_say_what_the_dir_holds(tmp_path):
    ckpt = tmp_path / "checkpoint-3"
    ckpt.mkdir()
    (ckpt / "a.bin").write_text("x")
    rundir.mark_complete(ckpt)
    (ckpt / "a.bin").write_text("truncated? no: longer")
    with pytest.raises(UserError) as err:
        rundir.resolve_resume(tmp_path, str(ckpt), overwrite=False)
    assert str(err.value) == (f"resume={ckpt}: not a complete checkpoint (files missing or truncated since it was "
                              f"written (see {ckpt / 'COMPLETE'})); complete ones in {tmp_path}: none")
    other = tmp_path / "checkpoint-1"
    other.mkdir()
    rundir.mark_complete(other)
    (tmp_path / "checkpoint-9").mkdir()
    with pytest.raises(UserError) as err:
        rundir.resolve_resume(tmp_path, str(tmp_path / "checkpoint-9"), overwrite=False)
    assert str(err.value) == (f"resume={tmp_path / 'checkpoint-9'}: not a complete checkpoint (no COMPLETE marker); "
                              f"complete ones in {tmp_path}: ['checkpoint-1']")
    assert rundir.resolve_resume(tmp_path, str(other), overwrite=False) == str(other)
    with pytest.raises(UserError) as err:
        rundir.resolve_resume(tmp_path, "never", overwrite=False)
    assert str(err.value) == (
        f"output_dir {tmp_path} holds a previous run (1 complete checkpoint(s), the last checkpoint-1) and "
        "resume=never starts over; choose another output_dir, or pass --restart_run true to move that run to "
        f"{tmp_path.name}.old-<time>/ and start over (or drop --resume never to continue it)")


def test_a_dir_without_checkpoints_is_refused_in_full(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    for resume in ("auto", "never"):
        with pytest.raises(UserError) as err:
            rundir.resolve_resume(tmp_path, resume, overwrite=False)
        assert str(err.value) == (
            f"output_dir {tmp_path} is not empty and holds no complete checkpoint to resume from; choose another "
            f"output_dir, or pass --restart_run true to move its contents to {tmp_path.name}.old-<time>/ and start "
            "over")
    (tmp_path / "notes.txt").unlink()
    (tmp_path / rundir.LOCK).write_text("")  # our own lock does not make a dir used
    assert rundir.resolve_resume(tmp_path, "never", overwrite=False) is None


# ----------------------------------------------------------------------------- lock
def _start_ticks(pid: int) -> str:
    """Field 22 of /proc/PID/stat (proc(5)): the start time, counted after the parenthesised name."""
    return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[19]


@pytest.fixture
def sleeper():
    """A live process whose name holds ') Z 1 (' — as /proc shows any name, parentheses and all."""
    if not os.path.exists("/proc/self/stat"):
        pytest.skip("no /proc")
    code = ("import signal, time; signal.signal(signal.SIGHUP, signal.SIG_DFL); "  # even when started under nohup
            "open('/proc/self/comm', 'w').write(') Z 1 ('); print('ok', flush=True); time.sleep(60)")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ok"
    yield child
    child.kill()
    child.wait()


def test_a_live_holder_with_its_start_time_is_refused(tmp_path, sleeper):
    import socket

    assert rundir._proc_start(sleeper.pid) == _start_ticks(sleeper.pid)
    assert rundir._proc_zombie(sleeper.pid) is False
    (tmp_path / rundir.LOCK).write_text(f"start_ticks={_start_ticks(sleeper.pid)}\n{socket.gethostname()}:{sleeper.pid}\n")
    with pytest.raises(UserError) as err:
        rundir.RunLock(tmp_path).acquire()
    assert str(err.value) == (
        f"another run ({socket.gethostname()}:{sleeper.pid}) is using {tmp_path}; wait for it to finish or use "
        f"another output_dir (if you are sure no run is using it, delete {tmp_path / rundir.LOCK})")


def test_a_zombie_holder_is_dead(tmp_path):
    import socket
    import time

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        for _ in range(200):  # not reaped yet: a zombie until wait()
            if rundir._proc_zombie(child.pid):
                break
            time.sleep(0.05)
        assert rundir._proc_zombie(child.pid)
        (tmp_path / rundir.LOCK).write_text(f"{socket.gethostname()}:{child.pid}\n")
        rundir.RunLock(tmp_path).acquire().release()
    finally:
        child.wait()
    assert rundir._proc_zombie(child.pid) is False and rundir._proc_start(child.pid) is None  # gone


@pytest.mark.parametrize("content", ["", "garbage\n", "host-without-pid:\n", "start_ticks=1\n"])
def test_a_lock_file_we_did_not_write_is_taken_over(tmp_path, content):
    (tmp_path / rundir.LOCK).write_text(content)
    lock = rundir.RunLock(tmp_path).acquire()
    import socket

    start = rundir._proc_start(os.getpid())
    assert lock.path.read_text() == (f"start_ticks={start}\n" if start else "") + f"{socket.gethostname()}:{os.getpid()}\n"
    lock.release()


def test_a_flock_holder_that_wrote_nothing_yet_is_unknown(tmp_path):
    code = ("import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
            "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)")
    child = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / rundir.LOCK)], stdout=subprocess.PIPE,
                             text=True)
    try:
        assert child.stdout.readline().strip() == "locked"
        with pytest.raises(UserError, match=r"^another run \(unknown\) is using"):
            rundir.RunLock(tmp_path).acquire()
    finally:
        child.kill()
        child.wait()


def test_release_twice_and_the_lock_file_mode(tmp_path):
    lock = rundir.RunLock(tmp_path).acquire()
    assert lock.path.stat().st_mode & 0o777 == 0o644 & ~_umask()
    lock.path.unlink()  # removed by hand while held
    lock.release()
    lock.release()
    again = rundir.RunLock(tmp_path)
    with again:
        assert again.path.is_file()
    assert not again.path.exists()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_checkpoint_at_step_1_of_1_is_loaded(tmp_path):
    ckpt = _checkpoint_with_state(tmp_path, 1)
    trainer = FakeTrainer(max_steps=1)
    assert rundir.train(trainer, str(ckpt)) is None and trainer.calls == [("load", str(ckpt))]


def test_save_final_promotes_nested_folders_and_other_ranks_leave_rank_0s_files(tmp_path):
    class NestedProcessor:
        def save_pretrained(self, folder):
            os.makedirs(os.path.join(folder, "sub", "deeper"))
            with open(os.path.join(folder, "sub", "deeper", "x"), "w") as f:
                f.write("x")

    out = tmp_path / "run"
    out.mkdir()
    rundir.save_final(FakeTrainer(), NestedProcessor(), out)
    assert (out / "sub" / "deeper" / "x").read_text() == "x" and not (out / rundir.FINAL_TMP).exists()
    (out / rundir.FINAL_TMP).mkdir()
    (out / rundir.FINAL_TMP / "rank0.bin").write_text("rank 0 is writing this")
    rundir.save_final(FakeTrainer(main=False), None, out)
    assert (out / rundir.FINAL_TMP / "rank0.bin").is_file()  # only rank 0 clears the temporary folder


def test_disk_full_through_an_implicit_chain_and_a_cycle(tmp_path):
    import errno

    for step in (2, 3):  # two half-written checkpoints
        (tmp_path / f"checkpoint-{step}").mkdir()
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("saving failed")  # noqa: B904 - implicit chaining, as torch does it
    except RuntimeError as exc:
        implicit = exc
    message = str(rundir.disk_full_error(tmp_path, implicit))
    assert "the half-written checkpoint-2, checkpoint-3 was removed" in message
    a, b = ValueError("a"), ValueError("b")
    a.__context__, b.__context__ = b, a  # a cycle ends the walk instead of looping forever
    assert rundir.is_disk_full(a) is False


def test_a_marker_that_cannot_be_read_means_incomplete(tmp_path):
    ckpt = tmp_path / "checkpoint-1"
    ckpt.mkdir()
    (ckpt / "COMPLETE").symlink_to(ckpt / "COMPLETE")  # ELOOP: an OSError of its own kind
    assert rundir.is_complete(ckpt) is False


def test_rotation_of_a_dir_without_complete_checkpoints_removes_nothing(tmp_path):
    (tmp_path / "checkpoint-1").mkdir()
    assert rundir.rotate(tmp_path, 2) == [] and (tmp_path / "checkpoint-1").is_dir()


def test_the_first_superseded_name_is_dot_2(tmp_path):
    committed(tmp_path, 1, 5)
    (tmp_path / "superseded-checkpoint-5").mkdir()
    rundir.tidy_checkpoints(tmp_path, start_step=1)
    assert (tmp_path / "superseded-checkpoint-5.2" / "COMPLETE").is_file()


def test_releasing_a_lock_never_acquired_leaves_the_file_alone(tmp_path):
    (tmp_path / rundir.LOCK).write_text("someone else's lock")
    rundir.RunLock(tmp_path).release()
    assert (tmp_path / rundir.LOCK).read_text() == "someone else's lock"


def test_holders_that_are_alive_or_ours(tmp_path, sleeper, monkeypatch):
    import socket
    import time

    host = socket.gethostname()
    (tmp_path / rundir.LOCK).write_text(f"{host}:{os.getpid()}\n")  # our own pid: left by us, take it
    rundir.RunLock(tmp_path).acquire().release()
    (tmp_path / rundir.LOCK).write_text(f"other:host:{sleeper.pid}\n")  # a host name with ':' (IPv6)
    with pytest.raises(UserError, match=r"another run \(other:host:"):
        rundir.RunLock(tmp_path).acquire()
    (tmp_path / rundir.LOCK).write_text(f"{host}:{sleeper.pid}\n")
    with pytest.raises(UserError, match="another run"):
        rundir.RunLock(tmp_path).acquire()
    time.sleep(0.3)
    assert sleeper.poll() is None  # asking whether the holder lives never signals it

    def not_permitted(pid, sig):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(rundir.os, "kill", not_permitted)  # another user's process: alive
    with pytest.raises(UserError, match="another run"):
        rundir.RunLock(tmp_path).acquire()


def test_lock_file_without_proc_and_with_undecodable_bytes(tmp_path, monkeypatch):
    import socket

    (tmp_path / rundir.LOCK).write_bytes(b"\xff\xfe garbage")  # not text: not a lock we wrote
    monkeypatch.setattr(rundir, "_proc_start", lambda pid: None)  # no /proc (macOS): host:pid only
    lock = rundir.RunLock(tmp_path).acquire()
    assert lock.path.read_text() == f"{socket.gethostname()}:{os.getpid()}\n"
    lock.release()


def test_a_lock_file_replaced_while_locking_is_locked_again(tmp_path, monkeypatch):
    import fcntl

    real_flock, calls = fcntl.flock, []

    def flock(fd, op, unlink_times=1):
        real_flock(fd, op)
        calls.append(op)
        if len(calls) <= unlink_times:
            (tmp_path / rundir.LOCK).unlink()  # a finishing run removed the file we just locked

    monkeypatch.setattr(fcntl, "flock", flock)
    lock = rundir.RunLock(tmp_path).acquire()
    assert len(calls) == 2 and lock.path.read_text().endswith(f":{os.getpid()}\n")
    lock.release()
    calls.clear()
    monkeypatch.setattr(fcntl, "flock", lambda fd, op: flock(fd, op, unlink_times=99))
    with pytest.raises(UserError) as err:
        rundir.RunLock(tmp_path).acquire()
    assert str(err.value) == (f"could not lock {tmp_path / rundir.LOCK}: it keeps changing; is another run "
                              f"starting on {tmp_path}?")
    assert len(calls) == 10
