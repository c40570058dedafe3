"""Model card: front matter, sections, rewards, hyperparameters and a metrics table that matches
eval/metrics.json, for GRPO and SFT run dirs."""

import json

import pytest
import yaml

from qlora_grpo import model_card
from qlora_grpo.errors import UserError

METRICS = {  # eval/metrics.py schema_version 1
    "schema_version": 1,
    "overall": {"accuracy": 0.6667, "n": 12, "correct": 8, "ci95": [0.4167, 0.9167]},
    "by_modality": {"CT": {"accuracy": 0.5, "n": 2, "ci95": [0.0, 1.0]},
                    "MRI": {"accuracy": 0.75, "n": 4, "ci95": [0.25, 1.0]},
                    "X-Ray": {"accuracy": 0.6667, "n": 6, "ci95": [0.3333, 1.0]}},
    "by_question_type": {"Modality Recognition": {"accuracy": 0.6667, "n": 12, "ci95": [0.4167, 0.9167]}},
    "by_dataset": {},
    "unparsed_rate": 0.0833,
    "format_rate": 0.9167,
    "format_violation_rate": 0.0833,
    "open": {"n": 0, "exact_match": None, "token_recall": None, "token_f1": None, "exact_match_ci95": None,
             "unparsed_rate": None, "by_dataset": {}},
    "n_predictions": 12,
    "n_closed": 12,
    "n_open": 0,
    "template": "think",
    "mode": "default",
}
SECTIONS = ["## Model", "## Training data", "## Prompt template", "## Hyperparameters", "## Evaluation",
            "## How to use", "## Intended use", "## Limitations and clinical safety"]


def _front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


@pytest.fixture
def grpo_run(tmp_path):
    run = tmp_path / "grpo_run"
    (run / "eval").mkdir(parents=True)
    cfg = {"output_dir": str(run), "model_name_or_path": "Qwen/Qwen2-VL-2B-Instruct", "quantization": "nf4",
           "lora_r": 64, "lora_alpha": 128, "lora_dropout": 0.05, "template": "think-after",
           "prompt_mode": "default", "data_path": str(tmp_path / "nodata"), "train_split": "train",
           "exclude_modalities": ["Fundus"], "min_pixels": 3136, "max_pixels": 200704,
           "reward_funcs": ["format", "accuracy", "reasoning"], "reward_weights": [0.5, 1.0, 0.25],
           "num_generations": 6, "learning_rate": 1e-5, "max_steps": 300, "beta": 0.04, "max_completion_length": 256}
    (run / "run_config.yaml").write_text("# resolved config; backend: unsloth\n" + yaml.safe_dump(cfg))
    (run / "eval" / "metrics.json").write_text(json.dumps(METRICS))
    (run / "README.md").write_text("---\nlibrary_name: peft\n---\n# Model Card for grpo_run\nTRL's generic card\n")
    return run


def test_grpo_card(grpo_run):
    path = model_card.write_model_card(grpo_run)
    assert path == grpo_run / "README.md"
    text = path.read_text()
    assert "TRL's generic card" not in text  # overwritten
    fm = _front_matter(text)
    assert fm["base_model"] == "Qwen/Qwen2-VL-2B-Instruct" and fm["library_name"] == "peft"
    assert {"grpo", "qlora", "medical", "base_model:adapter:Qwen/Qwen2-VL-2B-Instruct"} <= set(fm["tags"])
    for section in [*SECTIONS, "## Rewards"]:
        assert f"\n{section}\n" in text, section
    assert "not a medical device" in text and "Research use only" in text and "validated on patients" in text
    assert "4-bit NF4" in text and "r=64, alpha=128" in text
    assert "Template `think-after`" in text and "<answer>...</answer>" in text
    for reward, weight in (("format", "0.5"), ("accuracy", "1"), ("reasoning", "0.25")):
        assert f"| `{reward}` | {weight} |" in text
    assert "| Learning rate (`learning_rate`) | 1e-05 |" in text
    assert "| Completions per prompt (G) (`num_generations`) | 6 |" in text
    assert "Fundus" in text  # held-out modality


