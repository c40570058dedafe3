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


def _fsync_path(path: Path) -> None:
    """fsync a file or a folder (a folder's fsync makes the renames and deletions in it durable)."""
    try:
        fd = os.open(path, os.O_RDONLY)
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
    _fsync_path(path.parent)


def mark_complete(checkpoint_dir: str | Path) -> None:
    """Commit a fully written checkpoint: fsync its files, then atomically write the COMPLETE manifest."""
    ckpt = Path(checkpoint_dir)
    files = {}
    for p in sorted(ckpt.rglob("*")):
        if p.is_file() and p.name not in (COMPLETE, COMPLETE + ".tmp"):
            _fsync_path(p)
            files[p.relative_to(ckpt).as_posix()] = p.stat().st_size
    for d in sorted({p.parent for p in ckpt.rglob("*")} | {ckpt}):
        _fsync_path(d)
    manifest = {"format": MANIFEST_FORMAT, "step": _step(ckpt), "files": files}
    _write_atomic(ckpt / COMPLETE, json.dumps(manifest, indent=1) + "\n")


def remove_checkpoint(checkpoint_dir: str | Path) -> None:
    """Un-mark first (a deletion cut short never looks complete), then delete."""
    ckpt = Path(checkpoint_dir)
    marker = ckpt / COMPLETE
    if marker.exists():
        marker.unlink()
        _fsync_path(ckpt)
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
        _fsync_path(out)
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
        held = checkpoints(out)
        if resume == "never" and held:
            raise UserError(f"output_dir {out} holds a previous run ({len(held)} complete checkpoint(s), the last "
                            f"{held[-1].name}) and resume=never starts over; choose another output_dir, or pass "
                            f"--restart_run true to move that run to {out.name}.old-<time>/ and start over "
                            "(or drop --resume never to continue it)")
        raise UserError(f"output_dir {out} is not empty and holds no complete checkpoint to resume from; "
                        "choose another output_dir, or pass --restart_run true to move its contents to "
                        f"{out.name}.old-<time>/ and start over")
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
        _fsync_path(d)
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
def _proc_stat(pid: int) -> list[str]:
    """The fields of ``/proc/PID/stat`` after the process name (which may hold spaces and parentheses):
    [0] is the state, [19] the start time in clock ticks since boot; [] where /proc is unavailable."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
    except OSError:
        return []


def _proc_start(pid: int) -> str | None:
    fields = _proc_stat(pid)
    return fields[19] if len(fields) > 19 else None


def _proc_zombie(pid: int) -> bool:
    return _proc_stat(pid)[:1] == ["Z"]


class RunLock:
    """An exclusive lock on ``output_dir/.run.lock``: a second run on the same dir refuses while the
    holder lives; a dead holder's lock (even after SIGKILL) is taken over.

    The lock is an `fcntl.flock` (the kernel drops it when the holder dies) plus the holder's
    ``host:pid`` in the file; a holder on another host (shared disk) is assumed alive."""

    def __init__(self, output_dir: str | Path):
        self.path = Path(output_dir) / LOCK
        self._fd: int | None = None  # the locked file while held
        self._created: list[Path] = []  # folders acquire() made: removed again by release() if still empty

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

        missing = self.path.parent.absolute()
        while not missing.exists() and missing != missing.parent:
            self._created.append(missing)
            missing = missing.parent
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
            self._fd = fd
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
        if self._fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = None
        for folder in self._created:  # a run that stopped before writing anything leaves no empty output_dir
            try:
                folder.rmdir()  # only ever removes an empty folder
            except OSError:
                break
        self._created = []

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
    from qlora_grpo import cpu_compat

    cpu_compat.fix_multiprocess_cpu_resume(trainer)  # multi-process CPU runs resume as single-process ones
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

    A run dir that recorded another run (`check_same_run`) is refused before anything is written;
    ``restart_run`` first moves an earlier run aside (`move_run_aside`).
    Multi-process (accelerate/torchrun): rank 0 owns the run dir (lock, clobber check, start-up report);
    the other ranks only read which checkpoint to resume (none is written before training starts).
    """
    from qlora_grpo import hardware

    main_process = cfg.process_index == 0
    restart = getattr(cfg, "restart_run", False)
    if restart and cfg.resume not in ("auto", "never"):
        raise UserError(f"restart_run starts a new run, resume={cfg.resume} continues one; drop one of them")
    lock = RunLock(cfg.output_dir).acquire() if main_process else None  # a second run stops here
    try:
        if restart:
            if main_process:
                moved = move_run_aside(cfg.output_dir)
                if moved:
                    print(f"restart_run: moved the previous run in {cfg.output_dir} to {moved}", flush=True)
            resume_from = None
        else:
            check_same_run(cfg)  # refuses (nothing written) when output_dir recorded a run with other settings
            resume_from = resolve_resume(cfg.output_dir, cfg.resume, cfg.overwrite_output_dir or not main_process)
    except BaseException:
        if lock:
            lock.release()  # unlocks, and removes the output_dir it created if still empty
        raise
    if main_process:
        hardware.print_startup(cfg, resume_from)
    return lock, resume_from


