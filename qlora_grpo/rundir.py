"""The run directory: refuse to clobber it, lock it, and find the last *complete* checkpoint.

Commit protocol (what makes a SIGKILL at any instant safe, see docs/reliability.md):

- The Trainer writes ``checkpoint-N/`` (adapter, optimizer, scheduler, RNG, trainer state). Then
  `CheckpointMarker` calls `mark_complete`: every file is fsynced, and a ``COMPLETE`` manifest
  (file names and sizes) is written to a temporary name and renamed into place. The rename is the
  commit point: resume only ever uses a checkpoint whose manifest exists *and* whose files still
  have the recorded sizes (`is_complete`).
- Old checkpoints are rotated (``save_total_limit``) only after the new one is committed, and a
  checkpoint is un-marked before it is deleted, so a deletion cut short never looks complete.
- At train start, half-written checkpoints are deleted and complete ones *newer* than the resumed
  step (another timeline: `--overwrite_output_dir`, or an explicit ``resume: PATH``) are renamed to
  ``superseded-checkpoint-N`` so that a later ``resume: auto`` cannot jump to them (`tidy_checkpoints`).
- The final adapter is written into a temporary folder and each file is renamed into ``output_dir``
  (`save_final`): a kill during the final save never leaves a truncated adapter there.

`RunLock` holds an exclusive `flock` on ``output_dir/.run.lock`` (released by the kernel when the
process dies, even by SIGKILL) and writes ``host:pid`` into it for the error message.
"""

from __future__ import annotations

import atexit
import errno
import json
import os
import re
import shutil
import socket
from pathlib import Path

from qlora_grpo.errors import UserError

COMPLETE = "COMPLETE"
LOCK = ".run.lock"
FINAL_TMP = ".final-partial"
SUPERSEDED = "superseded-"
CKPT_RE = re.compile(r"^checkpoint-(\d+)$")
MANIFEST_FORMAT = 1


# ----------------------------------------------------------------------------- checkpoints
def _step(path: Path) -> int | None:
    m = CKPT_RE.match(path.name)
    return int(m.group(1)) if m else None


def is_complete(checkpoint_dir: str | Path) -> bool:
    """True when the checkpoint was committed (COMPLETE exists) and every file of its manifest is
    still there with the recorded size. A plain-text COMPLETE (older runs) is trusted as is."""
    ckpt = Path(checkpoint_dir)
    marker = ckpt / COMPLETE
    try:
        text = marker.read_text()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return False
    except OSError:
        return False
    try:
        manifest = json.loads(text)
    except ValueError:
        return True  # legacy "ok" marker
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict):
        return True
    for rel, size in files.items():
        try:
            if (ckpt / rel).stat().st_size != size:
                return False
        except OSError:
            return False
    return True


def checkpoints(output_dir: str | Path, complete_only: bool = True) -> list[Path]:
    """``checkpoint-N`` folders of `output_dir`, oldest first (only committed ones by default)."""
    out = Path(output_dir)
    if not out.is_dir():
        return []
    found = []
    for p in out.iterdir():
        step = _step(p)
        if step is not None and p.is_dir() and (not complete_only or is_complete(p)):
            found.append((step, p))
    return [p for _, p in sorted(found)]


def last_complete_checkpoint(output_dir: str | Path) -> Path | None:
    ckpts = checkpoints(output_dir)
    return ckpts[-1] if ckpts else None


def _fsync_path(path: Path, directory: bool = False) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on directories
    finally:
        os.close(fd)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_path(path.parent, directory=True)


def mark_complete(checkpoint_dir: str | Path) -> None:
    """Commit a fully written checkpoint: fsync its files, then atomically write the COMPLETE manifest."""
    ckpt = Path(checkpoint_dir)
    files = {}
    for p in sorted(ckpt.rglob("*")):
        if p.is_file() and p.name not in (COMPLETE, COMPLETE + ".tmp"):
            _fsync_path(p)
            files[p.relative_to(ckpt).as_posix()] = p.stat().st_size
    for d in sorted({p.parent for p in ckpt.rglob("*")} | {ckpt}):
        _fsync_path(d, directory=True)
    manifest = {"format": MANIFEST_FORMAT, "step": _step(ckpt), "files": files}
    _write_atomic(ckpt / COMPLETE, json.dumps(manifest, indent=1) + "\n")


