"""The CPU fixes, applied in one place (no-ops on a CUDA machine).

1. TRL 1.15's GRPO calls a Triton kernel for log-probs; without a GPU Triton only works in its
   interpreter, which must be switched on *before* triton is imported: `setup_env()` is called at
   the very top of every entry point.
2. bitsandbytes 4-bit on CPUs with AVX512-BF16: a no-grad eval forward repacks the weights into a
   CPU layout, after which backward passes silently produce no gradient. `fix_bnb_linear4bit()`
   turns that repacking off on every `Linear4bit`.
3. TRL's fused LM head (`ChunkedLogProbFunction`) folds logits through a Triton kernel with one
   program per token; under the Triton interpreter that dominates a CPU step. `patch_trl_cpu_kernels()`
   swaps in the same math in plain torch (full logits, autograd backward) when no GPU is present;
   a test checks it against TRL's kernel.
4. bitsandbytes on CPUs with AVX512-BF16 logs "Failed to load CPU gemm_4bit_forward from
   kernels-community" at import when the optional `kernels` package (a hub download) is absent. That
   kernel only speeds up bf16 4-bit matmuls; bitsandbytes falls back to its own CPU code, we run fp32 on
   CPU and turn the AVX512-BF16 path off (2.), so nothing is lost: `setup_env()` filters that one line.
"""

from __future__ import annotations

import logging
import os
import sys

BNB_KERNEL_NOTICE = "gemm_4bit_forward from kernels-community"


class _DropBnbKernelNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return BNB_KERNEL_NOTICE not in record.getMessage()


