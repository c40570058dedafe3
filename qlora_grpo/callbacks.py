"""Trainer callbacks: checkpoint completion markers, sample completions log, reward-error counts."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import torch
from transformers import TrainerCallback

from qlora_grpo import rundir


class CheckpointMarker(TrainerCallback):
    """Commits checkpoints (see `qlora_grpo.rundir`): after the Trainer has written checkpoint-N, fsync it
    and write its COMPLETE manifest; only then rotate old checkpoints (``save_total_limit``).

    The Trainer's own rotation is switched off for the run (it deletes before the new checkpoint is
    committed and orders by mtime); at train start, half-written checkpoints are removed and newer
    ones moved out of resume's way (`rundir.tidy_checkpoints`)."""

    def __init__(self):
        self.keep: int | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.keep = args.save_total_limit
        args.save_total_limit = None  # rotation happens in on_save, after the commit
        if state.is_world_process_zero:
            for msg in rundir.tidy_checkpoints(args.output_dir, state.global_step):
                print(msg, flush=True)
        return control

    def on_save(self, args, state, control, **kwargs):
        _barrier()  # every rank has finished writing its part (DeepSpeed shards)
        if state.is_world_process_zero:
            ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if ckpt.is_dir():
                rundir.mark_complete(ckpt)
                rundir.rotate(args.output_dir, self.keep, protect=state.best_model_checkpoint)
        return control

    def on_train_end(self, args, state, control, **kwargs):
        args.save_total_limit = self.keep
        return control


def _barrier() -> None:
    try:
        import torch.distributed as dist
    except ImportError:
        return
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


class SampleRecorder:
    """Wraps reward functions to remember the last batch's completions and per-reward scores."""

    def __init__(self):
        self.last: dict = {}

    def wrap(self, fn):
        name = fn.__name__

        def wrapped(completions, **kwargs):
            scores = fn(completions, **kwargs)
            if self.last.get("completions") is not completions:
                self.last = {"completions": completions, "prompts": kwargs.get("prompts"),
                             "answer": kwargs.get("answer"), "answer_letter": kwargs.get("answer_letter"),
                             "id": kwargs.get("id"), "rewards": {}}
            self.last["rewards"][name] = list(scores)
            return scores

        wrapped.__name__ = name
        return wrapped


def _text(x) -> str:
    if isinstance(x, str):
        return x
    if isinstance(x, list):  # conversational: keep only text parts (never images)
        parts = []
        for m in x:
            c = m.get("content") if isinstance(m, dict) else m
            if isinstance(c, str):
                parts.append(c)
            elif isinstance(c, list):
                parts += [p.get("text") or "" for p in c if isinstance(p, dict) and p.get("type") == "text"]
        return "\n".join(parts)
    return str(x)


def _plain(x) -> str:
    """JSON fallback for samples.jsonl: a type tag, never the object's bytes (an image stays an image tag)."""
    return f"<{type(x).__name__}>"


class SampleLogger(TrainerCallback):
    """Every K steps and at the last step (so a run shorter than K still has samples): the last batch's
    prompts, completions and per-reward scores to samples.jsonl (text only, never images) and to
    TensorBoard; also logs the count of reward-function errors."""

    def __init__(self, recorder: SampleRecorder, every: int, output_dir: str, max_samples: int = 4):
        self.recorder, self.every, self.max_samples = recorder, max(1, every), max_samples
        self.path = Path(output_dir) / "samples.jsonl"
        self.writer = None

    def on_step_end(self, args, state, control, **kwargs):
        last = self.recorder.last
        final = state.max_steps > 0 and state.global_step >= state.max_steps
        if not state.is_world_process_zero or not last or (state.global_step % self.every and not final):
            return control
        rows = []
        for i, completion in enumerate(last["completions"][: self.max_samples]):
            rows.append({
                "step": state.global_step,
                "id": (last.get("id") or [None] * (i + 1))[i],
                "prompt": _text((last.get("prompts") or [""] * (i + 1))[i]),
                "completion": _text(completion),
                "answer": (last.get("answer") or [None] * (i + 1))[i],
                "answer_letter": (last.get("answer_letter") or [None] * (i + 1))[i],
                "rewards": {k: v[i] for k, v in last["rewards"].items() if i < len(v)},
            })
        with self.path.open("a") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False, default=_plain) + "\n")
        if "tensorboard" in (args.report_to or []):
            try:
                from torch.utils.tensorboard import SummaryWriter

                if self.writer is None:
                    self.writer = SummaryWriter(log_dir=str(Path(args.output_dir) / "runs" / "samples"))
                md = "\n\n".join(f"**{r['rewards']}**\n\n```\n{r['completion']}\n```" for r in rows)
                self.writer.add_text("samples", md, state.global_step)
                self.writer.flush()
            except ImportError:
                pass
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        from qlora_grpo import rewards

        if logs is not None:
            _add_to_log(state, logs, "reward_errors", float(sum(rewards.REWARD_ERRORS.values())))
        return control


def _add_to_log(state, logs: dict, key: str, value: float) -> None:
    """Add a value to this log event: the console/TensorBoard dict and the entry the Trainer already
    appended to `state.log_history` (saved in trainer_state.json)."""
    logs[key] = value
    if state.log_history and state.log_history[-1].get("step") == state.global_step:
        state.log_history[-1][key] = value


