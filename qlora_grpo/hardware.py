"""Start-up report (resolved config, GPU, memory), a fit estimate, and the out-of-memory advice.

The estimate is deliberately simple and documented, to warn before a run that cannot fit:
    weights      = linear params x (0.5 B + 1/64 B absmax for nf4 | 2 B bf16/fp16 | 4 B fp32)
                   + embeddings x 2 B (never quantized) + vision tower (16-bit, as Unsloth keeps it;
                   at the linear rate with quantize_vision_tower)
    lora+adam    = LoRA params x 16 B (fp32 weight, grad, two Adam moments);
                   LoRA params = layers x r x (9 x hidden + 2 x kv_dim + 3 x intermediate) (all 7 projections)
    kv cache     = 2 x layers x kv_heads x head_dim x 2 B x S x (prompt + completion)
    activations  = B x T x hidden x layers x 2 B (checkpointed layer inputs)
                   + B x T x (14 x hidden + 3 x intermediate) x 2 B (one layer recomputed)
    logits       = B x completion x vocab x 4 B (fp32 log-softmax, chunked by TRL's kernel: /4)
with T = prompt + completion tokens, B = sequences per forward/backward (per_device_train_batch_size,
default G) and S = sequences generated at once (the generation batch, default G).
    + 15% allocator overhead and the CUDA context (~0.5 GB).
"""

from __future__ import annotations

import json
from pathlib import Path

GB = 1024**3


def count_params(model_dir: str) -> dict:
    """Parameter counts from config.json (no weights loaded), for every family in qlora_grpo.families:
    explicit head_dim (Qwen3-VL, Gemma 3), gated or plain vision MLPs, DeepStack mergers, Gemma's projector."""
    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    mtype = cfg.get("model_type", "qwen2_vl")
    t = cfg.get("text_config", cfg)
    v = cfg.get("vision_config", {})
    h, inter, layers = t["hidden_size"], t["intermediate_size"], t["num_hidden_layers"]
    heads, kv = t["num_attention_heads"], t.get("num_key_value_heads", t["num_attention_heads"])
    head_dim = t.get("head_dim") or h // heads
    vocab = t["vocab_size"]
    per_layer = 2 * h * heads * head_dim + 2 * h * kv * head_dim + 3 * h * inter
    tied = cfg.get("tie_word_embeddings", t.get("tie_word_embeddings", False))
    emb = vocab * h * (1 if tied else 2)
    # vision tower: Qwen2-VL names its width embed_dim (its hidden_size is the merger's output)
    e = v.get("embed_dim") or v.get("hidden_size", 1280)
    depth = v.get("depth") or v.get("num_hidden_layers", 32)
    v_inter = v.get("intermediate_size") or e * v.get("mlp_ratio", 4)
    gated = mtype == "qwen2_5_vl"  # SwiGLU vision MLP (gate, up, down)
    vis = depth * (4 * e * e + (3 if gated else 2) * e * v_inter)
    if mtype == "gemma3":
        vis += e * h  # multi_modal_projector
    else:
        mergers = 1 + len(v.get("deepstack_visual_indexes") or [])  # Qwen3-VL: DeepStack mergers
        vis += mergers * ((e * 4) ** 2 + e * 4 * (v.get("out_hidden_size") or h))
    return {"linear": per_layer * layers, "embedding": emb, "vision": vis, "hidden": h, "layers": layers,
            "kv_dim": kv * head_dim, "inter": inter, "vocab": vocab, "q_dim": heads * head_dim,
            "model_type": mtype}


def estimate_gb(model_dir: str, quantization: str, dtype_bytes: int, num_generations: int, prompt_tokens: int,
                completion_tokens: int, lora_r: int, train_batch: int | None = None,
                generation_batch: int | None = None, quantize_vision: bool = False) -> dict:
    p = count_params(model_dir)
    linear_bytes = {"nf4": 0.5 + 1 / 64}.get(quantization, dtype_bytes)
    vision_bytes = linear_bytes if quantize_vision else min(dtype_bytes, 2)  # 16-bit unless quantize_vision_tower
    weights = p["linear"] * linear_bytes + p["vision"] * vision_bytes + p["embedding"] * 2
    lora = p["layers"] * lora_r * (7 * p["hidden"] + 2 * p["q_dim"] + 2 * p["kv_dim"] + 3 * p["inter"]) * 16
    b, s, tokens = train_batch or num_generations, generation_batch or num_generations, prompt_tokens + completion_tokens
    kv = 2 * p["layers"] * p["kv_dim"] * 2 * s * tokens
    act = b * tokens * p["hidden"] * p["layers"] * 2 + b * tokens * (14 * p["hidden"] + 3 * p["inter"]) * 2
    logits = b * completion_tokens * p["vocab"] * 4 / 4
    total = (weights + lora + kv + act + logits) * 1.15 + 0.5 * GB
    return {"weights": weights / GB, "lora_optimizer": lora / GB, "kv_cache": kv / GB, "activations": act / GB,
            "logits": logits / GB, "total": total / GB}


