"""Load the base model (4-bit or 16-bit), its processor and the LoRA adapters: one function per backend.

- `hf`: transformers + bitsandbytes NF4 (double quantization) + PEFT LoRA. `quantization: none`
  keeps 16-bit weights: the full-precision LoRA baseline.
- `unsloth`: Unsloth's FastVisionModel (4-bit base, its gradient checkpointing, optional vLLM
  rollouts for Qwen2.5-VL). GPU only.

Both return a PEFT model with trainable LoRA weights and the processor, ready for TRL trainers.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from qlora_grpo import cpu_compat, families
from qlora_grpo.errors import UserError

# Family facts (model types, vision tokens, LoRA targets, backends) live in qlora_grpo.families.
SUPPORTED_MODEL_TYPES = families.SUPPORTED_MODEL_TYPES


# ----------------------------------------------------------------------------- paths and types
def _looks_local(name: str) -> bool:
    """Decided without the network: an explicit path (./ ../ / ~), or a relative path whose first folder exists."""
    if name.startswith(("./", "../", "/", "~", ".\\", "..\\")) or os.path.isabs(name) or name in (".", ".."):
        return True
    parts = Path(name).parts
    return (len(parts) > 1 and Path(parts[0]).is_dir()) or len(parts) > 2  # 2+ slashes: never a hub id


def _missing_model(name: str, why: str) -> UserError:
    """The one message for a model that is neither a local checkpoint nor reachable on the hub."""
    base = Path(name).name or "Qwen2-VL-2B-Instruct"
    hub_shaped = name.count("/") == 1 and not _looks_local(name)
    repo = f"Qwen/{base}" if base.lower().startswith("qwen") else (name if hub_shaped else "<org>/<model>")
    target = f"models/{base}" if hub_shaped else name
    return UserError(
        f"model directory not found: {name} ({why}); put the checkpoint folder (config.json + weights) at "
        f"{Path(target).expanduser().absolute()} and set model_name_or_path to it: on a machine with internet run "
        f"`huggingface-cli download {repo} --local-dir {target}` and copy the folder over (CPU demo: "
        "`python -m qlora_grpo.tiny runs/tiny-qwen2-vl` builds a tiny model)")


def _hub_reachable(endpoint: str, timeout: float = 5.0) -> bool:
    """One TCP connect to the hub (no retries); True behind a proxy, which we cannot probe this way."""
    import socket
    from urllib.parse import urlparse

    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    url = urlparse(endpoint)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def resolve_model_path(name: str) -> str:
    """A local checkpoint dir, or a hub id reachable from here; else one clear error saying where to put it.

    Local vs hub is decided without the network (`_looks_local`), so a missing ``./models/...`` (or
    ``models/...`` when ``models/`` exists) fails at once. A hub id is looked up in the hub cache first
    (HF_HUB_OFFLINE honoured), then the hub is probed once (one connect, no retries) and asked for its
    config.json; any failure becomes the same one-line error.
    """
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UserError(f"{path} has no config.json: it is not a model checkpoint directory")
        return str(path)
    if path.exists():
        raise UserError(f"model_name_or_path {name} is a file; give the checkpoint folder (with config.json)")
    here = path.absolute()
    if _looks_local(name) or name.count("/") != 1:
        raise _missing_model(name, f"no such folder: {here}")
    from huggingface_hub import constants, hf_hub_download

    offline = constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
    try:
        hf_hub_download(name, "config.json", local_files_only=True)  # cached earlier: no network needed
        return name
    except Exception:
        if offline:
            raise _missing_model(name, f"no folder {here}, not in the hub cache, and HF_HUB_OFFLINE=1 is set") from None
    if not _hub_reachable(constants.ENDPOINT):
        raise _missing_model(name, f"no folder {here}, and the hub ({constants.ENDPOINT}) cannot be reached from "
                             "this machine")
    try:
        hf_hub_download(name, "config.json", etag_timeout=10)
    except Exception as e:  # unknown repo, gated, invalid id, connection lost: all the same advice
        reason = (str(e).strip().splitlines() or [""])[0][:120]
        raise _missing_model(name, f"no folder {here}, and the hub answered {type(e).__name__}: {reason}") from None
    return name


def model_type(path: str) -> str:
    from transformers import AutoConfig

    mtype = AutoConfig.from_pretrained(path, trust_remote_code=False).model_type
    families.for_model_type(mtype, str(path))  # a clear error for an unsupported family
    return mtype


def torch_dtype(name: str) -> torch.dtype:
    return {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[name]


def resolve_backend(name: str) -> str:
    if name != "auto":
        if name == "unsloth" and not cpu_compat.has_cuda():
            raise UserError("backend=unsloth needs a CUDA GPU (Unsloth refuses vision models on CPU); use backend=hf")
        return name
    if cpu_compat.has_cuda() and cpu_compat.try_import_unsloth() is None:
        return "unsloth"
    return "hf"


def vision_special_token_ids(processor) -> list[int]:
    """Ids of the vision placeholder tokens: suppressed during generation (a generated <|image_pad|>
    makes the next forward fail with "Image features and image tokens do not match").

    The tokens of every registered family that this tokenizer knows (a tokenizer carries one family's)."""
    tok = getattr(processor, "tokenizer", processor)
    vocab = tok.get_vocab()
    names = dict.fromkeys(t for f in families.FAMILIES.values() for t in f.vision_tokens)
    return [vocab[t] for t in names if t in vocab and vocab[t] != tok.unk_token_id]


def load_processor(path: str, min_pixels: int, max_pixels: int):
    from transformers import AutoProcessor

    family = families.for_model(path)
    processor = AutoProcessor.from_pretrained(
        path, **family.processor_kwargs(min_pixels, max_pixels), padding_side="left", trust_remote_code=False
    )
    processor.tokenizer.padding_side = "left"
    return processor


# ----------------------------------------------------------------------------- LoRA targets
def lora_target_regex(language: bool, vision: bool, attention: bool, mlp: bool,
                      family: str | families.Family = "qwen2_vl", projector: bool = False) -> str:
    """PEFT `target_modules` regex (full match) over the language model, the vision blocks and/or the
    projector, from the family's registry entry."""
    fam = families.FAMILIES[family] if isinstance(family, str) else family
    return fam.lora_target_regex(language, vision, attention, mlp, projector)


def lora_config(cfg, family: families.Family):
    from peft import LoraConfig

    return LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=family.lora_target_regex(
            cfg.finetune_language_layers, cfg.finetune_vision_layers,
            cfg.finetune_attention_modules, cfg.finetune_mlp_modules,
        ),
        bias="none",
        task_type="CAUSAL_LM",
    )