# What defines a run: continuing a checkpoint with any of these changed would silently mix two runs
# (other model, data, prompts, rewards, adapter shape, quantization, pixels, seed or optimisation).
# Free to change on resume: output/logging/saving/evaluation settings, backend, compute_dtype,
# gradient_checkpointing, and max_steps of a run that has not finished (see `check_same_run`).
IDENTITY_KEYS = (
    "model_name_or_path", "init_adapter", "quantization",
    "lora_r", "lora_alpha", "lora_dropout", "lora_target_modules", "finetune_vision_layers",
    "finetune_language_layers", "finetune_attention_modules", "finetune_mlp_modules",
    "data_path", "train_split", "train_subset", "exclude_modalities", "max_train_samples", "min_pixels", "max_pixels",
    "template", "prompt_mode", "diversity_prompting", "seed",
    "learning_rate", "lr_scheduler_type", "per_device_train_batch_size", "gradient_accumulation_steps",
    "reward_funcs", "reward_weights", "open_metric", "num_generations", "beta", "temperature",
    "max_completion_length", "loss_type",  # GRPO
    "sft_target",  # SFT
)
PATH_KEYS = ("model_name_or_path", "init_adapter", "data_path")


def trainer_kind(cfg) -> str:
    """"sft" or "grpo" for a parsed config."""
    return "sft" if hasattr(cfg, "sft_target") else "grpo"


def recorded_kind(output_dir: str | Path) -> str | None:
    """The trainer that wrote ``run_config.yaml`` (its header line names SFT runs), None if unknown."""
    try:
        first = (Path(output_dir) / "run_config.yaml").read_text().split("\n", 1)[0]
    except OSError:
        return None
    if "(SFT)" in first:
        return "sft"
    return "grpo" if first.startswith("# resolved config") else None


def _field_default(cfg, key: str):
    import dataclasses

    for f in dataclasses.fields(cfg):
        if f.name == key:
            if f.default is not dataclasses.MISSING:
                return f.default
            if f.default_factory is not dataclasses.MISSING:
                return f.default_factory()
    return None


def _is_local_path(value: str) -> bool:
    """A path on this machine (it exists, or is written as one); a hub id such as ``org/name`` is not."""
    return value.startswith(("/", ".", "~")) or os.path.exists(os.path.expanduser(value))


def _comparable(key: str, value):
    """The form in which a recorded and a current value are compared: local paths absolute (relative ones
    resolved in the current working dir), hub ids as text, enums by value, tuples as lists."""
    from qlora_grpo.config import plain

    if key in PATH_KEYS and isinstance(value, str) and _is_local_path(value):
        return os.path.normpath(os.path.abspath(os.path.expanduser(value)))
    return plain(value)


def _weights(weights, funcs) -> list[float]:
    """reward_weights as training uses them: unset means 1.0 for each reward."""
    return [float(w) for w in weights] if weights else [1.0] * len(funcs or [])


def run_differences(cfg, recorded: dict, kind: str | None) -> list[str]:
    """'key: recorded -> now' for every identity key (and the trainer kind) that differs."""
    from qlora_grpo.config import plain

    diffs = []
    now_kind = trainer_kind(cfg)
    if kind and kind != now_kind:
        diffs.append(f"trainer: {kind.upper()} -> {now_kind.upper()}")
    for key in IDENTITY_KEYS:
        if not hasattr(cfg, key):
            continue  # a key of the other trainer
        before, now = recorded.get(key, _field_default(cfg, key)), getattr(cfg, key)
        if key == "reward_weights":
            before = _weights(before, recorded.get("reward_funcs", _field_default(cfg, "reward_funcs")))
            now = _weights(now, cfg.reward_funcs)
        if _comparable(key, before) != _comparable(key, now):
            diffs.append(f"{key}: {plain(before)!r} -> {plain(now)!r}")  # as the user wrote them
    return diffs


