"""Export a trained run: the LoRA adapter alone, or a merged 16-bit model loadable without PEFT.

    python -m qlora_grpo.export --model DIR --adapter RUN_DIR --out DIR [--merge] [--dtype bf16|fp16|fp32]

Without --merge, OUT gets the adapter files (adapter_config.json + weights), the processor, the
run's run_config.yaml (so `qlora_grpo.infer --adapter OUT` picks the trained template and
quantization) and a model card (README.md).

With --merge the base model is loaded in 16-bit (--dtype, default bf16; fp32 for exact checks),
*never* in 4-bit: merging LoRA into NF4 weights would re-quantize the sum and lose the update.
For an adapter trained on an NF4 base (QLoRA), loading the original checkpoint without quantization
gives the 16-bit weights that NF4 approximated, and the adapter is merged into those; the model card
says so (outputs can differ slightly from the 4-bit model evaluated after training). The merged
weights (`merge_and_unload`) are saved as safetensors with the processor and the generation config:
OUT loads with plain `AutoModelForImageTextToText.from_pretrained(OUT)` (any registered family), no PEFT.

OUT must not exist or be empty (an existing export is never overwritten). The export is written to
a temporary sibling directory and renamed into place at the end, so an interrupted export leaves no
half-written OUT.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from qlora_grpo import cpu_compat
from qlora_grpo.errors import UserError

DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin")
PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")


def check_out(out: Path) -> None:
    if out.is_file():
        raise UserError(f"--out {out} is a file; give a new (or empty) directory")
    if out.is_dir() and any(out.iterdir()):
        raise UserError(f"--out {out} is not empty; refusing to overwrite it (choose a new directory)")


def _check_adapter_dir(adapter: Path) -> None:
    if not adapter.is_dir():
        raise UserError(f"adapter directory not found: {adapter}")
    if not (adapter / "adapter_config.json").is_file():
        raise UserError(f"no LoRA adapter in {adapter} (adapter_config.json missing); pass the run's output_dir")
    if not any((adapter / f).is_file() for f in ADAPTER_FILES[1:]):
        raise UserError(f"{adapter} has adapter_config.json but no adapter weights (adapter_model.safetensors)")


def _processor(base_path: str, adapter: Path, run_cfg: dict):
    """The run's saved processor (it carries the trained pixel bounds), else the base model's."""
    if any((adapter / f).is_file() for f in PROCESSOR_FILES):
        from transformers import AutoProcessor

        return AutoProcessor.from_pretrained(str(adapter), trust_remote_code=False)
    from qlora_grpo.model import load_processor

    return load_processor(base_path, int(run_cfg.get("min_pixels") or 3136), int(run_cfg.get("max_pixels") or 401408))


def _merge(base_path: str, adapter: Path, dtype_name: str, out: Path, allow_pickle: bool) -> None:
    from peft import PeftModel

    from qlora_grpo.model import load_base_hf, torch_dtype

    base = load_base_hf(base_path, "none", torch_dtype(DTYPES[dtype_name]), allow_pickle)  # 16-bit, not 4-bit
    model = PeftModel.from_pretrained(base, str(adapter))
    merged = model.merge_and_unload()
    leftover = [n for n, _ in merged.named_parameters() if "lora_" in n]
    if leftover:
        raise UserError(f"merge left LoRA parameters in the model ({leftover[0]}, ...); cannot export a plain model")
    merged.save_pretrained(str(out))


def export(model: str, adapter: str | os.PathLike, out: str | os.PathLike, merge: bool = False,
           dtype: str = "bf16", allow_pickle: bool = False) -> Path:
    """Write the adapter (or, with merge=True, the merged model) + processor + model card to `out`."""
    from qlora_grpo import model_card
    from qlora_grpo.model import check_adapter, model_type, resolve_model_path
    from qlora_grpo.run_config import read_run_config

    if dtype not in DTYPES:
        raise UserError(f"unknown dtype {dtype!r}; choose one of: {', '.join(DTYPES)}")
    adapter, out = Path(adapter), Path(out)
    check_out(out)  # before any slow loading
    _check_adapter_dir(adapter)
    if out.resolve() == adapter.resolve():
        raise UserError("--out is the adapter directory itself; choose a new directory")
    base_path = resolve_model_path(model)
    model_type(base_path)
    check_adapter(str(adapter), base_path)
    run_cfg = read_run_config(adapter)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        _processor(base_path, adapter, run_cfg).save_pretrained(str(tmp))
        if merge:
            _merge(base_path, adapter, dtype, tmp, allow_pickle)
        else:
            for name in ADAPTER_FILES:
                if (adapter / name).is_file():
                    shutil.copy2(adapter / name, tmp / name)
        if (adapter / "run_config.yaml").is_file():
            shutil.copy2(adapter / "run_config.yaml", tmp / "run_config.yaml")
            card = model_card.render_model_card(adapter, export={"merged": merge, "dtype": dtype, "out": str(out)})
            (tmp / "README.md").write_text(card)
        check_out(out)  # nobody wrote there meanwhile
        if out.is_dir():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def main(argv: list[str] | None = None) -> int:
    cpu_compat.setup_env()
    p = argparse.ArgumentParser(prog="python -m qlora_grpo.export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="base model dir (the one the adapter was trained on) or hub id")
    p.add_argument("--adapter", required=True, help="run dir with the trained LoRA adapter")
    p.add_argument("--out", required=True, help="new (or empty) output directory")
    p.add_argument("--merge", action="store_true", help="merge the adapter into 16-bit base weights (no PEFT needed)")
    p.add_argument("--dtype", default="bf16", choices=tuple(DTYPES), help="weights dtype of a merged model")
    p.add_argument("--allow-pickle", action="store_true", help="allow non-safetensors base weights (can run code)")
    a = p.parse_args(argv)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        out = export(a.model, a.adapter, a.out, merge=a.merge, dtype=a.dtype, allow_pickle=a.allow_pickle)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    what = f"merged {a.dtype} model (loads without PEFT)" if a.merge else "adapter"
    print(f"{what} exported to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
