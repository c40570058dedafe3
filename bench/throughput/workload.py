"""The benchmark's workload: the modes, the default plan and its models, the fit-scan grids, the
workload numbers (full run and CPU smoke), the training config every run gets, and small helpers.
Plain data; nothing here imports torch or transformers at module level.

Models are the same-size random-weight presets of `qlora_grpo.tiny.ARCHS` (the preset knows its
`model_type`); what differs per family (visual tokens per image, vLLM support, module names) comes
from the family registry, `qlora_grpo.families`.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from qlora_grpo import families, tiny

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "memory_throughput.py"  # the entry script: workers re-run it with --worker
GIB = 1024**3

# Modes: how the model is loaded and trained. Everything else is the shared workload.
MODES = {
    "lora-bf16": dict(backend="hf", quantization="none", compute_dtype="bfloat16",
                      label="16-bit LoRA baseline (transformers + PEFT, bf16 weights)"),
    "lora-fp32": dict(backend="hf", quantization="none", compute_dtype="float32",
                      label="32-bit LoRA (CPU smoke stand-in for the baseline)"),
    "qlora-hf": dict(backend="hf", quantization="nf4", compute_dtype="auto",
                     label="QLoRA, transformers + bitsandbytes NF4 (double quant)"),
    "qlora-unsloth": dict(backend="unsloth", quantization="nf4", compute_dtype="auto",
                          label="QLoRA, Unsloth FastVisionModel (4-bit, Unsloth checkpointing)"),
    "qlora-unsloth-vllm": dict(backend="unsloth", quantization="nf4", compute_dtype="auto", fast_inference=True,
                               label="QLoRA, Unsloth with vLLM rollouts (Qwen2.5-VL only)"),
}
VLLM_MODES = {m for m, d in MODES.items() if d.get("fast_inference")}
UNSLOTH_MODES = {m for m, d in MODES.items() if d["backend"] == "unsloth"}
# Default plan: model -> modes.
PLAN = {
    "qwen2-vl-2b": ["lora-bf16", "qlora-hf", "qlora-unsloth"],
    "qwen2-vl-7b": ["lora-bf16", "qlora-hf", "qlora-unsloth"],
    "qwen2.5-vl-3b": ["qlora-unsloth", "qlora-unsloth-vllm"],  # with and without vLLM rollouts
    "qwen3-vl-2b": ["qlora-hf", "qlora-unsloth"],  # today's families (qlora_grpo.families)
    "qwen3-vl-4b": ["qlora-hf", "qlora-unsloth"],
    "qwen3-vl-8b": ["qlora-hf", "qlora-unsloth"],
    "medgemma-4b": ["qlora-hf", "qlora-unsloth"],
}
SMOKE_PLAN = {"tiny-test": ["lora-fp32", "qlora-hf", "qlora-unsloth"]}
# The smoke model: qlora_grpo.tiny.build(size="test") of this family. Every PLAN model is a tiny.ARCHS
# preset, which carries its own model_type.
TINY_MODEL_TYPES = {"tiny-test": "qwen2_vl"}

G_GRID = [2, 4, 6, 8, 12, 16, 24, 32, 48, 64]
L_GRID = [64, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048]


# ============================================================================ families and the workload
def family_of(model: str) -> families.Family:
    """The registry entry of a benchmark model (PLAN or SMOKE_PLAN name)."""
    model_type = tiny.ARCHS[model]["model_type"] if model in tiny.ARCHS else TINY_MODEL_TYPES[model]
    return families.for_model_type(model_type, model)


def make_workload(args) -> dict:
    """The shared workload from the command line: the defaults of the full run, or of --smoke."""
    smoke = args.smoke
    return {
        "num_generations": args.num_generations or (2 if smoke else 8),
        "completion_length": args.completion_length or (8 if smoke else 256),
        "prompt_tokens": (args.prompt_tokens if args.prompt_tokens is not None else (128 if smoke else 320)) or None,
        "image_side": args.image_side or (56 if smoke else 392),
        "warmup_steps": args.warmup_steps if args.warmup_steps is not None else (1 if smoke else 2),
        "measured_steps": args.measured_steps or (1 if smoke else 5),
        "beta": args.beta, "lora_r": args.lora_r, "gradient_checkpointing": not args.no_gradient_checkpointing,
        "template": "think", "temperature": 1.0, "vllm_gpu_memory_utilization": args.vllm_gpu_memory_utilization,
    }


def visual_tokens(model_dirs: dict[str, Path], side: int) -> int | dict | None:
    """Visual tokens of one side x side prompt image in each model's language model, from the family
    registry (Qwen2/2.5-VL 28-px and Qwen3-VL 32-px merged patches, Gemma 3's fixed 256): one number
    when every model agrees, else {model: tokens}; None without models."""
    from transformers import AutoConfig

    per_model = {}
    for model, path in model_dirs.items():
        config = AutoConfig.from_pretrained(path, trust_remote_code=False)
        per_model[model] = families.for_config(config).visual_tokens(config, side)
    counts = set(per_model.values())
    return counts.pop() if len(counts) == 1 else (per_model or None)


# ============================================================================ small helpers
def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "unknown"


def rounded(x, nd=3):
    return None if x is None else round(float(x), nd)


def mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def git_commit() -> str | None:
    try:
        r = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        return r.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


# ============================================================================ the training config of one run
def run_config(model_dir: Path, data: Path, mode: str, w: dict, out_dir: Path, steps: int, G: int, L: int) -> dict:
    """The YAML config (as a dict) a worker parses with qlora_grpo.config: the workload in one mode."""
    m = MODES[mode]
    # Exact length, no early EOS (vLLM's SamplingParams name is min_tokens).
    gen_kwargs = {"min_tokens": L} if m.get("fast_inference") else {"min_new_tokens": L}
    cfg = {
        "model_name_or_path": str(model_dir), "backend": m["backend"], "quantization": m["quantization"],
        "compute_dtype": m["compute_dtype"], "fast_inference": bool(m.get("fast_inference", False)),
        "data_path": str(data), "train_split": "train", "max_train_samples": max(steps, 1),
        "template": "think", "prompt_mode": "default", "reward_funcs": ["format", "accuracy"],
        "reward_weights": [1.0, 1.0],
        "min_pixels": w["image_side"] ** 2, "max_pixels": w["image_side"] ** 2,
        "num_generations": G, "per_device_train_batch_size": G, "gradient_accumulation_steps": 1,
        "max_completion_length": L, "generation_kwargs": gen_kwargs, "temperature": 1.0,
        "beta": w["beta"], "learning_rate": 1e-5, "lr_scheduler_type": "constant", "max_steps": steps,
        "gradient_checkpointing": w["gradient_checkpointing"],
        "lora_r": w["lora_r"], "lora_alpha": 2 * w["lora_r"], "lora_dropout": 0.0,
        "output_dir": str(out_dir), "overwrite_output_dir": True, "resume": "never",
        "logging_steps": 1, "report_to": ["none"], "save_strategy": "no", "seed": 0,
        "sample_log_steps": 10**9, "evaluate_after_training": False, "dataloader_num_workers": 0,
    }
    if m.get("fast_inference"):  # as configs/qwen25vl_3b_vllm.yaml: Unsloth switches TRL's use_vllm on itself
        cfg["vllm_gpu_memory_utilization"] = w["vllm_gpu_memory_utilization"]
    return cfg