# ----------------------------------------------------------------------------- hf backend
def load_base_hf(path: str, quantization: str, dtype: torch.dtype, allow_pickle: bool = False,
                 quantize_vision: bool = False):
    """Base model via transformers (+ bitsandbytes NF4 with double quantization).

    NF4 covers the language model; the output head and the whole vision tower (blocks + merger) stay
    16-bit unless `quantize_vision`, as Unsloth's FastVisionModel loads it: both backends train the
    same model (the vision tower is ~0.6B of Qwen2-VL-2B's 2.2B parameters).
    """
    from transformers import AutoModelForImageTextToText, BitsAndBytesConfig

    kwargs = dict(dtype=dtype, trust_remote_code=False, use_safetensors=None if allow_pickle else True)
    family = families.for_model(path)
    if quantization == "nf4":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
            bnb_4bit_quant_storage=dtype if dtype != torch.float32 else torch.uint8,
            # 16-bit: the output head, the vision tower and projector (as Unsloth; the projector only with
            # quantize_vision_tower). transformers 5 matches these as regexes from the start of the module name
            llm_int8_skip_modules=family.skip_quant_modules(quantize_vision),
        )
    if cpu_compat.has_cuda():
        kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", 0))}
    try:
        model = AutoModelForImageTextToText.from_pretrained(path, **kwargs)
    except OSError as e:
        if "safetensors" in str(e).lower() or "no file named" in str(e).lower():
            raise UserError(f"{path}: no safetensors weights found ({e}); convert them, or pass --allow_pickle "
                            "if you trust the files (pickle can execute code)") from None
        raise
    cpu_compat.fix_bnb_linear4bit(model)
    return model


