"""The unsloth backend without a GPU: `load_unsloth` end to end with a recording stand-in for
Unsloth's FastVisionModel (arguments, adapter handling, errors), and the pre-import of unsloth
(defects 5-7 of issue 14). The real Unsloth code is exercised by tests/unsloth (make test-unsloth)."""

from __future__ import annotations

import importlib.machinery
import json
import sys
import types

import pytest
import torch

from qlora_grpo import cpu_compat
from qlora_grpo.errors import UserError


class RecordingFastVisionModel:
    """Records every call; from_pretrained returns a marker model, get_peft_model wraps it."""

    calls: list = []

    @classmethod
    def from_pretrained(cls, source, **kw):
        cls.calls.append(("from_pretrained", source, kw))
        return torch.nn.Linear(1, 1), object()

    @classmethod
    def get_peft_model(cls, model, **kw):
        cls.calls.append(("get_peft_model", kw))
        return model


@pytest.fixture()
def fake_unsloth(monkeypatch):
    """A CUDA machine with unsloth (and vllm + vllm-bnb-plugin) importable, all stand-ins."""
    RecordingFastVisionModel.calls = []
    mod = types.ModuleType("unsloth")
    mod.FastVisionModel = RecordingFastVisionModel
    monkeypatch.setitem(sys.modules, "unsloth", mod)
    for name in ("vllm", "vllm_bnb_plugin"):
        m = types.ModuleType(name)
        m.__spec__ = importlib.machinery.ModuleSpec(name, None)
        monkeypatch.setitem(sys.modules, name, m)
    monkeypatch.setattr(cpu_compat, "has_cuda", lambda: True)
    monkeypatch.setattr(cpu_compat, "fix_bnb_linear4bit", lambda m: 0)
    return RecordingFastVisionModel.calls


def _cfg(tiny_model, tmp_path, *extra):
    from qlora_grpo.config import MedGRPOConfig, parse_config

    return parse_config(["--config", "configs/cpu_sample.yaml", "--model_name_or_path", str(tiny_model),
                         "--output_dir", str(tmp_path / "run"), "--report_to", "none", "--backend", "unsloth",
                         *extra], MedGRPOConfig)


def _adapter(tmp_path, base, r=8):
    d = tmp_path / "sft"
    d.mkdir()
    (d / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(base), "r": r}))
    (d / "adapter_model.safetensors").write_bytes(b"")
    return d


def test_load_for_training_unsloth_fresh_lora(fake_unsloth, tiny_model, tmp_path):
    from qlora_grpo.model import load_for_training

    cfg = _cfg(tiny_model, tmp_path, "--lora_r", "16")
    model, processor, backend = load_for_training(cfg)
    assert backend == "unsloth" and processor.tokenizer.padding_side == "left"
    (name, source, kw), (name2, peft_kw) = fake_unsloth
    assert (name, source, name2) == ("from_pretrained", str(tiny_model), "get_peft_model")
    assert kw["load_in_4bit"] is True and kw["use_exact_model_name"] is True and kw["fast_inference"] is False
    assert "max_lora_rank" not in kw
    assert peft_kw["r"] == 16 and peft_kw["finetune_vision_layers"] == cfg.finetune_vision_layers


def test_init_adapter_is_loaded_as_is_and_sets_max_lora_rank(fake_unsloth, tiny_model, tmp_path):
    from qlora_grpo.model import load_unsloth

    ad = _adapter(tmp_path, tiny_model, r=8)
    cfg = _cfg(tiny_model, tmp_path, "--lora_r", "32", "--init_adapter", str(ad), "--fast_inference", "true",
               "--finetune_vision_layers", "false")
    load_unsloth(cfg, str(tiny_model), "qwen2_5_vl", torch.float32)
    assert len(fake_unsloth) == 1  # the adapter is trained on, never a fresh LoRA on top
    _, source, kw = fake_unsloth[0]
    assert source == str(ad) and kw["max_lora_rank"] == 8 and kw["fast_inference"] is True


