"""GPU memory and throughput of GRPO: QLoRA (Unsloth; transformers + bitsandbytes) vs the 16-bit LoRA baseline.

    python bench/memory_throughput.py                              # everything (hours; see bench/README.md)
    python bench/memory_throughput.py --models qwen2-vl-2b --no-fit   # one model, no fit scan
    python bench/memory_throughput.py --smoke --out /tmp/bench-smoke  # the whole pipeline on CPU, tiny model
    python bench/memory_throughput.py --update-readme --results latest  # README section from the newest results

Workload (every mode does the same work; all flags overridable): a same-size random-weight model
built offline (`qlora_grpo.tiny.build_arch`, PROTOCOL.md architecture facts), one 392x392 image per
prompt (196 visual tokens), every prompt padded to 320 tokens, G=8 generations of exactly 256 new
tokens (min_new_tokens = max_completion_length), gradient checkpointing, beta 0.04, LoRA r16 on the
language model; 2 warm-up + 5 measured GRPO steps through `train_qlora_grpo.build_trainer` (the real
training path). Each (model, mode) runs in a fresh process (`--worker`); so does each fit-scan probe.

Figures per run: peak GPU memory allocated/reserved (torch.cuda.max_memory_*), step time split into
generation (TRL's `_generate_single_turn`: prefill + decode), scoring (rest of
`_generate_and_score_completions`: reference/old log-probs, rewards) and optimisation (policy
forward/backward + optimizer step), generated tokens/s, trained tokens/s, and decode speed as a
fraction of the memory-bandwidth roofline (weight bytes read per decode step / device-to-device copy
bandwidth measured in the same process). Output: results.json, table.md, memory.png, throughput.png
under bench/results/<gpu>/<date>/ (or --out).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GIB = 1024**3
README_START, README_END = "<!-- bench:start -->", "<!-- bench:end -->"

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
MODEL_TYPES = {"qwen2-vl-2b": "qwen2_vl", "qwen2-vl-7b": "qwen2_vl", "qwen2.5-vl-3b": "qwen2_5_vl",
               "qwen3-vl-2b": "qwen3_vl", "qwen3-vl-4b": "qwen3_vl", "qwen3-vl-8b": "qwen3_vl",
               "medgemma-4b": "gemma3", "tiny-test": "qwen2_vl"}

G_GRID = [2, 4, 6, 8, 12, 16, 24, 32, 48, 64]
L_GRID = [64, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048]


# ============================================================================ small helpers
def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "unknown"


def _round(x, nd=3):
    return None if x is None else round(float(x), nd)


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def _git_commit() -> str | None:
    try:
        r = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        return r.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _worker_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("HF_HUB_OFFLINE", "1")  # the models are local; never reach the hub
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _run_subprocess(cmd: list[str], log: Path, timeout: float) -> tuple[int | None, float]:
    """Run `cmd` in its own process group with stdout+stderr to `log`; returns (returncode or None on
    timeout, seconds). On timeout the whole group is killed."""
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=_worker_env(), stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            rc = None
    return rc, time.perf_counter() - t0


def _tail(path: Path, n: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


# ============================================================================ worker (fresh process)
def _measure_bandwidth(torch, nbytes: int, iters: int = 20) -> float:
    """Device-to-device copy bandwidth in bytes/s (each copy reads and writes `nbytes`)."""
    x = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
    y = torch.empty_like(x)
    for _ in range(3):
        y.copy_(x)
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        y.copy_(x)
    end.record()
    end.synchronize()
    seconds = start.elapsed_time(end) / 1000.0
    del x, y
    torch.cuda.empty_cache()
    return 2 * nbytes * iters / seconds


def _decode_weight_bytes(model) -> int:
    """Bytes of weights one decode step reads: the language model's linear/norm weights (packed 4-bit
    storage + quantization constants for NF4) and the LM head, LoRA included; not the vision tower
    (runs once per prompt) nor the input embedding (a row lookup)."""
    seen, total = set(), 0
    for name, module in model.named_modules():
        dotted = f".{name}."
        if ".visual." in dotted or "embed_tokens" in dotted:
            continue
        for p in module.parameters(recurse=False):
            key = (p.data_ptr(), p.numel())
            if key in seen:
                continue
            seen.add(key)
            total += p.numel() * p.element_size()
            qs = getattr(p, "quant_state", None)
            for t in (getattr(qs, "absmax", None), getattr(getattr(qs, "state2", None), "absmax", None)):
                if t is not None:
                    total += t.numel() * t.element_size()
    return total


def _text_config(model):
    cfg = getattr(model, "config", None)
    while cfg is None and hasattr(model, "model"):
        model = model.model
        cfg = getattr(model, "config", None)
    return getattr(cfg, "text_config", cfg)


FILLER_WORDS = ["normal", "image", "lesion", "left", "right", "region", "bright", "dark", "round", "the", "of"]


def _pad_rows(rows, processor, cfg, target: int | None):
    """Pad each row's question with filler words so its rendered prompt (chat template + image tokens,
    counted as TRL tokenizes it) reaches `target` tokens. Returns (rows, lengths)."""
    from medvqa_data.dataset import load_row_image, prompt_text

    tok = processor.tokenizer

    def exact(row, i):
        text = prompt_text(row, cfg.template, cfg.prompt_mode, "train", cfg.diversity_prompting, cfg.seed, i)
        img = load_row_image(row["image"], cfg.min_pixels, cfg.max_pixels)
        msgs = [{"role": "user", "content": [{"type": "image", "image": img}, {"type": "text", "text": text}]}]
        ids = processor.apply_chat_template([msgs], add_generation_prompt=True, tokenize=True, return_dict=True)
        return len(ids["input_ids"][0]), text

    one_token = [w for w in FILLER_WORDS if len(tok(" " + w, add_special_tokens=False)["input_ids"]) == 1]
    words = one_token or FILLER_WORDS
    questions, lengths = [], []
    for i, row in enumerate(rows):
        row = dict(row)
        n, text = exact(row, i)
        if target and n < target:
            const = n - len(tok(text, add_special_tokens=False)["input_ids"])
            base_q, filler = row["question"], []
            for _ in range(4 * target):
                row["question"] = base_q + (" " + " ".join(filler) if filler else "")
                t = prompt_text(row, cfg.template, cfg.prompt_mode, "train", cfg.diversity_prompting, cfg.seed, i)
                if const + len(tok(t, add_special_tokens=False)["input_ids"]) >= target:
                    break
                filler.append(words[len(filler) % len(words)])
            n, _ = exact(row, i)
        questions.append(row["question"])
        lengths.append(n)
    rows = rows.remove_columns("question").add_column("question", questions)
    return rows, lengths


def run_worker(spec_path: str) -> int:
    """One (model, mode, workload) in this fresh process; writes spec['result'] (JSON). Exit code
    0 ok, 3 out of memory, 1 other error."""
    spec = json.loads(Path(spec_path).read_text())
    result: dict = {"status": "error", "spec": {k: v for k, v in spec.items() if k != "result"}}
    t_start = time.perf_counter()
    torch = None
    gpu = False
    try:
        from qlora_grpo import cpu_compat

        cpu_compat.setup_env()  # before triton; unsloth is imported by train_qlora_grpo's preimport
        import torch

        gpu = torch.cuda.is_available()
        result["device"] = torch.cuda.get_device_name(0) if gpu else "cpu"
        if gpu:
            torch.cuda.init()
            free, total = torch.cuda.mem_get_info()
            context = total - free  # CUDA context (and anything else on the GPU) before we allocate
            result["memory"] = {"total_gb": total / GIB, "context_gb": context / GIB}
            if spec.get("cap_gb"):
                frac = (spec["cap_gb"] * GIB - context) / total
                if frac <= 0:
                    raise RuntimeError(f"cap {spec['cap_gb']} GiB is below the CUDA context ({context / GIB:.2f} GiB)")
                torch.cuda.set_per_process_memory_fraction(min(frac, 1.0))
                result["memory"]["cap_fraction"] = frac
            if spec.get("measure_bandwidth", True):
                nbytes = min(GIB, int(free * 0.2), int((spec.get("cap_gb") or 1e9) * GIB * 0.2))
                result["bandwidth_gbs"] = _measure_bandwidth(torch, nbytes) / 1e9
            torch.cuda.reset_peak_memory_stats()

        import train_qlora_grpo as tq  # applies the CPU fixes / imports unsloth first (--backend on argv)
        from medvqa_data.dataset import select_training_rows
        from qlora_grpo.config import MedGRPOConfig, parse_config, resolve_compute_dtype
        from qlora_grpo.model import load_processor

        cfg = parse_config(["--config", spec["config"]], MedGRPOConfig)
        result["compute_dtype"] = resolve_compute_dtype(cfg.compute_dtype)
        rows = select_training_rows(cfg.data_path, cfg.train_split, max_rows=cfg.max_train_samples)
        processor = load_processor(cfg.model_name_or_path, cfg.min_pixels, cfg.max_pixels)
        rows, prompt_lengths = _pad_rows(rows, processor, cfg, spec.get("prompt_tokens"))
        result["prompt_lengths"] = prompt_lengths

        t_load = time.perf_counter()
        trainer, processor, backend = tq.build_trainer(cfg, rows)
        result["load_s"] = time.perf_counter() - t_load
        result["backend"] = backend
        if gpu:
            torch.cuda.synchronize()
            result["memory"]["after_load_allocated_gb"] = torch.cuda.memory_allocated() / GIB
            result["memory"]["after_load_reserved_gb"] = torch.cuda.memory_reserved() / GIB
        model = trainer.model
        result["decode_weight_bytes"] = _decode_weight_bytes(model)
        tc = _text_config(model)
        result["text_config"] = {k: getattr(tc, k, None) for k in (
            "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "vocab_size")}
        result["trainable_params"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
        result["use_vllm"] = bool(getattr(trainer, "use_vllm", getattr(trainer.args, "use_vllm", False)))

        timer = _make_timer(torch, gpu, trainer, spec, result)
        trainer.add_callback(timer)
        trainer.train()
        timer.finish()
        result["status"] = "ok"
    except BaseException as e:  # noqa: BLE001 - every failure becomes a status in the result file
        oom = (torch is not None and isinstance(e, torch.cuda.OutOfMemoryError)) or "out of memory" in str(e).lower()
        result["status"] = "oom" if oom else "error"
        result["error"] = f"{type(e).__name__}: {str(e)[:2000]}"
        if not oom:
            result["traceback"] = traceback.format_exc()[-4000:]
        if isinstance(e, KeyboardInterrupt):
            raise
    finally:
        mem = result.setdefault("memory", {})
        with contextlib.suppress(Exception):  # a broken CUDA state must not lose the result file
            if gpu:
                mem["peak_allocated_gb"] = max(torch.cuda.max_memory_allocated() / GIB,
                                               mem.get("warmup_peak_allocated_gb", 0))
                mem["peak_reserved_gb"] = max(torch.cuda.max_memory_reserved() / GIB,
                                              mem.get("warmup_peak_reserved_gb", 0))
        with contextlib.suppress(Exception):
            import resource

            result.setdefault("memory", {})["host_peak_rss_gb"] = (
                resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB)
        result["elapsed_s"] = time.perf_counter() - t_start
        Path(spec["result"]).write_text(json.dumps(result, indent=1, default=str))
    return {"ok": 0, "oom": 3}.get(result["status"], 1)


def _make_timer(torch, gpu: bool, trainer, spec: dict, result: dict):
    """A TrainerCallback timing each optimizer step, with the trainer's generation methods wrapped."""
    from transformers import TrainerCallback

    def sync():
        if gpu:
            torch.cuda.synchronize()

    warmup, measured = spec["warmup_steps"], spec["measured_steps"]
    profile_step = warmup + measured + 1 if spec.get("profile_dir") else None

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.steps: list[dict] = []
            self.cur: dict | None = None
            self.sources: list[str] = []
            self.device_used_peak = 0.0
            self.profiler = None

        # ---- wrapping the generation path (TRL 1.15 names; Unsloth's patched trainer may differ)
        def wrap(self):
            for name, key in (("_generate_single_turn", "gen_s"), ("_generate_and_score_completions", "gen_score_s"),
                              ("_generate", None)):
                fn = getattr(trainer, name, None)
                if fn is None:
                    continue
                self.sources.append(name)
                setattr(trainer, name, self._timed(fn, key, count_tokens=name == "_generate"))

        def _timed(self, fn, key, count_tokens=False):
            def wrapper(*args, **kwargs):
                sync()
                t0 = time.perf_counter()
                out = fn(*args, **kwargs)
                sync()
                if self.cur is not None:
                    if key:
                        self.cur[key] = self.cur.get(key, 0.0) + time.perf_counter() - t0
                    if count_tokens and isinstance(out, tuple) and len(out) >= 2:
                        self.cur["prompt_tokens"] = sum(len(x) for x in out[0])
                        self.cur["completion_lengths"] = [len(x) for x in out[1]]
                self._sample_device()
                return out
            return wrapper

        def _sample_device(self):
            if gpu:
                free, total = torch.cuda.mem_get_info()
                self.device_used_peak = max(self.device_used_peak, (total - free) / GIB)

        # ---- callback events
        def on_step_begin(self, args, state, control, **kw):
            if profile_step is not None and state.global_step + 1 == profile_step:
                self.profiler = _start_profiler(torch, gpu)
            sync()
            self.cur = {"step": state.global_step + 1, "t0": time.perf_counter()}

        def on_step_end(self, args, state, control, **kw):
            sync()
            cur = self.cur
            cur["step_s"] = time.perf_counter() - cur.pop("t0")
            cur["phase"] = ("warmup" if cur["step"] <= warmup else
                            "measured" if cur["step"] <= warmup + measured else "profile")
            self.steps.append(cur)
            self.cur = None
            self._sample_device()
            if self.profiler is not None:
                _stop_profiler(self.profiler, torch, gpu, spec["profile_dir"], result)
                self.profiler = None
            if gpu and cur["step"] == warmup:  # peaks of model load + warm-up, then steady state only
                mem = result.setdefault("memory", {})
                mem["warmup_peak_allocated_gb"] = torch.cuda.max_memory_allocated() / GIB
                mem["warmup_peak_reserved_gb"] = torch.cuda.max_memory_reserved() / GIB
                torch.cuda.reset_peak_memory_stats()

        def finish(self):
            mem = result.setdefault("memory", {})
            if gpu:
                mem["measured_peak_allocated_gb"] = torch.cuda.max_memory_allocated() / GIB
                mem["measured_peak_reserved_gb"] = torch.cuda.max_memory_reserved() / GIB
                mem["device_used_peak_gb"] = self.device_used_peak
            result["timing_sources"] = self.sources
            result["steps"] = self.steps

    timer = StepTimer()
    timer.wrap()
    return timer