def load_hf(cfg, path: str, dtype: torch.dtype):
    from peft import get_peft_model, prepare_model_for_kbit_training

    model = load_base_hf(path, cfg.quantization, dtype, cfg.allow_pickle, cfg.quantize_vision_tower)
    family = families.for_config(model.config)
    if cfg.quantization == "nf4":
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=cfg.gradient_checkpointing,
            gradient_checkpointing_kwargs=cfg.gradient_checkpointing_kwargs or {"use_reentrant": False},
        )
    if cfg.init_adapter:
        from peft import PeftModel

        check_adapter(cfg.init_adapter, path, cfg.allow_pickle)
        model = PeftModel.from_pretrained(model, cfg.init_adapter, is_trainable=True)
    else:
        model = get_peft_model(model, lora_config(cfg, family))
    cpu_compat.fix_bnb_linear4bit(model)
    return model


# ----------------------------------------------------------------------------- unsloth backend
def check_fast_inference(fast_inference: bool, mtype: str, path: str) -> None:
    """Unsloth's vLLM rollouts exist only for some families (registry `backends`); say so before loading."""
    families.for_model_type(mtype, path).check_backend("unsloth", fast_inference)


def adapter_rank(adapter: str) -> int:
    """The LoRA rank `r` recorded in an adapter dir (the largest one when it sets per-module ranks)."""
    import json

    conf = json.loads((Path(adapter) / "adapter_config.json").read_text())
    return max([int(conf.get("r") or 8), *(int(r) for r in (conf.get("rank_pattern") or {}).values())])


def check_unsloth_vision_layers(cfg) -> None:
    """Unsloth's vLLM rollouts cannot carry vision LoRA (it raises a RuntimeError after loading)."""
    if cfg.fast_inference and cfg.finetune_vision_layers:
        raise UserError("finetune_vision_layers: true cannot be combined with fast_inference (vLLM serves LoRA on "
                        "the language model only); set finetune_vision_layers: false or fast_inference: false")


