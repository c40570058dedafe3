"""What a benchmark run reports: the targets (measured against the issue's thresholds), the Markdown
tables (runs, targets, fit scan) and table.md, the two plots, and the README section between the
bench markers (`--update-readme`), from results.json alone.
"""

from __future__ import annotations

import json
from pathlib import Path

from bench.throughput.workload import ROOT, rounded

README_START, README_END = "<!-- bench:start -->", "<!-- bench:end -->"


# ---------------------------------------------------------------------------- targets
def targets(runs: list[dict]) -> list[dict]:
    """The issue's targets (Qwen2-VL-2B/7B memory and step-throughput ratios), measured / threshold / pass."""
    by = {(r["model"], r["mode"]): r for r in runs if r.get("status") == "ok"}

    def val(model, mode, key):
        r = by.get((model, mode))
        return r.get(key) if r else None

    out = []

    def add(name, measured, target, unit, ok_if_le: bool, note=""):
        passed = None if measured is None else (measured <= target if ok_if_le else measured >= target)
        out.append({"target": name, "measured": rounded(measured), "target_value": target, "unit": unit,
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
    """table.md: device, versions, command, workload, then the three tables and the notes."""
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

Workload: one {w['image_side']}x{w['image_side']} image per prompt ({_visual_tokens(w)}), prompts of
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


def _visual_tokens(w: dict) -> str:
    """"196 visual tokens", or per model when the families differ ("visual tokens: a 196, b 256")."""
    vt = w.get("visual_tokens")
    if isinstance(vt, dict):
        return "visual tokens: " + ", ".join(f"{model} {n}" for model, n in vt.items())
    return f"{_fmt(vt)} visual tokens"


def _labels(runs):
    return [f"{r['model']}\n{r['mode']}" for r in runs]


def write_plots(results: dict, out: Path) -> None:
    """memory.png (peak allocated / reserved per run; host RSS on CPU) and throughput.png."""
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


# ---------------------------------------------------------------------------- README section
def latest_results(base: Path = ROOT / "bench" / "results") -> Path | None:
    """The newest GPU results.json under bench/results/<gpu>/<date>/ (CPU smoke runs excluded)."""
    found = [p for p in base.glob("*/*/results.json") if not p.parent.parent.name.startswith("cpu")]
    return max(found, key=lambda p: (p.parent.name, p.stat().st_mtime)) if found else None


def update_readme(results_path: Path, readme: Path) -> bool:
    """Rewrite `readme` between the bench markers from a results.json; False (and unchanged) without them."""
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
