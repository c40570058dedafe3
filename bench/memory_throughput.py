"""GPU memory and throughput of GRPO: QLoRA (Unsloth; transformers + bitsandbytes) vs the 16-bit LoRA baseline.

    python bench/memory_throughput.py                              # everything (hours; see bench/README.md)
    python bench/memory_throughput.py --models qwen2-vl-2b --no-fit   # one model, no fit scan
    python bench/memory_throughput.py --smoke --out /tmp/bench-smoke  # the whole pipeline on CPU, tiny model
    python bench/memory_throughput.py --update-readme --results latest  # README section from the newest results

Workload (every mode does the same work; all flags overridable): a same-size random-weight model
built offline (`qlora_grpo.tiny.build_arch`, PROTOCOL.md architecture facts), one 392x392 image per
prompt (196 visual tokens on Qwen2/2.5-VL; each family's count from qlora_grpo.families), every
prompt padded to 320 tokens, G=8 generations of exactly 256 new tokens (min_new_tokens =
max_completion_length), gradient checkpointing, beta 0.04, LoRA r16 on the language model; 2 warm-up
+ 5 measured GRPO steps through `train_qlora_grpo.build_trainer` (the real training path). Each
(model, mode) runs in a fresh process (`--worker`); so does each fit-scan probe.

Figures per run: peak GPU memory allocated/reserved (torch.cuda.max_memory_*), step time split into
generation (TRL's `_generate_single_turn`: prefill + decode), scoring (rest of
`_generate_and_score_completions`: reference/old log-probs, rewards) and optimisation (policy
forward/backward + optimizer step), generated tokens/s, trained tokens/s, and decode speed as a
fraction of the memory-bandwidth roofline (weight bytes read per decode step / device-to-device copy
bandwidth measured in the same process). Output: results.json, table.md, memory.png, throughput.png
under bench/results/<gpu>/<date>/ (or --out).
"""

# The parts live in bench/throughput/: workload.py (modes, plan, workload numbers, run config),
# worker.py (inside the fresh worker process), orchestrator.py (device, models, data, launching a
# worker, per-run figures), fit_scan.py, report.py (targets, tables, plots, README section).
# Workers and the device probe re-run this script with --worker / --device-info.

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.util
import json
import os
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.throughput import fit_scan, orchestrator, report, worker, workload  # noqa: E402


# ---------------------------------------------------------------------------- command line
def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true",
                   help="whole script on CPU with the tiny model and a tiny workload (modes lora-fp32, qlora-hf)")
    p.add_argument("--out", type=Path, default=None, help="output dir (default bench/results/<gpu>/<date>)")
    p.add_argument("--work-dir", type=Path, default=None,
                   help="models, data and per-run logs (default runs/bench; a temporary dir for --smoke)")
    p.add_argument("--models", nargs="+", default=None, help=f"subset of {list(workload.PLAN)}")
    p.add_argument("--model-path", nargs="+", default=[], metavar="NAME=DIR",
                   help="use this checkpoint for a model name instead of building random weights "
                        "(e.g. qwen2-vl-2b=models/Qwen2-VL-2B-Instruct)")
    p.add_argument("--modes", nargs="+", default=None, choices=list(workload.MODES), help="modes for every model")
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
    p.add_argument("--fit-g-grid", type=int, nargs="+", default=None, help=f"G values (default {workload.G_GRID})")
    p.add_argument("--fit-l-grid", type=int, nargs="+", default=None, help=f"completion lengths (default {workload.L_GRID})")
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