def unsloth_load_kwargs(cfg, dtype: torch.dtype) -> dict:
    """Keyword arguments of `FastVisionModel.from_pretrained` (Unsloth 2026.x names), built without importing it."""
    completion = getattr(cfg, "max_completion_length", None) or 256
    kwargs = dict(
        load_in_4bit=cfg.quantization == "nf4",
        load_in_16bit=cfg.quantization == "none",  # Unsloth falls back to 4-bit when no precision is chosen
        dtype=dtype,  # float16 on a T4 (no native bf16)
        use_gradient_checkpointing="unsloth" if cfg.gradient_checkpointing else False,
        use_exact_model_name=True,  # load this dir / hub id as is, never Unsloth's pre-quantized substitute
        max_seq_length=max(2048, cfg.max_pixels // 784 + 512 + completion),  # visual (<= 1 per 28x28) + text + completion
        fast_inference=cfg.fast_inference,
        random_state=cfg.seed,
    )
    if cfg.fast_inference:  # the vLLM engine shares the GPU with training (colocated)
        # vLLM sizes its LoRA buffers by max_lora_rank: an init adapter brings its own rank, not lora_r
        kwargs.update(max_lora_rank=adapter_rank(cfg.init_adapter) if cfg.init_adapter else cfg.lora_r,
                      gpu_memory_utilization=getattr(cfg, "vllm_gpu_memory_utilization", None) or 0.5)
    return kwargs


def unsloth_peft_kwargs(cfg) -> dict:
    """Keyword arguments of `FastVisionModel.get_peft_model` (same switches as the hf backend's regex)."""
    return dict(
        finetune_vision_layers=cfg.finetune_vision_layers,
        finetune_language_layers=cfg.finetune_language_layers,
        finetune_attention_modules=cfg.finetune_attention_modules,
        finetune_mlp_modules=cfg.finetune_mlp_modules,
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        bias="none",
        random_state=cfg.seed,
        use_rslora=False,
        use_gradient_checkpointing="unsloth" if cfg.gradient_checkpointing else False,
    )


VLLM_INSTALL = ("install the vLLM profile in its own venv: python3 -m venv .venv-vllm && "
                ".venv-vllm/bin/pip install -r requirements-vllm.txt (vllm 0.34 pins torch 2.14.0 and needs "
                "vllm-bnb-plugin for 4-bit)")


def load_unsloth(cfg, path: str, mtype: str, dtype: torch.dtype):
    if cfg.quantize_vision_tower:
        raise UserError("quantize_vision_tower: true is hf-backend only (Unsloth keeps the vision tower 16-bit); "
                        "set it to false or use backend: hf")
    check_fast_inference(cfg.fast_inference, mtype, path)
    check_unsloth_vision_layers(cfg)
    if cfg.fast_inference:
        import importlib.util

        if importlib.util.find_spec("vllm") is None:
            raise UserError(f"fast_inference needs vLLM: {VLLM_INSTALL}; or set fast_inference: false")
        if importlib.util.find_spec("vllm_bnb_plugin") is None and cfg.quantization == "nf4":
            raise UserError(f"fast_inference with a 4-bit base needs vllm-bnb-plugin (vLLM >= 0.28 moved "
                            f"bitsandbytes out of tree): {VLLM_INSTALL}")
    source = path
    if cfg.init_adapter:
        # Unsloth loads an adapter dir as "its recorded base + the adapter, trainable"; that base must be ours.
        import json

        check_adapter(cfg.init_adapter, path, cfg.allow_pickle)
        base = json.loads((Path(cfg.init_adapter) / "adapter_config.json").read_text()).get("base_model_name_or_path")
        if not base or (base != path and Path(base).expanduser().resolve() != Path(path).expanduser().resolve()):
            raise UserError(f"backend unsloth loads init_adapter {cfg.init_adapter} on the base it records ({base}), "
                            f"not on {path}; use backend: hf, or the same model_name_or_path as the adapter's run")
        source = cfg.init_adapter
    from unsloth import FastVisionModel  # imported first by cpu_compat.preimport_backend

    model, _ = FastVisionModel.from_pretrained(source, **unsloth_load_kwargs(cfg, dtype))
    if not cfg.init_adapter:
        model = FastVisionModel.get_peft_model(model, **unsloth_peft_kwargs(cfg))
    return model


# ----------------------------------------------------------------------------- entry points
def load_for_training(cfg):
    """(peft_model, processor, backend) for a GRPO/SFT config.

    Seeds every RNG with `cfg.seed` first: the Trainer seeds only when it is created, after the model,
    so without this the fresh LoRA weights (and so the whole run) would differ from run to run.
    """
    from transformers import set_seed

    from qlora_grpo.config import resolve_compute_dtype

    set_seed(cfg.seed)

    path = resolve_model_path(cfg.model_name_or_path)
    mtype = model_type(path)
    backend = resolve_backend(cfg.backend)
    family = families.for_model_type(mtype, path)
    family.check_dtype(resolve_compute_dtype(cfg.compute_dtype))
    if backend != "unsloth":
        family.check_backend(backend)
    dtype = torch_dtype(resolve_compute_dtype(cfg.compute_dtype))
    processor = load_processor(path, cfg.min_pixels, cfg.max_pixels)
    if cfg.fast_inference and backend != "unsloth":
        raise UserError("fast_inference (vLLM rollouts) needs backend: unsloth (CUDA GPU, unsloth and vllm installed); "
                        "set fast_inference: false to train with backend hf")
    if backend == "unsloth":
        model = load_unsloth(cfg, path, mtype, dtype)
    else:
        model = load_hf(cfg, path, dtype)
    return model, processor, backend


def keep_adapters_fp32(trainer, backend: str) -> None:
    """Undo TRL's cast of QLoRA adapters to bf16 (hf backend; call before the optimizer exists).

    In bf16 an Adam step of ~lr (1e-5) rounds away on weights of ~0.02 (8 mantissa bits): keep the
    trainable weights fp32 as PEFT does (autocast still computes in bf16/fp16; CPU: fp32). Unsloth
    manages its own adapter dtype.
    """
    if backend != "hf":
        return
    for p in trainer.model.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()


def load_for_inference(model_path: str, adapter: str | None = None, quantization: str = "none",
                       compute_dtype: str = "auto", min_pixels: int = 3136, max_pixels: int = 401408,
                       allow_pickle: bool = False, quantize_vision: bool = False):
    """(model in eval mode, processor) for evaluation and inference; adapters are applied, not merged.

    `quantization`/`quantize_vision`: load the base as the adapter was trained (`trained_quantization`)."""
    from qlora_grpo.config import resolve_compute_dtype

    path = resolve_model_path(model_path)
    families.for_model_type(model_type(path), path).check_dtype(resolve_compute_dtype(compute_dtype))
    dtype = torch_dtype(resolve_compute_dtype(compute_dtype))
    processor = load_processor(path, min_pixels, max_pixels)
    model = load_base_hf(path, quantization, dtype, allow_pickle, quantize_vision)
    if adapter:
        from peft import PeftModel

        check_adapter(adapter, path, allow_pickle)
        model = PeftModel.from_pretrained(model, adapter)
        cpu_compat.fix_bnb_linear4bit(model)
    model.eval()
    return model, processor


def _weights_fingerprint(folder: str | Path) -> list[tuple[str, int, str]]:
    """(file name, size, hash of its first and last MiB) of a checkpoint's weight files: equal for copies of
    one checkpoint, different for other weights of the same shapes; cheap even for large checkpoints."""
    import hashlib

    out = []
    for p in sorted(Path(folder).expanduser().iterdir()):
        if p.suffix in (".safetensors", ".bin") and p.is_file():
            size = p.stat().st_size
            with p.open("rb") as f:
                head = f.read(1 << 20)
                f.seek(max(0, size - (1 << 20)))
                tail = f.read()
            out.append((p.name, size, hashlib.sha256(head + tail).hexdigest()))
    return out


def trained_vision_quantization(run_cfg: dict, quantization: str) -> bool:
    """Whether the base of a run had its vision tower quantized too (to evaluate on the same base).

    Runs recorded before `quantize_vision_tower` existed quantized it with nf4; newer runs record it.
    """
    if quantization != "nf4":
        return False
    if "quantize_vision_tower" in run_cfg:
        return bool(run_cfg["quantize_vision_tower"])
    return bool(run_cfg)  # an older nf4 run (no key): its vision tower was 4-bit; no run config: the default


def check_adapter(adapter: str, base_path: str, allow_pickle: bool = False) -> None:
    """Clear errors for a missing adapter, a pickle-only one (unless allow_pickle), or one trained on
    another base model; a warning naming both when the recorded base (adapter_config.json, else the run's
    run_config.yaml) is another checkpoint of the same architecture (e.g. the base instead of the
    instruct model): it loads, but its answers are not those of the model that was trained."""
    import json
    import sys

    cfg_file = Path(adapter) / "adapter_config.json"
    if not cfg_file.is_file():
        raise UserError(f"no LoRA adapter at {adapter} (adapter_config.json missing); pass the run's output_dir")
    if not allow_pickle and not (Path(adapter) / "adapter_model.safetensors").is_file():
        raise UserError(f"{adapter}: no adapter_model.safetensors (only safetensors weights are loaded); convert "
                        "the adapter, or pass --allow_pickle if you trust the files (pickle can execute code)")
    trained_on = json.loads(cfg_file.read_text()).get("base_model_name_or_path")
    if not trained_on:
        from qlora_grpo.run_config import read_run_config

        trained_on = read_run_config(adapter).get("model_name_or_path")
    if not trained_on or trained_on == base_path:
        return
    trained_dir, base_dir = Path(trained_on).expanduser(), Path(base_path).expanduser()
    if trained_dir.is_dir():
        if trained_dir.resolve() == base_dir.resolve() or _weights_fingerprint(trained_dir) == _weights_fingerprint(base_dir):
            return  # the same checkpoint, or a copy of it
    elif trained_dir.name == base_dir.name:
        return  # recorded elsewhere (another machine, a hub id): trusted by name
    from transformers import AutoConfig

    try:
        a = AutoConfig.from_pretrained(str(trained_dir)).to_dict() if trained_dir.is_dir() else None
    except OSError:
        a = None
    b = AutoConfig.from_pretrained(base_path).to_dict()
    same = a is not None and all(a.get(k) == b.get(k) for k in ("model_type", "text_config", "vision_config") if k in a)
    if not same:
        raise UserError(f"adapter {adapter} was trained on {trained_on}, not on {base_path}; "
                        "pass the base model the adapter was trained on (--model)")
    print(f"warning: adapter {adapter} was trained on {trained_on} but is loaded on {base_path}, another checkpoint "
          f"of the same architecture: it loads, but its answers are not the trained model's; pass --model "
          f"{trained_on} to use it as trained", file=sys.stderr, flush=True)