def gpu_info() -> tuple[str, float] | None:
    import torch

    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    return props.name, props.total_memory / GB


def profile_estimate(cfg, gpu_gb: float | None = None) -> dict | None:
    """`estimate_gb` for a parsed config (None when the model dir has no readable config.json). With
    fast_inference, vLLM's up-front reservation (vllm_gpu_memory_utilization x the GPU) is added."""
    from qlora_grpo.config import resolve_compute_dtype

    dtype = resolve_compute_dtype(cfg.compute_dtype)
    try:  # instruction + question + visual tokens at max_pixels (per family: 28/32-px tokens, Gemma 3: 256)
        from transformers import AutoConfig

        from qlora_grpo import families
        from qlora_grpo.errors import UserError

        mcfg = AutoConfig.from_pretrained(cfg.model_name_or_path, trust_remote_code=False)
        prompt_tokens = 64 + families.for_config(mcfg).image_tokens(mcfg, cfg.max_pixels)
    except (OSError, ValueError, KeyError, AttributeError, UserError):
        prompt_tokens = 64 + cfg.max_pixels // 784
    world = max(1, getattr(cfg, "world_size", 1) or 1)
    generation = getattr(cfg, "generation_batch_size", None)
    try:
        est = estimate_gb(cfg.model_name_or_path, cfg.quantization, 2 if dtype != "float32" else 4,
                          getattr(cfg, "num_generations", None) or 1, prompt_tokens,
                          getattr(cfg, "max_completion_length", None) or 256, cfg.lora_r,
                          train_batch=getattr(cfg, "per_device_train_batch_size", None),
                          generation_batch=generation // world if generation else None,
                          quantize_vision=bool(getattr(cfg, "quantize_vision_tower", False)))
    except (OSError, KeyError, ValueError, TypeError):
        return None
    if getattr(cfg, "fast_inference", False) and gpu_gb:
        est["vllm_reserved"] = (getattr(cfg, "vllm_gpu_memory_utilization", None) or 0.5) * gpu_gb
        est["total"] += est["vllm_reserved"]
    return est


def print_startup(cfg, resume_from: str | None) -> None:
    from qlora_grpo.config import resolve_compute_dtype, to_yaml

    print("=" * 78)
    print("resolved config:\n" + "\n".join("  " + line for line in to_yaml(cfg).splitlines()))
    gpu = gpu_info()
    dtype = resolve_compute_dtype(cfg.compute_dtype)
    print(f"device: {f'{gpu[0]} ({gpu[1]:.1f} GB)' if gpu else 'CPU (no CUDA GPU)'}; compute dtype {dtype}")
    if getattr(cfg, "world_size", 1) > 1:
        print(f"processes: {cfg.world_size} (data parallel; the estimate below is per GPU)")
    est = profile_estimate(cfg, gpu[1] if gpu else None)
    if est:
        parts = ", ".join(f"{k} {v:.2f}" for k, v in est.items() if k != "total")
        print(f"memory estimate: {est['total']:.1f} GB ({parts})")
        if gpu and est["total"] > gpu[1]:
            print(f"WARNING: this profile is estimated at {est['total']:.1f} GB but the GPU has {gpu[1]:.1f} GB.\n"
                  + oom_message(cfg))
    print(f"resuming from {resume_from}" if resume_from else f"fresh run in {cfg.output_dir}")
    print("=" * 78, flush=True)


def oom_message(cfg) -> str:
    """The knobs to lower when a run does not fit, in order of least quality loss."""
    g = getattr(cfg, "num_generations", None)
    return (
        "CUDA out of memory. Lower these, in order of least quality loss:\n"
        f"  1. per_device_train_batch_size (now {cfg.per_device_train_batch_size}) with gradient_accumulation_steps "
        f"up to keep the effective batch (now x{cfg.gradient_accumulation_steps})\n"
        f"  2. gradient_checkpointing: true (now {cfg.gradient_checkpointing})\n"
        f"  3. quantization: nf4 (now {cfg.quantization}) and backend: unsloth if installed (now {cfg.backend})\n"
        f"  4. max_pixels (now {cfg.max_pixels}; 784 pixels = 1 visual token)\n"
        f"  5. max_completion_length (now {cfg.max_completion_length})\n"
        f"  6. num_generations (now {g}; GRPO needs >= 2, fewer = noisier advantages)\n"
        f"  7. lora_r (now {cfg.lora_r})"
    )
