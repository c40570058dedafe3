"""scripts/demo_report.py through its CLI: the table (with the trained-modality row), plots, JSON, errors."""

import json
from pathlib import Path

from tests.conftest import run_cli


def _metrics(cells: dict[str, tuple[int, int]]) -> dict:
    """metrics.json as eval.evaluate writes it, from {modality: (correct, n)}."""
    by_mod = {m: {"accuracy": c / n, "n": n, "correct": c} for m, (c, n) in cells.items()}
    correct, n = sum(c for c, _ in cells.values()), sum(n for _, n in cells.values())
    return {"overall": {"accuracy": correct / n, "n": n, "correct": correct}, "by_modality": by_mod,
            "by_question_type": {"Modality Recognition": {"accuracy": correct / n, "n": n}}}


def _write(d: Path, metrics: dict, log: list | None = None) -> Path:
    (d / "eval").mkdir(parents=True)
    (d / "eval" / "metrics.json").write_text(json.dumps(metrics))
    if log is not None:
        (d / "trainer_state.json").write_text(json.dumps({"log_history": log}))
    return d


def test_report_separates_trained_modalities_from_the_held_out_one(tmp_path):
    base = _write(tmp_path / "base", _metrics({"CT": (0, 40), "X-Ray": (0, 60), "Ultrasound": (0, 50)}))
    sft = _write(tmp_path / "sft", _metrics({"CT": (20, 40), "X-Ray": (30, 60), "Ultrasound": (0, 50)}))
    log = [{"step": s, "rewards/accuracy/mean": s / 100, "rewards/format/mean": 1.0, "reward": 1 + s / 100}
           for s in range(5, 55, 5)]
    grpo = _write(tmp_path / "grpo", _metrics({"CT": (40, 40), "X-Ray": (45, 60), "Ultrasound": (5, 50)}), log)
    out = tmp_path / "report"
    r = run_cli(["scripts/demo_report.py", "--runs", f"base={base}", f"sft={sft}", f"grpo={grpo}",
                 "--heldout", "Ultrasound", "--out", str(out)], timeout=300)
    assert r.returncode == 0, r.stderr
    table = json.loads((out / "comparison.json").read_text())["table"]
    assert table["trained_modalities"] == {"base": 0.0, "sft": 0.5, "grpo": 0.85}
    assert abs(table["overall"]["grpo"] - 90 / 150) < 1e-9
    md = (out / "report.md").read_text()
    assert "| trained modalities (new images; without Ultrasound) | 0.0 | 50.0 | 85.0 | +50.0 | +35.0 |" in md
    assert "| Ultrasound (never trained on) | 0.0 | 0.0 | 10.0 | +0.0 | +10.0 |" in md
    assert "0.075 (first quarter of logged steps) → 0.475 (last quarter)" in md
    for png in ("rewards.png", "per_modality.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert str(out / "report.md") in r.stdout


def test_missing_metrics_and_bad_run_spec_are_clear_errors(tmp_path):
    r = run_cli(["scripts/demo_report.py", "--runs", f"sft={tmp_path / 'nope'}", "--out", str(tmp_path / "o")])
    assert r.returncode == 2 and "no metrics.json" in r.stderr and "evaluate the run first" in r.stderr
    r = run_cli(["scripts/demo_report.py", "--runs", str(tmp_path), "--out", str(tmp_path / "o")])
    assert r.returncode == 2 and "NAME=DIR" in r.stderr
    assert not (tmp_path / "o").exists()
