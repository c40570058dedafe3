"""Everything that runs inside the fresh worker process of one benchmark run (`--worker SPEC`):
the memory cap and bandwidth probe, the prompts padded to the target length, the real trainer
(`train_qlora_grpo.build_trainer`), the step timer around its generation path, the optional torch
profile, and the result file the orchestrator reads back.

The entry script re-runs itself as `python bench/memory_throughput.py --worker SPEC --backend B`:
train_qlora_grpo's preimport reads `--backend` from the command line to import unsloth first.
"""

from __future__ import annotations

import contextlib
import json
import time
import traceback
from pathlib import Path

from bench.throughput.workload import GIB


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
        from qlora_grpo import families
        from qlora_grpo.config import MedGRPOConfig, parse_config, resolve_compute_dtype
        from qlora_grpo.model import load_processor, resolve_model_path

        cfg = parse_config(["--config", spec["config"]], MedGRPOConfig)
        result["compute_dtype"] = resolve_compute_dtype(cfg.compute_dtype)
        rows = select_training_rows(cfg.data_path, cfg.train_split, max_rows=cfg.max_train_samples)
        processor = load_processor(cfg.model_name_or_path, cfg.min_pixels, cfg.max_pixels)
        resize = families.resize_kwargs_for(resolve_model_path(cfg.model_name_or_path))  # as build_trainer
        rows, prompt_lengths = _pad_rows(rows, processor, cfg, spec.get("prompt_tokens"), resize)
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
        config = _model_config(model)
        result["decode_weight_bytes"] = _decode_weight_bytes(model, families.for_config(config).vision_modules)
        tc = getattr(config, "text_config", config)
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


FILLER_WORDS = ["normal", "image", "lesion", "left", "right", "region", "bright", "dark", "round", "the", "of"]


def _pad_rows(rows, processor, cfg, target: int | None, resize: dict):
    """Pad each row's question with filler words so its rendered prompt (chat template + image tokens,
    counted as TRL tokenizes it) reaches `target` tokens. `resize`: the family's `fit_pixels` numbers
    (the image as training resizes it). Returns (rows, lengths)."""
    from medvqa_data.dataset import load_row_image, prompt_text

    tok = processor.tokenizer

    def exact(row, i):
        text = prompt_text(row, cfg.template, cfg.prompt_mode, "train", cfg.diversity_prompting, cfg.seed, i)
        img = load_row_image(row["image"], cfg.min_pixels, cfg.max_pixels, resize)
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


def _model_config(model):
    """The transformers config of the trained model, through the PEFT / Unsloth wrappers."""
    cfg = getattr(model, "config", None)
    while cfg is None and hasattr(model, "model"):
        model = model.model
        cfg = getattr(model, "config", None)
    return cfg


def _decode_weight_bytes(model, vision_modules: tuple[str, ...]) -> int:
    """Bytes of weights one decode step reads: the language model's linear/norm weights (packed 4-bit
    storage + quantization constants for NF4) and the LM head, LoRA included; not the vision tower and
    projector (`vision_modules`, the family's names: they run once per prompt) nor the input embedding
    (a row lookup)."""
    seen, total = set(), 0
    for name, module in model.named_modules():
        dotted = f".{name}."
        if any(f".{m}." in dotted for m in vision_modules) or "embed_tokens" in dotted:
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