def test_adapter_of_another_base_is_refused_before_loading(fake_unsloth, tiny_model, tmp_path):
    import shutil

    from qlora_grpo.model import load_unsloth

    copy = shutil.copytree(tiny_model, tmp_path / "same-model-elsewhere")  # passes check_adapter (same config)
    ad = _adapter(tmp_path, copy)
    cfg = _cfg(tiny_model, tmp_path, "--init_adapter", str(ad))
    with pytest.raises(UserError, match="on the base it records"):
        load_unsloth(cfg, str(tiny_model), "qwen2_vl", torch.float32)
    assert fake_unsloth == []


def test_vision_layers_with_fast_inference_refused_before_loading(fake_unsloth, tiny_model, tmp_path):
    from qlora_grpo.model import load_unsloth

    cfg = _cfg(tiny_model, tmp_path, "--fast_inference", "true", "--finetune_vision_layers", "true")
    with pytest.raises(UserError, match="finetune_vision_layers: true cannot be combined with fast_inference"):
        load_unsloth(cfg, str(tiny_model), "qwen2_5_vl", torch.float32)
    assert fake_unsloth == []


@pytest.mark.parametrize("missing", ["vllm", "vllm_bnb_plugin"])
def test_missing_vllm_says_how_to_install(fake_unsloth, tiny_model, tmp_path, monkeypatch, missing):
    from qlora_grpo.model import load_unsloth

    monkeypatch.delitem(sys.modules, missing)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if "site-packages" not in p] + [str(tmp_path)])
    import importlib.util

    if importlib.util.find_spec(missing) is not None:
        pytest.skip(f"{missing} is installed here")
    cfg = _cfg(tiny_model, tmp_path, "--fast_inference", "true", "--finetune_vision_layers", "false")
    with pytest.raises(UserError, match=r"pip install -r requirements-vllm\.txt"):
        load_unsloth(cfg, str(tiny_model), "qwen2_5_vl", torch.float32)
    assert fake_unsloth == []


# ----------------------------------------------------------------------------- defect 7: pre-import
class _Raising:
    """A meta-path finder whose unsloth import raises `exc` (a broken CUDA/driver install does this)."""

    def __init__(self, exc):
        self.exc, self.tries = exc, 0

    def find_spec(self, name, path=None, target=None):
        if name == "unsloth":
            self.tries += 1
            raise self.exc
        return None


@pytest.fixture()
def cuda_machine(monkeypatch):
    monkeypatch.setattr(cpu_compat, "has_cuda", lambda: True)
    monkeypatch.setattr(cpu_compat, "_UNSLOTH_IMPORT", {})
    monkeypatch.delitem(sys.modules, "unsloth", raising=False)


def test_preimport_understands_backend_equals_hf(cuda_machine, monkeypatch, tmp_path):
    finder = _Raising(RuntimeError("must not be imported"))
    monkeypatch.setattr(sys, "meta_path", [finder, *sys.meta_path])
    f = tmp_path / "c.yaml"
    f.write_text("backend: unsloth\n")
    assert cpu_compat.preimport_backend(["--config", str(f), "--backend=hf"]) == "hf"
    assert finder.tries == 0


@pytest.mark.parametrize("exc", [RuntimeError("CUDA driver too old"), NotImplementedError("no GPU kernels"),
                                 ImportError("libcuda.so")])
def test_auto_falls_back_to_hf_with_one_warning(cuda_machine, monkeypatch, capsys, exc):
    from qlora_grpo.model import resolve_backend

    finder = _Raising(exc)
    monkeypatch.setattr(sys, "meta_path", [finder, *sys.meta_path])
    assert cpu_compat.preimport_backend(["--backend=auto"]) == "auto"
    assert resolve_backend("auto") == "hf"
    err = capsys.readouterr().err
    assert err.count("warning: importing unsloth failed") == 1 and "using backend hf" in err
    assert finder.tries == 1
