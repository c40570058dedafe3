"""The CPU demo's report: base vs SFT vs GRPO on held-out phantoms, reward curves, per-modality bars.

    python scripts/demo_report.py --runs base=runs/demo/base sft=runs/demo/sft grpo=runs/demo/grpo \
        --heldout Ultrasound --out runs/demo/report

Each run is an eval dir (metrics.json) or a training run dir (eval/metrics.json). The GRPO run's
`trainer_state.json` (in the run dir or its last checkpoint) gives the reward curves. Writes
report.md, comparison.json, rewards.png and per_modality.png into --out and prints the paths.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def load_metrics(path: Path) -> dict:
    for cand in (path / "metrics.json", path / "eval" / "metrics.json"):
        if cand.is_file():
            return json.loads(cand.read_text())
    raise FileNotFoundError(f"no metrics.json in {path} or {path}/eval; evaluate the run first")


def trainer_log(run: Path) -> list[dict]:
    """The run's log history: RUN/trainer_state.json, else the last checkpoint's."""
    ckpts = sorted(run.glob("checkpoint-*/trainer_state.json"), key=lambda p: int(p.parent.name.split("-")[1]))
    for cand in [run / "trainer_state.json", *reversed(ckpts)]:
        if cand.is_file():
            return json.loads(cand.read_text()).get("log_history", [])
    return []


def pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def trained_accuracy(metrics: dict, heldout: str | None) -> float | None:
    """Accuracy over the modalities that were trained on (held-out test images; `heldout` excluded)."""
    cells = [c for m, c in metrics.get("by_modality", {}).items() if m != heldout and c.get("n")]
    n = sum(c["n"] for c in cells)
    return sum(c["accuracy"] * c["n"] for c in cells) / n if n else None


def comparison(runs: dict[str, dict], heldout: str | None) -> tuple[dict, str]:
    names = list(runs)
    table: dict = {"overall": {n: runs[n]["overall"]["accuracy"] for n in names}}
    if heldout:
        table["trained_modalities"] = {n: trained_accuracy(runs[n], heldout) for n in names}
    for group in ("by_modality", "by_question_type"):
        keys = sorted({k for m in runs.values() for k in m.get(group, {})})
        table[group] = {k: {n: runs[n].get(group, {}).get(k, {}).get("accuracy") for n in names} for k in keys}
    head = "| | " + " | ".join(names) + " | " + " | ".join(f"{b} − {a}" for a, b in zip(names, names[1:])) + " |"
    sep = "|---|" + "---:|" * (2 * len(names) - 1)

    def row(label: str, vals: dict) -> str:
        deltas = [("–" if vals[a] is None or vals[b] is None else f"{100 * (vals[b] - vals[a]):+.1f}")
                  for a, b in zip(names, names[1:])]
        return f"| {label} | " + " | ".join(pct(vals[n]) for n in names) + " | " + " | ".join(deltas) + " |"

    lines = ["## Accuracy (%) on the held-out test split", "", head, sep, row("**overall**", table["overall"])]
    if heldout:
        lines.append(row(f"trained modalities (new images; without {heldout})", table["trained_modalities"]))
    for group, title in (("by_modality", "modality"), ("by_question_type", "question type")):
        lines += ["", f"### By {title}", "", head, sep]
        for k, vals in table[group].items():
            label = f"{k} (never trained on)" if group == "by_modality" and k == heldout else k
            lines.append(row(label, vals))
    n = runs[names[-1]]["overall"]["n"]
    lines += ["", f"n = {n} test questions; 95% bootstrap CIs are in each run's metrics.json."]
    return table, "\n".join(lines)


def plot_rewards(log: list[dict], out: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted({k for e in log for k in e if k.startswith("rewards/") and k.endswith("/mean")})
    if not keys:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    for k in keys + (["reward"] if any("reward" in e for e in log) else []):
        pts = [(e["step"], e[k]) for e in log if k in e and "step" in e]
        if pts:
            ax.plot(*zip(*pts), marker="o", ms=3, label=k.replace("rewards/", "").replace("/mean", ""))
    ax.set_xlabel("GRPO step")
    ax.set_ylabel("mean reward per batch")
    ax.set_title("GRPO rewards during training")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = out / "rewards.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_modalities(table: dict, out: Path, heldout: str | None, runs: dict[str, dict] | None = None) -> Path:
    """per_modality.png (see `modality_figure`)."""
    import matplotlib.pyplot as plt

    fig = modality_figure(table, heldout, runs)
    path = out / "per_modality.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def modality_figure(table: dict, heldout: str | None, runs: dict[str, dict] | None = None):
    """Bars per modality and run, each labelled with its value (a 0% bar is still visible as "0"), with
    95% CI whiskers and n per modality when the runs' metrics are given."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mods = list(table["by_modality"])
    names = list(table["overall"])
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(8, 4.4))
    for i, n in enumerate(names):
        vals = [100 * (table["by_modality"][m][n] or 0) for m in mods]
        groups = [((runs or {}).get(n, {}).get("by_modality") or {}).get(m) or {} for m in mods]
        err = [[max(0.0, v - 100 * g["ci95"][0]) for v, g in zip(vals, groups)],
               [max(0.0, 100 * g["ci95"][1] - v) for v, g in zip(vals, groups)]] \
            if all("ci95" in g for g in groups) else None
        xs = [j + i * width for j in range(len(mods))]
        bars = ax.bar(xs, vals, width, label=n, yerr=err, capsize=2, error_kw={"elinewidth": 0.8})
        ax.bar_label(bars, labels=[f"{v:.0f}" for v in vals], padding=2, fontsize=7)
    ns = {m: next((((runs or {}).get(n, {}).get("by_modality") or {}).get(m, {}).get("n") for n in names), None)
          for m in mods}
    ax.set_xticks([j + width * (len(names) - 1) / 2 for j in range(len(mods))])
    ax.set_xticklabels([f"{m}{' (held out)' if m == heldout else ''}" + (f"\nn={ns[m]}" if ns[m] else "")
                        for m in mods])
    ax.set_ylabel("accuracy (%)" + (", 95% CI" if runs else ""))
    ax.set_ylim(0, 112)
    ax.set_yticks(range(0, 101, 20))
    ax.set_title("Accuracy per modality: " + " vs ".join(names))
    ax.legend(loc="upper left", fontsize=8, ncol=len(names))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", nargs="+", required=True, help="NAME=DIR, in display order (e.g. base= sft= grpo=)")
    p.add_argument("--heldout", default=None, help="modality never trained on (flagged in the table)")
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    runs: dict[str, dict] = {}
    dirs: dict[str, Path] = {}
    try:
        for spec in a.runs:
            name, sep, d = spec.partition("=")
            if not sep:
                raise ValueError(f"--runs takes NAME=DIR, got {spec!r}")
            dirs[name], runs[name] = Path(d), load_metrics(Path(d))
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    table, md = comparison(runs, a.heldout)
    log = trainer_log(dirs[list(dirs)[-1]])
    rewards_png = plot_rewards(log, out)
    bars_png = plot_modalities(table, out, a.heldout, runs)
    first = [e for e in log if "rewards/accuracy/mean" in e]
    curve = ""
    if len(first) >= 2:
        k = max(1, len(first) // 4)
        start = sum(e["rewards/accuracy/mean"] for e in first[:k]) / k
        end = sum(e["rewards/accuracy/mean"] for e in first[-k:]) / k
        curve = (f"\nMean accuracy reward during GRPO: {start:.3f} (first quarter of logged steps) → "
                 f"{end:.3f} (last quarter).\n")
    report = ["# CPU demo: base vs SFT vs GRPO (4-bit base, LoRA) on synthetic phantoms", "", md, curve,
              "![per-modality accuracy](per_modality.png)", ""]
    if rewards_png:
        report += ["![GRPO rewards](rewards.png)", ""]
    (out / "report.md").write_text("\n".join(report) + "\n")
    (out / "comparison.json").write_text(json.dumps({"table": table, "runs": {n: str(d) for n, d in dirs.items()},
                                                     "heldout": a.heldout, "reward_log": first}, indent=2) + "\n")
    print(md)
    print(curve)
    print(f"report: {out / 'report.md'}  plots: {bars_png}" + (f", {rewards_png}" if rewards_png else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
