"""Rollout generation kwargs per engine (defect 1) and forced left padding in eval/infer (defect 2)."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from qlora_grpo.errors import UserError
from qlora_grpo.generation import VLLM_SAMPLING_PARAMS_FIELDS, rollout_generation_kwargs

# vLLM's SamplingParams fields, transcribed from vllm/sampling_params.py (vllm-project/vllm, commit
# 00388f6573ccfcffad607b8c9ecdf341a4669ceb; requirements-vllm.txt pins vllm 0.33.0, whose tag was not
# available to compare). vLLM is not installed on CPU machines; this copy is checked against the one the
# code uses, so an edit of either shows.
VLLM_033_FIELDS = {
    "n", "presence_penalty", "frequency_penalty", "repetition_penalty", "temperature", "top_p", "top_k",
    "min_p", "seed", "stop", "stop_token_ids", "ignore_eos", "max_tokens", "min_tokens", "logprobs",
    "prompt_logprobs", "prompt_logprob_token_ids", "prompt_logprob_start", "logprob_token_ids", "flat_logprobs",
    "detokenize", "skip_special_tokens", "spaces_between_special_tokens", "include_stop_str_in_output",
    "output_kind", "stream_interval", "skip_clone", "output_text_buffer_length", "structured_outputs",
    "logit_bias", "allowed_token_ids", "extra_args", "bad_words", "skip_reading_prefix_cache",
    "thinking_token_budget", "repetition_detection", "routed_experts_prompt_start", "trace_decode_token_ids",
}
# The keys TRL 1.15's colocated vLLM generation sets itself before adding ours (trl/generation/vllm_generation.py).
TRL_COLOCATE_KEYS = {"n", "repetition_penalty", "temperature", "top_p", "top_k", "min_p", "max_tokens", "logprobs"}


def test_field_list_is_vllms():
    assert VLLM_SAMPLING_PARAMS_FIELDS == VLLM_033_FIELDS
    assert "suppress_tokens" not in VLLM_033_FIELDS and "min_new_tokens" not in VLLM_033_FIELDS


def test_vllm_path_bans_vision_tokens_with_logit_bias():
    kw = rollout_generation_kwargs({"min_tokens": 8, "logit_bias": {"5": 1.0}}, [151652, 151655], vllm=True)
    assert set(kw) | TRL_COLOCATE_KEYS <= VLLM_033_FIELDS  # SamplingParams(**kw) takes every key
    assert kw["logit_bias"] == {5: 1.0, 151652: -100.0, 151655: -100.0}
    assert kw["min_tokens"] == 8


def test_hf_path_uses_suppress_tokens():
    kw = rollout_generation_kwargs({"min_new_tokens": 4, "suppress_tokens": [7]}, [9, 3], vllm=False)
    assert kw == {"min_new_tokens": 4, "suppress_tokens": [3, 7, 9]}


def test_vllm_path_refuses_transformers_names():
    with pytest.raises(UserError, match=r"min_new_tokens.*min_new_tokens -> min_tokens"):
        rollout_generation_kwargs({"min_new_tokens": 4}, [1], vllm=True)


def test_build_trainer_vllm_path_passes_only_sampling_params_fields(tiny_model, monkeypatch, tmp_path):
    """Through the entry script's build_trainer: fast_inference -> the GRPOTrainer gets vLLM-valid kwargs."""
    import trl

    import train_qlora_grpo as tq
    from qlora_grpo import model as qmodel
    from qlora_grpo.config import MedGRPOConfig, parse_config

    cfg = parse_config(["--config", "configs/cpu_demo.yaml", "--model_name_or_path", str(tiny_model),
                        "--output_dir", str(tmp_path / "run"), "--max_steps", "1", "--report_to", "none"],
                       MedGRPOConfig)
    cfg.fast_inference = True
    processor = qmodel.load_processor(str(tiny_model), cfg.min_pixels, cfg.max_pixels)
    monkeypatch.setattr(qmodel, "load_for_training", lambda c: (torch.nn.Linear(1, 1), processor, "unsloth"))
    seen = {}

    class Stop(Exception):
        pass

    def recorder(*a, args=None, **k):
        seen.update(args.generation_kwargs)
        raise Stop

    monkeypatch.setattr(trl, "GRPOTrainer", recorder)
    rows = [{"id": "1", "question": "q?", "options": ["A", "B"], "answer": "A", "image": "x.png"}]
    monkeypatch.setattr("medvqa_data.dataset.to_trl", lambda *a, **k: rows)
    with pytest.raises(Stop):
        tq.build_trainer(cfg, rows)
    assert set(seen) <= VLLM_033_FIELDS, set(seen) - VLLM_033_FIELDS
    assert set(seen["logit_bias"]) == set(qmodel.vision_special_token_ids(processor))


# ----------------------------------------------------------------------------- defect 2: left padding
class RecordingModel:
    """Stand-in for the model: records the attention mask it is given, answers one token per prompt."""

    device = torch.device("cpu")

    def __init__(self):
        from transformers import Qwen2VLConfig

        self.masks = []
        self.config = Qwen2VLConfig()  # the family registry reads the resize numbers from it

    def generate(self, input_ids, attention_mask, **kw):
        self.masks.append(attention_mask.clone())
        return torch.cat([input_ids, input_ids[:, -1:]], dim=1)


def _rows(tmp_path):
    img = tmp_path / "img.png"
    Image.new("RGB", (64, 64), (90, 20, 200)).save(img)
    return [{"id": "s", "question": "CT?", "options": ["CT", "MRI"], "image": str(img)},
            {"id": "l", "question": "Which imaging modality was used to acquire this long scan " * 4,
             "options": ["CT", "MRI", "X-Ray", "Ultrasound"], "image": str(img)}]


def test_evaluate_pads_left_even_after_a_right_padding_trainer(tiny_model, tmp_path):
    from eval.evaluate import generate_batch
    from qlora_grpo.model import load_processor

    processor = load_processor(str(tiny_model), 3136, 12544)
    processor.tokenizer.padding_side = "right"  # what Unsloth's patched trainers leave behind
    model = RecordingModel()
    generate_batch(model, processor, _rows(tmp_path), "no-think", "default", 4, 3136, 12544)
    mask = model.masks[0]
    assert (mask[:, -1] == 1).all() and (mask[:, 0] == 0).any()  # padding at the start of the short prompt
    assert processor.tokenizer.padding_side == "right"  # restored for whoever set it


def test_infer_pads_left_whatever_the_processor_says(tiny_model, tmp_path, monkeypatch):
    from qlora_grpo.infer import Predictor
    from qlora_grpo.model import load_processor

    processor = load_processor(str(tiny_model), 3136, 12544)
    processor.tokenizer.padding_side = "right"
    sides = []
    call = type(processor).__call__
    monkeypatch.setattr(type(processor), "__call__",
                        lambda self, *a, **k: sides.append(self.tokenizer.padding_side) or call(self, *a, **k))
    pred = Predictor(model=RecordingModel(), processor=processor, template="no-think", min_pixels=3136,
                     max_pixels=12544, max_new_tokens=2)
    pred.ask(_rows(tmp_path)[0]["image"], "CT?", "CT;MRI")
    assert sides == ["left"]
