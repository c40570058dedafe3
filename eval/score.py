"""Re-score a predictions file without a model.

    python -m eval.score --predictions FILE.jsonl --template T [--mode default|paper] --out DIR [--title TEXT]

Each line needs the schema columns (`id`, `answer`, and for multiple choice `options` and
`answer_letter`; `answer_type`, `modality`, `question_type`, `dataset` are optional) and the model's
`completion`; every other key (an earlier `parsed`, `correct`, ...) is ignored and recomputed with
the parser of the rewards (`qlora_grpo.parsing`; `--mode paper` = Med-R1's evaluation parser).

Malformed lines (bad JSON, missing keys, wrong types, duplicate ids) are listed on stderr as
``line N: reason`` and in report.md / metrics.json (`malformed_lines`); the other lines are scored.
Writes metrics.json, report.md, accuracy.png and the rescored predictions.jsonl (unless that would
overwrite the input) into --out. Exit status: 0 all lines scored; 1 some lines malformed (outputs
written); 2 nothing to score (missing file, no valid line) or a bad argument.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from eval.scoring import EVAL_MODES, EVAL_TEMPLATES, read_predictions, score_record, write_outputs


def score_file(predictions: str | Path, template: str, out: str | Path, mode: str = "default",
               title: str | None = None, plot: bool = True) -> tuple[dict, list[dict]]:
    """Rescore `predictions`; write the outputs into `out`; return (metrics, malformed lines)."""
    src = Path(predictions)
    recs, bad = read_predictions(src, strict=True)
    if not recs:
        raise ValueError(f"{src}: no scorable line" + (f" ({len(bad)} malformed)" if bad else " (empty file)"))
    scored = [score_record(r, r["completion"], template, mode) for r in recs]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    target = out / "predictions.jsonl"
    if not (target.exists() and target.resolve() == src.resolve()):
        with target.open("w") as f:
            for r in scored:
                f.write(json.dumps(r) + "\n")
    metrics = write_outputs(scored, out, template, mode, title or f"Scores of {src}",
                            extra={"source": str(src), "malformed_lines": bad}, plot=plot)
    return metrics, bad


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eval.score", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--predictions", required=True, help="a predictions.jsonl (eval.evaluate's or your own)")
    p.add_argument("--template", required=True, choices=EVAL_TEMPLATES)
    p.add_argument("--mode", default="default", choices=EVAL_MODES)
    p.add_argument("--out", required=True)
    p.add_argument("--title", default=None)
    a = p.parse_args(argv)
    src = Path(a.predictions)
    if not src.is_file():
        print(f"error: no predictions file at {src}", file=sys.stderr)
        return 2
    if Path(a.out).is_file():
        print(f"error: --out {a.out} is a file; give a directory", file=sys.stderr)
        return 2
    try:
        metrics, bad = score_file(src, a.template, a.out, a.mode, a.title)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for b in bad:
        print(f"error: line {b['line']}: {b['error']}", file=sys.stderr)
    o = metrics["overall"]
    print(f"scored {metrics['n_predictions']} predictions ({len(bad)} malformed lines skipped): accuracy "
          f"{100 * o['accuracy']:.1f}% (n={o['n']}); unparsed {100 * metrics['unparsed_rate']:.1f}%; "
          f"metrics.json, report.md, accuracy.png in {a.out}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