# ---------------------------------------------------------------------------- main
def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.worker:
        return worker.run_worker(args.worker)
    if args.device_info:
        print(json.dumps(orchestrator.device_info()))
        return 0
    if args.update_readme and args.results:
        path = report.latest_results() if args.results == "latest" else Path(args.results)
        if path is None or not path.is_file():
            print(f"no results found ({args.results})")
            return 1
        report.update_readme(path, args.readme)
        return 0

    ################
    # Workload, device, output and work dirs
    ################
    t_all = time.perf_counter()
    smoke = args.smoke
    w = workload.make_workload(args)
    notes: list[str] = []

    def log(msg):
        print(msg, flush=True)

    dev = orchestrator.probe_device()
    if not dev["gpu"] and not smoke:
        log("no CUDA GPU found: this benchmark measures GPU memory and speed. On CPU, --smoke runs the whole "
            "pipeline with the tiny model (no GPU figures).")
        return 2
    if smoke:
        notes.append("CPU smoke run of the whole pipeline with the tiny test model: memory, bandwidth and roofline "
                     "figures are null (no GPU); timings are CPU timings, not benchmark results")
    date = _dt.datetime.now().strftime("%Y-%m-%d")
    out = args.out or (ROOT / "bench" / "results" / ("cpu-smoke" if smoke else workload.slug(dev["name"])) / date)
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

    ################
    # Plan: model -> modes
    ################
    base_plan = workload.SMOKE_PLAN if smoke else workload.PLAN
    names = args.models or list(base_plan)
    plan = {}
    for m in names:
        if m not in workload.PLAN and m not in workload.SMOKE_PLAN:
            raise SystemExit(f"unknown model {m!r}; choose from {list(workload.PLAN)}")
        modes = args.modes or base_plan.get(m) or workload.PLAN[m]
        plan[m] = list(modes)
    if not smoke and not args.models and "qwen2.5-vl-3b" in plan and importlib.util.find_spec("vllm") is None:
        plan.pop("qwen2.5-vl-3b")
        notes.append("qwen2.5-vl-3b (Unsloth with and without vLLM rollouts) skipped: vllm is not importable here")

    ################
    # Runs: one worker process per (model, mode)
    ################
    overrides = dict(x.split("=", 1) for x in args.model_path)
    steps_needed = w["warmup_steps"] + w["measured_steps"] + 1
    data = orchestrator.ensure_data(work, w["image_side"], max(8, steps_needed))
    models: dict[str, Path] = {}
    runs: list[dict] = []
    for model, modes in plan.items():
        runnable = [m for m in modes if not orchestrator.skip_reason(model, m, dev)]
        if runnable:
            models[model] = Path(overrides[model]) if model in overrides else orchestrator.ensure_model(model, work)
        for mode in modes:
            why = orchestrator.skip_reason(model, mode, dev)
            if why:
                runs.append({"model": model, "mode": mode, "status": "skipped", "note": why, "label": workload.MODES[mode]["label"]})
                log(f"skip {model} {mode}: {why}")
                continue
            log(f"run {model} {mode} (G={w['num_generations']}, L={w['completion_length']}) ...")
            prof = out / "profiles" / f"{workload.slug(model)}-{mode}" if args.profile else None
            res = orchestrator.launch(model, mode, models[model], data, w, work, f"{workload.slug(model)}-{mode}",
                         G=w["num_generations"], L=w["completion_length"], warmup=w["warmup_steps"],
                         measured=w["measured_steps"], profile_dir=prof, timeout=args.run_timeout)
            entry = orchestrator.summarize(model, mode, res, w, w["num_generations"], w["completion_length"])
            runs.append(entry)
            log(f"  {entry['status']}: peak reserved {entry.get('peak_reserved_gb')} GiB, step {entry.get('step_s')} s "
                f"(gen {entry.get('generation_s')}, opt {entry.get('optimization_s')}), "
                f"{entry.get('generated_tokens_per_s')} gen tok/s, wall {entry.get('wall_s')} s")
            if entry["status"] not in ("ok",):
                log(f"  error: {entry.get('error')}\n  log: {entry.get('log')}")
    w["visual_tokens"] = workload.visual_tokens(models, w["image_side"])  # per family (qlora_grpo.families)
    prompt_means = [r["prompt_tokens_mean"] for r in runs if r.get("prompt_tokens_mean")]
    if w["prompt_tokens"] and prompt_means and max(prompt_means) > w["prompt_tokens"] + 2:
        notes.append(f"some prompts are longer than the {w['prompt_tokens']}-token target (mean {max(prompt_means)})")

    ################
    # Fit scan
    ################
    fit = None
    if not args.no_fit:
        fit_plan = {m: [x for x in modes if (not args.fit_modes or x in args.fit_modes)]
                    for m, modes in plan.items() if (not args.fit_models or m in args.fit_models) and m in models}
        if smoke:  # the default point only: answered by the main runs (no cap on CPU), no extra process;
            # --fit-l-grid 8 16 adds a real probe process
            args.fit_g_grid = args.fit_g_grid or [w["num_generations"]]
            args.fit_l_grid = args.fit_l_grid or [w["completion_length"]]
        else:
            args.fit_g_grid = args.fit_g_grid or workload.G_GRID
            args.fit_l_grid = args.fit_l_grid or workload.L_GRID
        log(f"fit scan: caps {args.fit_caps if dev['gpu'] else '(none on CPU)'} GiB, "
            f"budget {args.fit_budget_min:.0f} min ...")
        # Without a GPU there is no cap: the main runs already are the probes at the default point.
        known = {} if dev["gpu"] else {(r["model"], r["mode"], None, w["num_generations"], w["completion_length"]):
                                       r["status"] == "ok" for r in runs if r["status"] != "skipped"}
        fit = fit_scan.fit_scan(fit_plan, models, data, w, work, dev, args, log, known)

    ################
    # Results, tables, plots, README
    ################
    bws = [r["bandwidth_gbs"] for r in runs if r.get("bandwidth_gbs")]
    command = "python bench/memory_throughput.py" + ("" if not argv else " " + shlex.join(argv))
    results = {
        "schema": 1,
        "date": date,
        "created": _dt.datetime.now().isoformat(timespec="seconds"),
        "command": command,
        "commit": workload.git_commit(),
        "smoke": smoke,
        "device": dev,
        "bandwidth_gbs": workload.rounded(workload.mean(bws), 1),
        "workload": w,
        "runs": runs,
        "fit_scan": fit,
        "targets": report.targets(runs),
        "notes": notes + [f"{r['model']} {r['mode']} skipped: {r['note']}" for r in runs if r["status"] == "skipped"],
        "wall_s": None,
        "env": {k: os.environ.get(k) for k in ("PYTORCH_CUDA_ALLOC_CONF", "CUDA_VISIBLE_DEVICES")},
    }
    results["wall_s"] = workload.rounded(time.perf_counter() - t_all, 1)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    report.write_table(results, out / "table.md")
    report.write_plots(results, out)

    log("\n" + report.main_table(results))
    log("\nTargets (measured / target):\n" + report.targets_table(results))
    if fit:
        log("\n" + report.fit_table(results))
    log(f"\nresults: {out}/results.json, table.md, memory.png, throughput.png ({results['wall_s']:.0f}s)")
    if args.update_readme:
        report.update_readme(out / "results.json", args.readme)
    if tmp_work and not args.keep_work:
        shutil.rmtree(tmp_work, ignore_errors=True)
    failed = [r for r in runs if r["status"] not in ("ok", "skipped")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
