"""Trainer callbacks: checkpoint completion markers, sample completions log, reward-error counts."""

from __future__ import annotations

import json
import math
from pathlib import Path

from transformers import TrainerCallback

from qlora_grpo import rundir


class CheckpointMarker(TrainerCallback):
    """After the Trainer has written checkpoint-N completely, mark it COMPLETE (resume trusts only those)."""

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if ckpt.is_dir():
                rundir.mark_complete(ckpt)
        return control


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


class SampleLogger(TrainerCallback):
    """Every K steps: the last batch's prompts, completions and per-reward scores to samples.jsonl
    (text only, never images) and to TensorBoard; also logs the count of reward-function errors."""

    def __init__(self, recorder: SampleRecorder, every: int, output_dir: str, max_samples: int = 4):
        self.recorder, self.every, self.max_samples = recorder, max(1, every), max_samples
        self.path = Path(output_dir) / "samples.jsonl"
        self.writer = None

    def on_step_end(self, args, state, control, **kwargs):
        last = self.recorder.last
        if not state.is_world_process_zero or not last or state.global_step % self.every:
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
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
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
            logs["reward_errors"] = float(sum(rewards.REWARD_ERRORS.values()))
        return control


class NonFiniteGuard(TrainerCallback):
    """Stops the run when the logged loss or reward is NaN/inf, naming the step (last good checkpoint kept)."""

    def __init__(self, action: str = "stop"):
        self.action = action
        self.events: list[str] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs:
            return control
        bad = [k for k in ("loss", "reward", "grad_norm") if isinstance(logs.get(k), float) and not math.isfinite(logs[k])]
        if bad:
            msg = f"non-finite {', '.join(bad)} at step {state.global_step}"
            self.events.append(msg)
            print(f"warning: {msg}; " + ("stopping (last complete checkpoint kept)" if self.action == "stop"
                                         else "continuing"), flush=True)
            if self.action == "stop":
                control.should_training_stop = True
                control.should_save = False
        return control