def has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def setup_env() -> None:
    """Set environment switches that must precede the imports of triton/trl."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Medical data: never phone home (telemetry off; the hub is reached only for hub ids).
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    bnb_logger = logging.getLogger("bitsandbytes.backends.cpu.ops")  # the same object bitsandbytes gets later
    if not any(isinstance(f, _DropBnbKernelNotice) for f in bnb_logger.filters):
        bnb_logger.addFilter(_DropBnbKernelNotice())
    if not has_cuda():
        if "triton" in sys.modules and os.environ.get("TRITON_INTERPRET") != "1":
            raise RuntimeError("triton was imported before qlora_grpo.cpu_compat.setup_env(); call it first")
        os.environ["TRITON_INTERPRET"] = "1"


def _argv_backend(argv: list[str]) -> str | None:
    """The value of the last `--backend X` or `--backend=X` on the command line."""
    backend = None
    for i, arg in enumerate(argv):
        if arg == "--backend" and i + 1 < len(argv):
            backend = argv[i + 1]
        elif arg.startswith("--backend="):
            backend = arg.split("=", 1)[1]
    return backend


_UNSLOTH_IMPORT: dict = {}  # {"error": str | None} once tried: a broken install is tried (and reported) once


def try_import_unsloth() -> str | None:
    """Import unsloth; None when it worked, else the reason (printed once as a warning).

    Anything an import of unsloth raises counts as "not available" (a CUDA/driver mismatch raises
    RuntimeError or NotImplementedError, a missing dependency ImportError): `backend: auto` then
    trains with hf instead of crashing.
    """
    if "error" not in _UNSLOTH_IMPORT:
        try:
            import unsloth  # noqa: F401  (must precede trl/transformers/peft)

            _UNSLOTH_IMPORT["error"] = None
        except Exception as e:  # noqa: BLE001 -- any failure means: no unsloth here
            _UNSLOTH_IMPORT["error"] = f"{type(e).__name__}: {e}".splitlines()[0]
            if not isinstance(e, ImportError) or getattr(e, "name", None) != "unsloth":
                print(f"warning: importing unsloth failed ({_UNSLOTH_IMPORT['error']}); using backend hf",
                      file=sys.stderr)
    return _UNSLOTH_IMPORT["error"]


def preimport_backend(argv: list[str]) -> str | None:
    """Import unsloth before trl/transformers/peft when the run will use it (Unsloth requires this).

    Peeks at `--backend X` / `--backend=X` on the command line and `backend:` in the `--config` YAML;
    returns the backend name it found (or None). Without a CUDA GPU nothing is imported (Unsloth
    refuses CPUs). `backend: unsloth` with a broken unsloth raises the import error; `auto` falls back.
    """
    backend = None
    if "--config" in argv and argv.index("--config") + 1 < len(argv):
        try:
            import yaml

            with open(argv[argv.index("--config") + 1]) as f:
                data = yaml.safe_load(f)
            if isinstance(data, dict):
                backend = data.get("backend")
        except Exception:  # noqa: BLE001  (OSError, YAMLError, ...)
            pass  # the config parser reports bad files properly later (one line)
    backend = _argv_backend(argv) or backend
    if backend == "unsloth" and has_cuda():
        import unsloth  # noqa: F401  (the user asked for it: its own error is the clearest)
    elif backend in ("auto", None) and has_cuda():
        try_import_unsloth()
    return backend


class TorchChunkedLogProb:
    """Drop-in for `trl.kernels.ChunkedLogProbFunction.apply` on CPU: same outputs, plain torch."""

    @staticmethod
    def apply(hidden, weight, bias, targets, temperature, chunk_size, final_logit_softcapping=None,
              logit_scale=1.0, outputs=("entropy", "log_sum_sq_probs", "mean_logits", "is_top1")):
        import torch

        z = hidden.float() @ weight.float().t()
        if bias is not None:
            z = z + bias.float()
        z = z * logit_scale
        if final_logit_softcapping is not None:
            z = final_logit_softcapping * torch.tanh(z / final_logit_softcapping)
        z = z / temperature
        logp_all = torch.log_softmax(z, dim=-1)
        logprobs = logp_all.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        entropy = log_sum_sq = mean_logits = is_top1 = None
        if "entropy" in outputs:
            entropy = -(logp_all.exp() * logp_all).sum(-1)
        if "log_sum_sq_probs" in outputs:
            log_sum_sq = torch.logsumexp(2 * logp_all, dim=-1)
        if "mean_logits" in outputs:
            mean_logits = z.mean(-1)
        if "is_top1" in outputs:
            is_top1 = z.argmax(-1) == targets  # first maximal index, as the kernel's strict '>' before target
        return logprobs, entropy, log_sum_sq, mean_logits, is_top1


def patch_trl_cpu_kernels() -> bool:
    """Use `TorchChunkedLogProb` in TRL's fused LM head when no GPU is present; returns True if patched."""
    if has_cuda():
        return False
    import trl.trainer.utils as trl_utils

    if getattr(trl_utils, "_ChunkedLogProbFunction", None) is not None:
        trl_utils._ChunkedLogProbFunction = TorchChunkedLogProb
        return True
    return False


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


def fix_multiprocess_cpu_resume(trainer) -> bool:
    """Let a multi-process CPU run (accelerate/torchrun, gloo) resume: the Trainer loads the optimizer
    state with `map_location=args.device` when world_size > 1, and on CPU that device is `cpu:0`, which
    `torch.load` rejects ("don't know how to restore data location"). While the Trainer loads its
    optimizer and scheduler, such a map_location becomes plain "cpu". Returns True if patched."""
    if has_cuda() or trainer.args.world_size <= 1:
        return False
    import torch

    original = trainer._load_optimizer_and_scheduler

    def load_optimizer_and_scheduler(checkpoint):
        real_load = torch.load

        def cpu_load(*args, **kwargs):
            location = kwargs.get("map_location")
            if isinstance(location, torch.device) and location.type == "cpu":
                kwargs["map_location"] = "cpu"
            return real_load(*args, **kwargs)

        torch.load = cpu_load
        try:
            return original(checkpoint)
        finally:
            torch.load = real_load

    trainer._load_optimizer_and_scheduler = load_optimizer_and_scheduler
    return True
