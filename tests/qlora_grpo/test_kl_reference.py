"""kl_reference.ensure_reference_adapter: the frozen "ref" copy of the starting adapter (defect 3).
Through Unsloth's own patched trainer: tests/unsloth (make test-unsloth)."""

from __future__ import annotations

import torch


def _peft(tiny_model):
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2VLForConditionalGeneration

    torch.manual_seed(0)
    base = Qwen2VLForConditionalGeneration.from_pretrained(tiny_model)
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=r".*language_model.*\.(q_proj|v_proj)", init_lora_weights=False)
    return get_peft_model(base, cfg)


def test_adds_a_frozen_copy_once_and_only_with_beta(tiny_model):
    from qlora_grpo.kl_reference import ensure_reference_adapter

    model = _peft(tiny_model)
    assert not ensure_reference_adapter(model, 0.0) and "ref" not in model.peft_config
    assert ensure_reference_adapter(model, 0.04)
    assert not ensure_reference_adapter(model, 0.04)  # already there (as TRL's hf path leaves it)
    assert model.active_adapter == "default"
    params = dict(model.named_parameters())
    refs = [n for n in params if ".ref." in n]
    assert refs and not any(params[n].requires_grad for n in refs)
    assert all(params[n.replace(".ref.", ".default.")].requires_grad for n in refs)
    for n in refs:
        assert torch.equal(params[n], params[n.replace(".ref.", ".default.")])
    assert not ensure_reference_adapter(torch.nn.Linear(1, 1), 0.04)  # not a PEFT model
