"""GRPO with a 4-bit (QLoRA) or 16-bit (LoRA) Qwen2-VL base on medical VQA.

    python train_qlora_grpo.py --config configs/cpu_demo.yaml [--max_steps 5] [--any_config_key VALUE]

Sections: config -> data -> model -> rewards -> trainer -> train -> save -> evaluate. The run dir
(`output_dir`) ends up with the LoRA adapter, the processor, `run_config.yaml`, TensorBoard logs,
`samples.jsonl`, complete checkpoints, and `eval/` (predictions, metrics.json, report.md).
"""

import sys

from qlora_grpo import cpu_compat

# Before anything imports triton/trl: CPU Triton interpreter switch; unsloth must precede trl.
cpu_compat.setup_env()
cpu_compat.preimport_backend(sys.argv[1:])

import torch  # noqa: E402

from medvqa_data.errors import DataError  # noqa: E402
from qlora_grpo.errors import UserError  # noqa: E402


def rewards_options(cfg) -> dict:
    """Per-reward factory options from the config (only for the selected rewards)."""
    opts = {"accuracy": {"open_metric": cfg.open_metric},
            "length": {"max_len": cfg.max_completion_length, "buffer": max(1, cfg.max_completion_length // 4)}}
    return {k: v for k, v in opts.items() if k in cfg.reward_funcs}


def build_trainer(cfg, train_rows):
    """Data -> model -> rewards -> trainer for a parsed config and its training rows.

    Returns (trainer, processor, backend). `main` and bench/memory_throughput.py both build here.
    """
    from trl import GRPOTrainer

    cpu_compat.patch_trl_cpu_kernels()

    from medvqa_data.dataset import to_trl
    from qlora_grpo import callbacks, rewards
    from qlora_grpo.model import load_for_training, vision_special_token_ids

    ################
    # Data
    ################
    train_dataset = to_trl(train_rows, cfg.template, cfg.prompt_mode, "train", cfg.min_pixels, cfg.max_pixels,
                           diversity=cfg.diversity_prompting, seed=cfg.seed)

    ################
    # Model
    ################
    model, processor, backend = load_for_training(cfg)
    # Never generate vision placeholders as text (the next forward would fail).
    cfg.generation_kwargs = {**(cfg.generation_kwargs or {}), "suppress_tokens": vision_special_token_ids(processor)}

    ################
    # Rewards
    ################
    weights = cfg.reward_weights or [1.0] * len(cfg.reward_funcs)
    if len(weights) != len(cfg.reward_funcs):
        raise UserError(f"reward_weights has {len(weights)} values for {len(cfg.reward_funcs)} reward_funcs")
    try:
        reward_funcs, cfg.reward_weights = rewards.build_reward_funcs(
            dict(zip(cfg.reward_funcs, weights)), cfg.template, cfg.prompt_mode,
            options=rewards_options(cfg),
        )
    except ValueError as e:
        raise UserError(str(e)) from None
    recorder = callbacks.SampleRecorder()
    reward_funcs = [recorder.wrap(f) for f in reward_funcs]

    ################
    # Trainer
    ################
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=reward_funcs,
        args=cfg,
        train_dataset=train_dataset,
        processing_class=processor,
        callbacks=[callbacks.CheckpointMarker(), callbacks.SampleLogger(recorder, cfg.sample_log_steps, cfg.output_dir),
                   callbacks.NonFiniteGuard(cfg.nonfinite_action)],
    )
    if backend == "hf":
        # TRL casts QLoRA adapters to bf16, where an Adam step of ~lr (1e-5) rounds away on weights of ~0.02
        # (8 mantissa bits): keep them fp32 as PEFT does (autocast still computes in bf16/fp16; CPU: fp32).
        # Before the optimizer exists. Unsloth manages its own adapter dtype.
        for p in trainer.model.parameters():
            if p.requires_grad and p.dtype != torch.float32:
                p.data = p.data.float()
    return trainer, processor, backend


def main(argv=None) -> int:
    cpu_compat.patch_trl_cpu_kernels()

    from medvqa_data.dataset import select_eval_rows, select_training_rows
    from qlora_grpo import callbacks, hardware, rundir
    from qlora_grpo.config import MedGRPOConfig, parse_config, to_yaml
    from qlora_grpo.model import resolve_model_path

    ################
    # Config
    ################
    cfg = parse_config(argv, MedGRPOConfig)
    resolve_model_path(cfg.model_name_or_path)  # fail before touching the run dir
    train_rows = select_training_rows(cfg.data_path, cfg.train_split, cfg.train_subset, cfg.exclude_modalities,
                                      cfg.max_train_samples, cfg.seed)
    # Multi-process (accelerate/torchrun): rank 0 owns the run dir (lock, clobber check, start-up report);
    # the other ranks only read which checkpoint to resume (none is written before training starts).
    main_process = cfg.process_index == 0
    lock = rundir.RunLock(cfg.output_dir).acquire() if main_process else None  # a second run stops here
    resume_from = rundir.resolve_resume(cfg.output_dir, cfg.resume, cfg.overwrite_output_dir or not main_process)
    if main_process:
        hardware.print_startup(cfg, resume_from)

    trainer, processor, backend = build_trainer(cfg, train_rows)

    ################
    # Train
    ################
    if trainer.accelerator.is_main_process:
        cfg_path = cfg.output_dir.rstrip("/") + "/run_config.yaml"
        with open(cfg_path, "w") as f:
            f.write(f"# resolved config; backend: {backend}\n{to_yaml(cfg)}")
    try:
        rundir.train(trainer, resume_from)  # resumed at max_steps: no extra step
    except torch.cuda.OutOfMemoryError as e:
        raise UserError(hardware.oom_message(cfg)) from e
    except Exception as e:  # disk full while writing a checkpoint: say so (the last complete one is intact)
        rundir.raise_if_disk_full(cfg.output_dir, e)
        raise
    callbacks.raise_if_stopped(trainer, cfg.output_dir)  # NaN/inf loss or reward with nonfinite_action: stop

    ################
    # Save
    ################
    try:  # via a temporary folder, file by file: a kill never leaves a truncated adapter in output_dir
        rundir.save_final(trainer, processor, cfg.output_dir)
    except Exception as e:
        rundir.raise_if_disk_full(cfg.output_dir, e)
        raise
    if trainer.accelerator.is_main_process:
        trainer.state.save_to_json(f"{cfg.output_dir}/trainer_state.json")  # log history: losses, rewards
    if trainer.accelerator.is_main_process:
        print(f"adapter saved to {cfg.output_dir}")

    ################
    # Evaluate
    ################
    if cfg.evaluate_after_training and cfg.eval_split and trainer.accelerator.is_main_process:
        from eval.evaluate import evaluate

        try:
            eval_rows = select_eval_rows(cfg.data_path, cfg.eval_split, cfg.eval_subset)
        except DataError as e:
            print(f"skipping evaluation: {e}")
        else:
            model = trainer.model.eval()
            metrics = evaluate(model, processor, eval_rows, cfg.template, f"{cfg.output_dir}/eval",
                               mode=cfg.prompt_mode, batch_size=cfg.eval_batch_size,
                               max_new_tokens=cfg.eval_max_new_tokens, limit=cfg.eval_max_samples,
                               min_pixels=cfg.min_pixels, max_pixels=cfg.max_pixels,
                               title=f"GRPO adapter {cfg.output_dir} on {cfg.eval_split}")
            o = metrics["overall"]
            print(f"eval accuracy {100 * o['accuracy']:.1f}% (n={o['n']}); metrics: {cfg.output_dir}/eval/metrics.json, "
                  f"report: {cfg.output_dir}/eval/report.md")
    if trainer.accelerator.is_main_process:
        from qlora_grpo.model_card import write_model_card

        print(f"model card: {write_model_card(cfg.output_dir)}")
    if lock:
        lock.release()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (UserError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
