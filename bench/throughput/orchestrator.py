"""The orchestrator's side of one benchmark run: the device probe, the model and data built once into
the work dir, launching a worker process (the entry script re-run with `--worker`) under a timeout,
reading its result back, the per-run figures for results.json, and why a (model, mode) is skipped.
The parent process never touches CUDA: the device info and every measurement run in subprocesses.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench.throughput.workload import (
    GIB,
    MODES,
    ROOT,
    SCRIPT,
    UNSLOTH_MODES,
    VLLM_MODES,
    family_of,
    mean,
    rounded,
    run_config,
)
from qlora_grpo import families


# ============================================================================ subprocesses
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


# ============================================================================ device
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


def probe_device() -> dict:
    """device_info() of a fresh process (`--device-info`), or the CPU info without an NVIDIA driver."""
    if not Path("/dev/nvidiactl").exists() and shutil.which("nvidia-smi") is None:
        return _cpu_device_info()  # no NVIDIA driver: no need for a subprocess
    cmd = [sys.executable, str(SCRIPT), "--device-info"]
    r = subprocess.run(cmd, cwd=ROOT, env=_worker_env(), capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise SystemExit(f"device probe failed:\n{r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


# ============================================================================ models and data
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
        tiny.build(out, size=name.removeprefix("tiny-"), seed=seed, family=family_of(name).name)
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


# ============================================================================ one run
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
    cmd = [sys.executable, str(SCRIPT), "--worker", str(run_dir / "spec.json"),
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
        "peak_allocated_gb": rounded(mem.get("peak_allocated_gb")),
        "peak_reserved_gb": rounded(mem.get("peak_reserved_gb")),
        "measured_peak_allocated_gb": rounded(mem.get("measured_peak_allocated_gb")),
        "measured_peak_reserved_gb": rounded(mem.get("measured_peak_reserved_gb")),
        "after_load_allocated_gb": rounded(mem.get("after_load_allocated_gb")),
        "device_used_peak_gb": rounded(mem.get("device_used_peak_gb")),
        "cuda_context_gb": rounded(mem.get("context_gb")),
        "host_peak_rss_gb": rounded(mem.get("host_peak_rss_gb")),
        "measured_steps": n,
        "step_s": rounded(step / n if step else None),
        "generation_s": rounded(gen / n if gen else None),
        "scoring_s": rounded((gs - gen) / n if gs and gen else None),
        "optimization_s": rounded((step - gs) / n if step and gs else None),
        "steps_per_min": rounded(60 * n / step if step else None),
        "generated_tokens_per_s": rounded(gen_tps, 1),
        "trained_tokens_per_s": rounded(trained_tps, 1),
        "bandwidth_gbs": rounded(bw, 1),
        "decode_weight_bytes": res.get("decode_weight_bytes"),
        "decode_weight_gb": rounded((res.get("decode_weight_bytes") or 0) / GIB) if res.get("decode_weight_bytes") else None,
        "roofline_fraction": rounded(roof),
        "roofline_fraction_with_kv": rounded(roof_kv),
        "prompt_tokens_mean": rounded(prompt_tok / len(comp), 1) if comp else rounded(mean(res.get("prompt_lengths") or []), 1),
        "completion_tokens": {"min": min(comp), "max": max(comp), "mean": rounded(comp_tok / len(comp), 1)} if comp else None,
        "trainable_params": res.get("trainable_params"),
        "use_vllm": res.get("use_vllm"),
        "load_s": rounded(res.get("load_s"), 1),
        "wall_s": rounded(res.get("wall_s"), 1),
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
    """Why (model, mode) cannot run here (None: it can)."""
    if mode in UNSLOTH_MODES and not dev.get("gpu"):
        return "needs a CUDA GPU (Unsloth refuses CPUs)"
    if mode in UNSLOTH_MODES and importlib.util.find_spec("unsloth") is None:
        return "unsloth is not installed"
    if mode in VLLM_MODES and "unsloth-vllm" not in family_of(model).backends:
        with_vllm = [f.label for f in families.FAMILIES.values() if "unsloth-vllm" in f.backends]
        return f"Unsloth vLLM rollouts support {', '.join(with_vllm)} only"
    if mode in VLLM_MODES and importlib.util.find_spec("vllm") is None:
        return "vllm is not importable"
    return None
