"""bench/memory_throughput.py: the CPU smoke run end to end, plus its pure parts (bench/throughput/)
and tiny.build_arch."""

import json
import time
from pathlib import Path

import pytest

from bench.throughput import report
from tests.conftest import ROOT, run_cli

SCRIPT = ROOT / "bench" / "memory_throughput.py"


def test_smoke_writes_results_table_and_plots(tmp_path, tiny_model):
    from PIL import Image

    out = tmp_path / "out"
    t0 = time.perf_counter()
    # --model-path reuses the session's tiny test model (what --smoke would otherwise build itself).
    r = run_cli([str(SCRIPT), "--smoke", "--out", str(out), "--model-path", f"tiny-test={tiny_model}"], timeout=900)
    seconds = time.perf_counter() - t0
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    assert res["smoke"] and res["device"]["gpu"] is False
    runs = {r["mode"]: r for r in res["runs"]}
    assert set(runs) == {"lora-fp32", "qlora-hf", "qlora-unsloth"}
    assert runs["qlora-unsloth"]["status"] == "skipped" and "GPU" in runs["qlora-unsloth"]["note"]
    for mode in ("lora-fp32", "qlora-hf"):
        run = runs[mode]
        assert run["status"] == "ok", run
        assert run["peak_allocated_gb"] is None and run["peak_reserved_gb"] is None  # no GPU figures
        assert run["roofline_fraction"] is None and run["bandwidth_gbs"] is None
        assert run["completion_tokens"] == {"min": 8, "max": 8, "mean": 8.0}  # forced length
        assert run["prompt_tokens_mean"] == 128.0  # padded to the target
        assert run["step_s"] > 0 and run["generation_s"] > 0 and run["optimization_s"] > 0
        assert run["generated_tokens_per_s"] > 0 and run["trained_tokens_per_s"] > 0
        assert run["decode_weight_bytes"] > 0
    assert runs["qlora-hf"]["decode_weight_bytes"] < runs["lora-fp32"]["decode_weight_bytes"]  # 4-bit weights
    fit = res["fit_scan"]["results"]  # on CPU the default point is answered by the main runs
    assert [(e["mode"], e["max_num_generations"], e["max_completion_length"]) for e in fit] == [
        ("lora-fp32", 2, 8), ("qlora-hf", 2, 8)]
    assert res["fit_scan"]["probes"] == []
    assert len(res["targets"]) == 7 and all(t["pass"] is None for t in res["targets"])
    table = (out / "table.md").read_text()
    assert "| tiny-test | lora-fp32 |" in table and "measured / target" in table
    for png in ("memory.png", "throughput.png"):
        with Image.open(out / png) as im:
            im.verify()
    print(f"smoke run: {seconds:.0f}s")


