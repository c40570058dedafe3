"""SFT baseline (and GRPO warm start) with the same data, templates and QLoRA/LoRA settings as GRPO.

    python train_sft.py --config configs/cpu_demo_sft.yaml [--max_steps 100] [--any_config_key VALUE]

TRL's SFTTrainer on prompt-completion rows: the loss covers the completion only (prompt tokens are
masked; Med-R1's SFT baseline trained on them too). `sft_target: answer` supervises the answer tag
(with a content-free think block for think templates); `reasoning` adds a one-sentence rationale.
Prompts are never truncated (max_length: null): cutting a multimodal prompt drops image tokens.
"""

import sys

from qlora_grpo import cpu_compat

cpu_compat.setup_env()
cpu_compat.preimport_backend(sys.argv[1:])

import torch  # noqa: E402

from medvqa_data.errors import DataError  # noqa: E402
from qlora_grpo.errors import UserError  # noqa: E402


def main(argv=None) -> int:
    from trl import SFTTrainer

    cpu_compat.patch_trl_cpu_kernels()

    from medvqa_data.dataset import select_eval_rows, select_training_rows, to_sft
    from qlora_grpo import callbacks, hardware, rundir
    from qlora_grpo.config import MedSFTConfig, parse_config, to_yaml
    from qlora_grpo.model import load_for_training, resolve_model_path

    ################
    # Config
    ################
    cfg = parse_config(argv, MedSFTConfig)
    cfg.max_length = None  # never truncate multimodal prompts
    cfg.remove_unused_columns = False
    cfg.dataset_kwargs = {**(cfg.dataset_kwargs or {}), "skip_prepare_dataset": False}
    resolve_model_path(cfg.model_name_or_path)
    train_rows = select_training_rows(cfg.data_path, cfg.train_split, cfg.train_subset, cfg.exclude_modalities,
                                      cfg.max_train_samples, cfg.seed)
    # Multi-process (accelerate/torchrun): rank 0 owns the run dir (lock, clobber check, start-up report);
    # the other ranks only read which checkpoint to resume (none is written before training starts).
    main_process = cfg.process_index == 0
    lock = rundir.RunLock(cfg.output_dir).acquire() if main_process else None  # a second run stops here
    resume_from = rundir.resolve_resume(cfg.output_dir, cfg.resume, cfg.overwrite_output_dir or not main_process)
    if main_process:
        hardware.print_startup(cfg, resume_from)

    ################
    # Data
    ################
    train_dataset = to_sft(train_rows, cfg.template, cfg.prompt_mode, cfg.sft_target, cfg.min_pixels,
                           cfg.max_pixels, diversity=cfg.diversity_prompting, seed=cfg.seed)

    ################
    # Model
    ################
    model, processor, backend = load_for_training(cfg)

    ################
    # Trainer
    ################
    trainer = SFTTrainer(model=model, args=cfg, train_dataset=train_dataset, processing_class=processor,
                         callbacks=[callbacks.CheckpointMarker(), callbacks.NonFiniteGuard(cfg.nonfinite_action)])
    if backend == "hf":
        # TRL casts QLoRA adapters to bf16, where an Adam step of ~lr (1e-5) rounds away on weights of ~0.02
        # (8 mantissa bits): keep them fp32 as PEFT does (autocast still computes in bf16/fp16; CPU: fp32).
        # Before the optimizer exists. Unsloth manages its own adapter dtype.
        for p in trainer.model.parameters():
            if p.requires_grad and p.dtype != torch.float32:
                p.data = p.data.float()

    ################
    # Train
    ################
    if trainer.accelerator.is_main_process:
        with open(cfg.output_dir.rstrip("/") + "/run_config.yaml", "w") as f:
            f.write(f"# resolved config (SFT); backend: {backend}\n{to_yaml(cfg)}")
    try:
        rundir.train(trainer, resume_from)  # resumed at max_steps: no extra step
    except torch.cuda.OutOfMemoryError as e:
        raise UserError(hardware.oom_message(cfg)) from e
    except Exception as e:  # disk full while writing a checkpoint: say so (the last complete one is intact)
        rundir.raise_if_disk_full(cfg.output_dir, e)
        raise
    callbacks.raise_if_stopped(trainer, cfg.output_dir)  # NaN/inf loss with nonfinite_action: stop

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
        print(f"SFT adapter saved to {cfg.output_dir}")

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
            metrics = evaluate(trainer.model.eval(), processor, eval_rows, cfg.template, f"{cfg.output_dir}/eval",
                               mode=cfg.prompt_mode, batch_size=cfg.eval_batch_size, max_new_tokens=cfg.eval_max_new_tokens,
                               limit=cfg.eval_max_samples, min_pixels=cfg.min_pixels, max_pixels=cfg.max_pixels,
                               title=f"SFT adapter {cfg.output_dir} on {cfg.eval_split}")
            o = metrics["overall"]
            print(f"eval accuracy {100 * o['accuracy']:.1f}% (n={o['n']}); report: {cfg.output_dir}/eval/report.md")
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