def remove_checkpoint(checkpoint_dir: str | Path) -> None:
    """Un-mark first (a deletion cut short never looks complete), then delete."""
    ckpt = Path(checkpoint_dir)
    marker = ckpt / COMPLETE
    if marker.exists():
        marker.unlink()
        _fsync_path(ckpt, directory=True)
    shutil.rmtree(ckpt, ignore_errors=True)


def rotate(output_dir: str | Path, keep: int | None, protect: str | Path | None = None) -> list[Path]:
    """Delete the oldest *complete* checkpoints beyond `keep` (the newest is always kept); returns them."""
    if not keep or keep <= 0:
        return []
    complete = checkpoints(output_dir)
    protected = {complete[-1].resolve()} if complete else set()
    if protect:
        protected.add(Path(protect).resolve())
    removed = []
    excess = len(complete) - max(keep, len(protected & {p.resolve() for p in complete}))
    for ckpt in complete:
        if excess <= 0:
            break
        if ckpt.resolve() not in protected:
            remove_checkpoint(ckpt)
            removed.append(ckpt)
            excess -= 1
    return removed


def discard_incomplete(output_dir: str | Path) -> list[Path]:
    """Delete half-written ``checkpoint-N`` folders (no valid COMPLETE manifest); returns them."""
    removed = []
    for ckpt in checkpoints(output_dir, complete_only=False):
        if not is_complete(ckpt):
            shutil.rmtree(ckpt, ignore_errors=True)
            removed.append(ckpt)
    return removed


def tidy_checkpoints(output_dir: str | Path, start_step: int) -> list[str]:
    """Called when training starts at `start_step`: delete half-written checkpoints and move complete
    ones newer than `start_step` out of resume's way. Returns one message per action."""
    out = Path(output_dir)
    msgs = [f"removed {p.name}: half-written by an interrupted save" for p in discard_incomplete(out)]
    for ckpt in checkpoints(out):
        if _step(ckpt) > start_step:
            target = out / f"{SUPERSEDED}{ckpt.name}"
            n = 1
            while target.exists():
                n += 1
                target = out / f"{SUPERSEDED}{ckpt.name}.{n}"
            os.replace(ckpt, target)
            msgs.append(f"moved {ckpt.name} to {target.name}: it is newer than the step this run starts at "
                        f"({start_step}), so resume must not pick it (delete it when no longer needed)")
    if msgs:
        _fsync_path(out, directory=True)
    return msgs


