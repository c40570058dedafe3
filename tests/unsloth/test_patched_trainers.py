"""Our assumptions about Unsloth, checked through Unsloth's own patched trainers on CPU.

Unsloth refuses CPUs unless UNSLOTH_ALLOW_CPU=1, and then skips its TRL trainer rewrite; the
fixture runs that rewrite (`unsloth.models.rl.patch_trl_rl_trainers`, what `import unsloth` does
on a GPU) so that `trl.GRPOTrainer` is Unsloth's generated UnslothGRPOTrainer. The model comes from
our hf loader (`FastVisionModel.from_pretrained` itself needs CUDA). A future Unsloth or TRL bump
that breaks one of these assumptions fails here, not on a user's GPU.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

os.environ.setdefault("UNSLOTH_ALLOW_CPU", "1")
os.environ.setdefault("UNSLOTH_SKIP_TORCHVISION_CHECK", "1")

pytestmark = pytest.mark.unsloth

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def unsloth_trl():
    """trl with Unsloth's patched trainers (GRPOTrainer, SFTTrainer)."""
    from qlora_grpo import cpu_compat

    cpu_compat.setup_env()
    import unsloth  # noqa: F401  (before trl)
    from unsloth.models.rl import patch_trl_rl_trainers

    patch_trl_rl_trainers()
    import trl

    assert trl.GRPOTrainer.__name__ == "UnslothGRPOTrainer", trl.GRPOTrainer
    assert trl.SFTTrainer.__name__ == "UnslothSFTTrainer", trl.SFTTrainer
    return trl


@pytest.fixture(scope="module")
def sft_adapter(tiny_model, tmp_path_factory):
    """A trained-looking adapter (random LoRA weights) on the tiny model, as an SFT warm start."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2VLForConditionalGeneration

    out = tmp_path_factory.mktemp("sft")
    torch.manual_seed(0)
    base = Qwen2VLForConditionalGeneration.from_pretrained(tiny_model)
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=r".*language_model.*\.(q_proj|v_proj)", init_lora_weights=False)
    get_peft_model(base, cfg).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def grpo_trainer(unsloth_trl, tiny_model, sample_prepared, sft_adapter, tmp_path_factory):
    """Unsloth's GRPOTrainer built by our entry script's build_trainer (hf loader, init_adapter, beta > 0)."""
    import train_qlora_grpo as tq
    from medvqa_data.dataset import select_training_rows
    from qlora_grpo.config import MedGRPOConfig, parse_config

    out = tmp_path_factory.mktemp("grpo")
    cfg = parse_config(["--config", "configs/cpu_sample.yaml", "--model_name_or_path", str(tiny_model),
                        "--data_path", str(sample_prepared), "--output_dir", str(out), "--report_to", "none",
                        "--backend", "hf", "--quantization", "none", "--init_adapter", str(sft_adapter),
                        "--beta", "0.04", "--max_steps", "1"], MedGRPOConfig)
    rows = select_training_rows(cfg.data_path, cfg.train_split, cfg.train_subset, cfg.exclude_modalities,
                                8, cfg.seed)
    trainer, processor, backend = tq.build_trainer(cfg, rows)
    assert type(trainer).__name__ == "UnslothGRPOTrainer"
    return trainer, processor, cfg


def test_unsloth_still_deletes_trls_reference_adapter(unsloth_trl):
    """The assumption behind kl_reference.ensure_reference_adapter: Unsloth cuts TRL's "ref" block."""
    import inspect

    src = inspect.getsource(unsloth_trl.GRPOTrainer.__init__)
    assert 'model.add_adapter("ref"' not in src.replace("'", '"')


def test_kl_reference_is_the_init_adapter(grpo_trainer):
    """Item 3: with init_adapter and beta > 0 the reference is a frozen copy of the starting adapter."""
    import torch

    trainer, _, _ = grpo_trainer
    model = trainer.model
    assert "ref" in model.peft_config and model.active_adapter == "default"
    params = dict(model.named_parameters())
    refs = [n for n in params if ".ref." in n]
    assert refs and all(not params[n].requires_grad for n in refs)
    for n in refs:
        assert torch.equal(params[n], params[n.replace(".ref.", ".default.")])


def test_eval_pads_left_after_unsloths_trainer_set_right(grpo_trainer, tmp_path):
    """Item 2: Unsloth's trainer leaves the processor padding on the right; evaluation still pads left."""
    import torch
    from PIL import Image

    from eval.evaluate import generate_batch

    trainer, processor, cfg = grpo_trainer
    assert processor.tokenizer.padding_side == "right"  # Unsloth's doing (if this changes, fine: update)
    img = tmp_path / "i.png"
    Image.new("RGB", (56, 56), (10, 200, 30)).save(img)
    rows = [{"id": "a", "question": "CT?", "options": ["CT", "MRI"], "image": str(img)},
            {"id": "b", "question": "Which modality is shown in this long question? " * 3,
             "options": ["CT", "MRI", "X-Ray"], "image": str(img)}]
    masks = []

    class Rec:  # records the attention mask; carries the model's config (the resize rule is read from it)
        device = torch.device("cpu")
        config = trainer.model.config

        def generate(self, input_ids, attention_mask, **kw):
            masks.append(attention_mask)
            return input_ids

    generate_batch(Rec(), processor, rows, cfg.template, "default", 2, cfg.min_pixels, cfg.max_pixels)
    assert (masks[0][:, -1] == 1).all() and (masks[0][:, 0] == 0).any()


def test_vllm_kwargs_survive_unsloths_sampling_params_filter(unsloth_trl):
    """Item 1: Unsloth's grpo_update_SamplingParams keeps only SamplingParams' parameters; our vLLM
    kwargs (logit_bias ban, min_tokens) must all survive it, and suppress_tokens must not be needed."""
    import dataclasses

    from unsloth.models.rl_replacements import grpo_update_SamplingParams

    from qlora_grpo.generation import VLLM_SAMPLING_PARAMS_FIELDS, rollout_generation_kwargs

    SamplingParams = dataclasses.make_dataclass(  # the signature of vLLM's SamplingParams
        "SamplingParams", [(f, object, dataclasses.field(default=None)) for f in sorted(VLLM_SAMPLING_PARAMS_FIELDS)])
    kw = rollout_generation_kwargs({"min_tokens": 4}, [151655], vllm=True)
    assert grpo_update_SamplingParams(SamplingParams, kw, None) == kw


def test_preimport_falls_back_when_real_unsloth_refuses_the_machine():
    """Item 7 with the real package: without UNSLOTH_ALLOW_CPU, `import unsloth` on a CPU raises
    (not an ImportError); a machine that claims CUDA must then fall back to hf with one warning."""
    env = {k: v for k, v in os.environ.items() if k != "UNSLOTH_ALLOW_CPU"}
    code = ("from qlora_grpo import cpu_compat; cpu_compat.has_cuda = lambda: True; "
            "from qlora_grpo.model import resolve_backend; "
            "print(cpu_compat.preimport_backend(['--backend=auto']), resolve_backend('auto'))")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**env, "PYTHONPATH": ROOT},
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split()[-2:] == ["auto", "hf"]
    assert r.stderr.count("warning: importing unsloth failed") == 1
