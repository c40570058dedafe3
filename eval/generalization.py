"""Med-R1's generalization matrices: each adapter (trained on one modality or question type) on every test set.

    python -m eval.generalization --runs-dir DIR --data PREPARED --axis modality|question_type --out DIR \\
        [--model BASE_MODEL_DIR] [--base] [--limit N] [--batch-size 8] [--max-new-tokens 256] \\
        [--template T] [--base-template zero-shot] [--mode default|paper] [--split test] [--columns A,B] \\
        [--paper-table]

Runs: every sub-directory of --runs-dir holding a LoRA adapter (adapter_config.json) is one row.
Its train value (the row label) is, in this order:

1. `train_subset: AXIS=VALUE` in its run_config.yaml (written by train_qlora_grpo.py / train_sft.py),
   when AXIS is --axis (a run trained on the other axis is skipped with a warning);
2. else the sub-directory name, matched to the manifest's values ignoring case, spaces, `_` and `-`
   (`runs/gen/CT`, `runs/gen/x-ray`, `runs/gen/disease_diagnosis`);
3. else the run is skipped with a warning. Two runs with the same value are an error.

Columns: the values of OUT_OF_PREPARE/manifests/<axis>.json with a non-empty --split set
(`--limit N`: the first N rows of each). With `--base` the base model (no adapter, template
--base-template, default zero-shot: Med-R1's base-model prompt) is evaluated too: one more row and
a second heatmap of the runs' deltas against it.

Each cell is one `eval.evaluate` output dir, OUT/cells/<trained>/<tested>/ (predictions.jsonl,
metrics.json, report.md): a finished cell (metrics.json with the same settings) is skipped on rerun,
an interrupted one resumes; when every cell is finished no model is loaded. The base model is loaded
once; the adapters are attached to it one after another.

Writes OUT/matrix.csv and matrix.md (accuracy in %, rows = trained on, columns = tested on, plus
the mean over test sets and the mean over the other (unseen) test sets), heatmap.png (annotated),
generalization.json, and with --base delta.csv, delta.md and heatmap_delta.png (points vs base).
--paper-table also prints the papers' published numbers beside this project's (eval.paper_table) and
writes them to OUT/paper_table.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from eval.evaluate import CONFIG_NAME, warn_template
from eval.scoring import EVAL_MODES, EVAL_TEMPLATES
from qlora_grpo.run_config import read_run_config

AXES = ("modality", "question_type")
BASE = "base"


@dataclass
class Run:
    value: str          # the train value (row label)
    path: Path | None   # adapter dir; None for the base model
    template: str
    config: dict = field(default_factory=dict)


def _norm(s: str) -> str:
    return re.sub(r"[\s_\-]+", "", s).casefold()


def match_value(name: str, values: list[str]) -> str | None:
    """The manifest value a directory name stands for (exact, else ignoring case, spaces, _ and -)."""
    if name in values:
        return name
    hits = [v for v in values if _norm(v) == _norm(name)]
    return hits[0] if len(hits) == 1 else None


def discover_runs(runs_dir: Path, axis: str, values: list[str]) -> tuple[list[tuple[str, Path, dict]], list[str]]:
    """([(train value, run dir, run_config)], warnings) for the adapters under runs_dir."""
    found, notes = [], []
    for sub in sorted(p for p in runs_dir.iterdir() if p.is_dir()):
        if not (sub / "adapter_config.json").is_file():
            if (sub / "run_config.yaml").is_file() or any(sub.glob("checkpoint-*")):
                notes.append(f"skipping {sub}: no adapter_config.json (training not finished?)")
            continue
        cfg = read_run_config(sub)
        subset = cfg.get("train_subset")
        if subset:
            ax, sep, val = str(subset).partition("=")
            ax, val = ax.strip(), val.strip().strip("'\"")
            if not sep or ax != axis:
                notes.append(f"skipping {sub}: trained on train_subset={subset!r}, not a {axis} run")
                continue
            value = val
            if value not in values:
                notes.append(f"{sub}: trained on {axis}={value!r}, a value that is not in the manifest")
        else:
            value = match_value(sub.name, values)
            if value is None:
                notes.append(f"skipping {sub}: no train_subset in its run_config.yaml and its name matches none of "
                             f"the {axis} values ({', '.join(values)})")
                continue
        found.append((value, sub, cfg))
    by_value: dict[str, list[Path]] = {}
    for value, sub, _ in found:
        by_value.setdefault(value, []).append(sub)
    dup = {v: p for v, p in by_value.items() if len(p) > 1}
    if dup:
        v, paths = next(iter(dup.items()))
        from qlora_grpo.errors import UserError

        raise UserError(f"several runs were trained on {axis}={v!r}: {', '.join(map(str, paths))}; "
                         "keep one per value in --runs-dir")
    order = {v: i for i, v in enumerate(values)}
    found.sort(key=lambda t: (order.get(t[0], len(order)), t[0]))
    return found, notes


def slug(value: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", value).strip("_") or "_"


def _cell_dirs(labels: list[str]) -> dict[str, str]:
    out, used = {}, set()
    for label in labels:
        s = slug(label)
        while s in used:
            s += "_"
        used.add(s)
        out[label] = s
    return out


def _finished(cell: Path, settings: dict) -> dict | None:
    """The cell's metrics when it was finished with the same settings, else None."""
    mfile, cfile = cell / "metrics.json", cell / CONFIG_NAME
    if not (mfile.is_file() and cfile.is_file()):
        return None
    try:
        old, metrics = json.loads(cfile.read_text()), json.loads(mfile.read_text())
    except json.JSONDecodeError:
        return None
    if any(old.get(k) != v for k, v in settings.items()):
        return None
    return metrics


