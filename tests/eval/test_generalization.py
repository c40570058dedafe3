"""eval.generalization end to end: 2 tiny adapters x 2 test sets (+ the base model), cached cells."""

from __future__ import annotations

import csv
import json

import pytest

from tests.eval.conftest import FAST
from tests.eval.test_score import _png_ok


def test_generalization_end_to_end(tiny_model, sample_prepared, lora_runs, tmp_path, monkeypatch, capsys,
                                   one_thread):
    out = tmp_path / "gen"
    args = ["--runs-dir", str(lora_runs), "--data", str(sample_prepared),
            "--axis", "modality", "--out", str(out), "--model", str(tiny_model), "--base", "--columns", "CT,MRI",
            "--limit", "2", "--batch-size", "2", "--max-new-tokens", "4", *FAST]
    # the command line, in-process (the model libraries are already imported by the fixtures)
    from eval.generalization import main

    assert main(args) == 0
    err = capsys.readouterr().err
    # the question-type run and the unfinished run are skipped, with the reason
    assert "qtype-run" in err and "not a modality run" in err
    assert "unfinished" in err and "no adapter_config.json" in err
    # rows: base, CT (from run-a's train_subset), MRI (from the dir name); columns CT, MRI
    with open(out / "matrix.csv") as f:
        table = list(csv.reader(f))
    assert table[0] == ["trained_on", "CT", "MRI", "mean", "mean_unseen"]
    assert [row[0] for row in table[1:]] == ["base", "CT", "MRI"]
    for row in table[1:]:
        for cell in row[1:3]:
            assert 0.0 <= float(cell) <= 100.0
    res = json.loads((out / "generalization.json").read_text())
    assert res["rows"] == ["base", "CT", "MRI"] and res["columns"] == ["CT", "MRI"]
    assert res["n"] == {"CT": 2, "MRI": 2}
    assert res["runs"]["CT"]["template"] == "no-think" and res["runs"]["MRI"]["template"] == "think"
    assert res["runs"]["base"]["template"] == "zero-shot"
    acc = res["accuracy"]
    assert set(res["delta"]) == {"CT", "MRI"}
    for run in ("CT", "MRI"):
        for col in ("CT", "MRI"):
            assert res["delta"][run][col] == pytest.approx(acc[run][col] - acc["base"][col], abs=0.011)
    md = (out / "matrix.md").read_text()
    assert "| trained on \\ tested on | CT | MRI | mean | mean unseen |" in md and "heatmap.png" in md
    assert (out / "delta.csv").is_file() and "points vs the base model" in (out / "delta.md").read_text()
    _png_ok(out / "heatmap.png")
    _png_ok(out / "heatmap_delta.png")
    for row in ("base", "CT", "MRI"):
        for col in ("CT", "MRI"):
            cell = out / "cells" / row / col
            assert len((cell / "predictions.jsonl").read_text().splitlines()) == 2
            assert json.loads((cell / "metrics.json").read_text())["overall"]["n"] == 2
    before = (out / "matrix.csv").read_text()

    # rerun in-process: every cell is cached, no model is loaded
    import qlora_grpo.model as qm
    from eval.generalization import generalization

    def no_model(*a, **k):
        raise AssertionError("a finished cell was evaluated again")

    monkeypatch.setattr(qm, "load_for_inference", no_model)
    logs = []
    generalization(lora_runs, sample_prepared, "modality", out, model=str(tiny_model), base=True, limit=2,
                   batch_size=2, max_new_tokens=4, min_pixels=3136, max_pixels=12544, columns=["CT", "MRI"],
                   log=lambda *a, **k: logs.append(" ".join(map(str, a))))
    cached = [line for line in logs if line.startswith("cell ")]
    assert len(cached) == 6 and all(line.endswith("[cached]") for line in cached)
    assert (out / "matrix.csv").read_text() == before

    # the matrix and its means come from the cells' metrics: give the cells distinct accuracies, rerun
    # (all cached) and recompute every number from the cell files
    given = {("base", "CT"): 0.25, ("base", "MRI"): 0.5, ("CT", "CT"): 1.0, ("CT", "MRI"): 0.0,
             ("MRI", "CT"): 0.125, ("MRI", "MRI"): 0.75}
    for (row, col), a in given.items():
        mfile = out / "cells" / row / col / "metrics.json"
        m = json.loads(mfile.read_text())
        m["overall"]["accuracy"] = a
        mfile.write_text(json.dumps(m))
    generalization(lora_runs, sample_prepared, "modality", out, model=str(tiny_model), base=True, limit=2,
                   batch_size=2, max_new_tokens=4, min_pixels=3136, max_pixels=12544, columns=["CT", "MRI"],
                   log=lambda *a, **k: None)
    cell = {k: 100 * json.loads((out / "cells" / k[0] / k[1] / "metrics.json").read_text())["overall"]["accuracy"]
            for k in given}
    with open(out / "matrix.csv") as f:
        table = {row[0]: row[1:] for row in list(csv.reader(f))[1:]}
    res = json.loads((out / "generalization.json").read_text())
    for row in ("base", "CT", "MRI"):
        vals = [cell[row, "CT"], cell[row, "MRI"]]
        unseen = [cell[row, c] for c in ("CT", "MRI") if c != row]
        mean, mean_unseen = round(sum(vals) / 2, 2), (round(sum(unseen) / len(unseen), 2) if row != "base" else None)
        assert [float(x) for x in table[row][:3]] == [*vals, mean]
        assert table[row][3] == ("" if mean_unseen is None else f"{mean_unseen:.2f}")
        assert res["summary"][row] == {"mean": mean, "mean_unseen": mean_unseen}
        assert res["accuracy"][row] == {"CT": vals[0], "MRI": vals[1]}
    assert table["CT"][2:] == ["50.00", "0.00"] and table["MRI"][2:] == ["43.75", "12.50"]  # by hand
    assert res["delta"]["CT"] == {"CT": 75.0, "MRI": -50.0} and res["delta"]["MRI"] == {"CT": -12.5, "MRI": 25.0}
    assert "| CT | **100.00** | 0.00 | 50.00 | 0.00 |" in (out / "matrix.md").read_text()


def test_run_dir_to_train_value_mapping(tmp_path):
    from eval.generalization import discover_runs, match_value
    from qlora_grpo.errors import UserError

    values = ["CT", "MRI", "X-Ray", "Disease Diagnosis"]
    assert match_value("x-ray", values) == "X-Ray" and match_value("xray", values) == "X-Ray"
    assert match_value("disease_diagnosis", values) == "Disease Diagnosis"
    assert match_value("grpo-ct-run", values) is None
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "adapter_config.json").write_text("{}")
        (tmp_path / name / "run_config.yaml").write_text("train_subset: modality=CT\n")
    with pytest.raises(UserError, match="several runs"):
        discover_runs(tmp_path, "modality", values)
    (tmp_path / "b" / "run_config.yaml").write_text("train_subset: \"modality='X-Ray'\"\n")
    found, notes = discover_runs(tmp_path, "modality", values)
    assert [(v, p.name) for v, p, _ in found] == [("CT", "a"), ("X-Ray", "b")] and not notes
