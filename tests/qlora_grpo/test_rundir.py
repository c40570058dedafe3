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
