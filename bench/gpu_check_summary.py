"""The summary table of bench/gpu_check.sh: pass/fail per check, and per mode the training run,
its evaluation and the memory/throughput benchmark figures (peak reserved, step time, generation
share, tokens/s); then the same figures for the other families' same-size models.

    python bench/gpu_check_summary.py OUT      (writes OUT/summary.md and OUT/summary.json)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

MODES = ("lora-bf16", "qlora-hf", "qlora-unsloth")


def _fmt(x, nd=2):
    return "—" if x is None else (f"{x:.{nd}f}" if isinstance(x, float) else str(x))


def summarize(out: Path) -> dict:
    checks = []
    for line in (out / "status.tsv").read_text().splitlines() if (out / "status.tsv").is_file() else []:
        name, result, seconds = line.split("\t")
        checks.append({"check": name, "result": result, "seconds": int(seconds)})
    bench = {}
    res_file = out / "bench" / "results.json"
    if res_file.is_file():
        for r in json.loads(res_file.read_text()).get("runs", []):
            bench[r["mode"]] = r
    modes = []
    for mode in MODES:
        r = bench.get(mode, {})
        metrics = out / "runs" / mode / "eval" / "metrics.json"
        acc = json.loads(metrics.read_text())["overall"]["accuracy"] if metrics.is_file() else None
        step, gen = r.get("step_s"), r.get("generation_s")
        modes.append({"mode": mode, "bench_status": r.get("status"), "peak_reserved_gb": r.get("peak_reserved_gb"),
                      "step_s": step, "generation_share": gen / step if gen and step else None,
                      "generated_tokens_per_s": r.get("generated_tokens_per_s"),
                      "trained_tokens_per_s": r.get("trained_tokens_per_s"), "eval_accuracy": acc})
    families = []
    fam_file = out / "bench-families" / "results.json"
    if fam_file.is_file():
        for r in json.loads(fam_file.read_text()).get("runs", []):
            step, gen = r.get("step_s"), r.get("generation_s")
            families.append({"model": r.get("model"), "mode": r.get("mode"), "bench_status": r.get("status"),
                             "peak_reserved_gb": r.get("peak_reserved_gb"), "step_s": step,
                             "generation_share": gen / step if gen and step else None,
                             "generated_tokens_per_s": r.get("generated_tokens_per_s")})
    return {"checks": checks, "modes": modes, "families": families,
            "passed": bool(checks) and all(c["result"] == "pass" for c in checks)}


def to_markdown(s: dict) -> str:
    lines = ["# GPU acceptance check", "", f"Overall: **{'PASS' if s['passed'] else 'FAIL'}**", "",
             "| check | result | seconds |", "|---|---|---|"]
    lines += [f"| {c['check']} | {c['result']} | {c['seconds']} |" for c in s["checks"]]
    lines += ["", "| mode | peak reserved (GiB) | step (s) | generation share | generated tok/s | trained tok/s "
              "| eval accuracy (random weights) |", "|---|---|---|---|---|---|---|"]
    for m in s["modes"]:
        share = None if m["generation_share"] is None else f"{100 * m['generation_share']:.0f}%"
        acc = None if m["eval_accuracy"] is None else f"{100 * m['eval_accuracy']:.1f}%"
        lines.append(f"| {m['mode']} | {_fmt(m['peak_reserved_gb'])} | {_fmt(m['step_s'])} | {_fmt(share)} | "
                     f"{_fmt(m['generated_tokens_per_s'], 1)} | {_fmt(m['trained_tokens_per_s'], 1)} | {_fmt(acc)} |")
    if s.get("families"):
        lines += ["", "Other families (same-size random weights):", "",
                  "| model | mode | status | peak reserved (GiB) | step (s) | generation share | generated tok/s |",
                  "|---|---|---|---|---|---|---|"]
        for f in s["families"]:
            share = None if f["generation_share"] is None else f"{100 * f['generation_share']:.0f}%"
            lines.append(f"| {f['model']} | {f['mode']} | {_fmt(f['bench_status'])} | {_fmt(f['peak_reserved_gb'])} | "
                         f"{_fmt(f['step_s'])} | {_fmt(share)} | {_fmt(f['generated_tokens_per_s'], 1)} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 1 or not Path(argv[0]).is_dir():
        print("error: usage: python bench/gpu_check_summary.py OUT_DIR (the folder bench/gpu_check.sh wrote)",
              file=sys.stderr)
        return 2
    out = Path(argv[0])
    s = summarize(out)
    (out / "summary.json").write_text(json.dumps(s, indent=1) + "\n")
    md = to_markdown(s)
    (out / "summary.md").write_text(md)
    print(md)
    return 0 if s["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
