"""Item 8 of issue 14: the hf QLoRA path trains what Unsloth trains (vision tower 16-bit, no LoRA on
the vision merger), and an adapter is evaluated on the base as it was trained (run_config.yaml)."""

from __future__ import annotations

import re

import pytest
import yaml

from qlora_grpo.errors import UserError


def test_vision_lora_targets_the_blocks_not_the_merger():
    from qlora_grpo.model import lora_target_regex

    rx = re.compile(lora_target_regex(language=True, vision=True, attention=True, mlp=True))
    assert rx.fullmatch("model.visual.blocks.0.attn.qkv") and rx.fullmatch("model.visual.blocks.3.mlp.fc2")
    assert not rx.fullmatch("model.visual.merger.mlp.0") and not rx.fullmatch("model.visual.merger.mlp.2")


@pytest.mark.parametrize("quantize_vision", [False, True])
def test_nf4_base_keeps_the_vision_tower_16bit_unless_asked(tiny_model, quantize_vision):
    import bitsandbytes as bnb
    import torch

    from qlora_grpo.model import load_base_hf

    model = load_base_hf(str(tiny_model), "nf4", torch.float32, quantize_vision=quantize_vision)
    kinds = {n: isinstance(m, bnb.nn.Linear4bit) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    vision_blocks = [q for n, q in kinds.items() if ".visual.blocks." in n]
    language = [q for n, q in kinds.items() if ".language_model." in n]
    assert vision_blocks and all(language)  # the language model is always 4-bit
    assert all(vision_blocks) if quantize_vision else not any(vision_blocks)
    assert not any(q for n, q in kinds.items() if ".merger." in n or n.endswith("lm_head"))


def test_unsloth_refuses_a_quantized_vision_tower(tiny_model, tmp_path):
    import torch

    from qlora_grpo.config import MedGRPOConfig, parse_config
    from qlora_grpo.model import load_unsloth

    cfg = parse_config(["--config", "configs/cpu_sample.yaml", "--model_name_or_path", str(tiny_model),
                        "--output_dir", str(tmp_path), "--quantize_vision_tower", "true"], MedGRPOConfig)
    with pytest.raises(UserError, match="quantize_vision_tower: true is hf-backend only"):
        load_unsloth(cfg, str(tiny_model), "qwen2_vl", torch.float32)


@pytest.mark.parametrize("recorded, expected", [
    ({"quantization": "nf4", "quantize_vision_tower": False}, False),
    ({"quantization": "nf4", "quantize_vision_tower": True}, True),
    ({"quantization": "nf4"}, True),  # a run from before the knob: its vision tower was 4-bit
    ({"quantization": "none"}, False),
])
def test_evaluate_loads_the_base_as_trained(tiny_model, sample_prepared, tmp_path, monkeypatch, recorded, expected):
    from eval import evaluate as ev
    from qlora_grpo import model as qm

    run = tmp_path / "run"
    run.mkdir()
    (run / "adapter_config.json").write_text("{}")
    (run / "run_config.yaml").write_text(yaml.safe_dump({"model_name_or_path": str(tiny_model), **recorded}))
    seen = {}

    class Loaded(Exception):
        pass

    def record(*a, **k):
        seen.update(k)
        raise Loaded

    monkeypatch.setattr(qm, "load_for_inference", record)
    with pytest.raises(Loaded):
        ev.main(["--model", str(tiny_model), "--adapter", str(run), "--data", str(sample_prepared),
                 "--out", str(tmp_path / "eval")])
    assert seen["quantization"] == recorded["quantization"] and seen["quantize_vision"] is expected


def test_model_card_says_which_parts_were_4bit():
    from qlora_grpo.model_card import _vision_precision

    assert "vision tower and output head 16-bit" in _vision_precision({"quantize_vision_tower": False})
    assert "vision tower 4-bit" in _vision_precision({"backend": "hf"})  # recorded before the knob
