"""The end of a training run, the same for GRPO (train_qlora_grpo.py) and SFT (train_sft.py).

Once an entry script has built its trainer: `train_and_save` (run_config.yaml -> train, resuming
-> final adapter -> trainer_state.json), then `finish_run` (evaluate the adapter -> model card ->
unlock the run dir); `exit_with` is the scripts' `__main__` (bad input: one `error:` line, exit 2;
Ctrl-C: one line, exit 130). This is orchestration across the floors (it calls `eval.evaluate`), so it sits
at the entry level next to the two scripts; `qlora_grpo/rundir.py` below it only knows the run
directory (lock, checkpoints, resume, safe final save).
"""

from __future__ import annotations

import sys
from pathlib import Path

from qlora_grpo import rundir
from qlora_grpo.errors import UserError


def train_and_save(trainer, processor, cfg, resume_from: str | None, title: str, header: str) -> None:
    """Write run_config.yaml (`header` as its first comment line), train (resuming), then save the
    final adapter safely and the log history (trainer_state.json); print where the `title` went.

    Out of GPU memory -> a UserError with the knobs to lower; disk full -> a UserError saying so (the
    last complete checkpoint is intact); NaN/inf stopped by NonFiniteGuard -> a UserError naming the step.
    """
    import torch

    from qlora_grpo import callbacks, hardware
    from qlora_grpo.errors import Interrupted

    rundir.write_run_config(trainer, cfg, header)
    try:
        rundir.train(trainer, resume_from)  # resumed at max_steps: no extra step
    except KeyboardInterrupt:
        raise Interrupted(rundir.interrupted_message(trainer, cfg)) from None
    except torch.cuda.OutOfMemoryError as e:
        raise UserError(hardware.oom_message(cfg)) from e
    except Exception as e:
        rundir.raise_if_disk_full(cfg.output_dir, e)
        raise
    callbacks.raise_if_stopped(trainer, cfg.output_dir)
    try:  # via a temporary folder, file by file: a kill never leaves a truncated adapter in output_dir
        rundir.save_final(trainer, processor, cfg.output_dir)
    except KeyboardInterrupt:
        raise Interrupted(rundir.interrupted_message(trainer, cfg, saving=True)) from None
    except Exception as e:
        rundir.raise_if_disk_full(cfg.output_dir, e)
        raise
    if trainer.accelerator.is_main_process:
        trainer.state.save_to_json(str(Path(cfg.output_dir) / "trainer_state.json"))  # losses, rewards per step
        print(f"{title} saved to {cfg.output_dir}")


def finish_run(trainer, processor, cfg, lock: rundir.RunLock | None, title: str) -> None:
    """Rank 0: evaluate the trained adapter on `eval_split` (`eval_subset`), write the model card, unlock."""
    if trainer.accelerator.is_main_process:
        if cfg.evaluate_after_training and cfg.eval_split:
            from eval.evaluate import evaluate
            from medvqa_data.dataset import select_eval_rows
            from medvqa_data.errors import DataError

            try:
                eval_rows = select_eval_rows(cfg.data_path, cfg.eval_split, cfg.eval_subset)
            except DataError as e:
                print(f"skipping evaluation: {e}")
            else:
                out = Path(cfg.output_dir) / "eval"
                metrics = evaluate(trainer.model.eval(), processor, eval_rows, cfg.template, str(out),
                                   mode=cfg.prompt_mode, batch_size=cfg.eval_batch_size,
                                   max_new_tokens=cfg.eval_max_new_tokens, limit=cfg.eval_max_samples,
                                   min_pixels=cfg.min_pixels, max_pixels=cfg.max_pixels,
                                   title=f"{title} {cfg.output_dir} on {cfg.eval_split}")
                o = metrics["overall"]
                print(f"eval accuracy {100 * o['accuracy']:.1f}% (n={o['n']}); metrics: {out}/metrics.json, "
                      f"report: {out}/report.md")
        from qlora_grpo.model_card import write_model_card

        print(f"model card: {write_model_card(cfg.output_dir)}")
    if lock:
        lock.release()


def exit_with(main) -> None:
    """`sys.exit(main())`; a UserError or DataError (bad input) becomes one ``error: ...`` line on
    stderr and exit status 2, without a traceback; Ctrl-C one line (step, what is saved, the command
    that resumes) and exit status 130."""
    from medvqa_data.errors import DataError
    from qlora_grpo.errors import Interrupted

    try:
        sys.exit(main())
    except (UserError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except Interrupted as e:  # Ctrl-C during training: step, what is saved, the resume command
        print(f"error: {e}", file=sys.stderr)
        sys.exit(130)
    except KeyboardInterrupt:  # before training started or after the adapter was saved
        print("error: interrupted (Ctrl-C) outside training (loading, or evaluating a saved adapter): no training "
              f"step is lost; rerun with: {rundir.resume_command()}", file=sys.stderr)
        sys.exit(130)
