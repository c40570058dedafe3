"""report.md and judge.png of `eval.judge` (score distributions, win rates, open-answer agreement)."""

from __future__ import annotations

from pathlib import Path

from eval.judge_metrics import CRITERIA, F1_THRESHOLD, GOOD_THRESHOLD
from eval.plots import _figure, _save

LIMITS = ("An LLM judge is not a clinician: its scores measure agreement with a language model's reading of "
          "the reasoning, not clinical validity. Judges favour fluent, long and self-confident text, may "
          "share the blind spots of the model they judge, and a small local judge is often unreliable. Check "
          "its calibration (docs/eval.md) and read a sample of the judgements before trusting the numbers.")


def _f(x, digits: int = 2) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def _ci(ci, pct: bool = False) -> str:
    if not ci:
        return "–"
    return f"{_pct(ci[0])}–{_pct(ci[1])}" if pct else f"{ci[0]:.2f}–{ci[1]:.2f}"


def _rubric_lines(r: dict) -> list[str]:
    lines = ["## Reasoning quality (rubric, 1–5)", "",
             f"**Mean score: {_f(r['mean'])} / 5** (95% CI {_ci(r['ci95'])}, {r['n_judged']} judged of {r['n']}; "
             f"unparsable judge replies: {r['n_unparsable']} = {_pct(r['unparsable_rate'])}%)", "",
             "| Criterion | Mean | 95% CI | " + " | ".join(f"#{k}" for k in range(1, 6)) + " |",
             "|---|---:|---|" + "---:|" * 5]
    for c in CRITERIA:
        dist = r["distribution"][c]
        lines.append(f"| {c} | {_f(r['criteria'][c])} | {_ci(r['criteria_ci95'][c])} | "
                     + " | ".join(str(dist[str(k)]) for k in range(1, 6)) + " |")
    lines.append("")
    for key, label in (("by_modality", "Modality"), ("by_question_type", "Question type"),
                       ("by_dataset", "Dataset"), ("by_correct", "Answer")):
        groups = r.get(key) or {}
        if not groups:
            continue
        lines += [f"| {label} | Mean | 95% CI | judged / n | " + " | ".join(CRITERIA) + " |",
                  "|---|---:|---|---:|" + "---:|" * len(CRITERIA)]
        for k, g in groups.items():
            lines.append(f"| {k} | {_f(g['mean'])} | {_ci(g['ci95'])} | {g['n_judged']}/{g['n']} | "
                         + " | ".join(_f(g["criteria"][c]) for c in CRITERIA) + " |")
        lines.append("")
    cal = r.get("calibration")
    if cal:
        lines += [f"Calibration against hand labels: agreement {_pct(cal['agreement'])}% "
                  f"(95% CI {_ci(cal['agreement_ci95'], True)}, {cal['n_judged']} judged of {cal['n']}; good = mean "
                  f"score ≥ {GOOD_THRESHOLD}); mean score of good texts {_f(cal['good_mean'])}, of bad texts "
                  f"{_f(cal['bad_mean'])}.", ""]
    return lines


def _rate_cells(g: dict) -> str:
    return " | ".join(f"{_pct(g[k]['rate'])} ({_ci(g[k]['ci95'], True)})" for k in ("win", "tie", "loss"))


def _pairwise_lines(w: dict) -> list[str]:
    lines = ["## Pairwise comparison (position-swapped)", "",
             f"`{w['candidate']}` against `{w['baseline']}`: each row judged twice, with the responses in both "
             "orders; a win or loss counts only when both orders agree, anything else is a tie.", "",
             f"**Win {_pct(w['win']['rate'])}% · tie {_pct(w['tie']['rate'])}% · loss {_pct(w['loss']['rate'])}%** "
             f"({w['n_judged']} judged of {w['n']}; unparsable: {w['n_unparsable']}). Position consistency "
             f"{_pct(w['position_consistency'])}%; the judge chose the first position in "
             f"{_pct(w['first_position_rate'])}% of its non-tie verdicts.", "",
             "| Group | judged / n | Win % (95% CI) | Tie % (95% CI) | Loss % (95% CI) |", "|---|---:|---|---|---|",
             f"| **all** | {w['n_judged']}/{w['n']} | {_rate_cells(w)} |"]
    for key in ("by_modality", "by_question_type", "by_dataset"):
        for k, g in (w.get(key) or {}).items():
            lines.append(f"| {key[3:].replace('_', ' ')}: {k} | {g['n_judged']}/{g['n']} | {_rate_cells(g)} |")
    return lines + [""]