@pytest.mark.slow
def test_smoke_fit_scan_runs_a_probe_process(tmp_path, tiny_model):
    out = tmp_path / "out"
    r = run_cli([str(SCRIPT), "--smoke", "--out", str(out), "--model-path", f"tiny-test={tiny_model}",
                 "--modes", "lora-fp32", "--fit-l-grid", "8", "16"], timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    fit = json.loads((out / "results.json").read_text())["fit_scan"]
    assert [(p["G"], p["L"], p["status"]) for p in fit["probes"]] == [(2, 16, "ok")]
    assert fit["results"][0]["max_completion_length"] == 16


def _fake_results(tmp_path: Path) -> Path:
    runs = [
        {"model": "qwen2-vl-2b", "mode": "lora-bf16", "status": "ok", "peak_reserved_gb": 20.0, "step_s": 10.0},
        {"model": "qwen2-vl-2b", "mode": "qlora-hf", "status": "ok", "peak_reserved_gb": 7.0, "step_s": 14.0},
        {"model": "qwen2-vl-2b", "mode": "qlora-unsloth", "status": "ok", "peak_reserved_gb": 6.0, "step_s": 9.0},
        {"model": "qwen2-vl-7b", "mode": "qlora-unsloth", "status": "oom"},
    ]
    results = {"date": "2026-01-01", "commit": "abc", "command": "python bench/memory_throughput.py",
               "device": {"gpu": True, "name": "Test GPU", "total_memory_gb": 80.0}, "runs": runs,
               "targets": report.targets(runs)}
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    return path


def test_targets_measured_against_issue_targets(tmp_path):
    res = json.loads(_fake_results(tmp_path).read_text())
    t = {x["target"]: x for x in res["targets"]}
    assert t["Qwen2-VL-2B qlora-unsloth peak reserved"]["pass"] is True
    assert t["Qwen2-VL-2B qlora-unsloth peak reserved / lora-bf16"]["measured"] == 0.3
    assert t["Qwen2-VL-2B step throughput qlora-unsloth / qlora-hf"]["measured"] == pytest.approx(1.556, abs=1e-3)
    assert t["Qwen2-VL-2B step throughput qlora-unsloth / qlora-hf"]["pass"] is True
    assert t["Qwen2-VL-7B qlora-unsloth peak reserved"]["pass"] is None  # oom run: not measured


def test_update_readme_rewrites_only_the_marked_section(tmp_path):
    from bench.throughput import report as bench
    results = _fake_results(tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\nbefore\n{bench.README_START}\nold table\n{bench.README_END}\nafter\n")
    r = run_cli([str(SCRIPT), "--update-readme", "--results", str(results), "--readme", str(readme)], timeout=120)
    assert r.returncode == 0, r.stderr
    text = readme.read_text()
    assert text.startswith("# Title\n\nbefore\n") and text.endswith("after\n") and "old table" not in text
    assert "Test GPU" in text and "| qwen2-vl-2b | qlora-unsloth |" in text
    assert "python bench/memory_throughput.py" in text and "measured / target" in text
    readme.write_text("# no markers\n")
    assert bench.update_readme(results, readme) is False
    assert readme.read_text() == "# no markers\n"


def test_largest_fitting_binary_search():
    from bench.throughput import fit_scan as bench
    grid = [2, 4, 6, 8, 12, 16, 24, 32]
    calls = []

    def fits(v):
        calls.append(v)
        return v <= 12

    assert bench.largest_fitting(grid, fits, start=3) == 12
    assert calls[0] == 8 and len(calls) <= 4
    assert bench.largest_fitting(grid, lambda v: False) is None
    assert bench.largest_fitting(grid, lambda v: True) == 32
    assert bench.largest_fitting(grid, lambda v: True, hi=3) == 6  # bounded by a larger cap's result


def test_build_arch_presets_have_the_real_parameter_counts():
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2VLForConditionalGeneration

    from qlora_grpo import tiny

    expected = {"qwen2-vl-2b": 2_208_985_600, "qwen2-vl-7b": 8_291_375_616, "qwen2.5-vl-3b": 3_754_622_976}
    tok = tiny.build_tokenizer()
    for arch, n in expected.items():
        cfg = tiny.arch_config(arch, tok)
        cls = Qwen2_5_VLForConditionalGeneration if cfg.model_type == "qwen2_5_vl" else Qwen2VLForConditionalGeneration
        with torch.device("meta"):
            model = cls(cfg)
        assert sum(p.numel() for p in model.parameters()) == n, arch


@pytest.mark.parametrize("model_type", ["qwen2_vl", "qwen2_5_vl"])
@pytest.mark.parametrize("tied", [True, False])
def test_build_arch_writes_a_loadable_sharded_bf16_checkpoint(tmp_path, model_type, tied):
    import torch
    from transformers import AutoModelForImageTextToText

    from qlora_grpo import tiny

    vision = (dict(depth=2, embed_dim=32, num_heads=2, mlp_ratio=4) if model_type == "qwen2_vl" else
              dict(depth=2, hidden_size=32, num_heads=2, intermediate_size=64, hidden_act="silu", window_size=112,
                   fullatt_block_indexes=[1], tokens_per_second=2))
    arch = dict(model_type=model_type, hidden=64, inter=128, layers=2, heads=2, kv_heads=1, vocab=2048, tied=tied,
                vision=vision, mrope_section=[4, 6, 6])
    out = tiny.build_arch(tmp_path / "m", arch, seed=0, shard_gb=0.0002)
    assert (out / "model.safetensors.index.json").is_file()  # several shards
    model, info = AutoModelForImageTextToText.from_pretrained(out, output_loading_info=True)
    assert not any(info.values()), info  # no missing / unexpected / mismatched keys
    assert model.dtype == torch.bfloat16 and model.config.model_type == model_type
    assert model.config.text_config.vocab_size == 2048
