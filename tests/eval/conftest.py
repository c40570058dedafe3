"""Fixtures of the eval tests: two tiny LoRA runs, a hand-made predictions file, one-thread torch."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

# One torch thread: on a small shared CPU two threads that wait on each other make the tiny model
# ~10x slower (subprocesses get the same through OMP_NUM_THREADS).
CLI_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
FAST = ["--max-pixels", "12544", "--min-pixels", "3136"]


@pytest.fixture()
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _save_adapter(model_dir: Path, out: Path, seed: int, run_config: dict | None) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2VLForConditionalGeneration

    torch.manual_seed(seed)
    base = Qwen2VLForConditionalGeneration.from_pretrained(model_dir)
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=r".*language_model.*\.(q_proj|v_proj)",
                     init_lora_weights=False)  # random A and B: the adapter changes the outputs
    get_peft_model(base, cfg).save_pretrained(out)
    if run_config is not None:
        (out / "run_config.yaml").write_text(yaml.safe_dump(run_config))
    return out


@pytest.fixture(scope="session")
def lora_runs(tiny_model, tmp_path_factory) -> Path:
    """A runs dir like a generalization sweep: CT (mapped through run_config.yaml's train_subset),
    MRI (mapped through its directory name), one question-type run and one unfinished run (skipped)."""
    runs = tmp_path_factory.mktemp("runs")
    common = {"model_name_or_path": str(tiny_model), "quantization": "none", "min_pixels": 3136,
              "max_pixels": 12544, "prompt_mode": "default"}
    _save_adapter(tiny_model, runs / "run-a", 1, {**common, "template": "no-think", "train_subset": "modality=CT"})
    _save_adapter(tiny_model, runs / "mri", 2, None)
    shutil.copytree(runs / "mri", runs / "qtype-run")
    (runs / "qtype-run" / "run_config.yaml").write_text(
        yaml.safe_dump({**common, "template": "think", "train_subset": "question_type=Modality Recognition"}))
    (runs / "unfinished").mkdir()
    (runs / "unfinished" / "run_config.yaml").write_text("template: think\n")
    return runs


# --------------------------------------------------------------------------- hand-computed predictions
def _rec(i, completion, answer, options=(), letter="", answer_type="closed", modality="CT",
         question_type="Modality Recognition", dataset="D1"):
    return {"id": f"q{i}", "modality": modality, "question_type": question_type, "dataset": dataset,
            "options": list(options), "answer": answer, "answer_letter": letter, "answer_type": answer_type,
            "completion": completion}


#: 6 closed (5 multiple choice + 1 yes/no without options) and 2 open questions, template "think".
HAND_RECORDS = [
    # default: correct (A);              paper: correct
    _rec(1, "<think>looks like CT</think><answer>A</answer>", "CT", ["CT", "MRI", "X-Ray"], "A"),
    # default: correct ("B)" = B);      paper: wrong, unparsed (\w+ then </answer> does not match "B)")
    _rec(2, "<think>t</think>\n<answer>B)</answer>", "MRI", ["CT", "MRI"], "B"),
    # default: wrong (A);               paper: wrong (parsed A)
    _rec(3, "<think>t</think><answer>A</answer>", "X-Ray", ["CT", "MRI", "X-Ray", "US"], "C", modality="MRI"),
    # default: wrong, unparsed, format violation (no tags); paper: wrong, unparsed, format violation
    _rec(4, "The answer is A", "CT", ["CT", "MRI"], "A", modality="MRI", question_type="Anatomy Identification"),
    # default: correct (option text);   paper: wrong, unparsed ("OCT" is not a letter)
    _rec(5, "<think>t</think><answer>OCT</answer>", "OCT", ["Fundus", "OCT"], "B", modality="OCT",
         question_type="Anatomy Identification", dataset="D2"),
    # yes/no without options (VQA-RAD style), default: correct (polarity); paper: wrong, unparsed
    _rec(6, "<think>t</think><answer>Yes, there is a mass.</answer>", "yes", modality="X-Ray", dataset="D2"),
    # open: default exact 1, recall 1, F1 1 (articles removed); paper: unparsed -> 0, 0, 0
    _rec(7, "<think>t</think><answer>the left lung</answer>", "left lung", answer_type="open", dataset="D2"),
    # open: exact 0, recall 1/2, F1 2/3 (both modes)
    _rec(8, "<think>t</think><answer>kidney</answer>", "right kidney", answer_type="open", dataset="D2"),
]


@pytest.fixture()
def hand_predictions(tmp_path) -> Path:
    path = tmp_path / "hand.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in HAND_RECORDS))
    return path
