"""The fit scan: for each memory cap, model and mode, the largest G (at the default completion
length) and the largest completion length (at the default G) that finish one GRPO step. A binary
search over the grids; each probe is one fresh worker process capped with
torch.cuda.set_per_process_memory_fraction (see bench/README.md, "Fit scan").
"""

from __future__ import annotations

import time

from bench.throughput.orchestrator import launch, skip_reason
from bench.throughput.workload import VLLM_MODES, rounded, slug


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
        tag = f"fit-{slug(model)}-{mode}-{cap or 'nocap'}-G{G}-L{L}"
        res = launch(model, mode, models[model], data, w, work, tag, G=G, L=L, warmup=0, measured=1,
                     cap_gb=cap, bandwidth=False, timeout=args.probe_timeout)
        ok = res.get("status") == "ok"
        mem = res.get("memory", {})
        out["probes"].append({"model": model, "mode": mode, "cap_gb": cap, "G": G, "L": L, "status": res.get("status"),
                              "peak_reserved_gb": rounded(mem.get("peak_reserved_gb")), "wall_s": rounded(res.get("wall_s"), 1)})
        log(f"  fit probe {model} {mode} cap={cap} G={G} L={L}: {res.get('status')}"
            f" ({res.get('wall_s', 0):.0f}s, peak reserved {rounded(mem.get('peak_reserved_gb'))})")
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