def _start_profiler(torch, gpu):
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if gpu else [])
    prof = profile(activities=acts, profile_memory=True, record_shapes=False)
    prof.__enter__()
    return prof


def _stop_profiler(prof, torch, gpu, out_dir, result):
    prof.__exit__(None, None, None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ka = prof.key_averages()
    time_key = "self_cuda_time_total" if gpu else "self_cpu_time_total"
    mem_key = "self_cuda_memory_usage" if gpu else "self_cpu_memory_usage"
    text = (f"# torch profiler, one GRPO step after the measured ones\n\n## by {time_key}\n"
            + ka.table(sort_by=time_key, row_limit=40)
            + f"\n\n## by {mem_key}\n" + ka.table(sort_by=mem_key, row_limit=25))
    path = out / "profile.txt"
    path.write_text(text)
    result["profile"] = str(path)


# ============================================================================ orchestrator
def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    info: dict = {"python": sys.version.split()[0]}
    for pkg in ("torch", "transformers", "trl", "peft", "bitsandbytes", "accelerate", "unsloth", "vllm"):
        try:
            info[pkg] = version(pkg)
        except PackageNotFoundError:
            info[pkg] = None
    return info


def _cpu_device_info() -> dict:
    return {**_versions(), "gpu": False, "name": "cpu", "total_memory_gb": None, "cuda": None}


def device_info() -> dict:
    """Device and package versions, printed as JSON (runs in a subprocess: the parent never holds a
    CUDA context while workers measure)."""
    info = _versions()
    import torch

    if not torch.cuda.is_available():
        return _cpu_device_info()
    p = torch.cuda.get_device_properties(0)
    info.update(gpu=True, name=p.name, total_memory_gb=p.total_memory / GIB, capability=f"{p.major}.{p.minor}",
                cuda=torch.version.cuda, bf16=torch.cuda.is_bf16_supported())
    return info


def _probe_device() -> dict:
    if not Path("/dev/nvidiactl").exists() and shutil.which("nvidia-smi") is None:
        return _cpu_device_info()  # no NVIDIA driver: no need for a subprocess
    cmd = [sys.executable, str(Path(__file__).resolve()), "--device-info"]
    r = subprocess.run(cmd, cwd=ROOT, env=_worker_env(), capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise SystemExit(f"device probe failed:\n{r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def ensure_model(name: str, work: Path, seed: int = 0) -> Path:
    """The checkpoint dir of a model preset, built once into work/models/<name>."""
    from qlora_grpo import tiny

    out = work / "models" / name
    marker = out / "tiny_model.json"
    if marker.is_file():
        info = json.loads(marker.read_text())
        if info.get("arch", info.get("size")) == name.removeprefix("tiny-") and info.get("seed") == seed:
            return out
    t0 = time.perf_counter()
    print(f"building {name} (random weights) in {out} ...", flush=True)
    if name.startswith("tiny-"):
        tiny.build(out, size=name.removeprefix("tiny-"), seed=seed)
    else:
        tiny.build_arch(out, name, seed=seed)
    print(f"  built in {time.perf_counter() - t0:.0f}s", flush=True)
    return out


def ensure_data(work: Path, side: int, n: int) -> Path:
    """Phantom images of `side` px in the OmniMedVQA layout, prepared (unsplit): work/data/phantoms-<side>-<n>."""
    from medvqa_data.phantoms import generate_phantoms
    from medvqa_data.prepare import prepare

    root = work / "data" / f"phantoms-{side}-{n}"
    prepared = root / "prepared"
    if (prepared / "prepare_report.json").is_file():
        return prepared
    generate_phantoms(root / "raw", n, 0, size=side)
    prepare("omnimedvqa", root / "raw", prepared, split="none", overwrite=True, progress=False)
    return prepared


def run_config(model_dir: Path, data: Path, mode: str, w: dict, out_dir: Path, steps: int, G: int, L: int) -> dict:
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


def launch(model: str, mode: str, model_dir: Path, data: Path, w: dict, work: Path, tag: str, *, G: int, L: int,
           warmup: int, measured: int, cap_gb: float | None = None, bandwidth: bool = True,
           profile_dir: Path | None = None, timeout: float = 3600) -> dict:
    """Run one worker process; returns its result dict (status ok|oom|error|timeout)."""
    import yaml

    run_dir = work / "runs" / tag
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    steps = warmup + measured + (1 if profile_dir else 0)
    cfg = run_config(model_dir, data, mode, w, run_dir / "out", steps, G, L)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    spec = {"model": model, "mode": mode, "config": str(run_dir / "config.yaml"), "result": str(run_dir / "result.json"),
            "warmup_steps": warmup, "measured_steps": measured, "prompt_tokens": w["prompt_tokens"],
            "cap_gb": cap_gb, "measure_bandwidth": bandwidth, "G": G, "L": L,
            "profile_dir": str(profile_dir) if profile_dir else None}
    (run_dir / "spec.json").write_text(json.dumps(spec, indent=1))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(run_dir / "spec.json"),
           "--backend", MODES[mode]["backend"]]
    rc, seconds = _run_subprocess(cmd, run_dir / "worker.log", timeout)
    try:
        res = json.loads((run_dir / "result.json").read_text())
    except (OSError, ValueError):
        res = {"status": "timeout" if rc is None else "error",
               "error": "no result file" + (f" (killed after {timeout:.0f}s)" if rc is None else f" (exit {rc})")}
    if rc is None:
        res["status"] = "timeout"
    res["wall_s"] = seconds
    res["log"] = str(run_dir / "worker.log")
    if res.get("status") not in ("ok", "oom"):
        res["log_tail"] = _tail(run_dir / "worker.log")
    return res


def summarize(model: str, mode: str, res: dict, w: dict, G: int, L: int) -> dict:
    """The per-run figures for results.json from a worker result."""
    steps = [s for s in res.get("steps", []) if s.get("phase") == "measured"]
    mem = res.get("memory", {})
    gen = sum(s.get("gen_s", 0.0) for s in steps) or None
    gs = sum(s.get("gen_score_s", 0.0) for s in steps) or None
    step = sum(s["step_s"] for s in steps) or None
    comp = [c for s in steps for c in s.get("completion_lengths", [])]
    prompt_tok = sum(s.get("prompt_tokens", 0) for s in steps)
    comp_tok = sum(comp)
    n = len(steps)
    gen_tps = comp_tok / gen if gen and comp_tok else None
    trained_tps = (prompt_tok + comp_tok) / step if step and comp_tok else None
    bw = res.get("bandwidth_gbs")
    decode_steps = max(comp) if comp else None
    roof = roof_kv = None
    tc = res.get("text_config") or {}
    if bw and gen and decode_steps:
        gen_per_step = gen / n
        weight_bytes = res.get("decode_weight_bytes") or 0
        roof = weight_bytes * decode_steps / gen_per_step / (bw * 1e9)
        if tc.get("num_hidden_layers") and tc.get("num_key_value_heads"):
            head_dim = tc["hidden_size"] // tc["num_attention_heads"]
            dtype_bytes = 4 if res.get("compute_dtype") == "float32" else 2
            avg_ctx = (prompt_tok / max(len(comp), 1)) + decode_steps / 2
            kv = (len(comp) / n) * avg_ctx * tc["num_hidden_layers"] * 2 * tc["num_key_value_heads"] * head_dim * dtype_bytes
            roof_kv = (weight_bytes + kv) * decode_steps / gen_per_step / (bw * 1e9)
    entry = {
        "model": model, "mode": mode, "status": res.get("status"), "label": MODES[mode]["label"],
        "backend": res.get("backend"), "compute_dtype": res.get("compute_dtype"),
        "num_generations": G, "completion_length": L,
        "peak_allocated_gb": _round(mem.get("peak_allocated_gb")),
        "peak_reserved_gb": _round(mem.get("peak_reserved_gb")),
        "measured_peak_allocated_gb": _round(mem.get("measured_peak_allocated_gb")),
        "measured_peak_reserved_gb": _round(mem.get("measured_peak_reserved_gb")),
        "after_load_allocated_gb": _round(mem.get("after_load_allocated_gb")),
        "device_used_peak_gb": _round(mem.get("device_used_peak_gb")),
        "cuda_context_gb": _round(mem.get("context_gb")),
        "host_peak_rss_gb": _round(mem.get("host_peak_rss_gb")),
        "measured_steps": n,
        "step_s": _round(step / n if step else None),
        "generation_s": _round(gen / n if gen else None),
        "scoring_s": _round((gs - gen) / n if gs and gen else None),
        "optimization_s": _round((step - gs) / n if step and gs else None),
        "steps_per_min": _round(60 * n / step if step else None),
        "generated_tokens_per_s": _round(gen_tps, 1),
        "trained_tokens_per_s": _round(trained_tps, 1),
        "bandwidth_gbs": _round(bw, 1),
        "decode_weight_bytes": res.get("decode_weight_bytes"),
        "decode_weight_gb": _round((res.get("decode_weight_bytes") or 0) / GIB) if res.get("decode_weight_bytes") else None,
        "roofline_fraction": _round(roof),
        "roofline_fraction_with_kv": _round(roof_kv),
        "prompt_tokens_mean": _round(prompt_tok / len(comp), 1) if comp else _round(_mean(res.get("prompt_lengths") or []), 1),
        "completion_tokens": {"min": min(comp), "max": max(comp), "mean": _round(comp_tok / len(comp), 1)} if comp else None,
        "trainable_params": res.get("trainable_params"),
        "use_vllm": res.get("use_vllm"),
        "load_s": _round(res.get("load_s"), 1),
        "wall_s": _round(res.get("wall_s"), 1),
        "timing_sources": res.get("timing_sources"),
        "steps": res.get("steps"),
        "profile": res.get("profile"),
    }
    if comp and (min(comp) != L or max(comp) != L):
        entry["note"] = f"completion lengths {min(comp)}..{max(comp)} differ from the forced {L}"
    if "_generate_single_turn" not in (res.get("timing_sources") or []) and res.get("status") == "ok":
        entry["note"] = (entry.get("note", "") + "; " if entry.get("note") else "") + (
            "trainer has no _generate_single_turn: generation time includes scoring")
    if mode in VLLM_MODES and res.get("status") == "ok" and not res.get("use_vllm"):
        entry["note"] = (entry.get("note", "") + "; " if entry.get("note") else "") + (
            "the trainer did not switch use_vllm on: rollouts ran through transformers generate")
    for k in ("error", "log", "log_tail"):
        if res.get(k):
            entry[k] = res[k]
    return entry


def skip_reason(model: str, mode: str, dev: dict) -> str | None:
    if mode in UNSLOTH_MODES and not dev.get("gpu"):
        return "needs a CUDA GPU (Unsloth refuses CPUs)"
    if mode in UNSLOTH_MODES and importlib.util.find_spec("unsloth") is None:
        return "unsloth is not installed"
    if mode in VLLM_MODES and MODEL_TYPES.get(model) != "qwen2_5_vl":
        return "Unsloth vLLM rollouts support Qwen2.5-VL only"
    if mode in VLLM_MODES and importlib.util.find_spec("vllm") is None:
        return "vllm is not importable"
    return None


# ---------------------------------------------------------------------------- fit scan
def largest_fitting(grid: list[int], fits, start: int | None = None, hi: int | None = None) -> int | None:
    """Largest grid value v with fits(v) true, assuming monotonicity (fits at v -> fits below v).
    `start`: index probed first; `hi`: exclusive upper index known not to fit."""
    lo, hi = -1, len(grid) if hi is None else hi
    first = True
    while hi - lo > 1:
        mid = start if first and start is not None and lo < start < hi else (lo + hi) // 2
        first = False
        if fits(grid[mid]):
            lo = mid
        else:
            hi = mid
    return grid[lo] if lo >= 0 else None


def fit_scan(plan, models, data, w, work, dev, args, log, known: dict | None = None) -> dict:
    """Largest G (at the default length) and completion length (at the default G) per mode and cap.
    `known`: {(model, mode, cap, G, L): fits} already measured (the uncapped main runs on CPU)."""
    caps = sorted(args.fit_caps, reverse=True) if dev.get("gpu") else [None]
    g_grid = sorted(set(args.fit_g_grid))
    l_grid = sorted(set(args.fit_l_grid))
    G0, L0 = w["num_generations"], w["completion_length"]
    deadline = time.perf_counter() + args.fit_budget_min * 60
    cache: dict = dict(known or {})
    out = {"caps_gb": caps, "g_grid": g_grid, "l_grid": l_grid, "fixed": {"num_generations": G0, "completion_length": L0},
           "probe_steps": 1, "results": [], "probes": [],
           "method": ("binary search over the grids, one fresh process per probe running one GRPO step (generation, "
                      "scoring, backward, optimizer step) under torch.cuda.set_per_process_memory_fraction("
                      "(cap - CUDA context) / total); a probe fits when the step finishes; OOM, error or timeout "
                      f"(> {args.probe_timeout:.0f}s) count as not fitting")}
    if not dev.get("gpu"):
        out["note"] = "CPU: no memory cap can be emulated; probes only check that the workload runs (no GPU figures)"

    def probe(model, mode, cap, G, L):
        key = (model, mode, cap, G, L)
        if key in cache:
            return cache[key]
        if time.perf_counter() > deadline:
            cache[key] = None
            return None
        tag = f"fit-{_slug(model)}-{mode}-{cap or 'nocap'}-G{G}-L{L}"
        res = launch(model, mode, models[model], data, w, work, tag, G=G, L=L, warmup=0, measured=1,
                     cap_gb=cap, bandwidth=False, timeout=args.probe_timeout)
        ok = res.get("status") == "ok"
        mem = res.get("memory", {})
        out["probes"].append({"model": model, "mode": mode, "cap_gb": cap, "G": G, "L": L, "status": res.get("status"),
                              "peak_reserved_gb": _round(mem.get("peak_reserved_gb")), "wall_s": _round(res.get("wall_s"), 1)})
        log(f"  fit probe {model} {mode} cap={cap} G={G} L={L}: {res.get('status')}"
            f" ({res.get('wall_s', 0):.0f}s, peak reserved {_round(mem.get('peak_reserved_gb'))})")
        cache[key] = ok
        return ok

    for model, modes in plan.items():
        for mode in modes:
            if mode in VLLM_MODES:
                out["results"].append({"model": model, "mode": mode, "skipped": "vLLM pre-allocates its own pool "
                                       "(gpu_memory_utilization); a per-process cap does not emulate a smaller card"})
                continue
            if skip_reason(model, mode, dev):
                continue
            bound_g = bound_l = None  # results at a larger cap bound the smaller caps
            for cap in caps:
                budget_hit = []

                def fits(G, L, model=model, mode=mode, cap=cap, budget_hit=budget_hit):
                    r = probe(model, mode, cap, G, L)
                    if r is None:
                        budget_hit.append(True)
                    return bool(r)

                hi_g = g_grid.index(bound_g) + 1 if bound_g in g_grid else (0 if bound_g is None and cap != caps[0] else None)
                hi_l = l_grid.index(bound_l) + 1 if bound_l in l_grid else (0 if bound_l is None and cap != caps[0] else None)
                start_g = g_grid.index(G0) if G0 in g_grid else None
                start_l = l_grid.index(L0) if L0 in l_grid else None
                max_g = largest_fitting(g_grid, lambda G: fits(G, L0), start_g, hi_g)
                max_l = largest_fitting(l_grid, lambda L: fits(G0, L), start_l, hi_l)
                bound_g, bound_l = max_g, max_l
                entry = {"model": model, "mode": mode, "cap_gb": cap,
                         "max_num_generations": max_g, "at_completion_length": L0,
                         "max_completion_length": max_l, "at_num_generations": G0}
                if budget_hit or time.perf_counter() > deadline:
                    entry["note"] = f"fit budget ({args.fit_budget_min:.0f} min) ran out: not a complete search"
                out["results"].append(entry)
    return out


# ---------------------------------------------------------------------------- targets
def targets(runs: list[dict]) -> list[dict]:
    by = {(r["model"], r["mode"]): r for r in runs if r.get("status") == "ok"}

    def val(model, mode, key):
        r = by.get((model, mode))
        return r.get(key) if r else None

    out = []

    def add(name, measured, target, unit, ok_if_le: bool, note=""):
        passed = None if measured is None else (measured <= target if ok_if_le else measured >= target)
        out.append({"target": name, "measured": _round(measured), "target_value": target, "unit": unit,
                    "comparison": "<=" if ok_if_le else ">=", "pass": passed, "note": note})

    u2 = val("qwen2-vl-2b", "qlora-unsloth", "peak_reserved_gb")
    b2 = val("qwen2-vl-2b", "lora-bf16", "peak_reserved_gb")
    add("Qwen2-VL-2B qlora-unsloth peak reserved", u2, 8.0, "GiB", True)
    add("Qwen2-VL-2B qlora-unsloth peak reserved / lora-bf16", u2 / b2 if u2 and b2 else None, 0.40, "x", True)
    add("Qwen2-VL-7B qlora-unsloth peak reserved", val("qwen2-vl-7b", "qlora-unsloth", "peak_reserved_gb"), 16.0,
        "GiB", True, "fits a 16 GB T4 / RTX 4080")
    for model, name in (("qwen2-vl-2b", "Qwen2-VL-2B"), ("qwen2-vl-7b", "Qwen2-VL-7B")):
        u = val(model, "qlora-unsloth", "step_s")
        for base, target in (("lora-bf16", 1.0), ("qlora-hf", 1.3)):
            b = val(model, base, "step_s")
            add(f"{name} step throughput qlora-unsloth / {base}", b / u if b and u else None, target, "x", False,
                "ratio of mean measured step times (same workload)")
    return out


# ---------------------------------------------------------------------------- outputs
def _fmt(x, nd=2, pct=False):
    if x is None:
        return "-"
    if pct:
        return f"{100 * x:.0f}%"
    return f"{x:.{nd}f}" if isinstance(x, float) else str(x)


def main_table(results: dict) -> str:
    lines = ["| model | mode | peak alloc (GiB) | peak reserved (GiB) | step (s) | generation (s) | scoring (s) "
             "| optimisation (s) | generated tok/s | trained tok/s | roofline | status |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in results["runs"]:
        status = r["status"] if r["status"] != "skipped" else f"skipped: {r.get('note', '')}"
        if r["status"] not in ("ok", "skipped") and r.get("error"):
            status += f" ({r['error'][:80]})"
        elif r["status"] == "ok" and r.get("note"):
            status += f" ({r['note']})"
        lines.append(
            f"| {r['model']} | {r['mode']} | {_fmt(r.get('peak_allocated_gb'))} | {_fmt(r.get('peak_reserved_gb'))} "
            f"| {_fmt(r.get('step_s'))} | {_fmt(r.get('generation_s'))} | {_fmt(r.get('scoring_s'))} "
            f"| {_fmt(r.get('optimization_s'))} | {_fmt(r.get('generated_tokens_per_s'), 1)} "
            f"| {_fmt(r.get('trained_tokens_per_s'), 1)} | {_fmt(r.get('roofline_fraction'), pct=True)} | {status} |")
    return "\n".join(lines)


def targets_table(results: dict) -> str:
    lines = ["| target | measured / target | result |", "|---|---:|---|"]
    for t in results["targets"]:
        res = {True: "met", False: "MISSED", None: "n/a (not measured)"}[t["pass"]]
        unit = " GiB" if t["unit"] == "GiB" else "x"
        meas = "-" if t["measured"] is None else f"{t['measured']:.2f}{unit}"
        lines.append(f"| {t['target']} | {meas} / {t['comparison']} {t['target_value']:g}{unit} | {res} |")
    return "\n".join(lines)


def fit_table(results: dict) -> str:
    fit = results.get("fit_scan")
    if not fit:
        return "(fit scan not run)"
    lines = [f"Largest num_generations G at completion length {fit['fixed']['completion_length']}, and largest "
             f"completion length at G={fit['fixed']['num_generations']}, that finish a GRPO step under the cap "
             f"(grids G {fit['g_grid']}, L {fit['l_grid']}).", "",
             "| model | mode | cap (GiB) | max G | max completion length | note |", "|---|---|---:|---:|---:|---|"]
    for e in fit["results"]:
        if e.get("skipped"):
            lines.append(f"| {e['model']} | {e['mode']} | - | - | - | skipped: {e['skipped']} |")
            continue
        cap = "none (CPU)" if e["cap_gb"] is None else f"{e['cap_gb']:g}"
        lines.append(f"| {e['model']} | {e['mode']} | {cap} | {_fmt(e['max_num_generations'])} "
                     f"| {_fmt(e['max_completion_length'])} | {e.get('note', '')} |")
    if fit.get("note"):
        lines += ["", f"Note: {fit['note']}."]
    return "\n".join(lines)


def write_table(results: dict, path: Path) -> str:
    d, w = results["device"], results["workload"]
    gpu = f"{d['name']} ({d['total_memory_gb']:.0f} GiB)" if d.get("gpu") else "CPU (smoke run: no GPU figures)"
    notes = "\n".join(f"- {n}" for n in results["notes"]) or "- none"
    versions = ", ".join(f"{k} {d.get(k) or 'not installed'}" for k in (
        "torch", "transformers", "trl", "peft", "bitsandbytes", "unsloth", "vllm"))
    models = ("the tiny test model (CPU smoke)" if results.get("smoke")
              else "random-weight models of the real sizes (qlora_grpo.tiny.build_arch)")
    text = f"""# GRPO memory and throughput: {gpu}

Date {results['date']}, commit {results.get('commit') or '?'}; {versions}.
Copy bandwidth (device to device): {_fmt(results.get('bandwidth_gbs'), 0)} GB/s.

Command: `{results['command']}`

Workload: one {w['image_side']}x{w['image_side']} image per prompt ({w['visual_tokens']} visual tokens), prompts of
{w['prompt_tokens']} tokens, G={w['num_generations']} generations of exactly {w['completion_length']} new tokens,
gradient checkpointing {'on' if w['gradient_checkpointing'] else 'off'}, beta {w['beta']}, LoRA r{w['lora_r']}
(language model), {w['warmup_steps']} warm-up + {w['measured_steps']} measured GRPO steps; {models};
each run in a fresh process. Memory in GiB (2^30 bytes), peaks over the whole run (load, warm-up,
measured steps). Step = generation + scoring + optimisation (means over the measured steps).

## Runs

{main_table(results)}

## Targets (measured / target)

{targets_table(results)}

## Fit scan

{fit_table(results)}

## Notes

{notes}
"""
    path.write_text(text)
    return text


def _labels(runs):
    return [f"{r['model']}\n{r['mode']}" for r in runs]


def write_plots(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for r in results["runs"] if r["status"] != "skipped"]
    gpu = results["device"].get("gpu")
    name = results["device"]["name"]
    x = list(range(len(runs)))
    width = max(6.0, 1.3 * len(runs) + 2)

    # memory bars
    fig, ax = plt.subplots(figsize=(width, 4.5))
    if gpu:
        alloc = [r.get("peak_allocated_gb") or 0 for r in runs]
        resv = [r.get("peak_reserved_gb") or 0 for r in runs]
        ax.bar([i - 0.2 for i in x], alloc, 0.4, label="peak allocated")
        ax.bar([i + 0.2 for i in x], resv, 0.4, label="peak reserved")
        for cap in (8, 16, 24):
            ax.axhline(cap, color="grey", lw=0.8, ls="--")
            ax.text(len(runs) - 0.5, cap, f"{cap} GiB", va="bottom", ha="right", fontsize=8, color="grey")
        ax.set_ylabel("GPU memory (GiB)")
        ax.set_title(f"Peak GPU memory per GRPO run: {name}")
    else:
        rss = [r.get("host_peak_rss_gb") or 0 for r in runs]
        ax.bar(x, rss, 0.5, label="host peak RSS")
        ax.set_ylabel("host memory (GiB)")
        ax.set_title("CPU smoke run: host peak RSS (no GPU memory figures)")
    ax.set_xticks(x)
    ax.set_xticklabels(_labels(runs), fontsize=8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "memory.png", dpi=120)
    plt.close(fig)

    # throughput: step split, generated tok/s, trained tok/s
    fig, axes = plt.subplots(1, 3, figsize=(max(12.0, 3 * width / 1.6), 4.5))
    gen = [r.get("generation_s") or 0 for r in runs]
    sco = [r.get("scoring_s") or 0 for r in runs]
    opt = [r.get("optimization_s") or 0 for r in runs]
    axes[0].bar(x, gen, 0.6, label="generation")
    axes[0].bar(x, sco, 0.6, bottom=gen, label="scoring (ref/old logps, rewards)")
    axes[0].bar(x, opt, 0.6, bottom=[g + s for g, s in zip(gen, sco)], label="optimisation")
    axes[0].set_ylabel("seconds per GRPO step")
    axes[0].set_title("Step time split")
    axes[0].legend(fontsize=7)
    axes[1].bar(x, [r.get("generated_tokens_per_s") or 0 for r in runs], 0.6, color="tab:green")
    axes[1].set_title("Generated tokens/s")
    axes[2].bar(x, [r.get("trained_tokens_per_s") or 0 for r in runs], 0.6, color="tab:purple")
    axes[2].set_title("Trained tokens/s (prompt + completion)")
    for ax in axes:
        ax.set_xticks(x)
        ax.set_xticklabels(_labels(runs), fontsize=7)
    fig.suptitle(f"GRPO throughput: {name}" + ("" if gpu else " (CPU smoke: not a GPU figure)"))
    fig.tight_layout()
    fig.savefig(out / "throughput.png", dpi=120)
    plt.close(fig)


def latest_results(base: Path = ROOT / "bench" / "results") -> Path | None:
    found = [p for p in base.glob("*/*/results.json") if not p.parent.parent.name.startswith("cpu")]
    return max(found, key=lambda p: (p.parent.name, p.stat().st_mtime)) if found else None


def update_readme(results_path: Path, readme: Path) -> bool:
    results = json.loads(results_path.read_text())
    if not readme.is_file():
        print(f"{readme} does not exist; README not updated")
        return False
    text = readme.read_text()
    if README_START not in text or README_END not in text or text.index(README_START) > text.index(README_END):
        print(f"{readme} has no {README_START} ... {README_END} markers; README not updated "
              "(add the two markers where the performance section should go)")
        return False
    d = results["device"]
    gpu = f"{d['name']} ({d['total_memory_gb']:.0f} GiB)" if d.get("gpu") else "CPU (smoke run, no GPU figures)"
    try:
        rel = results_path.resolve().parent.relative_to(ROOT)
    except ValueError:
        rel = results_path.parent
    section = (f"{README_START}\n<!-- generated by bench/memory_throughput.py --update-readme; do not edit -->\n"
               f"Measured on **{gpu}**, {results['date']} (commit {results.get('commit') or '?'}); "
               f"full results, fit scan and plots in `{rel}/`.\n\n"
               f"{main_table(results)}\n\n{targets_table(results)}\n\n"
               f"Reproduce on your GPU:\n\n```bash\n{results['command']}\n```\n{README_END}")
    start, end = text.index(README_START), text.index(README_END) + len(README_END)
    readme.write_text(text[:start] + section + text[end:])
    print(f"README section updated in {readme} from {results_path}")
    return True


# ---------------------------------------------------------------------------- main
def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true",
                   help="whole script on CPU with the tiny model and a tiny workload (modes lora-fp32, qlora-hf)")
    p.add_argument("--out", type=Path, default=None, help="output dir (default bench/results/<gpu>/<date>)")
    p.add_argument("--work-dir", type=Path, default=None,
                   help="models, data and per-run logs (default runs/bench; a temporary dir for --smoke)")
    p.add_argument("--models", nargs="+", default=None, help=f"subset of {list(PLAN)}")
    p.add_argument("--model-path", nargs="+", default=[], metavar="NAME=DIR",
                   help="use this checkpoint for a model name instead of building random weights "
                        "(e.g. qwen2-vl-2b=models/Qwen2-VL-2B-Instruct)")
    p.add_argument("--modes", nargs="+", default=None, choices=list(MODES), help="modes for every model")
    p.add_argument("--num-generations", "-G", type=int, default=None, help="G (default 8; smoke 2)")
    p.add_argument("--completion-length", "-L", type=int, default=None, help="new tokens, forced (default 256; smoke 8)")
    p.add_argument("--prompt-tokens", type=int, default=None,
                   help="pad every prompt (text + visual tokens) to this many tokens (default 320; smoke 128; 0 = no padding)")
    p.add_argument("--image-side", type=int, default=None, help="square image side in px (default 392; smoke 56)")
    p.add_argument("--warmup-steps", type=int, default=None, help="default 2 (smoke 1)")
    p.add_argument("--measured-steps", type=int, default=None, help="default 5 (smoke 1)")
    p.add_argument("--beta", type=float, default=0.04, help="KL coefficient (0 skips the reference pass)")
    p.add_argument("--lora-r", type=int, default=16)
    p.add_argument("--vllm-gpu-memory-utilization", type=float, default=0.4,
                   help="qlora-unsloth-vllm: share of the GPU vLLM reserves (as configs/qwen25vl_3b_vllm.yaml)")
    p.add_argument("--no-gradient-checkpointing", action="store_true")
    p.add_argument("--run-timeout", type=float, default=3600, help="seconds per benchmark run")
    p.add_argument("--profile", action="store_true",
                   help="torch-profile one extra step per run (tables in <out>/profiles/<model>-<mode>/)")
    p.add_argument("--no-fit", action="store_true", help="skip the fit scan")
    p.add_argument("--fit-caps", type=float, nargs="+", default=[24, 16, 8], help="memory caps in GiB")
    p.add_argument("--fit-g-grid", type=int, nargs="+", default=None, help=f"G values (default {G_GRID})")
    p.add_argument("--fit-l-grid", type=int, nargs="+", default=None, help=f"completion lengths (default {L_GRID})")
    p.add_argument("--fit-models", nargs="+", default=None, help="models to fit-scan (default: all benchmarked)")
    p.add_argument("--fit-modes", nargs="+", default=None, help="modes to fit-scan (default: all benchmarked)")
    p.add_argument("--probe-timeout", type=float, default=900, help="seconds per fit probe")
    p.add_argument("--fit-budget-min", type=float, default=360, help="total fit-scan time budget in minutes")
    p.add_argument("--update-readme", action="store_true",
                   help="rewrite README.md's section between the bench markers (after the run, or from --results)")
    p.add_argument("--results", default=None,
                   help="with --update-readme: a results.json (or 'latest') to use instead of running")
    p.add_argument("--readme", type=Path, default=ROOT / "README.md")
    p.add_argument("--keep-work", action="store_true", help="keep the temporary work dir of --smoke")
    # internal
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--backend", default=None, help=argparse.SUPPRESS)  # read by train_qlora_grpo's preimport
    p.add_argument("--device-info", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.worker:
        return run_worker(args.worker)
    if args.device_info:
        print(json.dumps(device_info()))
        return 0
    if args.update_readme and args.results:
        path = latest_results() if args.results == "latest" else Path(args.results)
        if path is None or not path.is_file():
            print(f"no results found ({args.results})")
            return 1
        update_readme(path, args.readme)
        return 0

    t_all = time.perf_counter()
    smoke = args.smoke
    w = {
        "num_generations": args.num_generations or (2 if smoke else 8),
        "completion_length": args.completion_length or (8 if smoke else 256),
        "prompt_tokens": (args.prompt_tokens if args.prompt_tokens is not None else (128 if smoke else 320)) or None,
        "image_side": args.image_side or (56 if smoke else 392),
        "warmup_steps": args.warmup_steps if args.warmup_steps is not None else (1 if smoke else 2),
        "measured_steps": args.measured_steps or (1 if smoke else 5),
        "beta": args.beta, "lora_r": args.lora_r, "gradient_checkpointing": not args.no_gradient_checkpointing,
        "template": "think", "temperature": 1.0, "vllm_gpu_memory_utilization": args.vllm_gpu_memory_utilization,
    }
    w["visual_tokens"] = (w["image_side"] // 28) ** 2
    notes: list[str] = []

    def log(msg):
        print(msg, flush=True)

    dev = _probe_device()
    if not dev["gpu"] and not smoke:
        log("no CUDA GPU found: this benchmark measures GPU memory and speed. On CPU, --smoke runs the whole "
            "pipeline with the tiny model (no GPU figures).")
        return 2
    if smoke:
        notes.append("CPU smoke run of the whole pipeline with the tiny test model: memory, bandwidth and roofline "
                     "figures are null (no GPU); timings are CPU timings, not benchmark results")
    date = _dt.datetime.now().strftime("%Y-%m-%d")
    out = args.out or (ROOT / "bench" / "results" / ("cpu-smoke" if smoke else _slug(dev["name"])) / date)
    out.mkdir(parents=True, exist_ok=True)
    tmp_work = None
    if args.work_dir:
        work = args.work_dir
    elif smoke:
        tmp_work = Path(tempfile.mkdtemp(prefix="bench-smoke-"))
        work = tmp_work
    else:
        work = ROOT / "runs" / "bench"
    work.mkdir(parents=True, exist_ok=True)

    # ---- plan
    base_plan = SMOKE_PLAN if smoke else PLAN
    names = args.models or list(base_plan)
    plan = {}
    for m in names:
        if m not in PLAN and m not in SMOKE_PLAN:
            raise SystemExit(f"unknown model {m!r}; choose from {list(PLAN)}")
        modes = args.modes or base_plan.get(m) or PLAN[m]
        plan[m] = list(modes)
    if not smoke and not args.models and "qwen2.5-vl-3b" in plan and importlib.util.find_spec("vllm") is None:
        plan.pop("qwen2.5-vl-3b")
        notes.append("qwen2.5-vl-3b (Unsloth with and without vLLM rollouts) skipped: vllm is not importable here")

    # ---- assets
    overrides = dict(x.split("=", 1) for x in args.model_path)
    steps_needed = w["warmup_steps"] + w["measured_steps"] + 1
    data = ensure_data(work, w["image_side"], max(8, steps_needed))
    models: dict[str, Path] = {}
    runs: list[dict] = []
    for model, modes in plan.items():
        runnable = [m for m in modes if not skip_reason(model, m, dev)]
        if runnable:
            models[model] = Path(overrides[model]) if model in overrides else ensure_model(model, work)
        for mode in modes:
            why = skip_reason(model, mode, dev)
            if why:
                runs.append({"model": model, "mode": mode, "status": "skipped", "note": why, "label": MODES[mode]["label"]})
                log(f"skip {model} {mode}: {why}")
                continue
            log(f"run {model} {mode} (G={w['num_generations']}, L={w['completion_length']}) ...")
            prof = out / "profiles" / f"{_slug(model)}-{mode}" if args.profile else None
            res = launch(model, mode, models[model], data, w, work, f"{_slug(model)}-{mode}",
                         G=w["num_generations"], L=w["completion_length"], warmup=w["warmup_steps"],
                         measured=w["measured_steps"], profile_dir=prof, timeout=args.run_timeout)
            entry = summarize(model, mode, res, w, w["num_generations"], w["completion_length"])
            runs.append(entry)
            log(f"  {entry['status']}: peak reserved {entry.get('peak_reserved_gb')} GiB, step {entry.get('step_s')} s "
                f"(gen {entry.get('generation_s')}, opt {entry.get('optimization_s')}), "
                f"{entry.get('generated_tokens_per_s')} gen tok/s, wall {entry.get('wall_s')} s")
            if entry["status"] not in ("ok",):
                log(f"  error: {entry.get('error')}\n  log: {entry.get('log')}")
    prompt_means = [r["prompt_tokens_mean"] for r in runs if r.get("prompt_tokens_mean")]
    if w["prompt_tokens"] and prompt_means and max(prompt_means) > w["prompt_tokens"] + 2:
        notes.append(f"some prompts are longer than the {w['prompt_tokens']}-token target (mean {max(prompt_means)})")

    # ---- fit scan
    fit = None
    if not args.no_fit:
        fit_plan = {m: [x for x in modes if (not args.fit_modes or x in args.fit_modes)]
                    for m, modes in plan.items() if (not args.fit_models or m in args.fit_models) and m in models}
        if smoke:  # the default point only: answered by the main runs (no cap on CPU), no extra process;
            # --fit-l-grid 8 16 adds a real probe process
            args.fit_g_grid = args.fit_g_grid or [w["num_generations"]]
            args.fit_l_grid = args.fit_l_grid or [w["completion_length"]]
        else:
            args.fit_g_grid = args.fit_g_grid or G_GRID
            args.fit_l_grid = args.fit_l_grid or L_GRID
        log(f"fit scan: caps {args.fit_caps if dev['gpu'] else '(none on CPU)'} GiB, "
            f"budget {args.fit_budget_min:.0f} min ...")
        # Without a GPU there is no cap: the main runs already are the probes at the default point.
        known = {} if dev["gpu"] else {(r["model"], r["mode"], None, w["num_generations"], w["completion_length"]):
                                       r["status"] == "ok" for r in runs if r["status"] != "skipped"}
        fit = fit_scan(fit_plan, models, data, w, work, dev, args, log, known)

    bws = [r["bandwidth_gbs"] for r in runs if r.get("bandwidth_gbs")]
    command = "python bench/memory_throughput.py" + ("" if not argv else " " + shlex.join(argv))
    results = {
        "schema": 1,
        "date": date,
        "created": _dt.datetime.now().isoformat(timespec="seconds"),
        "command": command,
        "commit": _git_commit(),
        "smoke": smoke,
        "device": dev,
        "bandwidth_gbs": _round(_mean(bws), 1),
        "workload": w,
        "runs": runs,
        "fit_scan": fit,
        "targets": targets(runs),
        "notes": notes + [f"{r['model']} {r['mode']} skipped: {r['note']}" for r in runs if r["status"] == "skipped"],
        "wall_s": None,
        "env": {k: os.environ.get(k) for k in ("PYTORCH_CUDA_ALLOC_CONF", "CUDA_VISIBLE_DEVICES")},
    }
    results["wall_s"] = _round(time.perf_counter() - t_all, 1)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    write_table(results, out / "table.md")
    write_plots(results, out)

    log("\n" + main_table(results))
    log("\nTargets (measured / target):\n" + targets_table(results))
    if fit:
        log("\n" + fit_table(results))
    log(f"\nresults: {out}/results.json, table.md, memory.png, throughput.png ({results['wall_s']:.0f}s)")
    if args.update_readme:
        update_readme(out / "results.json", args.readme)
    if tmp_work and not args.keep_work:
        shutil.rmtree(tmp_work, ignore_errors=True)
    failed = [r for r in runs if r["status"] not in ("ok", "skipped")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
