"""Typed run configuration: TRL's GRPOConfig/SFTConfig plus our medical-VQA fields.

A YAML file gives the values (`--config configs/cpu_demo.yaml`), command-line flags override them
(`--max_steps 5`). Parsing is TRL's `TrlParser` (HfArgumentParser + YAML); on top of it we only add
what it lacks: a type check of YAML values and choice checks, each failing with a message that
names the key. Unknown keys are errors (TrlParser rejects them; we reword the message).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from trl import GRPOConfig, SFTConfig, TrlParser

from qlora_grpo.errors import UserError

TEMPLATES = ("think", "think-after", "no-think")
LANGUAGE_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class MedVQAArguments:
    """Fields shared by GRPO and SFT runs (model, quantization, LoRA, data, prompts)."""

    # --- model -------------------------------------------------------------------------------
    model_name_or_path: str = field(
        default="runs/tiny-qwen2-vl",
        metadata={"help": "Local checkpoint dir (or hub id on machines with network). Qwen2-VL, Qwen2.5-VL, Qwen3-VL or "
                          "Gemma 3 / MedGemma (qlora_grpo.families)."},
    )
    backend: str = field(
        default="auto",
        metadata={"help": "auto | hf | unsloth. auto = unsloth when a CUDA GPU and unsloth are present, else hf."},
    )
    quantization: str = field(
        default="nf4",
        metadata={"help": "nf4 (4-bit QLoRA base, ~4x less weight memory) | none (16-bit LoRA baseline)."},
    )
    quantize_vision_tower: bool = field(
        default=False,
        metadata={"help": "nf4 only, hf backend: also quantize the vision tower. Off (default): the vision tower "
                          "stays 16-bit as Unsloth keeps it, so both backends train the same model."},
    )
    compute_dtype: str = field(
        default="auto",
        metadata={"help": "auto | bfloat16 | float16 | float32. auto = bf16 on GPUs with bf16, fp16 on older GPUs, fp32 on CPU."},
    )
    allow_pickle: bool = field(
        default=False, metadata={"help": "Allow loading non-safetensors (pickle) weights. Off: pickles can run code."}
    )
    # --- LoRA --------------------------------------------------------------------------------
    lora_r: int = field(default=16, metadata={"help": "LoRA rank. Memory/quality knob: higher = more capacity."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling numerator (scale = alpha / r)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA input."})
    lora_target_modules: list[str] = field(
        default_factory=lambda: list(LANGUAGE_LORA_TARGETS),
        metadata={"help": "Linear layer names of the language model that get adapters."},
    )
    init_adapter: str | None = field(
        default=None,
        metadata={"help": "Start from this trained LoRA adapter (e.g. the SFT run dir) instead of a fresh one; "
                  "GRPO then uses it as the KL reference too."},
    )
    finetune_vision_layers: bool = field(
        default=False, metadata={"help": "Also put adapters on the vision tower (qkv, proj, fc1, fc2)."}
    )
    finetune_language_layers: bool = field(default=True, metadata={"help": "Put adapters on the language model."})
    finetune_attention_modules: bool = field(default=True, metadata={"help": "Adapters on attention projections."})
    finetune_mlp_modules: bool = field(default=True, metadata={"help": "Adapters on MLP projections."})
    fast_inference: bool = field(
        default=False,
        metadata={"help": "unsloth backend only: vLLM rollouts (Qwen2.5-VL only, see qlora_grpo.families; ~2-4x faster generation, +memory)."},
    )
    # --- data --------------------------------------------------------------------------------
    data_path: str = field(
        default="runs/data/sample", metadata={"help": "Output dir of `python -m medvqa_data.prepare`."}
    )
    train_split: str = field(default="train", metadata={"help": "Split of data_path used for training."})
    eval_split: str = field(default="test", metadata={"help": "Split evaluated after training."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Train on a seeded random subset of N rows."})
    train_subset: str | None = field(
        default=None,
        metadata={"help": "AXIS=VALUE: train on one manifest cell of data_path, e.g. modality=CT or "
                  "question_type='Disease Diagnosis' (Med-R1 generalization runs)."},
    )
    eval_subset: str | None = field(
        default=None,
        metadata={"help": "AXIS=VALUE: evaluate after training on one manifest cell of eval_split only "
                  "(e.g. question_type='Modality Recognition'); default: the whole split."},
    )
    exclude_modalities: list[str] = field(
        default_factory=list,
        metadata={"help": "Modalities removed from the training rows (held out to test generalization)."},
    )
    min_pixels: int = field(default=3136, metadata={"help": "Images are upscaled to at least this many pixels."})
    max_pixels: int = field(
        default=401408,
        metadata={"help": "Images are downscaled to at most this many pixels (1 visual token = 784 px on Qwen2-VL/2.5-VL, "
                  "1024 px on Qwen3-VL; Gemma 3 ignores it: 256 tokens per image). "
                  "Biggest activation-memory knob after G and lengths."},
    )
    # --- prompts -----------------------------------------------------------------------------
    template: str = field(default="think", metadata={"help": "think | think-after | no-think (Med-R1 variants)."})
    prompt_mode: str = field(
        default="default", metadata={"help": "default | paper. paper = Med-R1's exact prompt strings and rewards."}
    )
    diversity_prompting: bool = field(
        default=False, metadata={"help": "RARL diversity prompting: seeded mix of explain/short/open instructions."}
    )
    # --- run management ----------------------------------------------------------------------
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Allow writing into a non-empty output_dir that is not being resumed."}
    )
    restart_run: bool = field(
        default=False,
        metadata={"help": "Start over in an output_dir that holds another run: its contents are first moved to "
                  "the sibling OUTPUT_DIR.old-<time>/ (nothing is deleted). Drop it again to resume the new run."},
    )
    resume: str = field(
        default="auto",
        metadata={"help": "auto (continue from the last complete checkpoint if any) | never | PATH of a checkpoint."},
    )
    nonfinite_action: str = field(
        default="stop",
        metadata={"help": "stop | skip. A NaN/inf loss or reward: the update is never applied; stop = end the run "
                  "(last complete checkpoint kept, error names the step), skip = go on with the next batch."},
    )
    evaluate_after_training: bool = field(default=True, metadata={"help": "Run eval on eval_split when done."})
    eval_max_samples: int | None = field(default=None, metadata={"help": "Evaluate only the first N rows."})
    eval_batch_size: int = field(default=8, metadata={"help": "Batch size of the post-training evaluation."})
    eval_max_new_tokens: int = field(default=256, metadata={"help": "Greedy generation length at evaluation."})


@dataclass
class MedGRPOConfig(MedVQAArguments, GRPOConfig):
    """GRPO run = TRL GRPOConfig + MedVQAArguments + reward selection."""

    reward_funcs: list[str] = field(
        default_factory=lambda: ["format", "accuracy"],
        metadata={"help": "Reward names from qlora_grpo.rewards (weights: reward_weights)."},
    )
    open_metric: str = field(default="f1", metadata={"help": "Open-question accuracy: f1 (graded) | exact."})
    sample_log_steps: int = field(
        default=10, metadata={"help": "Every K steps, write sample completions + per-reward scores to samples.jsonl."}
    )


@dataclass
class MedSFTConfig(MedVQAArguments, SFTConfig):
    """SFT baseline = TRL SFTConfig + MedVQAArguments."""

    sft_target: str = field(
        default="answer", metadata={"help": "answer (answer tags only) | reasoning (a short rationale + answer)."}
    )


CHOICES = {
    "backend": ("auto", "hf", "unsloth"),
    "quantization": ("nf4", "none"),
    "compute_dtype": ("auto", "bfloat16", "float16", "float32"),
    "template": TEMPLATES,
    "prompt_mode": ("default", "paper"),
    "open_metric": ("f1", "exact"),
    "sft_target": ("answer", "reasoning"),
    "nonfinite_action": ("stop", "skip"),
}


def _is_number(value: Any, kind: type) -> bool:
    try:
        return isinstance(value, str) and bool(kind(value) == kind(value))
    except ValueError:
        return False


def _type_ok(value: Any, tp: Any) -> bool:
    """Shallow isinstance check against a typing annotation (int/float/bool/str/list/dict/Union)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if origin is typing.Literal:
        return value in typing.get_args(tp)
    if origin in (list, tuple):
        args = typing.get_args(tp)
        return isinstance(value, (list, tuple)) and all(_type_ok(v, args[0]) for v in value) if args else True
    if origin is dict or tp is dict:
        return isinstance(value, dict)
    if tp is float:  # YAML 1.1 reads 1e-5 as a string; argparse converts it, so accept numeric strings
        return (isinstance(value, (int, float)) and not isinstance(value, bool)) or _is_number(value, float)
    if tp is int:
        return (isinstance(value, int) and not isinstance(value, bool)) or _is_number(value, int)
    if isinstance(tp, type):
        if tp is str:
            return isinstance(value, str)
        if tp is bool:
            return isinstance(value, bool)
        if issubclass(tp, __import__("enum").Enum):
            return isinstance(value, (str, tp))
        return isinstance(value, tp)
    return True  # exotic annotation: let the library check it


