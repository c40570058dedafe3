"""Fault injection for the reliability tests and `bench/fault_report.py`.

A *zygote* process imports the heavy libraries once (torch, transformers, TRL, PEFT: ~10-15 s on
a CPU) and then forks one child per run. Each child is a real process that runs a project entry
point (`train_qlora_grpo.main`, `eval.evaluate.main`, `medvqa_data.prepare.main`) exactly as its
command line does, with stdout/stderr in a log file, and is killed with a real SIGKILL, either by
itself at an instrumented point (inside a checkpoint write, after half the bytes of a file are on
disk, between the Trainer's save and the COMPLETE marker, mid-rotation, mid final save, mid-step,
inside evaluation) or by the parent at a random moment. Parent-side checks (loading every file of
a checkpoint) also run in forked children so the parent never starts torch's thread pools.

    python -m tests.reliability.faultlib --workdir DIR --json OUT.json \
        [--scenarios kill,enospc,nonfinite,reward,lock,eval] [--kills 20] [--seed 0]

Everything is CPU-only and uses the tiny "test"-size model and the bundled sample.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import os
import random
import shutil
import signal
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# What the zygote must import before forking (children then start in ~1 s instead of ~15 s).
HEAVY = ("train_qlora_grpo", "eval.evaluate", "medvqa_data.prepare", "trl", "peft", "transformers",
         "safetensors.torch", "qlora_grpo.model", "qlora_grpo.rewards", "qlora_grpo.callbacks",
         "medvqa_data.dataset", "eval.scoring")

# Files the Trainer writes into checkpoint-N, in order (the adapter twice: `ref/` then the policy).
CKPT_FILES = ("adapter_model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json")


# ----------------------------------------------------------------------------- faults
@dataclasses.dataclass
class Fault:
    """What to do to one child run.

    kind:
      write      SIGKILL while writing the `nth` file named `target` (half its bytes on disk)
      before_marker  SIGKILL after the Trainer wrote checkpoint `nth` completely, before COMPLETE
      marker     SIGKILL after COMPLETE.tmp is written, before its rename (commit point)
      rotation   SIGKILL while an old checkpoint is being deleted (after half its files)
      final      SIGKILL while the final adapter is moved into output_dir (after half the files)
      step       SIGKILL inside training step `nth` of this run (after backward, before the update)
      time       the parent sends SIGKILL `delay` s after the child started step `nth`
      enospc     the `nth` write of `target` fails with ENOSPC after half its bytes (no kill)
      nan_loss   the loss of global step `nth` is NaN          inf_reward  a raw reward is +inf at step `nth`
      reward_raises  the format reward's parser raises on every 2nd completion
      hold       sleep 120 s at step `nth` (a live run holding the lock)
      eval_kill  SIGKILL inside the `nth` generation batch of evaluation
    """

    kind: str
    nth: int = 1
    target: str = ""
    delay: float = 0.0

    def label(self) -> str:
        bits = [self.kind] + ([self.target] if self.target else []) + [f"#{self.nth}"]
        return " ".join(bits) + (f" +{self.delay:.2f}s" if self.kind == "time" else "")


def _die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _half_write(path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data[: max(1, len(data) // 2)])
        f.flush()
        os.fsync(f.fileno())


class _FullDisk(io.RawIOBase):
    """A file that takes `budget` bytes, then fails like a full disk (ENOSPC)."""

    def __init__(self, path, budget: int):
        self.f = open(path, "wb")
        self.budget = budget

    def writable(self):
        return True

    def write(self, b):
        import errno

        if len(b) > self.budget:
            self.f.write(bytes(b[: self.budget]))
            self.f.flush()
            self.budget = 0
            raise OSError(errno.ENOSPC, "No space left on device", str(self.f.name))
        self.budget -= len(b)
        return self.f.write(b)

    def close(self):
        self.f.close()
        super().close()


def install(fault: Fault | None, progress: Path | None) -> None:
    """Instrument this (child) process: progress records, plus the fault's trigger."""
    import safetensors
    import safetensors.torch
    import torch
    import transformers
    import trl
    from peft import peft_model

    from qlora_grpo import rewards, rundir

    counts: dict[str, int] = {}
    point = {"before_marker": "mark", "marker": "mark", "rotation": "rotate", "step": "step", "hold": "step",
             "eval_kill": "batch"}.get(fault.kind, fault.target) if fault else None

    def hit(name: str) -> bool:
        counts[name] = counts.get(name, 0) + 1
        return name == point and counts[name] == fault.nth

    # --- progress: one JSON line per generation batch (step and row ids) --------------------------------
    orig_gen = trl.GRPOTrainer._generate_and_score_completions

    def gen(self, inputs):
        if progress is not None:
            with open(progress, "a") as f:
                f.write(json.dumps({"step": self.state.global_step + 1,
                                    "ids": [x.get("id") for x in inputs]}) + "\n")
        return orig_gen(self, inputs)

    trl.GRPOTrainer._generate_and_score_completions = gen
    if fault is None:
        return
    kind = fault.kind

    # --- writes: torch.save (optimizer, scheduler, RNG), safetensors (adapters), trainer_state.json -----
    if kind in ("write", "enospc"):
        orig_save = torch.save

        def save(obj, f, *a, **k):
            name = os.path.basename(str(f)) if isinstance(f, (str, os.PathLike)) else ""
            if name and hit(name):
                if kind == "write":
                    buf = io.BytesIO()
                    orig_save(obj, buf, *a, **k)
                    _half_write(f, buf.getvalue())
                    _die()
                disk = _FullDisk(f, 2048)
                try:
                    return orig_save(obj, disk, *a, **k)
                finally:
                    disk.close()
            return orig_save(obj, f, *a, **k)

        torch.save = save
        orig_st = safetensors.torch.save_file

        def save_file(tensors, filename, metadata=None, *a, **k):
            name = os.path.basename(str(filename))
            if hit(name):
                data = safetensors.torch.save(tensors, metadata=metadata)
                _half_write(filename, data)
                if kind == "write":
                    _die()
                raise safetensors.SafetensorError(
                    "Error while serializing: I/O error: No space left on device (os error 28)")
            return orig_st(tensors, filename, metadata, *a, **k)

        safetensors.torch.save_file = save_file
        peft_model.safe_save_file = save_file
        orig_json = transformers.TrainerState.save_to_json

        def save_to_json(self, json_path):
            if hit(os.path.basename(json_path)):
                text = json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n"
                _half_write(json_path, text.encode())
                if kind == "write":
                    _die()
                import errno

                raise OSError(errno.ENOSPC, "No space left on device", json_path)
            return orig_json(self, json_path)

        transformers.TrainerState.save_to_json = save_to_json

    elif kind in ("before_marker", "marker"):
        orig_mark = rundir.mark_complete
        orig_atomic = rundir._write_atomic
        armed = [False]

        def mark_complete(ckpt):
            if hit("mark"):
                if kind == "before_marker":
                    _die()
                armed[0] = True
            return orig_mark(ckpt)

        def write_atomic(path, text):
            if armed[0] and Path(path).name == rundir.COMPLETE:
                Path(path).with_name(Path(path).name + ".tmp").write_text(text)
                _die()
            return orig_atomic(path, text)

        rundir.mark_complete = mark_complete
        rundir._write_atomic = write_atomic

    elif kind == "rotation":
        orig_remove = rundir.remove_checkpoint

        def remove_checkpoint(ckpt):
            if hit("rotate"):
                ckpt = Path(ckpt)
                (ckpt / rundir.COMPLETE).unlink(missing_ok=True)
                files = sorted(p for p in ckpt.rglob("*") if p.is_file())
                for p in files[: len(files) // 2]:
                    p.unlink()
                _die()
            return orig_remove(ckpt)

        rundir.remove_checkpoint = remove_checkpoint

    elif kind == "final":
        orig_replace = os.replace

        def promote(tmp, out):
            files = sorted(p for p in Path(tmp).rglob("*") if p.is_file())
            for p in files[: max(1, len(files) // 2)]:
                target = Path(out) / p.relative_to(tmp)
                target.parent.mkdir(parents=True, exist_ok=True)
                orig_replace(p, target)
            _die()

        rundir._promote = promote

    elif kind in ("step", "hold"):
        orig_step = trl.GRPOTrainer.training_step

        def training_step(self, model, inputs, num_items_in_batch):
            out = orig_step(self, model, inputs, num_items_in_batch)
            if hit("step"):
                if kind == "hold":
                    time.sleep(120)
                _die()
            return out

        trl.GRPOTrainer.training_step = training_step

    elif kind == "nan_loss":
        orig_loss = trl.GRPOTrainer.compute_loss

        def compute_loss(self, model, inputs, *a, **k):
            loss = orig_loss(self, model, inputs, *a, **k)
            if self.state.global_step + 1 == fault.nth:
                loss = loss * float("nan")
            return loss

        trl.GRPOTrainer.compute_loss = compute_loss

    elif kind == "inf_reward":
        orig_build = rewards.build_reward_funcs

        def build(*a, **k):
            funcs, weights = orig_build(*a, **k)

            def spike(completions, trainer_state=None, **kw):  # a user reward without our safety wrapper
                step = trainer_state.global_step + 1 if trainer_state is not None else 0
                return [float("inf") if step == fault.nth else 0.0 for _ in completions]

            spike.__name__ = "spike"
            return funcs + [spike], weights + [1.0]

        rewards.build_reward_funcs = build

    elif kind == "reward_raises":
        orig_parse = rewards.parse_completion
        calls = [0]

        def parse(text, *a, **k):
            calls[0] += 1
            if calls[0] % 2 == 0:
                raise ValueError(f"strange completion {text[:20]!r}")
            return orig_parse(text, *a, **k)

        rewards.parse_completion = parse

    elif kind == "eval_kill":
        import eval.evaluate as ev

        orig_batch = ev.generate_batch

        def generate_batch(model, processor, rows, *a, **k):
            if hit("batch"):
                _die()
            return orig_batch(model, processor, rows, *a, **k)

        ev.generate_batch = generate_batch

    elif kind == "time":
        pass  # the parent kills
    else:
        raise ValueError(f"unknown fault kind {kind!r}")


def install_eval_counter(path: Path) -> None:
    """Append the number of rows of every generation batch to `path` (proves what a rerun regenerated)."""
    import eval.evaluate as ev

    orig_batch = ev.generate_batch

    def generate_batch(model, processor, rows, *a, **k):
        with open(path, "a") as f:
            f.write(f"{len(rows)}\n")
        return orig_batch(model, processor, rows, *a, **k)

    ev.generate_batch = generate_batch


# ----------------------------------------------------------------------------- zygote
@dataclasses.dataclass
class Run:
    rc: int | None  # exit code; None when killed by a signal
    signal: int | None
    seconds: float
    log: str
    fault: str = ""

    @property
    def killed(self) -> bool:
        return self.signal == signal.SIGKILL

    @property
    def crashed(self) -> bool:
        """Died in a way we did not ask for: a traceback, or a signal we did not send."""
        return (self.signal is not None and self.signal != signal.SIGKILL) or self.rc not in (0, 1, 2, None) or \
            "Traceback (most recent call last)" in self.log


def _entry(target: str, args: list[str]) -> int:
    from medvqa_data.errors import DataError
    from qlora_grpo.errors import UserError

    if target == "train":
        import train_qlora_grpo

        try:
            return train_qlora_grpo.main(args)
        except (UserError, DataError) as e:  # as the script's __main__ does
            print(f"error: {e}", file=sys.stderr)
            return 2
    if target == "eval":
        import eval.evaluate

        return eval.evaluate.main(args)
    if target == "prepare":
        import medvqa_data.prepare

        return medvqa_data.prepare.main(args)
    raise ValueError(target)


class Zygote:
    def __init__(self):
        t0 = time.perf_counter()
        from qlora_grpo import cpu_compat

        cpu_compat.setup_env()
        import importlib

        for name in HEAVY:
            importlib.import_module(name)
        import trl  # noqa: F401

        self.import_seconds = time.perf_counter() - t0

    @staticmethod
    def _fork(body, log: Path) -> int:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(fd, 1)
                os.dup2(fd, 2)
                code = body()
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 1
            except BaseException:
                traceback.print_exc()
                code = 1
            finally:
                with contextlib.suppress(Exception):
                    sys.stdout.flush()
                    sys.stderr.flush()
                os._exit(code)
        return pid

    def run(self, target: str, args: list[str], log: Path, fault: Fault | None = None,
            progress: Path | None = None, counter: Path | None = None, timeout: float = 300,
            on_start=None) -> Run:
        """Run one entry point in a forked child; for a `time` fault the parent kills it."""

        def body():
            install(fault, progress)
            if counter is not None:
                install_eval_counter(counter)
            return _entry(target, args)

        if progress is not None:
            progress.unlink(missing_ok=True)
        t0 = time.perf_counter()
        pid = self._fork(body, log)
        if on_start is not None:
            on_start(pid)
        deadline = t0 + timeout
        killed_by_parent = False
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if fault is not None and fault.kind == "time" and not killed_by_parent and progress is not None:
                if _progress_steps(progress) >= fault.nth:
                    time.sleep(fault.delay)
                    os.kill(pid, signal.SIGKILL)
                    killed_by_parent = True
            if time.perf_counter() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise TimeoutError(f"{target} {' '.join(args)} ran over {timeout}s; log: {log}")
            time.sleep(0.02)
        sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        rc = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
        text = log.read_text(errors="replace") if log.exists() else ""
        return Run(rc, sig, time.perf_counter() - t0, text, fault.label() if fault else "")

    def start(self, target: str, args: list[str], log: Path, fault: Fault | None = None,
              progress: Path | None = None) -> int:
        """Fork a child and return its pid without waiting (the caller reaps it)."""

        def body():
            install(fault, progress)
            return _entry(target, args)

        return self._fork(body, log)

    def call(self, fn, *args):
        """fn(*args) in a forked child (keeps torch work out of the zygote); returns its JSON result."""
        import tempfile

        fd, path = tempfile.mkstemp(suffix=".json")
        os.close(fd)
        out = Path(path)

        def body():
            out.write_text(json.dumps(fn(*args), default=str))
            return 0

        log = out.with_suffix(".log")
        pid = self._fork(body, log)
        _, status = os.waitpid(pid, 0)
        try:
            if os.waitstatus_to_exitcode(status) != 0:
                raise RuntimeError(f"{fn.__name__} failed: {log.read_text()[-3000:]}")
            return json.loads(out.read_text())
        finally:
            out.unlink(missing_ok=True)
            log.unlink(missing_ok=True)


def error_line(log: str, marker: str = "error:") -> str:
    """The first line of `log` holding `marker`, from the marker on (a progress bar may precede it)."""
    for line in log.splitlines():
        if marker in line:
            return line[line.index(marker):]
    return ""


def _progress(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    recs = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(ValueError):
            recs.append(json.loads(line))
    return recs


def _progress_steps(path: Path) -> int:
    return len(_progress(path))


# ----------------------------------------------------------------------------- checks
def verify_checkpoint(ckpt: str) -> str | None:
    """Independent of COMPLETE: None when every file of checkpoint-N loads, else the reason."""
    import safetensors.torch
    import torch
    from transformers.trainer_pt_utils import safe_globals

    ckpt = Path(ckpt)
    step = int(ckpt.name.rsplit("-", 1)[1])
    try:
        for name in CKPT_FILES + ("adapter_config.json",):
            if not (ckpt / name).is_file():
                return f"{name} missing"
        tensors = safetensors.torch.load_file(ckpt / "adapter_model.safetensors")
        if not tensors or not all(bool(torch.isfinite(t).all()) for t in tensors.values()):
            return "adapter has non-finite or no tensors"
        with safe_globals():
            for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth"):
                torch.load(ckpt / name, weights_only=True)
        state = json.loads((ckpt / "trainer_state.json").read_text())
        if state["global_step"] != step:
            return f"trainer_state global_step {state['global_step']} != {step}"
        json.loads((ckpt / "adapter_config.json").read_text())
    except Exception as e:  # noqa: BLE001 - any failure to load is the finding
        return f"{type(e).__name__}: {str(e)[:200]}"
    return None


def audit(out_dir: str) -> dict:
    """What resume would pick now, and whether that checkpoint really is whole."""
    from qlora_grpo import rundir

    out = Path(out_dir)
    pick = rundir.last_complete_checkpoint(out)
    dirs = rundir.checkpoints(out, complete_only=False)
    marked = [p for p in dirs if rundir.is_complete(p)]
    bad_marked = {p.name: r for p in marked if (r := verify_checkpoint(str(p)))}
    return {
        "pick": pick.name if pick else None,
        "pick_step": int(pick.name.split("-")[1]) if pick else 0,
        "pick_error": verify_checkpoint(str(pick)) if pick else None,
        "marked": [p.name for p in marked],
        "marked_corrupt": bad_marked,
        "unmarked": [p.name for p in dirs if p not in marked],
    }


def final_state(out_dir: str) -> dict:
    """Final global step and logged steps (from the last checkpoint), and the final adapter's health."""
    import safetensors.torch
    import torch

    from qlora_grpo import rundir

    out = Path(out_dir)
    last = rundir.last_complete_checkpoint(out)
    state = json.loads((last / "trainer_state.json").read_text()) if last else {}
    logged = [h["step"] for h in state.get("log_history", []) if "loss" in h]
    adapter = out / "adapter_model.safetensors"
    adapter_error = None
    try:
        final = safetensors.torch.load_file(adapter)
        ref = safetensors.torch.load_file(last / "adapter_model.safetensors")
        if final.keys() != ref.keys() or not all(torch.equal(final[k], ref[k]) for k in final):
            adapter_error = "final adapter differs from the last checkpoint's"
    except Exception as e:  # noqa: BLE001
        adapter_error = f"{type(e).__name__}: {str(e)[:200]}"
    return {"global_step": state.get("global_step"), "logged_steps": logged, "adapter_error": adapter_error,
            "leftover_tmp": (out / rundir.FINAL_TMP).exists(),
            "log_history": state.get("log_history", [])}


# ----------------------------------------------------------------------------- scenarios
@dataclasses.dataclass
class Setup:
    model: Path
    data: Path
    work: Path

    def train_args(self, out: Path, max_steps: int, *extra: str) -> list[str]:
        from tests.reliability.helpers import write_train_config

        cfg = self.work / "reliability.yaml"
        if not cfg.is_file():
            write_train_config(cfg, report_to="none")
        return ["--config", str(cfg), "--model_name_or_path", str(self.model), "--data_path", str(self.data),
                "--output_dir", str(out), "--max_steps", str(max_steps), *extra]


def prepare_inputs(work: Path) -> Setup:
    """The tiny test model and the bundled sample (modality split), built under `work`."""
    from medvqa_data.prepare import prepare
    from qlora_grpo import tiny

    work.mkdir(parents=True, exist_ok=True)
    model = work / "tiny-test"
    if not (model / "config.json").is_file():
        tiny.build(model, size="test", seed=0)
    data = work / "sample"
    if not (data / "prepare_report.json").is_file():
        prepare("omnimedvqa", ROOT / "medvqa_data" / "sample" / "omnimedvqa", data, split="modality", progress=False)
    return Setup(model, data, work)


KILL_MENU = (
    ("write", "adapter_model.safetensors"), ("write", "optimizer.pt"), ("write", "scheduler.pt"),
    ("write", "rng_state.pth"), ("write", "trainer_state.json"), ("before_marker", ""), ("marker", ""),
    ("rotation", ""), ("step", ""), ("time", ""), ("time", ""), ("final", ""),
)


def draw_kills(n: int, seed: int) -> list[Fault]:
    """`n` kill points: every kind of the menu once (shuffled), then random picks from it."""
    rng = random.Random(seed)
    menu = list(KILL_MENU)
    rng.shuffle(menu)
    picks = menu[:n] + [rng.choice(KILL_MENU) for _ in range(n - len(menu))]
    faults = []
    for kind, target in picks:
        nth = rng.randint(2, 6) if target == "adapter_model.safetensors" else rng.randint(1, 3)
        faults.append(Fault(kind, nth, target, round(rng.uniform(0.0, 0.5), 2) if kind == "time" else 0.0))
    return faults


def steps_needed(f: Fault) -> int:
    """Training steps a (resumed) run needs to reach the fault's trigger point."""
    if f.kind == "final":
        return 0
    if f.target == "adapter_model.safetensors":
        return (f.nth + 1) // 2  # two adapter files per checkpoint (ref/ and the policy)
    return f.nth + (2 if f.kind == "rotation" else 1 if f.kind == "time" else 0)


def plan_rounds(kills: list[Fault], per_round: int) -> list[tuple[list[Fault], int]]:
    """Rounds of up to `per_round` faults, each with enough max_steps for its faults to trigger. A
    final-save kill ends a round's training, so each round holds at most one, placed last."""
    finals = [f for f in kills if f.kind == "final"]
    others = [f for f in kills if f.kind != "final"]
    groups = [others[i:i + per_round - 1] for i in range(0, len(others), per_round - 1)] or [[]]
    while len(groups) < len(finals):
        groups.append([])
    for g, f in zip(groups, finals):
        g.append(f)
    return [(g, sum(steps_needed(f) for f in g) + 2) for g in groups if g]


def kill_campaign(z: Zygote, s: Setup, kills: list[Fault], per_round: int = 5) -> dict:
    """Rounds of (fresh run dir, a kill-and-resume cycle per fault, a clean final resume).

    After every kill: what resume would pick must load completely (never a half-written
    checkpoint). Each resumed run must start right after the newest committed step: a committed
    step trained again is a step lost (and a step trained twice). The last run must end at
    max_steps with every step logged exactly once, and every step must have trained on the same
    rows as in an uninterrupted run of the same config (same data order).
    """
    rounds = plan_rounds(kills, per_round)
    longest = max(m for _, m in rounds)
    ref_dir, ref_prog = s.work / "reference", s.work / "reference.progress"
    if len(_progress(ref_prog)) < longest:
        shutil.rmtree(ref_dir, ignore_errors=True)
        ref_prog.unlink(missing_ok=True)
        r = z.run("train", s.train_args(ref_dir, longest), s.work / "reference.log", progress=ref_prog)
        if r.rc != 0:
            raise RuntimeError(f"uninterrupted reference run failed: {r.log[-3000:]}")
    ref_ids = {p["step"]: p["ids"] for p in _progress(ref_prog)}
    report = {"requested": len(kills), "injected": 0, "not_triggered": 0, "resumed": 0, "steps_lost": 0,
              "uncommitted_steps_redone": 0, "crashes": 0, "corrupt_picks": 0, "runs": [], "rounds": [],
              "problems": []}
    for r_i, (faults, max_steps) in enumerate(rounds):
        out = s.work / f"kill-round-{r_i}"
        shutil.rmtree(out, ignore_errors=True)
        committed = 0  # newest committed step so far
        order_ok = True
        for a_i, fault in enumerate([*faults, None]):
            prog = s.work / f"kill-round-{r_i}-{a_i}.progress"
            prog.unlink(missing_ok=True)
            run = z.run("train", s.train_args(out, max_steps), s.work / f"kill-round-{r_i}-{a_i}.log", fault,
                        progress=prog)
            trained = [p["step"] for p in _progress(prog)]
            if a_i > 0:
                report["resumed"] += 1
                retrained = [t for t in trained if t <= committed]
                report["steps_lost"] += len(retrained)
                if retrained:
                    report["problems"].append(f"round {r_i} run {a_i}: trained committed steps {retrained} again "
                                              f"(newest committed: {committed})")
            for p in _progress(prog):
                if ref_ids.get(p["step"]) not in (None, p["ids"]):
                    order_ok = False
                    report["problems"].append(f"round {r_i} run {a_i}: step {p['step']} trained on {p['ids']}, "
                                              f"the uninterrupted run on {ref_ids[p['step']]}")
            if run.crashed:
                report["crashes"] += 1
                report["problems"].append(f"round {r_i} run {a_i} ({run.fault}) crashed: {run.log[-1500:]}")
            a = z.call(audit, str(out))
            if a["pick_error"] or a["marked_corrupt"]:
                report["corrupt_picks"] += 1
                report["problems"].append(f"round {r_i} run {a_i}: {a}")
            report["uncommitted_steps_redone"] += sum(1 for t in trained if t > a["pick_step"])
            committed = max(committed, a["pick_step"])
            if fault is not None:
                if run.killed:
                    report["injected"] += 1
                else:
                    report["not_triggered"] += 1
            elif run.rc != 0:
                report["problems"].append(f"round {r_i}: final resume failed: {run.log[-3000:]}")
            report["runs"].append({"round": r_i, "fault": run.fault or "none (final resume)", "killed": run.killed,
                                   "rc": run.rc, "trained": trained, "resume_pick_after": a["pick"],
                                   "half_written_left": a["unmarked"], "seconds": round(run.seconds, 1)})
        if committed < max_steps:
            report["problems"].append(f"round {r_i}: ended with newest committed step {committed} < {max_steps}")
        f = z.call(final_state, str(out))
        steps = f.pop("logged_steps")
        f.pop("log_history")
        ok = (f["global_step"] == max_steps and steps == list(range(1, max_steps + 1)) and not f["adapter_error"]
              and not f["leftover_tmp"] and order_ok)
        if not ok:
            report["problems"].append(f"round {r_i}: final state {f}, logged steps {steps}")
        report["steps_lost"] += max(0, max_steps - (f["global_step"] or 0))
        report["rounds"].append({"round": r_i, "max_steps": max_steps, "final_global_step": f["global_step"],
                                 "logged_steps": steps, "same_data_order": order_ok,
                                 "final_adapter_error": f["adapter_error"], "ok": ok})
    return report


def enospc_scenario(z: Zygote, s: Setup, quick: bool = False) -> dict:
    """Disk full while saving checkpoint 2 (optimizer via torch.save; adapter via safetensors; trainer
    state) and while saving the final adapter: clear error, previous checkpoint intact, then resume."""
    cases = [Fault("enospc", 2, "optimizer.pt"), Fault("enospc", 4, "adapter_model.safetensors"),
             Fault("enospc", 2, "trainer_state.json"), Fault("enospc", 7, "adapter_model.safetensors")]
    cases = cases[:2] if quick else cases
    results = []
    for i, fault in enumerate(cases):
        out = s.work / f"enospc-{i}"
        shutil.rmtree(out, ignore_errors=True)
        run = z.run("train", s.train_args(out, 3), s.work / f"enospc-{i}.log", fault)
        error = error_line(run.log)
        a = z.call(audit, str(out))
        resume = z.run("train", s.train_args(out, 3), s.work / f"enospc-{i}-resume.log")
        f = z.call(final_state, str(out))
        results.append({"fault": fault.label(), "rc": run.rc, "error": error, "crashed": run.crashed,
                        "pick_after": a["pick"], "pick_error": a["pick_error"], "unmarked": a["unmarked"],
                        "resume_rc": resume.rc, "final_global_step": f["global_step"],
                        "adapter_error": f["adapter_error"]})
    return {"cases": results}


def nonfinite_scenario(z: Zygote, s: Setup, quick: bool = False) -> dict:
    cases = [("nan-stop", Fault("nan_loss", 3), []), ("nan-skip", Fault("nan_loss", 2), ["--nonfinite_action", "skip"]),
             ("inf-reward-stop", Fault("inf_reward", 2), [])]
    results = []
    for name, fault, extra in cases:
        out = s.work / f"nonfinite-{name}"
        shutil.rmtree(out, ignore_errors=True)
        run = z.run("train", s.train_args(out, 4, *extra), s.work / f"nonfinite-{name}.log", fault)
        a = z.call(audit, str(out))
        f = z.call(final_state, str(out)) if a["pick"] else {}
        warn = [line[line.index("warning:"):] for line in run.log.splitlines() if "warning: non-finite" in line]
        error = error_line(run.log)
        hist = f.get("log_history", [])
        results.append({"case": name, "rc": run.rc, "crashed": run.crashed, "warnings": warn, "error": error,
                        "pick": a["pick"], "pick_error": a["pick_error"], "marked": a["marked"],
                        "final_adapter_written": (out / "adapter_model.safetensors").exists(),
                        "global_step": f.get("global_step"), "adapter_error": f.get("adapter_error"),
                        "nonfinite_logged": max([h.get("nonfinite_steps", 0) for h in hist] or [0])})
    return {"cases": results}


def reward_scenario(z: Zygote, s: Setup, quick: bool = False) -> dict:
    out = s.work / "reward-raises"
    shutil.rmtree(out, ignore_errors=True)
    run = z.run("train", s.train_args(out, 3), s.work / "reward-raises.log", Fault("reward_raises"))
    f = z.call(final_state, str(out))
    hist = f["log_history"]
    return {"rc": run.rc, "crashed": run.crashed, "global_step": f["global_step"],
            "warning": error_line(run.log, "reward 'format' raised"),
            "reward_errors_logged": max([h.get("reward_errors", 0) for h in hist] or [0]),
            "format_errors_logged": sum(h.get("reward_errors/format", 0) for h in hist),
            "samples_jsonl": (out / "samples.jsonl").is_file()}


def lock_scenario(z: Zygote, s: Setup, quick: bool = False) -> dict:
    """Run A holds the dir (sleeping inside step 2); B on the same dir must refuse; A is SIGKILLed;
    C (resume) takes the lock over and finishes."""
    out = s.work / "lock"
    shutil.rmtree(out, ignore_errors=True)
    prog = s.work / "lock-a.progress"
    prog.unlink(missing_ok=True)
    pid = z.start("train", s.train_args(out, 3), s.work / "lock-a.log", Fault("hold", 2), progress=prog)
    t0 = time.perf_counter()
    while _progress_steps(prog) < 2 and time.perf_counter() - t0 < 120:
        time.sleep(0.1)
    time.sleep(0.5)
    b = z.run("train", s.train_args(out, 3), s.work / "lock-b.log")
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    c_prog = s.work / "lock-c.progress"
    c = z.run("train", s.train_args(out, 3), s.work / "lock-c.log", progress=c_prog)
    f = z.call(final_state, str(out))
    return {"b_rc": b.rc, "b_error": error_line(b.log),
            "b_crashed": b.crashed, "c_rc": c.rc, "c_crashed": c.crashed,
            "c_trained": [p["step"] for p in _progress(c_prog)], "global_step": f["global_step"],
            "lock_left": (out / ".run.lock").exists()}


def eval_scenario(z: Zygote, s: Setup, quick: bool = False) -> dict:
    """Evaluation SIGKILLed inside its 3rd batch (2 batches written), a torn last line appended as a
    kill mid-write leaves it; the rerun must generate only the missing rows."""
    adapter = s.work / "reference"
    out = s.work / "eval-kill"
    shutil.rmtree(out, ignore_errors=True)
    args = ["--model", str(s.model), "--adapter", str(adapter), "--data", str(s.data), "--split", "test",
            "--out", str(out), "--batch-size", "2", "--max-new-tokens", "8"]
    first = z.run("eval", args, s.work / "eval-kill-1.log", Fault("eval_kill", 3))
    pred = out / "predictions.jsonl"
    cached = [json.loads(line) for line in pred.read_text().splitlines()] if pred.is_file() else []
    with open(pred, "a") as f:  # what a kill in the middle of a line leaves behind
        f.write('{"id": "torn-line", "completion": "<think>cut he')
    counter = s.work / "eval-kill.count"
    counter.unlink(missing_ok=True)
    second = z.run("eval", args, s.work / "eval-kill-2.log", counter=counter)
    generated = sum(int(x) for x in counter.read_text().split()) if counter.exists() else 0
    final = [json.loads(line) for line in pred.read_text().splitlines()]
    by_id = {r["id"]: r for r in final}
    return {"first_killed": first.killed, "cached": len(cached), "rerun_rc": second.rc, "rerun_generated": generated,
            "total": len(final), "unique_ids": len(by_id), "torn_line_kept": "torn-line" in by_id,
            "cached_unchanged": all(by_id.get(r["id"], {}).get("completion") == r["completion"] for r in cached),
            "crashed": first.crashed and not first.killed or second.crashed,
            "metrics": (out / "metrics.json").is_file()}


SCENARIOS = {"enospc": enospc_scenario, "nonfinite": nonfinite_scenario, "reward": reward_scenario,
             "lock": lock_scenario, "eval": eval_scenario}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.reliability.faultlib", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", required=True)
    p.add_argument("--json", required=True)
    p.add_argument("--scenarios", default="kill,enospc,nonfinite,reward,lock,eval")
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--kill-faults", default=None,
                   help="explicit kill points, e.g. 'write:optimizer.pt:2,before_marker::1' (overrides --kills)")
    p.add_argument("--per-round", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="fewer disk-full cases (the fast test suite)")
    a = p.parse_args(argv)
    names = [n for n in a.scenarios.split(",") if n]
    t0 = time.perf_counter()
    z = Zygote()
    s = z.call(lambda w: dataclasses.asdict(prepare_inputs(Path(w))), a.workdir)
    setup = Setup(Path(s["model"]), Path(s["data"]), Path(s["work"]))
    results: dict = {"import_seconds": round(z.import_seconds, 1)}
    ref = setup.work / "reference"
    if "eval" in names and "kill" not in names and not (ref / "adapter_model.safetensors").exists():
        z.run("train", setup.train_args(ref, 4), setup.work / "reference.log",
              progress=setup.work / "reference.progress")
    for name in names:
        t = time.perf_counter()
        if name == "kill":
            if a.kill_faults:
                kills = []
                for spec in a.kill_faults.split(","):
                    kind, target, nth = (spec.split(":") + ["", "1"])[:3]
                    kills.append(Fault(kind, int(nth or 1), target, 0.2 if kind == "time" else 0.0))
            else:
                kills = draw_kills(a.kills, a.seed)
            results["kill"] = kill_campaign(z, setup, kills, a.per_round)
        else:
            results[name] = SCENARIOS[name](z, setup, quick=a.quick)
        results[name]["seconds"] = round(time.perf_counter() - t, 1)
    results["seconds"] = round(time.perf_counter() - t0, 1)
    Path(a.json).write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