def resolve_resume(output_dir: str | Path, resume: str, overwrite: bool) -> str | None:
    """Checkpoint path to resume from, or None for a fresh run; refuses to clobber a used dir."""
    out = Path(output_dir)
    if resume not in ("auto", "never"):
        ckpt = Path(resume)
        if not is_complete(ckpt):
            why = (f"files missing or truncated since it was written (see {ckpt / COMPLETE})"
                   if (ckpt / COMPLETE).is_file() else f"no {COMPLETE} marker")
            raise UserError(f"resume={resume}: not a complete checkpoint ({why}); "
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


# ----------------------------------------------------------------------------- final adapter
def _promote(tmp: Path, out: Path) -> None:
    """Move every file of `tmp` into `out` with one atomic rename each, then remove `tmp`."""
    files = sorted(p for p in tmp.rglob("*") if p.is_file())
    for p in files:
        _fsync_path(p)
    for p in files:
        target = out / p.relative_to(tmp)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(p, target)
    for d in sorted({(out / p.relative_to(tmp)).parent for p in files} | {out}):
        _fsync_path(d, directory=True)
    shutil.rmtree(tmp, ignore_errors=True)


def save_final(trainer, processor, output_dir: str | Path) -> None:
    """`trainer.save_model` + `processor.save_pretrained` into `output_dir`, crash-safe: written to
    ``output_dir/.final-partial`` first, then each file renamed into place (never a truncated adapter)."""
    out = Path(output_dir)
    tmp = out / FINAL_TMP
    main = trainer.accelerator.is_main_process
    if main and tmp.exists():
        shutil.rmtree(tmp)
    trainer.accelerator.wait_for_everyone()
    trainer.save_model(str(tmp))
    if main:
        if processor is not None:
            processor.save_pretrained(str(tmp))
        _promote(tmp, out)
    trainer.accelerator.wait_for_everyone()


# ----------------------------------------------------------------------------- failures
def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def is_disk_full(exc: BaseException) -> bool:
    """ENOSPC/EDQUOT anywhere in the exception chain (torch wraps it in a RuntimeError, safetensors
    in a SafetensorError that only keeps the text)."""
    for e in _chain(exc):
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(e)
        if "No space left on device" in text or "StorageFull" in text or "Disk quota exceeded" in text:
            return True
    return False


def disk_full_error(output_dir: str | Path, exc: BaseException) -> UserError | None:
    """For a disk-full failure: remove the half-written checkpoint (frees its space) and return a
    UserError that says what happened and what is intact; None for any other exception."""
    if not is_disk_full(exc):
        return None
    out = Path(output_dir)
    filename = next((e.filename for e in _chain(exc) if isinstance(e, OSError) and e.filename), None)
    removed = [p.name for p in discard_incomplete(out)]
    shutil.rmtree(out / FINAL_TMP, ignore_errors=True)
    last = last_complete_checkpoint(out)
    try:
        free = f"{shutil.disk_usage(out).free / 2**30:.1f} GiB free now"
    except OSError:
        free = "free space unknown"
    what = f" writing {filename}" if filename else ""
    parts = [f"disk full (No space left on device){what} while saving to {out} ({free})"]
    if removed:
        parts.append(f"the half-written {', '.join(removed)} was removed")
    parts.append(f"the last complete checkpoint {last.name} is intact" if last else "no complete checkpoint yet")
    parts.append("free some space (or lower save_total_limit) and rerun the same command"
                 + (f": it resumes from {last.name}" if last else ""))
    return UserError("; ".join(parts))


# ----------------------------------------------------------------------------- lock
def _proc_start(pid: int) -> str | None:
    """Start time (clock ticks since boot) of `pid`, or None where /proc is unavailable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else None


def _proc_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


class RunLock:
    """An exclusive lock on ``output_dir/.run.lock``: a second run on the same dir refuses while the
    holder lives; a dead holder's lock (even after SIGKILL) is taken over.

    The lock is an `fcntl.flock` (the kernel drops it when the holder dies) plus the holder's
    ``host:pid`` in the file; a holder on another host (shared disk) is assumed alive."""

    def __init__(self, output_dir: str | Path):
        self.path = Path(output_dir) / LOCK
        self.held = False
        self._fd: int | None = None

    @staticmethod
    def _me() -> str:
        start = _proc_start(os.getpid())
        return (f"start_ticks={start}\n" if start else "") + f"{socket.gethostname()}:{os.getpid()}\n"

    @staticmethod
    def _read(fd: int) -> str:
        try:
            return os.pread(fd, 4096, 0).decode(errors="replace")
        except OSError:
            return ""

    def _refuse(self, content: str) -> UserError:
        holder = _holder(content)[0] or "unknown"
        return UserError(f"another run ({holder}) is using {self.path.parent}; wait for it to finish or use "
                         f"another output_dir (if you are sure no run is using it, delete {self.path})")

    def acquire(self) -> RunLock:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(10):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            flocked = True
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    content = self._read(fd)
                    os.close(fd)
                    raise self._refuse(content) from None
                flocked = False  # filesystem without flock: the pid check below still applies
            try:  # a releasing run may have unlinked the file we locked: retry on the new one
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if flocked and not same:
                os.close(fd)
                continue
            content = self._read(fd)
            if content.strip() and self._alive(content):
                os.close(fd)
                raise self._refuse(content)
            os.ftruncate(fd, 0)
            os.pwrite(fd, self._me().encode(), 0)
            os.fsync(fd)
            self._fd, self.held = fd, True
            atexit.register(self.release)
            return self
        raise UserError(f"could not lock {self.path}: it keeps changing; is another run starting on "
                        f"{self.path.parent}?")

    @staticmethod
    def _alive(content: str) -> bool:
        holder, start = _holder(content)
        host, _, pid = holder.rpartition(":")
        if not pid.isdigit():
            return False  # not a lock we wrote (empty or garbage): take it over
        if host != socket.gethostname():
            return True  # another machine's run on a shared disk: assume alive
        if int(pid) == os.getpid():
            return False
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        if _proc_zombie(int(pid)):
            return False
        now = _proc_start(int(pid))
        return not (start and now and now != start)  # same pid, other process: the holder died

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _holder(content: str) -> tuple[str, str | None]:
    """(``host:pid``, start ticks or None) from the lock file text."""
    start, holder = None, ""
    for line in content.splitlines():
        line = line.strip()
        if line.startswith("start_ticks="):
            start = line.split("=", 1)[1]
        elif line:
            holder = line
    return holder, start


# ----------------------------------------------------------------------------- training
def checkpoint_step(checkpoint_dir: str | Path | None) -> int | None:
    return _step(Path(checkpoint_dir)) if checkpoint_dir else None


def train(trainer, resume_from: str | None):
    """`trainer.train(resume_from_checkpoint=resume_from)`, except when that checkpoint already holds
    the last step (a run killed during its final save): then only its weights are loaded. (The
    Trainer would otherwise train one step past max_steps when resumed at max_steps.)"""
    step = checkpoint_step(resume_from)
    max_steps = trainer.args.max_steps
    if step is not None and max_steps > 0 and step >= max_steps and hasattr(trainer, "_load_from_checkpoint"):
        print(f"{Path(resume_from).name} holds the last step (max_steps={max_steps}): nothing left to train; "
              "loading it for the final save", flush=True)
        from transformers import TrainerState

        trainer._load_from_checkpoint(resume_from)
        trainer.state = TrainerState.load_from_json(str(Path(resume_from) / "trainer_state.json"))
        return None
    return trainer.train(resume_from_checkpoint=resume_from)


def raise_if_disk_full(output_dir: str | Path, exc: BaseException) -> None:
    """In an ``except`` block around training or saving: raise the `disk_full_error` UserError (from
    `exc`) when `exc` is a disk-full failure; return otherwise (the caller re-raises `exc`)."""
    err = disk_full_error(output_dir, exc)
    if err is not None:
        raise err from exc


# ----------------------------------------------------------------------------- the run's lifecycle
# What both entry scripts (train_qlora_grpo.py, train_sft.py) do around their trainer, in order:
# open_run -> [build the trainer] -> run_end.train_and_save (write_run_config, train, save_final)
# -> run_end.finish_run (evaluate, model card: the entry level, run_end.py).
def open_run(cfg) -> tuple[RunLock | None, str | None]:
    """(lock, checkpoint to resume from or None) before any model is loaded.

    Multi-process (accelerate/torchrun): rank 0 owns the run dir (lock, clobber check, start-up report);
    the other ranks only read which checkpoint to resume (none is written before training starts).
    """
    from qlora_grpo import hardware

    main_process = cfg.process_index == 0
    lock = RunLock(cfg.output_dir).acquire() if main_process else None  # a second run stops here
    resume_from = resolve_resume(cfg.output_dir, cfg.resume, cfg.overwrite_output_dir or not main_process)
    if main_process:
        hardware.print_startup(cfg, resume_from)
    return lock, resume_from


def write_run_config(trainer, cfg, header: str) -> None:
    """RUN/run_config.yaml: the resolved config (what eval, infer, export and the model card read)."""
    from qlora_grpo.config import to_yaml

    if trainer.accelerator.is_main_process:
        with open(Path(cfg.output_dir) / "run_config.yaml", "w") as f:
            f.write(f"# {header}\n{to_yaml(cfg)}")