def _check_yaml(path: str, cls: type) -> dict:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"config file not found: {path} (see configs/ for the shipped profiles)") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UserError(f"config file {path} is not valid YAML{where}: {what}; fix the syntax there "
                        "(key: value, consistent indentation, quote values containing ': ')") from None
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must be a YAML mapping of key: value")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key, value in data.items():
        if key == "env":
            continue
        if key not in names:
            close = [n for n in names if n.replace("_", "") == str(key).replace("_", "").replace("-", "")]
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UserError(f"unknown config key {key!r} in {path}{hint}; run with --help to list valid keys")
        if not _type_ok(value, hints[key]):
            raise UserError(
                f"config key {key!r} in {path} has the wrong type: got {type(value).__name__} {value!r}, "
                f"expected {hints[key]}"
            )
    return data


# Value ranges checked after parsing: (test, what is allowed). Values that mean nothing are refused
# here, not silently reinterpreted downstream (e.g. max_steps 0 would train one step, -3 a whole epoch).
RANGES = {
    "max_steps": (lambda v: v == -1 or v >= 1, "a number of optimizer steps >= 1, or -1 (TRL's default: "
                  "train num_train_epochs epochs instead)"),
    "lora_dropout": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "learning_rate": (lambda v: v > 0, "> 0"),
    "max_train_samples": (lambda v: v is None or v >= 1, ">= 1 (or null for all rows)"),
    "eval_max_samples": (lambda v: v is None or v >= 1, ">= 1 (or null for all rows)"),
    **{k: (lambda v: v is None or v >= 1, ">= 1") for k in (
        "lora_r", "lora_alpha", "min_pixels", "max_pixels", "eval_batch_size", "eval_max_new_tokens",
        "sample_log_steps", "per_device_train_batch_size", "gradient_accumulation_steps",
        "max_completion_length", "num_generations")},
}