class NonFiniteGuard(TrainerCallback):
    """NaN/inf loss or reward: caught at the step it happens, before the optimizer applies it.

    Before every optimizer step the gradients of the trainable parameters are checked (a NaN/inf
    loss, or an inf reward turned into NaN advantages, makes them non-finite; the Trainer's logged
    loss hides NaN with `logging_nan_inf_filter`). The bad update is always dropped (gradients
    cleared, so the weights stay the last good ones), and a warning names the step. Then:

    - ``action="stop"``: training stops without saving that step; the last complete checkpoint is
      kept, `stopped_at` is set, and the entry scripts exit with an error naming the step.
    - ``action="skip"``: training goes on with the next batch; `skipped` lists the steps. After
      `max_consecutive_skips` bad steps in a row it stops as above (the run is diverging).

    Logged values (``loss``, ``reward``, ``grad_norm``) that are NaN/inf are reported the same way.
    The number of dropped steps is logged as ``nonfinite_steps``.

    With fp16 (a T4: loss scaling), inf gradients are the scaler's normal overflow signal: it skips
    that update and lowers the scale by itself. Only `max_fp16_overflows` overflows in a row (the
    scale has collapsed: the loss itself is NaN/inf) count as a non-finite step.
    """

    def __init__(self, action: str = "stop", max_consecutive_skips: int = 10, max_fp16_overflows: int = 25):
        if action not in ("stop", "skip"):
            raise ValueError(f"nonfinite_action must be stop or skip, got {action!r}")
        self.action, self.max_consecutive_skips = action, max_consecutive_skips
        self.max_fp16_overflows = max_fp16_overflows
        self._overflows = 0
        self.events: list[str] = []
        self.skipped: list[int] = []
        self.stopped_at: int | None = None
        self._consecutive = 0
        self._flagged: set[int] = set()

    def _flag(self, step: int, what: str, control, dropped: bool) -> None:
        if step in self._flagged:
            return
        self._flagged.add(step)
        msg = f"non-finite {what} at step {step}"
        self.events.append(msg)
        update = ("the update was not applied" if dropped else
                  "seen in the logged metrics (the gradients were finite, the update was applied)")
        stop = self.action == "stop" or self._consecutive >= self.max_consecutive_skips
        if stop:
            self.stopped_at = step
            control.should_training_stop = True
            control.should_save = False
            why = "" if self.action == "stop" else f" ({self._consecutive} bad steps in a row)"
            print(f"warning: {msg}; {update}; stopping{why} without saving this step (the last complete "
                  "checkpoint is kept; nonfinite_action: skip skips such steps instead)", file=sys.stderr, flush=True)
        else:
            print(f"warning: {msg}; {update}; going on with the next batch (nonfinite_action: skip)",
                  file=sys.stderr, flush=True)

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if model is None:
            return control
        grads = [(name, p.grad) for name, p in model.named_parameters() if p.grad is not None]
        by_device: dict = {}
        for _, g in grads:
            by_device.setdefault(g.device, []).append(torch.isfinite(g).all())
        if all(bool(torch.stack(flags).all()) for flags in by_device.values()):  # one sync per device
            bad = 0
        else:
            finite = [bool(torch.isfinite(g).all()) for _, g in grads]
            bad, total = finite.count(False), len(grads)
            example = grads[finite.index(False)][0]
        if not bad:
            self._consecutive = self._overflows = 0
            return control
        if getattr(args, "fp16", False):  # loss scaling: the scaler skips this step and lowers the scale
            self._overflows += 1
            if self._overflows < self.max_fp16_overflows:
                return control
            bad_what = f"gradients after {self._overflows} fp16 overflows in a row (NaN/inf loss)"
        else:
            bad_what = f"gradients (NaN/inf loss or reward; {bad} of {total} tensors, e.g. {example})"
        for p in model.parameters():  # drop the update: the optimizer skips parameters without gradient
            p.grad = None
        step = state.global_step + 1
        self._consecutive += 1
        if step not in self.skipped:
            self.skipped.append(step)
        self._flag(step, bad_what, control, dropped=True)
        return control

    def on_step_end(self, args, state, control, **kwargs):
        if self.stopped_at is not None and state.global_step >= self.stopped_at:
            control.should_training_stop = True
            control.should_save = False  # never checkpoint the step that went wrong
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs:
            return control
        keys = ("loss", "reward") if getattr(args, "fp16", False) else ("loss", "reward", "grad_norm")
        bad = [k for k in keys if isinstance(logs.get(k), (int, float)) and not math.isfinite(logs[k])]
        if bad and state.global_step not in self._flagged:
            self._flag(state.global_step, ", ".join(bad), control, dropped=False)
        _add_to_log(state, logs, "nonfinite_steps", float(len(self.skipped)))
        return control

    def message(self, output_dir: str) -> str:
        """The error for a run stopped by this guard."""
        last = rundir.last_complete_checkpoint(output_dir)
        keep = f"the last complete checkpoint {last} is kept" if last else "no checkpoint was written yet"
        return (f"training stopped: {self.events[-1]}; {keep}. Lower learning_rate, check the rewards/data of "
                "that step, or set nonfinite_action: skip to skip such steps")


def raise_if_stopped(trainer, output_dir: str) -> None:
    """After `trainer.train()`: a UserError naming the step when a NonFiniteGuard stopped the run."""
    from qlora_grpo.errors import UserError

    for cb in trainer.callback_handler.callbacks:
        if isinstance(cb, NonFiniteGuard) and cb.stopped_at is not None:
            raise UserError(cb.message(output_dir))