def _fmt(x: float | None, signed: bool = False) -> str:
    if x is None:
        return ""
    return f"{x:+.2f}" if signed else f"{x:.2f}"


def _mean(xs: list[float | None]) -> float | None:
    xs = [x for x in xs if x is not None]
    return round(sum(xs) / len(xs), 2) if xs else None


def _summaries(rows: list[str], cols: list[str], acc: dict) -> dict[str, dict]:
    out = {}
    for r in rows:
        vals = [acc[r].get(c) for c in cols]
        unseen = [acc[r].get(c) for c in cols if c != r] if r != BASE else []
        out[r] = {"mean": _mean(vals), "mean_unseen": _mean(unseen) if r != BASE else None}
    return out


def write_tables(out: Path, axis: str, rows: list[str], cols: list[str], acc: dict, n: dict,
                 title: str, delta: bool = False) -> None:
    """CSV + markdown of a matrix `acc[row][col]` (percent or points)."""
    stem = "delta" if delta else "matrix"
    summ = _summaries(rows, cols, acc)
    with open(out / f"{stem}.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["trained_on", *cols, "mean", "mean_unseen"])
        for r in rows:
            w.writerow([r, *[_fmt(acc[r].get(c)) for c in cols], _fmt(summ[r]["mean"]),
                        _fmt(summ[r]["mean_unseen"])])
    unit = "points vs the base model" if delta else "accuracy (%)"
    lines = [f"# {title}", "",
             f"Rows: trained on ({axis}); columns: tested on; cells: {unit} on closed questions. "
             "The diagonal (in-domain) is in bold; *mean unseen* averages the other test sets.", "",
             f"![heatmap]({'heatmap_delta.png' if delta else 'heatmap.png'})", "",
             "| trained on \\ tested on | " + " | ".join(cols) + " | mean | mean unseen |",
             "|---|" + "---:|" * (len(cols) + 2)]
    for r in rows:
        cells = []
        for c in cols:
            v = _fmt(acc[r].get(c), delta) or "–"
            cells.append(f"**{v}**" if r == c else v)
        lines.append(f"| {r} | " + " | ".join(cells) + f" | {_fmt(summ[r]['mean'], delta) or '–'} | "
                     f"{_fmt(summ[r]['mean_unseen'], delta) or '–'} |")
    lines.append("| *n (test)* | " + " | ".join(str(n.get(c, 0)) for c in cols) + " | | |")
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")


def generalization(runs_dir: str | Path, data: str | Path, axis: str, out: str | Path, model: str | None = None,
                   base: bool = False, limit: int | None = None, batch_size: int = 8, max_new_tokens: int = 256,
                   template: str | None = None, base_template: str = "zero-shot", mode: str | None = None,
                   split: str = "test", quantization: str | None = None, min_pixels: int | None = None,
                   max_pixels: int | None = None, columns: list[str] | None = None, log=print) -> dict:
    """Evaluate every run on every test set of the axis; write the matrices; return generalization.json."""
    from medvqa_data.splits import load_manifest, read_manifest
    from qlora_grpo.errors import UserError

    if axis not in AXES:
        raise UserError(f"--axis must be one of {', '.join(AXES)}, got {axis!r}")
    runs_dir, out = Path(runs_dir), Path(out)
    if not runs_dir.is_dir():
        raise UserError(f"--runs-dir {runs_dir}: no such directory")
    manifest = read_manifest(data, axis)
    if split not in manifest.get("splits", []):
        raise UserError(f"the {axis} manifest of {data} has no split {split!r}; splits: "
                        f"{', '.join(manifest.get('splits', []))}")
    cols = [v for v, per in manifest["values"].items() if per.get(split)]
    if not cols:
        raise UserError(f"the {axis} manifest of {data} has no {split} rows")
    if columns:
        unknown = [c for c in columns if c not in cols]
        if unknown:
            raise UserError(f"--columns {', '.join(unknown)}: not a {axis} with {split} rows in {data}; "
                            f"values: {', '.join(cols)}")
        cols = [c for c in cols if c in columns]
    all_values = list(manifest["values"])
    found, notes = discover_runs(runs_dir, axis, all_values)
    for note in notes:
        log(f"warning: {note}", file=sys.stderr)
    if not found:
        raise UserError(f"no adapter in {runs_dir} maps to a {axis} value (see the warnings); each run is a "
                        "sub-directory with adapter_config.json and train_subset in run_config.yaml, or named "
                        f"after its {axis}")
    first_cfg = found[0][2]
    model = model or first_cfg.get("model_name_or_path")
    if not model:
        raise UserError("--model is required (the base model the adapters were trained on)")
    mode = mode or ("paper" if first_cfg.get("prompt_mode") == "paper" else "default")
    quant = quantization or first_cfg.get("quantization", "none")
    min_px = min_pixels or first_cfg.get("min_pixels", 3136)
    max_px = max_pixels or first_cfg.get("max_pixels", 401408)
    for key, val in (("quantization", quant), ("min_pixels", min_px), ("max_pixels", max_px)):
        other = sorted({str(c.get(key)) for _, _, c in found if c.get(key) is not None and c.get(key) != val})
        if other:
            log(f"warning: some runs were trained with {key}={', '.join(other)}; all are evaluated with {key}={val}",
                file=sys.stderr)
    runs = [Run(BASE, None, base_template)] if base else []
    for value, path, cfg in found:
        t = template or cfg.get("template", "think")
        warn_template(cfg, t, path)
        runs.append(Run(value, path, t, cfg))
    rows = [r.value for r in runs]
    row_dir, col_dir = _cell_dirs(rows), _cell_dirs(cols)
    model_abs = str(Path(model).resolve()) if Path(model).exists() else str(model)
    data_abs = str(Path(data).resolve())

    def settings(run: Run, col: str) -> dict:
        return {"template": run.template, "mode": mode, "max_new_tokens": max_new_tokens, "min_pixels": min_px,
                "max_pixels": max_px, "limit": limit, "model": model_abs,
                "adapter": str(run.path.resolve()) if run.path else None, "data": data_abs, "split": split,
                "axis": axis, "test_value": col, "quantization": quant}

    cells: dict[tuple[str, str], Path] = {(r.value, c): out / "cells" / row_dir[r.value] / col_dir[c]
                                           for r in runs for c in cols}
    results: dict[tuple[str, str], dict] = {}
    todo: list[tuple[Run, str]] = []
    for run in runs:
        for c in cols:
            m = _finished(cells[run.value, c], settings(run, c))
            if m is not None:
                results[run.value, c] = m
                log(f"cell {run.value} -> {c}: {100 * m['overall']['accuracy']:.1f}% (n={m['overall']['n']}) [cached]")
            else:
                todo.append((run, c))
    if todo:
        _evaluate_cells(todo, cells, settings, results, model, quant, min_px, max_px, data, axis, split, limit,
                        batch_size, max_new_tokens, mode, load_manifest, log)

    acc = {r: {} for r in rows}
    ci = {r: {} for r in rows}
    n: dict[str, int] = {}
    for (r, c), m in results.items():
        o = m["overall"]
        acc[r][c] = round(100 * o["accuracy"], 2) if o["n"] else None
        ci[r][c] = [round(100 * x, 2) for x in o["ci95"]]
        n[c] = o["n"]
    out.mkdir(parents=True, exist_ok=True)
    from eval.plots import heatmap

    label = axis.replace("_", " ")
    plural = {"modality": "modalities", "question_type": "question types"}[axis]
    title = f"Generalization across {plural} ({split} sets of {Path(data).name})"
    run_rows = [r for r in rows if r != BASE]
    write_tables(out, axis, rows, cols, acc, n, title)
    heatmap([[acc[r].get(c) for c in cols] for r in rows], rows, cols, out / "heatmap.png",
            "accuracy (%)",
            xlabel=f"tested on ({label})", ylabel=f"trained on ({label})", separate_first_row=base)
    result = {"axis": axis, "data": data_abs, "split": split, "model": model_abs, "mode": mode, "limit": limit,
              "rows": rows, "columns": cols, "accuracy": acc, "ci95": ci, "n": n,
              "summary": _summaries(rows, cols, acc),
              "runs": {r.value: {"path": str(r.path) if r.path else None, "template": r.template} for r in runs},
              "cells": {f"{r}|{c}": str(p) for (r, c), p in cells.items()}}
    if base:
        delta = {r: {c: (round(acc[r][c] - acc[BASE][c], 2) if acc[r].get(c) is not None
                         and acc[BASE].get(c) is not None else None) for c in cols} for r in run_rows}
        write_tables(out, axis, run_rows, cols, delta, n, f"{title}: gain over the base model", delta=True)
        heatmap([[delta[r].get(c) for c in cols] for r in run_rows], run_rows, cols, out / "heatmap_delta.png",
                "gain over the base model (points)",
                cbar_label="points vs base", diverging=True, xlabel=f"tested on ({label})",
                ylabel=f"trained on ({label})")
        result["delta"] = delta
    (out / "generalization.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def _evaluate_cells(todo, cells, settings, results, model_path, quant, min_px, max_px, data, axis, split, limit,
                    batch_size, max_new_tokens, mode, load_manifest, log) -> None:
    from eval.evaluate import evaluate
    from qlora_grpo import cpu_compat
    from qlora_grpo.model import check_adapter, load_for_inference

    model, processor = load_for_inference(model_path, None, quantization=quant, min_pixels=min_px,
                                          max_pixels=max_px)
    base_path = str(Path(model_path))
    test_sets: dict[str, object] = {}
    peft_model = None
    current = None
    n_adapters = 0
    # base cells first: attaching an adapter changes the base model in place
    for run, col in sorted(todo, key=lambda t: t[0].path is not None):
        if run.path is not None and current != run.value:
            from peft import PeftModel

            check_adapter(str(run.path), base_path)
            n_adapters += 1
            name = f"adapter{n_adapters}"
            if peft_model is None:
                peft_model = PeftModel.from_pretrained(model, str(run.path), adapter_name=name)
            else:
                peft_model.load_adapter(str(run.path), adapter_name=name)
            peft_model.set_adapter(name)
            cpu_compat.fix_bnb_linear4bit(peft_model)
            peft_model.eval()
            current = run.value
        if col not in test_sets:
            test_sets[col] = load_manifest(data, axis, col, split)
        ds = test_sets[col]
        m = evaluate(peft_model if run.path is not None else model, processor, ds, run.template, cells[run.value, col],
                     mode=mode, batch_size=batch_size, max_new_tokens=max_new_tokens, limit=limit, min_pixels=min_px,
                     max_pixels=max_px, title=f"{run.value} -> {col}", run_info=settings(run, col), plot=False,
                     progress=False)
        results[run.value, col] = m
        log(f"cell {run.value} -> {col}: {100 * m['overall']['accuracy']:.1f}% (n={m['overall']['n']})")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eval.generalization", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs-dir", required=True, help="one sub-directory (a training run with its adapter) per value")
    p.add_argument("--data", required=True, help="output dir of python -m medvqa_data.prepare (with manifests/)")
    p.add_argument("--axis", required=True, choices=AXES)
    p.add_argument("--out", required=True)
    p.add_argument("--model", default=None, help="base model dir (default: model_name_or_path of the first run)")
    p.add_argument("--base", action="store_true", help="also evaluate the base model; adds the delta heatmap")
    p.add_argument("--limit", type=int, default=None, help="first N rows of each test set")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--template", default=None, choices=EVAL_TEMPLATES,
                   help="template for every adapter (default: each run's training template)")
    p.add_argument("--base-template", default="zero-shot", choices=EVAL_TEMPLATES)
    p.add_argument("--mode", default=None, choices=EVAL_MODES,
                   help="default | paper (Med-R1's evaluation prompts and parser); default: the runs' prompt_mode")
    p.add_argument("--split", default="test")
    p.add_argument("--columns", default=None,
                   help="comma-separated test sets to evaluate on (default: every value of the manifest)")
    p.add_argument("--quantization", default=None, choices=("nf4", "none"))
    p.add_argument("--min-pixels", type=int, default=None)
    p.add_argument("--max-pixels", type=int, default=None)
    p.add_argument("--paper-table", action="store_true",
                   help="print the papers' published numbers beside this project's (also OUT/paper_table.md)")
    a = p.parse_args(argv)
    if a.batch_size < 1 or a.max_new_tokens < 1 or (a.limit is not None and a.limit < 1):
        p.error("--batch-size, --max-new-tokens and --limit must be positive")
    from medvqa_data.errors import DataError
    from qlora_grpo import cpu_compat
    from qlora_grpo.errors import UserError

    cpu_compat.setup_env()
    try:
        res = generalization(a.runs_dir, a.data, a.axis, a.out, a.model, a.base, a.limit, a.batch_size,
                             a.max_new_tokens, a.template, a.base_template, a.mode, a.split, a.quantization,
                             a.min_pixels, a.max_pixels,
                             [c.strip() for c in a.columns.split(",") if c.strip()] if a.columns else None)
    except (UserError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    extra = ", delta.csv, delta.md, heatmap_delta.png" if a.base else ""
    print(f"{len(res['rows'])} x {len(res['columns'])} matrix: matrix.csv, matrix.md, heatmap.png{extra} in {a.out}")
    if a.paper_table:
        from eval.paper_table import paper_table

        table = paper_table(res, a.axis)
        (Path(a.out) / "paper_table.md").write_text(table + "\n")
        print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
