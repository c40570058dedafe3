"""Figures (PNG) for evaluation reports: accuracy bars, grouped bars of several runs, heatmaps.

Uses matplotlib's object API on the Agg canvas (`matplotlib.figure.Figure`), never pyplot, so it
works headless and does not touch the global backend of a caller.
"""

from __future__ import annotations

import math
from pathlib import Path

DPI = 110


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", bbox_inches="tight")
    return path


def _hbar_panel(ax, groups: dict, label: str, overall: float | None) -> None:
    names = list(groups)
    if not names:
        ax.text(0.5, 0.5, f"no {label.lower()} labels", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return
    acc = [100 * groups[k]["accuracy"] for k in names]
    lo = [max(0.0, a - 100 * groups[k].get("ci95", [0, 0])[0]) for a, k in zip(acc, names)]
    hi = [max(0.0, 100 * groups[k].get("ci95", [0, 0])[1] - a) for a, k in zip(acc, names)]
    y = list(range(len(names)))
    ax.barh(y, acc, xerr=[lo, hi], color="#4C72B0", ecolor="#333333", capsize=3, height=0.6)
    ax.set_yticks(y, labels=names)
    ax.invert_yaxis()
    ax.set_xlim(0, 138)
    ax.set_xticks(range(0, 101, 20))
    ax.set_xlabel("accuracy (%) with 95% CI")
    ax.set_title(f"by {label.lower()}" + (f" (dashed: overall {overall:.1f}%)" if overall is not None else ""),
                 fontsize=10)
    for yi, a, k in zip(y, acc, names):
        ax.text(103, yi, f"{a:.1f}% (n={groups[k]['n']})", va="center", fontsize=8)
    if overall is not None:
        ax.axvline(overall, color="#C44E52", linestyle="--", linewidth=1)
    ax.axvline(100, color="#999999", linewidth=0.5)


def accuracy_bars(metrics: dict, path: str | Path, title: str = "Accuracy") -> Path:
    """Horizontal bars of accuracy per modality and per question type (closed questions)."""
    mod, qt = metrics.get("by_modality") or {}, metrics.get("by_question_type") or {}
    rows = max(len(mod), len(qt), 1)
    fig = _figure(13, 1.2 + 0.45 * rows)
    ax1, ax2 = fig.subplots(1, 2)
    overall = 100 * metrics["overall"]["accuracy"] if metrics["overall"]["n"] else None
    _hbar_panel(ax1, mod, "Modality", overall)
    _hbar_panel(ax2, qt, "Question type", overall)
    o = metrics["overall"]
    ci = f", 95% CI {100 * o['ci95'][0]:.1f}-{100 * o['ci95'][1]:.1f}" if o.get("ci95") and o["n"] else ""
    fig.suptitle(f"{title}\noverall {overall if overall is not None else 0:.1f}% (n={o['n']}{ci})", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def grouped_bars(names: list[str], metrics_list: list[dict], path: str | Path, title: str = "Comparison") -> Path:
    """Grouped bars (one bar per run) of overall + per-modality and overall + per-question-type accuracy."""
    panels = []
    for key, label in (("by_modality", "modality"), ("by_question_type", "question type")):
        cats: list[str] = []
        for m in metrics_list:
            cats += [c for c in (m.get(key) or {}) if c not in cats]
        panels.append((key, label, ["Overall", *sorted(cats)]))
    width_cats = max(len(p[2]) for p in panels)
    fig = _figure(max(7.0, 1.0 + width_cats * (0.35 + 0.22 * len(names))), 8.5)
    axes = fig.subplots(2, 1)
    colors = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C"]
    for ax, (key, label, cats) in zip(axes, panels):
        w = 0.8 / max(1, len(names))
        for i, (name, m) in enumerate(zip(names, metrics_list)):
            vals, lo, hi = [], [], []
            for c in cats:
                g = m["overall"] if c == "Overall" else (m.get(key) or {}).get(c)
                vals.append(100 * g["accuracy"] if g and g.get("n") else math.nan)
                ci = (g or {}).get("ci95") or [vals[-1] / 100, vals[-1] / 100]
                lo.append(max(0.0, vals[-1] - 100 * ci[0]) if not math.isnan(vals[-1]) else 0.0)
                hi.append(max(0.0, 100 * ci[1] - vals[-1]) if not math.isnan(vals[-1]) else 0.0)
            xs = [j - 0.4 + w * (i + 0.5) for j in range(len(cats))]
            ax.bar(xs, vals, width=w, label=name, color=colors[i % len(colors)], yerr=[lo, hi],
                   error_kw={"elinewidth": 0.7, "capsize": 1.5, "ecolor": "#333333"})
            for x, v in zip(xs, vals):
                if not math.isnan(v) and len(names) * len(cats) <= 60:
                    ax.text(x, v + 1, f"{v:.0f}", ha="center", va="bottom", fontsize=7)
        ns = [((metrics_list[0]["overall"] if c == "Overall" else (metrics_list[0].get(key) or {}).get(c)) or {})
              .get("n") for c in cats]
        ax.set_xticks(range(len(cats)), labels=[f"{c} (n={k})" if k else c for c, k in zip(cats, ns)],
                      rotation=20, ha="right")
        ax.set_ylim(0, 128)  # headroom for the legend above the 100% line
        ax.set_yticks(range(0, 101, 20))
        ax.set_ylabel("accuracy (%), 95% CI")
        ax.set_title(f"overall and by {label}")
        ax.legend(fontsize=8, ncol=min(len(names), 4), loc="upper right")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def heatmap(values: list[list[float | None]], row_labels: list[str], col_labels: list[str], path: str | Path,
            title: str, cbar_label: str = "accuracy (%)", diverging: bool = False,
            xlabel: str = "tested on", ylabel: str = "trained on", separate_first_row: bool = False) -> Path:
    """Annotated heatmap (rows x columns); None cells are blank. `diverging`: red-blue centred on 0."""
    import numpy as np

    arr = np.array([[np.nan if v is None else float(v) for v in row] for row in values], dtype=float)
    if arr.size == 0:
        arr = np.full((max(1, len(row_labels)), max(1, len(col_labels))), np.nan)
    fig = _figure(1.6 + 1.05 * max(1, len(col_labels)), 1.4 + 0.6 * max(1, len(row_labels)))
    ax = fig.subplots()
    finite = arr[np.isfinite(arr)]
    if diverging:
        lim = float(np.max(np.abs(finite))) if finite.size else 1.0
        lim = lim or 1.0
        im = ax.imshow(arr, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
    else:
        im = ax.imshow(arr, cmap="viridis", vmin=0, vmax=100, aspect="auto")
    ax.set_xticks(range(len(col_labels)), labels=col_labels, rotation=30, ha="right")
    ax.set_yticks(range(len(row_labels)), labels=row_labels)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    for i in range(arr.shape[0]):
        for j in range(arr.shape[1]):
            v = arr[i, j]
            if not np.isfinite(v):
                continue
            r, g, b, _ = im.cmap(im.norm(v))
            color = "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"
            ax.text(j, i, f"{v:+.1f}" if diverging else f"{v:.1f}", ha="center", va="center", color=color,
                    fontsize=9)
    if separate_first_row and arr.shape[0] > 1:  # e.g. the base model above the trained runs
        ax.axhline(0.5, color="white", linewidth=3)
    fig.colorbar(im, ax=ax, label=cbar_label)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)