NULL_WORDS = ("null", "Null", "NULL", "~")  # YAML's; not "none", which is a value (report_to: none)


def _yaml_cli_values(argv: list[str], cls: type) -> tuple[dict, list[str]]:
    """Take `--key null` (Optional fields) and `--key '[a, b]'` (list fields) out of `argv`, read as YAML
    reads them: argparse alone would store the string 'null' and the list ['[a, b]']. Returns
    ({key: value}, the remaining argv); the values become parser defaults, so they still beat the YAML."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    out, rest, i = {}, [], 0
    while i < len(argv):
        token = argv[i]
        key, eq, value = token[2:].partition("=") if token.startswith("--") else ("", "", "")
        has_value = bool(eq) or i + 1 < len(argv)
        value = value if eq else (argv[i + 1] if i + 1 < len(argv) else "")
        tp = hints.get(key) if key in names else None
        args = typing.get_args(tp) if tp is not None else ()
        optional = type(None) in args
        is_list = typing.get_origin(tp) is list or any(typing.get_origin(a) is list for a in args)
        if tp is not None and has_value and ((optional and value.strip() in NULL_WORDS)
                                            or (is_list and value.strip().startswith("["))):
            try:
                parsed = None if value.strip() in NULL_WORDS else yaml.safe_load(value)
            except yaml.YAMLError:
                parsed = value
            if not _type_ok(parsed, tp):
                raise UserError(f"--{key} {value!r} has the wrong type: expected {tp}, e.g. --{key} '[a, b]'")
            out[key] = parsed
            i += 1 if eq else 2
            continue
        rest.append(token)
        i += 1
    return out, rest


def parse_config(argv: list[str] | None, cls: type = MedGRPOConfig):
    """Parse `--config FILE.yaml` plus CLI overrides into `cls`; raise UserError on any bad key/value."""
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    data: dict = {}
    cli_values, argv = _yaml_cli_values(argv, cls)
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv):
            raise UserError("--config needs a path, e.g. --config configs/cpu_demo.yaml")
        data = _check_yaml(argv[i + 1], cls)
    # compute_dtype is the one precision knob; TRL's bf16/fp16/use_cpu flags follow from it and the hardware.
    requested = data.get("compute_dtype", "auto")
    if "--compute_dtype" in argv and argv.index("--compute_dtype") + 1 < len(argv):
        requested = argv[argv.index("--compute_dtype") + 1]
    dtype = resolve_compute_dtype(str(requested))
    import torch

    argv += ["--bf16", str(dtype == "bfloat16"), "--fp16", str(dtype == "float16")]
    if not torch.cuda.is_available():
        argv += ["--use_cpu", "True"]
    parser = TrlParser(dataclass_types=[cls])

    def _error(message: str):  # one line instead of argparse's full usage dump
        raise UserError(f"{message} (run with --help to list the options)")

    parser.error = _error
    if cli_values:  # as parser defaults applied after the YAML's, so the command line still wins
        yaml_defaults = parser.set_defaults_with_config
        parser.set_defaults_with_config = lambda **kw: yaml_defaults(**{**kw, **cli_values})
        if "--config" not in argv:
            parser.set_defaults_with_config()
    try:
        (cfg,) = parser.parse_args_and_config(argv)
    except ValueError as e:
        raise UserError(f"invalid configuration: {e}") from None
    for key, allowed in CHOICES.items():
        if hasattr(cfg, key) and getattr(cfg, key) not in allowed:
            raise UserError(f"{key}={getattr(cfg, key)!r} is not valid; choose one of {', '.join(allowed)}")
    for key, (ok, allowed) in RANGES.items():
        if hasattr(cfg, key) and not ok(getattr(cfg, key)):
            raise UserError(f"{key}={getattr(cfg, key)!r} means nothing; it must be {allowed}")
    if cfg.min_pixels > cfg.max_pixels:
        raise UserError(f"min_pixels {cfg.min_pixels} is larger than max_pixels {cfg.max_pixels}; lower min_pixels")
    return cfg


def resolve_compute_dtype(name: str) -> str:
    """auto -> bfloat16 on GPUs that support it, float16 on older GPUs (T4), float32 on CPU."""
    import torch

    if name not in CHOICES["compute_dtype"]:
        raise UserError(f"compute_dtype={name!r} is not valid; choose one of {', '.join(CHOICES['compute_dtype'])}")
    if not torch.cuda.is_available():
        return "float32"  # CPU: half precision is slow or unsupported for these kernels
    if name == "auto":
        # Native bf16 only (Ampere+): torch reports emulated bf16 as supported on a T4, where it is slow.
        return "bfloat16" if torch.cuda.is_bf16_supported(including_emulation=False) else "float16"
    return name


def plain(v: Any) -> Any:
    """YAML-safe copy: enums by value, containers recursively, other objects as strings."""
    import enum

    if isinstance(v, enum.Enum):
        return v.value
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    if isinstance(v, dict):
        return {str(k): plain(x) for k, x in v.items()}
    if isinstance(v, (str, int, float, bool, type(None))):
        return v
    return str(v)


def to_yaml(cfg) -> str:
    """The resolved config as YAML (only our fields + the TRL fields that differ from defaults)."""
    cls = type(cfg)
    ours = {n.name for n in dataclasses.fields(MedVQAArguments)}
    out = {}
    for f in dataclasses.fields(cls):
        v = getattr(cfg, f.name)
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = object()
        if f.name in ours or v != default:
            out[f.name] = plain(v)
    return yaml.safe_dump(out, sort_keys=False)
