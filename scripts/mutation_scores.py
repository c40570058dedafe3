"""Per-module mutation scores from mutmut's result files (mutants/<module>.py.meta): the table that
docs/testing.md shows, and the surviving mutants by name (`mutmut show NAME` prints the diff).

    python scripts/mutation_scores.py [--survivors]

Score = killed / (killed + survived + no tests); a timeout counts as killed (the mutant hangs the
tests), mutants not yet run are counted apart and make the module "not measured".
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

CORE = ["medvqa_data/splits.py", "medvqa_data/templates.py", "eval/metrics.py", "qlora_grpo/parsing.py",
        "qlora_grpo/rewards.py", "qlora_grpo/rundir.py", "medvqa_data/images.py", "medvqa_data/sources/__init__.py",
        "medvqa_data/sources/base.py", "medvqa_data/sources/jsonl.py", "medvqa_data/sources/medr1.py",
        "medvqa_data/sources/omnimedvqa.py", "medvqa_data/sources/pathvqa.py", "medvqa_data/sources/pmc_vqa.py",
        "medvqa_data/sources/slake.py", "medvqa_data/sources/vqa_rad.py", "eval/scoring.py"]
KILLED = {1, 3, 36, 24, -24, 152, 255, 37}
SURVIVED = {0}
NO_TESTS = {5, 33}


def scores(root: Path = Path("mutants")) -> list[dict]:
    rows = []
    for module in CORE:
        meta = root / f"{module}.meta"
        if not meta.is_file():
            rows.append({"module": module, "total": 0, "measured": False})
            continue
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        c = Counter("killed" if v in KILLED else "survived" if v in SURVIVED else "no tests" if v in NO_TESTS
                    else "not run" if v is None else "other" for v in codes.values())
        checked = c["killed"] + c["survived"] + c["no tests"]
        rows.append({"module": module, "total": len(codes), "killed": c["killed"], "survived": c["survived"],
                     "no_tests": c["no tests"], "not_run": c["not run"] + c["other"],
                     "score": round(100 * c["killed"] / checked, 1) if checked else None,
                     "measured": c["not run"] + c["other"] == 0 and len(codes) > 0,
                     "survivors": sorted(k for k, v in codes.items() if v in SURVIVED | NO_TESTS)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--survivors", action="store_true", help="also list the surviving mutants by name")
    args = ap.parse_args()
    rows = scores()
    print("| Module | Mutants | Killed | Survived | No tests | Not run | Score |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        if not r["total"]:
            print(f"| {r['module']} | – | – | – | – | – | not measured |")
            continue
        if r["score"] is None:
            score = "not measured"
        else:
            score = f"{r['score']:.1f}%" + ("" if r["measured"] else " (partial: not every mutant run)")
        print(f"| {r['module']} | {r['total']} | {r['killed']} | {r['survived']} | {r['no_tests']} | "
              f"{r['not_run']} | {score} |")
    if args.survivors:
        for r in rows:
            for name in r.get("survivors", []):
                print(name)


if __name__ == "__main__":
    main()