def _open_lines(o: dict) -> list[str]:
    jm = o["judge_match"]
    lines = ["## Open answers: judge vs exact match and token F1", "",
             f"Judge says 'same meaning' for **{_pct(jm['rate'])}%** (95% CI {_ci(jm['ci95'], True)}) of "
             f"{o['n_judged']} judged open answers (of {o['n']}; unparsable: {o['n_unparsable']}); exact match "
             f"{_pct(o['exact_match'])}%, token F1 {_pct(o['token_f1'])}%.", "",
             f"Agreement of the judge with exact match: {_pct(o['agreement_exact'])}% (Cohen's kappa "
             f"{_f(o['kappa_exact'])}); with token F1 ≥ {F1_THRESHOLD}: {_pct(o['agreement_f1'])}%. Judge yes / "
             f"exact no: {o['judge_only']}; exact yes / judge no: {o['exact_only']}.", "",
             "| Group | judged / n | Judge (%) | Exact (%) | Token F1 (%) | Agree exact (%) | Agree F1 (%) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for key in ("by_dataset", "by_modality"):
        for k, g in (o.get(key) or {}).items():
            lines.append(f"| {key[3:]}: {k} | {g['n_judged']}/{g['n']} | {_pct(g['judge_match']['rate'])} | "
                         f"{_pct(g['exact_match'])} | {_pct(g['token_f1'])} | {_pct(g['agreement_exact'])} | "
                         f"{_pct(g['agreement_f1'])} |")
    return lines + [""]


def markdown_report(metrics: dict, title: str, figure: str | None = None) -> str:
    j = metrics["judge"]
    lines = [f"# {title}", "",
             f"Judge: `{j['model']}` ({'vision-language, images shown' if j['images_shown'] else 'text only'}); "
             f"greedy, max {j['max_new_tokens']} new tokens, {j['retries']} repair prompt(s); prompts "
             f"`{j['prompts_dir']}`, sha256 `{j['prompt_sha256'][:16]}`.", "",
             *(f"Source ({k}): `{v}`  " for k, v in metrics.get("sources", {}).items()), "",
             f"> {LIMITS}", ""]
    if figure:
        lines += [f"![judge results]({figure})", ""]
    if "rubric" in metrics:
        lines += _rubric_lines(metrics["rubric"])
    if "pairwise" in metrics:
        lines += _pairwise_lines(metrics["pairwise"])
    if "open" in metrics:
        lines += _open_lines(metrics["open"])
    return "\n".join(lines)


def judge_figure(metrics: dict, path: str | Path, title: str = "LLM judge") -> Path:
    """One panel per task present: rubric score distributions (stacked 1-5 per criterion), win/tie/loss
    bars (overall and per modality), open-answer judge vs exact vs token F1 (per dataset)."""
    panels = [t for t in ("rubric", "pairwise", "open") if t in metrics]
    fig = _figure(6.5 * max(1, len(panels)), 4.2)
    axes = fig.subplots(1, max(1, len(panels)), squeeze=False)[0]
    for ax, task in zip(axes, panels):
        m = metrics[task]
        if task == "rubric":
            colors = ["#C44E52", "#DD8452", "#CCB974", "#8FBF7F", "#55A868"]
            left = [0.0] * len(CRITERIA)
            for k in range(1, 6):
                vals = [m["distribution"][c][str(k)] for c in CRITERIA]
                ax.barh(range(len(CRITERIA)), vals, left=left, color=colors[k - 1], label=str(k))
                left = [a + b for a, b in zip(left, vals)]
            ax.set_yticks(range(len(CRITERIA)), labels=CRITERIA)
            ax.invert_yaxis()
            ax.set_xlabel("judged predictions")
            ax.legend(title="score", fontsize=7, ncol=5, loc="upper center", bbox_to_anchor=(0.5, -0.18))
            ax.set_title(f"rubric scores (mean {_f(m['mean'])}; unparsable {m['n_unparsable']}/{m['n']})", fontsize=9)
        elif task == "pairwise":
            groups = {"all": m, **(m.get("by_modality") or {})}
            names = list(groups)
            left = [0.0] * len(names)
            for k, color in (("win", "#55A868"), ("tie", "#BBBBBB"), ("loss", "#C44E52")):
                vals = [100 * (groups[n][k]["rate"] or 0.0) for n in names]
                ax.barh(range(len(names)), vals, left=left, color=color, label=k)
                left = [a + b for a, b in zip(left, vals)]
            ax.set_yticks(range(len(names)), labels=names)
            ax.invert_yaxis()
            ax.set_xlim(0, 100)
            ax.set_xlabel(f"% of rows ({m['candidate']} vs {m['baseline']})")
            ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.18))
            ax.set_title(f"pairwise, position-swapped (unparsable {m['n_unparsable']}/{m['n']})", fontsize=9)
        else:
            groups = {"all": m, **(m.get("by_dataset") or {})}
            names = list(groups)
            w = 0.27
            for i, (label, get, color) in enumerate((
                    ("judge", lambda g: g["judge_match"]["rate"], "#4C72B0"),
                    ("exact match", lambda g: g["exact_match"], "#DD8452"),
                    ("token F1", lambda g: g["token_f1"], "#55A868"))):
                ax.bar([j + (i - 1) * w for j in range(len(names))], [100 * (get(groups[n]) or 0.0) for n in names],
                       width=w, color=color, label=label)
            ax.set_xticks(range(len(names)), labels=names, rotation=20, ha="right")
            ax.set_ylim(0, 110)
            ax.set_ylabel("%")
            ax.legend(fontsize=7)
            ax.set_title(f"open answers (agreement with exact {_pct(m['agreement_exact'])}%)", fontsize=9)
    if not panels:
        axes[0].set_axis_off()
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)
