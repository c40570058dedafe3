"""The CPU fixes, applied in one place (no-ops on a CUDA machine).

1. TRL 1.15's GRPO calls a Triton kernel for log-probs; without a GPU Triton only works in its
   interpreter, which must be switched on *before* triton is imported: `setup_env()` is called at
   the very top of every entry point.
2. bitsandbytes 4-bit on CPUs with AVX512-BF16: a no-grad eval forward repacks the weights into a
   CPU layout, after which backward passes silently produce no gradient. `fix_bnb_linear4bit()`
   turns that repacking off on every `Linear4bit`.
3. Tokenizers/OMP threads: keep them from oversubscribing small machines.
"""

from __future__ import annotations

import os
import sys


def has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def setup_env() -> None:
    """Set environment switches that must precede the imports of triton/trl."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Medical data: never phone home (telemetry off; the hub is reached only for hub ids).
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    if not has_cuda():
        if "triton" in sys.modules and os.environ.get("TRITON_INTERPRET") != "1":
            raise RuntimeError("triton was imported before qlora_grpo.cpu_compat.setup_env(); call it first")
        os.environ["TRITON_INTERPRET"] = "1"


def preimport_backend(argv: list[str]) -> str | None:
    """Import unsloth before trl/transformers/peft when the run will use it (Unsloth requires this).

    Peeks at `--backend` on the command line and `backend:` in the `--config` YAML; returns the
    backend name it found (or None). Without a CUDA GPU nothing is imported (Unsloth refuses CPUs).
    """
    backend = None
    if "--config" in argv and argv.index("--config") + 1 < len(argv):
        try:
            import yaml

            with open(argv[argv.index("--config") + 1]) as f:
                data = yaml.safe_load(f)
            if isinstance(data, dict):
                backend = data.get("backend")
        except (OSError, ValueError):
            pass  # the config parser reports bad files properly later
    if "--backend" in argv and argv.index("--backend") + 1 < len(argv):
        backend = argv[argv.index("--backend") + 1]
    if backend in ("unsloth", "auto", None) and has_cuda():
        try:
            import unsloth  # noqa: F401  (must precede trl/transformers/peft)
        except ImportError:
            if backend == "unsloth":
                raise
    return backend


def fix_bnb_linear4bit(model) -> int:
    """Disable bitsandbytes' AVX512-BF16 CPU weight repacking on every Linear4bit; returns the count."""
    if has_cuda():
        return 0
    try:
        import bitsandbytes as bnb
    except ImportError:
        return 0
    n = 0
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False
            n += 1
    return n
