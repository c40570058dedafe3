"""Compare evaluations of several runs (base vs SFT vs GRPO, or any others).

    python -m eval.compare RUN_DIR... --out DIR [--names base,sft,grpo] [--title TEXT] [--allow-different-tests]

Each RUN_DIR is an evaluation output dir (with metrics.json), a training run dir (with
eval/metrics.json) or a metrics.json file. Names default to the dir names (a dir called `eval`
is named after its parent). Writes into --out:

- compare.md: one table of accuracy (%) per run for overall, each modality and each question type,
  with the delta (points) of every run against the FIRST run, plus unparsed and format-violation
  rates and the open-question scores when any run has open questions;
- compare.png: grouped bars (one bar per run) of overall + per modality and overall + per question type;
- compare.json: the same numbers, machine-readable.

Runs judged by `python -m eval.judge` (RUN/judge/metrics.json, or judge/ next to the eval dir) also
get a table of their LLM-judge scores (rubric mean with CI, open answers judged equivalent).
Deltas only mean something on the same questions: the question ids of each run (its
predictions.jsonl next to metrics.json) must be the same set, else compare stops naming the runs
and their counts; ``--allow-different-tests`` compares anyway and marks every delta of a run whose
questions differ from the first run's with "≠" (and says so under the table).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


class CompareError(Exception):
    pass


def find_metrics(run: str | Path) -> Path:
    """metrics.json of an eval dir, a training run dir (eval/metrics.json) or the file itself."""
    p = Path(run)
    for cand in (p, p / "metrics.json", p / "eval" / "metrics.json"):
        if cand.is_file() and cand.name.endswith(".json"):
            return cand
    if not p.exists():
        raise CompareError(f"{p}: no such file or directory")
    raise CompareError(f"{p}: no metrics.json (looked at {p / 'metrics.json'} and {p / 'eval' / 'metrics.json'}); "
                       "evaluate it first with python -m eval.evaluate")


def default_name(run: str | Path) -> str:
    p = Path(run).resolve()
    if p.is_file():
        p = p.parent
    return p.parent.name if p.name == "eval" else p.name


def load_runs(runs: list[str], names: list[str] | None = None) -> tuple[list[str], list[dict]]:
    if names is not None and len(names) != len(runs):
        raise CompareError(f"--names has {len(names)} names for {len(runs)} runs")
    metrics = []
    for run in runs:
        path = find_metrics(run)
        try:
            m = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise CompareError(f"{path}: not valid JSON ({e})") from None
        if not isinstance(m, dict) or "overall" not in m:
            raise CompareError(f"{path}: not an eval.evaluate metrics.json (no 'overall')")
        metrics.append(m)
    names = names or [default_name(r) for r in runs]
    seen: dict[str, int] = {}
    unique = []
    for n in names:  # two runs called "eval" or "grpo": number them
        seen[n] = seen.get(n, 0) + 1
        unique.append(n if seen[n] == 1 else f"{n}#{seen[n]}")
    return unique, metrics


def find_judge(run: str | Path) -> dict | None:
    """The eval.judge metrics.json that belongs to a run (RUN/judge/, or judge/ next to its eval dir)."""
    p = Path(run)
    base = p.parent if p.is_file() else p
    for cand in (base / "judge" / "metrics.json", base.parent / "judge" / "metrics.json"):
        try:
            m = json.loads(cand.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(m, dict) and isinstance(m.get("judge"), dict):
            return m
    return None


def judge_scores(names: list[str], runs: list[str]) -> dict:
    """{run: {"judge", "prompt_sha256", "rubric_mean", "rubric_ci95", "n_judged", "open_judge_match"}}
    for the runs that were judged (python -m eval.judge)."""
    out = {}
    for name, run in zip(names, runs):
        m = find_judge(run)
        if m:
            r, o = m.get("rubric") or {}, m.get("open") or {}
            out[name] = {"judge": m["judge"].get("name"), "prompt_sha256": m["judge"].get("prompt_sha256"),
                         "rubric_mean": r.get("mean"), "rubric_ci95": r.get("ci95"), "n_judged": r.get("n_judged"),
                         "open_judge_match": (o.get("judge_match") or {}).get("rate")}
    return out
def question_ids(metrics_path: Path) -> set[str] | None:
    """Ids of the questions behind a metrics.json (its predictions.jsonl), None when it has none."""
    pred = metrics_path.parent / "predictions.jsonl"
    if not pred.is_file():
        return None
    ids = set()
    with pred.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                ids.add(str(json.loads(line)["id"]))
            except (ValueError, KeyError, TypeError):
                continue
    return ids


def check_test_sets(names: list[str], runs: list[str], allow_different: bool) -> dict:
    """{run: "same" | "different" | "unknown"} against the first run's question ids; a CompareError
    when they differ, unless `allow_different`."""
    ids = [question_ids(find_metrics(r)) for r in runs]
    status = {}
    for name, own in zip(names, ids):
        status[name] = "unknown" if own is None or ids[0] is None else ("same" if own == ids[0] else "different")
    different = [n for n in names if status[n] == "different"]
    if different and not allow_different:
        counts = ", ".join(f"{n} {len(i)}" for n, i in zip(names, ids) if i is not None)
        shared = ", ".join(f"{n} {len(i & ids[0])}" for n, i in zip(names, ids) if n in different)
        raise CompareError(f"the runs were evaluated on different test sets (questions: {counts}; shared with "
                           f"{names[0]}: {shared}), so their deltas compare different questions; evaluate every "
                           "run on the same --data, --split, --subset and --limit, or pass --allow-different-tests "
                           "to compare anyway (deltas marked ≠)")
    return status


def _rows(metrics_list: list[dict]) -> list[tuple[str, str, str]]:
    """(section, label, key) of every compared group: overall, modalities, question types."""
    rows = [("Overall", "Overall", "")]
    for key, section in (("by_modality", "Modality"), ("by_question_type", "Question type")):
        cats: list[str] = []
        for m in metrics_list:
            cats += [c for c in (m.get(key) or {}) if c not in cats]
        rows += [(section, c, key) for c in sorted(cats)]
    return rows


def _group(m: dict, label: str, key: str) -> dict | None:
    g = m["overall"] if not key else (m.get(key) or {}).get(label)
    return g if g and g.get("n") else None


def comparison(names: list[str], metrics_list: list[dict]) -> dict:
    """The compared numbers: {"runs": names, "rows": [{"section", "group", "accuracy": {run: %},
    "n": {run: n}, "delta": {run: points vs the first run}}], "rates": ..., "open": ...}."""
    base = names[0]
    rows = []
    for section, label, key in _rows(metrics_list):
        acc, ns, delta = {}, {}, {}
        for name, m in zip(names, metrics_list):
            g = _group(m, label, key)
            acc[name] = round(100 * g["accuracy"], 2) if g else None
            ns[name] = g["n"] if g else 0
        for name in names[1:]:
            delta[name] = (round(acc[name] - acc[base], 2) if acc[name] is not None and acc[base] is not None
                           else None)
        rows.append({"section": section, "group": label, "accuracy": acc, "n": ns, "delta": delta})
    rates = {name: {"unparsed_rate": m.get("unparsed_rate"),
                    "format_violation_rate": m.get("format_violation_rate",
                                                   None if "format_rate" not in m else 1 - m["format_rate"])}
             for name, m in zip(names, metrics_list)}
    open_ = {name: m.get("open") for name, m in zip(names, metrics_list) if (m.get("open") or {}).get("n")}
    return {"runs": names, "baseline": base, "rows": rows, "rates": rates, "open": open_}


def _f(x: float | None, signed: bool = False) -> str:
    if x is None:
        return "–"
    return f"{x:+.1f}" if signed else f"{x:.1f}"


def markdown(cmp: dict, title: str) -> str:
    names, base = cmp["runs"], cmp["baseline"]
    head = ["Group", *[f"{n} (%)" for n in names], *[f"Δ {n} vs {base}" for n in names[1:]], "n"]
    lines = [f"# {title}", "", f"Accuracy on closed questions; Δ = points against the first run (`{base}`).", "",
             "![comparison](compare.png)", "",
             "| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    section = None
    mismatched = []
    for r in cmp["rows"]:
        if r["section"] != section and r["section"] != "Overall":
            section = r["section"]
            lines.append(f"| **{section}** |" + " |" * (len(head) - 1))
        label = f"**{r['group']}**" if r["section"] == "Overall" else r["group"]
        ns = sorted({n for n in r["n"].values() if n})
        if len(ns) > 1:
            mismatched.append(r["group"])
        marks = {n: " ≠" if cmp.get("test_sets", {}).get(n) == "different" else "" for n in names}
        cells = [label, *[_f(r["accuracy"][n]) for n in names],
                 *[_f(r["delta"][n], True) + marks[n] for n in names[1:]],
                 "/".join(str(n) for n in ns) or "0"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| Rate (%) | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for key, label in (("unparsed_rate", "unparsed answers (closed)"), ("format_violation_rate", "format violations")):
        vals = [cmp["rates"][n][key] for n in names]
        lines.append(f"| {label} | " + " | ".join(_f(None if v is None else 100 * v) for v in vals) + " |")
    if cmp["open"]:
        lines += ["", "## Open questions", "", "| Run | n | Exact match (%) | Token recall (%) | Token F1 (%) |",
                  "|---|---:|---:|---:|---:|"]
        for n, op in cmp["open"].items():
            lines.append(f"| {n} | {op['n']} | " + " | ".join(
                _f(None if op.get(k) is None else 100 * op[k]) for k in ("exact_match", "token_recall", "token_f1"))
                + " |")
    if cmp.get("judge"):
        lines += ["", "## LLM-judge scores (python -m eval.judge; an LLM judge is not a clinician)", "",
                  "| Run | Judge (prompt sha256) | Reasoning rubric mean (1–5) | 95% CI | judged | Open: judge "
                  "says same (%) |", "|---|---|---:|---|---:|---:|"]
        for n, j in cmp["judge"].items():
            ci = j["rubric_ci95"]
            lines.append(f"| {n} | {j['judge']} (`{str(j['prompt_sha256'])[:12]}`) | "
                         f"{'–' if j['rubric_mean'] is None else format(j['rubric_mean'], '.2f')} | "
                         f"{f'{ci[0]:.2f}–{ci[1]:.2f}' if ci else '–'} | {j['n_judged'] or 0} | "
                         f"{_f(None if j['open_judge_match'] is None else 100 * j['open_judge_match'])} |")
        if len({(j["judge"], j["prompt_sha256"]) for j in cmp["judge"].values()}) > 1:
            lines.append("\nNote: the runs were judged by different judges or prompts; their scores do not compare.")
    sets = cmp.get("test_sets", {})
    if "different" in sets.values():
        lines += ["", "**Different test sets:** " + ", ".join(n for n in names if sets[n] == "different")
                  + f" were not evaluated on the same questions as {base}; their deltas (≠) compare different "
                  "questions."]
    if "unknown" in sets.values():
        lines += ["", "Could not check that every run saw the same questions (no predictions.jsonl next to "
                      "metrics.json for: " + ", ".join(n for n in names if sets[n] == "unknown") + ")."]
    if mismatched:
        lines += ["", f"Note: the runs were evaluated on different numbers of questions for: "
                      f"{', '.join(mismatched)} (n column shows each distinct n)."]
    return "\n".join(lines) + "\n"


def compare(runs: list[str], out: str | Path, names: list[str] | None = None, title: str = "Comparison",
            allow_different_tests: bool = False) -> dict:
    from eval.plots import grouped_bars

    names, metrics_list = load_runs(runs, names)
    sets = check_test_sets(names, runs, allow_different_tests)
    cmp = comparison(names, metrics_list)
    cmp["test_sets"] = sets
    cmp["sources"] = {n: str(find_metrics(r)) for n, r in zip(names, runs)}
    cmp["judge"] = judge_scores(names, runs)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    grouped_bars(names, metrics_list, out / "compare.png", title=title)
    (out / "compare.md").write_text(markdown(cmp, title))
    (out / "compare.json").write_text(json.dumps(cmp, indent=2) + "\n")
    return cmp


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eval.compare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="eval dirs, training run dirs or metrics.json files")
    p.add_argument("--out", required=True)
    p.add_argument("--names", default=None, help="comma-separated display names, one per RUN_DIR (e.g. base,sft,grpo)")
    p.add_argument("--title", default="Comparison")
    p.add_argument("--allow-different-tests", action="store_true",
                   help="compare runs evaluated on different questions anyway (their deltas are marked ≠)")
    a = p.parse_args(argv)
    names = [n.strip() for n in a.names.split(",")] if a.names else None
    if Path(a.out).is_file():
        print(f"error: --out {a.out} is a file; give a directory", file=sys.stderr)
        return 2
    try:
        cmp = compare(a.runs, a.out, names, a.title, a.allow_different_tests)
    except CompareError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    overall = cmp["rows"][0]
    print(" · ".join(f"{n}: {_f(overall['accuracy'][n])}%" for n in cmp["runs"]))
    print(f"wrote compare.md, compare.png, compare.json to {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
