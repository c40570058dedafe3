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

import run_end  # noqa: E402
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
    from qlora_grpo import callbacks, families, rewards
    from qlora_grpo.generation import check_vllm_generation_kwargs, rollout_generation_kwargs
    from qlora_grpo.kl_reference import ensure_reference_adapter
    from qlora_grpo.model import (
        keep_adapters_fp32,
        load_for_training,
        resolve_model_path,
        vision_special_token_ids,
    )

    if cfg.fast_inference:  # vLLM's SamplingParams refuses unknown keys: say so before loading anything
        check_vllm_generation_kwargs(cfg.generation_kwargs)

    ################
    # Data
    ################
    train_dataset = to_trl(train_rows, cfg.template, cfg.prompt_mode, "train", cfg.min_pixels, cfg.max_pixels,
                           diversity=cfg.diversity_prompting, seed=cfg.seed,
                           resize=families.resize_kwargs_for(resolve_model_path(cfg.model_name_or_path)))

    ################
    # Model
    ################
    model, processor, backend = load_for_training(cfg)
    # Never generate vision placeholders as text (the next forward would fail): suppress_tokens for
    # transformers, a -100 logit_bias for vLLM (its SamplingParams has no suppress_tokens).
    cfg.generation_kwargs = rollout_generation_kwargs(cfg.generation_kwargs, vision_special_token_ids(processor),
                                                      vllm=cfg.fast_inference)

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
    # init_adapter + beta > 0: the KL reference is the starting adapter (TRL adds a frozen "ref" copy;
    # Unsloth's patched trainer deletes that step, so it is added here for both backends).
    ensure_reference_adapter(trainer.model, cfg.beta)
    keep_adapters_fp32(trainer, backend)  # TRL casts QLoRA adapters to bf16: Adam steps would round away
    return trainer, processor, backend


def main(argv=None) -> int:
    cpu_compat.patch_trl_cpu_kernels()

    from medvqa_data.dataset import select_training_rows
    from qlora_grpo import families, rundir
    from qlora_grpo.config import MedGRPOConfig, parse_config
    from qlora_grpo.model import resolve_model_path

    ################
    # Config
    ################
    cfg = parse_config(argv, MedGRPOConfig)
    families.check_run(resolve_model_path(cfg.model_name_or_path), cfg.compute_dtype)  # fail before touching the run dir
    train_rows = select_training_rows(cfg.data_path, cfg.train_split, cfg.train_subset, cfg.exclude_modalities,
                                      cfg.max_train_samples, cfg.seed)
    lock, resume_from = rundir.open_run(cfg)  # lock output_dir (a second run stops here), find the checkpoint

    trainer, processor, backend = build_trainer(cfg, train_rows)

    ################
    # Train + save (run_end.py: the same end for GRPO and SFT)
    ################
    # Writes run_config.yaml; resumes; OOM / disk full / NaN stop -> a UserError;
    # the adapter is saved via a temporary folder.
    run_end.train_and_save(trainer, processor, cfg, resume_from, title="GRPO adapter",
                           header=f"resolved config; backend: {backend}")

    ################
    # Evaluate
    ################
    run_end.finish_run(trainer, processor, cfg, lock, title="GRPO adapter")  # + model card
    return 0


if __name__ == "__main__":
    run_end.exit_with(main)  # bad input: one `error: ...` line, exit 2; Ctrl-C: one line, exit 130