def check_same_run(cfg) -> None:
    """Refuse (a UserError, nothing written) to continue a run dir that recorded a different run.

    ``run_config.yaml`` (written at the start of every run) is compared with `cfg` on `IDENTITY_KEYS`
    and the trainer kind (GRPO/SFT). ``max_steps`` may change while the run has not finished (raising
    it extends the run; the learning-rate schedule follows the new value), but not below the step of
    the checkpoint it would resume, and not at all once the run saved its final adapter (that would
    replace the adapter, its evaluation and its model card). A dir without ``run_config.yaml`` is not
    checked (nothing recorded to compare; `resolve_resume` still refuses to write into it).
    """
    out = Path(cfg.output_dir)
    if not (out / "run_config.yaml").is_file():
        return
    from qlora_grpo.run_config import read_run_config

    recorded = read_run_config(out)
    diffs = run_differences(cfg, recorded, recorded_kind(out))
    finished = (out / "adapter_config.json").is_file()
    before_steps = recorded.get("max_steps", _field_default(cfg, "max_steps"))
    if cfg.max_steps != before_steps:
        if finished:
            diffs.append(f"max_steps: {before_steps!r} -> {cfg.max_steps!r} (the run has finished)")
        else:
            resumed = last_complete_checkpoint(out) if cfg.resume == "auto" else (
                Path(cfg.resume) if cfg.resume != "never" else None)
            step = checkpoint_step(resumed)
            if step is not None and 0 < cfg.max_steps < step:
                diffs.append(f"max_steps: {before_steps!r} -> {cfg.max_steps!r} (below the step {step} "
                             f"of {resumed.name}, which this run would continue)")
            elif cfg.process_index == 0:
                print(f"max_steps {before_steps} -> {cfg.max_steps}: continuing the unfinished run in {out} "
                      "to the new max_steps", flush=True)
    if diffs:
        what = "a finished run" if finished else "a run"
        raise UserError(f"output_dir {out} holds {what} with other settings ({'; '.join(diffs)}); continuing it "
                        "would mix two runs. Use a new output_dir, or pass --restart_run true to move the old "
                        f"run to {out.name}.old-<time>/ and start over")


def move_run_aside(output_dir: str | Path) -> Path | None:
    """Move everything in `output_dir` (but our lock) into a new sibling ``NAME.old-YYYYmmdd-HHMMSS/``;
    returns it, or None when there was nothing to move. Nothing is deleted."""
    import time

    out = Path(output_dir)
    entries = [p for p in out.iterdir() if p.name != LOCK] if out.is_dir() else []
    if not entries:
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target, n = out.with_name(f"{out.name}.old-{stamp}"), 1
    while target.exists():
        n += 1
        target = out.with_name(f"{out.name}.old-{stamp}-{n}")
    target.mkdir()
    for p in entries:
        os.replace(p, target / p.name)
    _fsync_path(target)
    _fsync_path(out)
    return target


def write_run_config(trainer, cfg, header: str) -> None:
    """RUN/run_config.yaml: the resolved config (what eval, infer, export and the model card read)."""
    from qlora_grpo.config import to_yaml

    if trainer.accelerator.is_main_process:
        with open(Path(cfg.output_dir) / "run_config.yaml", "w") as f:
            f.write(f"# {header}\n{to_yaml(cfg)}")


def resume_command(argv: list[str] | None = None) -> str:
    """The command line that continues this run: the same one, with `--resume auto` (not never/PATH) and
    without `--restart_run` (rerunning that would move the run aside again)."""
    import shlex
    import sys

    argv = list(sys.argv if argv is None else argv)
    out, i = [], 0
    while i < len(argv):
        if argv[i] in ("--resume", "--restart_run"):
            i += 2
            continue
        if not argv[i].startswith(("--resume=", "--restart_run=")):
            out.append(argv[i])
        i += 1
    world = int(os.environ.get("WORLD_SIZE", "1"))
    launcher = f"accelerate launch --num_processes {world}" if world > 1 else "python"
    return f"{launcher} {shlex.join(out)} --resume auto"


def interrupted_message(trainer, cfg, saving: bool = False) -> str:
    """For Ctrl-C during training: the step reached, the last complete checkpoint, the resume command."""
    step = getattr(getattr(trainer, "state", None), "global_step", 0) or 0
    for cb in getattr(getattr(trainer, "callback_handler", None), "callbacks", []):
        if getattr(cb, "training_bar", None) is not None:  # end the progress bar's line before the message
            cb.training_bar.close()
            cb.training_bar = None
    last = last_complete_checkpoint(cfg.output_dir)
    where = "while saving the final adapter" if saving else f"at step {step} of {cfg.max_steps}"
    saved = (f"saved: {last} (the last complete checkpoint, step {_step(last)}); steps after it are redone"
             if last else f"no complete checkpoint yet (save_steps={cfg.save_steps}), so a rerun starts from step 0")
    return f"interrupted (Ctrl-C) {where}; {saved}; resume with: {resume_command()}"

