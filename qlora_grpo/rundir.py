"""The run directory: refuse to clobber it, lock it, and find the last *complete* checkpoint.

A checkpoint counts as complete only once `COMPLETE` exists in it; the marker is written (atomically,
via rename) by `CheckpointMarker` after the Trainer has finished writing everything else, so a run
killed mid-save never resumes from a half-written checkpoint.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

from qlora_grpo.errors import UserError

COMPLETE = "COMPLETE"
LOCK = ".run.lock"
CKPT_RE = re.compile(r"^checkpoint-(\d+)$")


def checkpoints(output_dir: str | Path, complete_only: bool = True) -> list[Path]:
    out = Path(output_dir)
    if not out.is_dir():
        return []
    found = []
    for p in out.iterdir():
        m = CKPT_RE.match(p.name)
        if m and p.is_dir() and (not complete_only or (p / COMPLETE).is_file()):
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def last_complete_checkpoint(output_dir: str | Path) -> Path | None:
    ckpts = checkpoints(output_dir)
    return ckpts[-1] if ckpts else None


def mark_complete(checkpoint_dir: str | Path) -> None:
    ckpt = Path(checkpoint_dir)
    tmp = ckpt / (COMPLETE + ".tmp")
    tmp.write_text("ok\n")
    os.replace(tmp, ckpt / COMPLETE)


def resolve_resume(output_dir: str | Path, resume: str, overwrite: bool) -> str | None:
    """Checkpoint path to resume from, or None for a fresh run; refuses to clobber a used dir."""
    out = Path(output_dir)
    if resume not in ("auto", "never"):
        ckpt = Path(resume)
        if not (ckpt / COMPLETE).is_file():
            raise UserError(f"resume={resume}: not a complete checkpoint (no {COMPLETE} marker); "
                            f"complete ones in {out}: {[p.name for p in checkpoints(out)] or 'none'}")
        return str(ckpt)
    if resume == "auto":
        last = last_complete_checkpoint(out)
        if last is not None:
            return str(last)
    if out.is_dir() and any(p.name != LOCK for p in out.iterdir()) and not overwrite:
        raise UserError(f"output_dir {out} is not empty and holds no complete checkpoint to resume from; "
                        "choose another output_dir or pass --overwrite_output_dir true")
    return None


class RunLock:
    """A lock file holding `host:pid`; a second run on the same dir refuses unless the holder is dead."""

    def __init__(self, output_dir: str | Path):
        self.path = Path(output_dir) / LOCK
        self.held = False

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = f"{socket.gethostname()}:{os.getpid()}"
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            holder = self.path.read_text().strip() if self.path.exists() else ""
            if holder and self._alive(holder):
                raise UserError(f"another run ({holder}) is using {self.path.parent}; wait for it to finish or "
                                "use another output_dir") from None
            self.path.unlink(missing_ok=True)  # stale lock of a dead run: take it over
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        with os.fdopen(fd, "w") as f:
            f.write(me + "\n")
        self.held = True
        return self

    @staticmethod
    def _alive(holder: str) -> bool:
        host, _, pid = holder.rpartition(":")
        if host != socket.gethostname() or not pid.isdigit():
            return True  # another machine's run on a shared disk: assume alive
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
