"""Fault-injection report: kill it, starve it, feed it garbage, and count what happened.

    python bench/fault_report.py [--kills 20] [--seed 0] [--fuzz 300] [--workdir DIR] [--json OUT.json]

On the tiny "test"-size model and the bundled sample, CPU only, with every network connection of
the processes blocked (and counted), ~5-10 min on 2 cores:

1. SIGKILL at `--kills` points of training runs (inside checkpoint writes with half a file on disk,
   between the save and its COMPLETE marker, mid-rotation, mid final save, mid-step, at random
   moments), each followed by a resume; then disk full (ENOSPC) during checkpoint and final saves,
   NaN loss (stop and skip), an inf reward, a raising reward function, two runs on one output dir,
   and an evaluation killed mid-run (tests/reliability/faultlib.py).
2. The bad-input corpus (tests/data/make_bad_corpus.py) through `python -m medvqa_data.prepare`.
3. `--fuzz` random JSON / JSONL / CSV files per source reader.

Prints a table and the totals: faults injected, runs resumed, steps lost (must be 0), bad inputs
tried, crashes (must be 0). Exit status 1 when a guarantee was broken.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "data"))

from tests.reliability.helpers import offline_env, run_harness  # noqa: E402


# ----------------------------------------------------------------------------- bad inputs
def bad_corpus(work: Path) -> dict:
    import make_bad_corpus

    root = work / "bad"
    expected = make_bad_corpus.build(root)
    res = {"tried": make_bad_corpus.count(expected), "crashes": 0, "mismatches": [], "network": ""}
    net = work / "bad-network.log"
    for layout, exp in expected.items():
        out = work / f"bad-out-{layout}"
        shutil.rmtree(out, ignore_errors=True)
        p = subprocess.run([sys.executable, "-m", "medvqa_data.prepare", "--source", exp["source"], "--root",
                            str(root / layout), "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                           env=offline_env(net), timeout=600)
        if p.returncode != 0 or "Traceback" in p.stderr:
            res["crashes"] += 1
            res["mismatches"].append(f"{layout}: exit {p.returncode}: {p.stderr[-500:]}")
            continue
        report = json.loads((out / "prepare_report.json").read_text())
        skipped = {s.get("id") or s.get("file"): s["reason"] for s in report["skipped"]}
        for rid, reason in {**exp["skipped"], **exp["files_skipped"]}.items():
            if reason not in skipped.get(rid, ""):
                res["mismatches"].append(f"{layout}: {rid}: expected {reason!r}, got {skipped.get(rid)!r}")
        if report["kept"] != len(exp["kept"]):
            res["mismatches"].append(f"{layout}: kept {report['kept']}, expected {len(exp['kept'])}")
    res["network"] = net.read_text() if net.exists() else ""
    return res


# ----------------------------------------------------------------------------- fuzzing
KEYS = ["question_id", "question", "gt_answer", "option_A", "option_B", "option_C", "image_path", "modality_type",
        "id", "image", "answer", "options", "answer_letter", "answer_type", "split", "qid", "img_name", "q_lang",
        "problem", "solution", "image_name", "phrase_type", "qid_linked_id", "content_type", ""]
ATOMS = [None, True, False, 0, -1, 10**20, 1.5, float("nan"), float("inf"), "", "A", "CT", "yes", "x.png",
         "Images/x.png", "Q? A)CT, B)MRI", "<answer> B </answer>", "\ud800", "\u202e", "\x00", "é" * 50, "a" * 300]


def _value(rng: random.Random, depth: int = 0):
    r = rng.random()
    if depth < 3 and r < 0.2:
        return [_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    if depth < 3 and r < 0.45:
        return {rng.choice(KEYS): _value(rng, depth + 1) for _ in range(rng.randint(0, 8))}
    if r < 0.55:
        return "".join(chr(rng.randint(1, 0x2FFFF)) for _ in range(rng.randint(0, 12)))
    return rng.choice(ATOMS)


def fuzz(work: Path, n: int, seed: int) -> dict:
    from medvqa_data.errors import DataError
    from medvqa_data.sources import SourceOptions, read_source

    rng = random.Random(seed)
    layouts = [("omnimedvqa", "QA_information/Open-access/F.json", "json"), ("slake", "train.json", "json"),
               ("vqa-rad", "VQA_RAD Dataset Public.json", "json"), ("medr1", "Splits/modality/train/CT_train.json",
                                                                    "json"),
               ("jsonl", "data.jsonl", "jsonl"), ("pathvqa", "train.jsonl", "jsonl"), ("pmc-vqa", "train.csv", "csv")]
    res = {"tried": 0, "crashes": 0, "examples": []}
    for i in range(n):
        source, rel, kind = layouts[i % len(layouts)]
        root = work / "fuzz" / f"{i}"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        if kind == "json":
            data = [_value(rng) for _ in range(rng.randint(0, 5))] if rng.random() < 0.8 else _value(rng)
            (root / rel).write_text(json.dumps(data))
        elif kind == "jsonl":
            lines = [json.dumps(_value(rng)) if rng.random() < 0.8 else str(_value(rng)) for _ in range(5)]
            (root / rel).write_text("\n".join(lines), errors="surrogatepass")
        else:
            cells = ['"', ",", "\n", '""', "A:x", "B", "x.png", "\x00", "é", ""]
            rows = [",".join(rng.choice(cells) + rng.choice(cells) for _ in range(rng.randint(0, 9)))
                    for _ in range(5)]
            (root / rel).write_text("Figure_path,Question,Answer,Choice A,Choice B,Answer_label\n" + "\n".join(rows))
        res["tried"] += 1
        try:
            read_source(source, root, SourceOptions(out_dir=root / "_out"))
        except DataError:
            pass
        except Exception as e:  # noqa: BLE001 - the finding
            res["crashes"] += 1
            res["examples"].append(f"{source} #{i}: {type(e).__name__}: {str(e)[:200]}")
        shutil.rmtree(root, ignore_errors=True)
    return res


# ----------------------------------------------------------------------------- report
def table(r: dict, bad: dict, fz: dict) -> tuple[str, dict]:
    k, en, nf, rw, lk, ev = r["kill"], r["enospc"]["cases"], r["nonfinite"]["cases"], r["reward"], r["lock"], r["eval"]
    kinds = Counter(run["fault"].split(" #")[0].split(" +")[0].replace("write ", "write:") for run in k["runs"]
                    if not run["fault"].startswith("none"))
    rows = []
    rows.append(("SIGKILL during training (" + ", ".join(f"{n}x {kind}" for kind, n in sorted(kinds.items())) + ")",
                 k["injected"], k["resumed"], k["steps_lost"], k["crashes"],
                 "ok" if not k["problems"] else f"{len(k['problems'])} problem(s)",
                 f"{len(k['rounds'])} runs to max_steps, same data order: "
                 f"{all(x['same_data_order'] for x in k['rounds'])}, corrupt resume picks: {k['corrupt_picks']}"))
    en_ok = all(c["rc"] == 2 and "disk full" in c["error"] and c["pick_error"] is None and c["resume_rc"] == 0
                for c in en)
    rows.append(("disk full (ENOSPC) while saving", len(en), sum(c["resume_rc"] == 0 for c in en),
                 sum(max(0, 3 - (c["final_global_step"] or 0)) for c in en), sum(c["crashed"] for c in en),
                 "ok" if en_ok else "FAILED", "clear error, last complete checkpoint intact, resumed"))
    by = {c["case"]: c for c in nf}
    nf_ok = (by["nan-stop"]["rc"] == 2 and by["nan-stop"]["pick_error"] is None and by["nan-skip"]["rc"] == 0
             and by["inf-reward-stop"]["rc"] == 2 and all(c["warnings"] for c in nf))
    rows.append(("NaN loss (stop, skip), inf reward", len(nf), "-", "-", sum(c["crashed"] for c in nf),
                 "ok" if nf_ok else "FAILED", "step named in the log; stop keeps the last checkpoint"))
    rw_ok = rw["rc"] == 0 and rw["reward_errors_logged"] > 0
    rows.append(("reward function raising", 1, "-", "-", int(rw["crashed"]), "ok" if rw_ok else "FAILED",
                 f"scored 0, {int(rw['reward_errors_logged'])} errors counted in the logs"))
    lk_ok = lk["b_rc"] == 2 and lk["c_rc"] == 0 and lk["global_step"] == 3
    rows.append(("second run on the same output dir", 1, 1, 0, int(lk["b_crashed"] or lk["c_crashed"]),
                 "ok" if lk_ok else "FAILED", "refused while the first lived; took over after its SIGKILL"))
    ev_ok = ev["first_killed"] and ev["rerun_rc"] == 0 and ev["rerun_generated"] == ev["total"] - ev["cached"]
    rows.append(("evaluation SIGKILLed mid-run", 1, 1, 0, int(ev["crashed"]), "ok" if ev_ok else "FAILED",
                 f"rerun generated {ev['rerun_generated']} of {ev['total']}, {ev['cached']} from the cache"))
    rows.append(("bad-input corpus via prepare", bad["tried"], "-", "-", bad["crashes"],
                 "ok" if not bad["mismatches"] else f"{len(bad['mismatches'])} mismatch(es)",
                 "each skipped with a reason naming it, the rest processed"))
    rows.append(("fuzzed source files (JSON/JSONL/CSV)", fz["tried"], "-", "-", fz["crashes"],
                 "ok" if not fz["crashes"] else "FAILED", "rows, skips or a DataError"))
    net = (r.get("network_attempts", "") + bad["network"]).strip()
    totals = {
        "faults_injected": k["injected"] + len(en) + len(nf) + 1 + 1 + 1,
        "runs_resumed": k["resumed"] + sum(c["resume_rc"] == 0 for c in en) + 1 + 1,
        "steps_lost": k["steps_lost"] + rows[1][3],
        "bad_inputs_tried": bad["tried"] + fz["tried"],
        "crashes": sum(row[4] for row in rows),
        "network_connection_attempts": len(net.splitlines()) if net else 0,
    }
    ok = all(row[5] == "ok" for row in rows) and totals["steps_lost"] == 0 and totals["crashes"] == 0 and not net
    head = ("| fault | injected | runs resumed | steps lost | crashes | result | notes |\n"
            "|---|---:|---:|---:|---:|---|---|")
    lines = [head] + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    lines.append(f"| **total** | **{totals['faults_injected']} faults, {totals['bad_inputs_tried']} bad inputs** | "
                 f"**{totals['runs_resumed']}** | **{totals['steps_lost']}** | **{totals['crashes']}** | "
                 f"{'ok' if ok else 'FAILED'} | network connection attempts: {totals['network_connection_attempts']} |")
    totals["ok"] = ok
    return "\n".join(lines), totals


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python bench/fault_report.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fuzz", type=int, default=300, help="random files per run, spread over the 7 readers")
    p.add_argument("--workdir", default=None, help="default: a temporary folder, removed at the end")
    p.add_argument("--json", default=None, help="also write every detail here")
    a = p.parse_args(argv)
    work = Path(a.workdir or tempfile.mkdtemp(prefix="fault-report-"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    print(f"fault injection on the tiny model in {work} (network blocked) ...", file=sys.stderr, flush=True)
    r = run_harness(work / "faults", "--kills", str(a.kills), "--seed", str(a.seed), timeout=7200)
    print("bad-input corpus ...", file=sys.stderr, flush=True)
    bad = bad_corpus(work)
    print(f"fuzzing the readers ({a.fuzz} files) ...", file=sys.stderr, flush=True)
    fz = fuzz(work, a.fuzz, a.seed)
    text, totals = table(r, bad, fz)
    minutes = (time.perf_counter() - t0) / 60
    print(f"\nFault report: `python bench/fault_report.py --kills {a.kills} --seed {a.seed} --fuzz {a.fuzz}` "
          f"({minutes:.1f} min)\n")
    print(text)
    print(f"\nfaults injected: {totals['faults_injected']}, runs resumed: {totals['runs_resumed']}, "
          f"steps lost: {totals['steps_lost']}, bad inputs tried: {totals['bad_inputs_tried']}, "
          f"crashes: {totals['crashes']}")
    problems = r["kill"]["problems"] + bad["mismatches"] + fz["examples"]
    for line in problems[:20]:
        print(f"problem: {line}")
    if a.json:
        Path(a.json).write_text(json.dumps({"totals": totals, "faults": r, "bad_inputs": bad, "fuzz": fz},
                                           indent=1, default=str))
    if not a.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if totals["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
