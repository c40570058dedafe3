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

import run_end  # noqa: E402


def main(argv=None) -> int:
    from trl import SFTTrainer

    cpu_compat.patch_trl_cpu_kernels()

    from medvqa_data.dataset import select_training_rows, to_sft
    from qlora_grpo import callbacks, families, rundir
    from qlora_grpo.config import MedSFTConfig, parse_config
    from qlora_grpo.model import keep_adapters_fp32, load_for_training, resolve_model_path

    ################
    # Config
    ################
    cfg = parse_config(argv, MedSFTConfig)
    cfg.max_length = None  # never truncate multimodal prompts
    cfg.remove_unused_columns = False
    cfg.dataset_kwargs = {**(cfg.dataset_kwargs or {}), "skip_prepare_dataset": False}
    families.check_run(resolve_model_path(cfg.model_name_or_path), cfg.compute_dtype)  # before the run dir
    train_rows = select_training_rows(cfg.data_path, cfg.train_split, cfg.train_subset, cfg.exclude_modalities,
                                      cfg.max_train_samples, cfg.seed)
    lock, resume_from = rundir.open_run(cfg)  # lock output_dir (a second run stops here), find the checkpoint

    ################
    # Data
    ################
    train_dataset = to_sft(train_rows, cfg.template, cfg.prompt_mode, cfg.sft_target, cfg.min_pixels,
                           cfg.max_pixels, diversity=cfg.diversity_prompting, seed=cfg.seed,
                           resize=families.resize_kwargs_for(resolve_model_path(cfg.model_name_or_path)))

    ################
    # Model
    ################
    model, processor, backend = load_for_training(cfg)

    ################
    # Trainer
    ################
    trainer = SFTTrainer(model=model, args=cfg, train_dataset=train_dataset, processing_class=processor,
                         callbacks=[callbacks.CheckpointMarker(), callbacks.NonFiniteGuard(cfg.nonfinite_action)])
    keep_adapters_fp32(trainer, backend)  # TRL casts QLoRA adapters to bf16: Adam steps would round away

    ################
    # Train + save (run_end.py: the same end for GRPO and SFT)
    ################
    # Writes run_config.yaml; resumes; OOM / disk full / NaN stop -> a UserError;
    # the adapter is saved via a temporary folder.
    run_end.train_and_save(trainer, processor, cfg, resume_from, title="SFT adapter",
                           header=f"resolved config (SFT); backend: {backend}")

    ################
    # Evaluate
    ################
    run_end.finish_run(trainer, processor, cfg, lock, title="SFT adapter")  # + model card
    return 0


if __name__ == "__main__":
    run_end.exit_with(main)  # bad input: one `error: ...` line, exit 2; Ctrl-C: one line, exit 130