def test_metrics_table_matches_metrics_json(grpo_run):
    text = model_card.render_model_card(grpo_run)
    o = METRICS["overall"]
    assert (f"| **Overall** | **{100 * o['accuracy']:.1f}** | {100 * o['ci95'][0]:.1f}–{100 * o['ci95'][1]:.1f} "
            f"| {o['n']} |") in text
    for name, v in METRICS["by_modality"].items():
        row = f"| {name} | {100 * v['accuracy']:.1f} | {100 * v['ci95'][0]:.1f}–{100 * v['ci95'][1]:.1f} | {v['n']} |"
        assert row in text, row
    assert "| **Overall** | **66.7** | 41.7–91.7 | 12 |" in text and "| MRI | 75.0 | 25.0–100.0 | 4 |" in text
    assert "format followed: 91.7%" in text and "unparsed answers: 8.3%" in text
    assert "Open questions" not in text  # n == 0


def test_open_questions_row(grpo_run):
    metrics = {**METRICS, "open": {"n": 5, "exact_match": 0.4, "token_f1": 0.55, "token_recall": 0.6}}
    (grpo_run / "eval" / "metrics.json").write_text(json.dumps(metrics))
    assert "| all | 40.0 | 55.0 | 5 |" in model_card.render_model_card(grpo_run)


def test_sft_card_without_metrics(tmp_path):
    run = tmp_path / "sft_run"
    run.mkdir()
    cfg = {"model_name_or_path": "runs/tiny-qwen2-vl", "quantization": "none", "template": "think",
           "sft_target": "reasoning", "max_length": None, "data_path": "runs/data/sample"}
    (run / "run_config.yaml").write_text("# resolved config (SFT); backend: hf\n" + yaml.safe_dump(cfg))
    text = model_card.write_model_card(run).read_text()
    fm = _front_matter(text)
    assert "sft" in fm["tags"] and "qlora" not in fm["tags"] and "grpo" not in fm["tags"]
    for section in [*SECTIONS, "## Training objective"]:
        assert f"\n{section}\n" in text, section
    assert "## Rewards" not in text and "sft_target: reasoning" in text
    assert "No evaluation results" in text and "16-bit (LoRA, no quantization)" in text


def test_missing_run_config(tmp_path, capsys):
    with pytest.raises(UserError, match="run_config.yaml"):
        model_card.write_model_card(tmp_path)
    assert model_card.main([str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.startswith("error: run directory not found")


def test_cli(grpo_run, capsys):
    assert model_card.main([str(grpo_run)]) == 0
    assert "model card written" in capsys.readouterr().out


def test_judge_scores_in_card(grpo_run):
    """eval.judge's judge/metrics.json (rubric, pairwise, open) appears in the card when present."""
    assert "LLM-judge" not in model_card.render_model_card(grpo_run)  # not judged: no section
    judge = {"schema_version": 1, "judge": {"model": "/models/Judge-7B", "prompt_sha256": "ab" * 32},
             "rubric": {"mean": 3.4, "ci95": [3.1, 3.7], "n_judged": 10, "n_unparsable": 2},
             "pairwise": {"baseline": "sft", "n_judged": 8, "win": {"rate": 0.5}, "tie": {"rate": 0.375},
                          "loss": {"rate": 0.125}},
             "open": {"n_judged": 4, "judge_match": {"rate": 0.75}, "exact_match": 0.5, "agreement_exact": 0.75}}
    (grpo_run / "judge").mkdir()
    (grpo_run / "judge" / "metrics.json").write_text(json.dumps(judge))
    text = model_card.render_model_card(grpo_run)
    assert "### LLM-judge scores" in text and "Judge `Judge-7B`" in text and "abababababababab" in text
    assert "mean **3.40** (95% CI 3.10–3.70, 10 judged, 2 unparsable)" in text
    assert "Pairwise vs `sft` (position-swapped): win 50.0%, tie 37.5%, loss 12.5% (n=8)" in text
    assert "judged equivalent to the gold: 75.0% (exact match 50.0%, agreement 75.0%)" in text
    assert "not a clinician" in text
