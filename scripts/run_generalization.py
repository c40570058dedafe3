"""Med-R1's generalization study: train one GRPO run per manifest value (modality or question type).

    python scripts/run_generalization.py --config configs/medr1_modality.yaml --axis modality --runs runs/medr1_modality
        [--values CT,MRI] [--data_path DIR] [--launch "accelerate launch --config_file configs/accelerate/ddp.yaml"]
        [--dry_run] [-- any train_qlora_grpo.py flag, e.g. --max_steps 100]

Reads `DATA/manifests/<axis>.json` (written by `python -m medvqa_data.prepare ... --split <axis>`; DATA is
the config's `data_path` unless --data_path is given) and, for every value with training rows, runs

    train_qlora_grpo.py --config CONFIG --data_path DATA --train_subset AXIS=VALUE --output_dir RUNS/<value>

one after the other. Resumable: a value whose run finished (RUNS/<value>/DONE.json, written here after
the training script exits 0) is skipped; an interrupted one is started again and continues from its
last complete checkpoint (`resume: auto`). RUNS/runs.json lists every value, its run dir and status,
for the evaluation of the train-on-one / test-on-all matrix. Exit status: 0 when every run finished,
1 when some failed (the others still ran), 2 for bad arguments (one `error:` line).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from medvqa_data.errors import DataError  # noqa: E402
from medvqa_data.splits import read_manifest  # noqa: E402

DONE = "DONE.json"


class UsageError(Exception):
    """Bad arguments or inputs: printed as one `error:` line, exit 2."""


def run_dir_name(value: str) -> str:
    """A filesystem-safe directory name for a manifest value ("Disease Diagnosis" -> "Disease_Diagnosis")."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", str(value)).strip("._")
    return name or "value"


def config_value(config: str, key: str):
    import yaml

    try:
        data = yaml.safe_load(Path(config).read_text())
    except FileNotFoundError:
        raise UsageError(f"config file not found: {config}") from None
    except yaml.YAMLError as e:
        raise UsageError(f"config file {config} is not valid YAML: {e}") from None
    return data.get(key) if isinstance(data, dict) else None


def plan(data_path: str, axis: str, split: str, wanted: list[str] | None) -> list[str]:
    """The manifest values to train on (those with rows in `split`), in manifest order."""
    try:
        manifest = read_manifest(data_path, axis)
    except DataError as e:
        raise UsageError(str(e)) from None
    values = manifest["values"]
    if wanted:
        unknown = [v for v in wanted if v not in values]
        if unknown:
            raise UsageError(f"{axis} value(s) {unknown} not in {data_path}/manifests/{axis}.json; "
                             f"values: {', '.join(values)}")
    chosen = [v for v in (wanted or values) if values[v].get(split)]
    for v in wanted or values:
        if v not in chosen:
            print(f"skipping {axis}={v}: no {split} rows", flush=True)
    names = {}
    for v in chosen:
        other = names.setdefault(run_dir_name(v), v)
        if other != v:
            raise UsageError(f"{axis} values {other!r} and {v!r} map to the same run dir {run_dir_name(v)!r}")
    return chosen


def command(args, value: str, out: Path, extra: list[str]) -> list[str]:
    launch = shlex.split(args.launch) if args.launch else [sys.executable]
    cmd = [*launch, str(ROOT / "train_qlora_grpo.py"), "--config", args.config, "--data_path", args.data_path,
           "--train_subset", f"{args.axis}={value}", "--output_dir", str(out)]
    if out.is_dir() and any(out.iterdir()) and not any((p / "COMPLETE").is_file() for p in out.glob("checkpoint-*")):
        # Interrupted before its first complete checkpoint: nothing to resume, start the cell again.
        cmd += ["--overwrite_output_dir", "true"]
    return cmd + extra


def write_index(runs: Path, axis: str, data_path: str, status: dict) -> None:
    index = {"axis": axis, "data_path": data_path,
             "runs": [{"value": v, "run_dir": str(runs / run_dir_name(v)), "status": s} for v, s in status.items()]}
    tmp = runs / "runs.json.tmp"
    tmp.write_text(json.dumps(index, indent=2, ensure_ascii=False) + "\n")
    os.replace(tmp, runs / "runs.json")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:  # everything after `--` goes to train_qlora_grpo.py unchanged
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="training profile, e.g. configs/medr1_modality.yaml")
    parser.add_argument("--axis", required=True, choices=("modality", "question_type"), help="manifest to iterate")
    parser.add_argument("--runs", required=True, help="parent dir of the per-value run dirs")
    parser.add_argument("--data_path", default=None, help="prepared data dir (default: the config's data_path)")
    parser.add_argument("--values", default=None, help="comma-separated subset of the manifest values")
    parser.add_argument("--launch", default=None,
                        help='launcher prefix instead of this python, e.g. "accelerate launch --config_file '
                             'configs/accelerate/ddp.yaml"')
    parser.add_argument("--dry_run", action="store_true", help="print the commands, run nothing")
    args = parser.parse_args(argv)

    # Paths given here are relative to the current dir; the config's data_path, like training, to the repo root.
    args.config = str(Path(args.config).resolve())
    if args.data_path:
        args.data_path = str(Path(args.data_path).resolve())
    else:
        from_config = config_value(args.config, "data_path")
        if not from_config:
            raise UsageError(f"no data_path in {args.config}; pass --data_path")
        args.data_path = str(ROOT / from_config) if not Path(from_config).is_absolute() else from_config
    split = config_value(args.config, "train_split") or "train"
    wanted = [v.strip() for v in args.values.split(",") if v.strip()] if args.values else None
    values = plan(args.data_path, args.axis, split, wanted)
    if not values:
        raise UsageError(f"no {args.axis} value with {split} rows in {args.data_path}")

    runs = Path(args.runs).resolve()
    runs.mkdir(parents=True, exist_ok=True)
    status: dict[str, str] = {}
    for n, value in enumerate(values, 1):
        out = runs / run_dir_name(value)
        tag = f"[{n}/{len(values)}] {args.axis}={value}"
        if (out / DONE).is_file():
            print(f"{tag}: finished earlier ({out / DONE}), skipping", flush=True)
            status[value] = "done"
            continue
        cmd = command(args, value, out, extra)
        print(f"{tag}: {shlex.join(cmd)}", flush=True)
        if args.dry_run:
            status[value] = "planned"
            continue
        start = time.time()
        rc = subprocess.call(cmd, cwd=ROOT)
        seconds = round(time.time() - start, 1)
        if rc == 0:
            (out / DONE).write_text(json.dumps({"axis": args.axis, "value": value, "seconds": seconds,
                                                "command": cmd}, indent=2, ensure_ascii=False) + "\n")
            status[value] = "done"
            print(f"{tag}: finished in {seconds:.0f} s", flush=True)
        else:
            status[value] = f"failed (exit {rc})"
            print(f"{tag}: FAILED with exit status {rc} after {seconds:.0f} s; rerun this command to retry "
                  "(it resumes from the last complete checkpoint)", flush=True)
        write_index(runs, args.axis, args.data_path, status)
    if args.dry_run:
        print(f"dry run: {sum(s == 'planned' for s in status.values())} run(s) to start, "
              f"{sum(s == 'done' for s in status.values())} finished earlier", flush=True)
        return 0
    write_index(runs, args.axis, args.data_path, status)
    failed = [v for v, s in status.items() if s.startswith("failed")]
    print(f"{len(status) - len(failed)}/{len(status)} runs finished" + (f"; failed: {', '.join(failed)}" if failed else "")
          + f"; index: {runs / 'runs.json'}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
