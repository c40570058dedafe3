"""Every registered model family through the whole chain on its tiny model, via the public entry points:
SFT warm start -> 2 GRPO steps on the 4-bit base (LoRA weights must change) -> evaluate (batched, left
padding) -> infer on a PNG -> export --merge -> reload in plain transformers with the same greedy output
as the adapter model. Generation must never emit the family's vision placeholder tokens.

Slow: `pytest -m slow tests/test_families_end_to_end.py`. Measured on the shared 2-core machine under heavy
load (OMP_NUM_THREADS=1): 117-480 s wall per family (Qwen3-VL alone: 269 s wall, 76 s of CPU).
"""

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from qlora_grpo import families
from tests.conftest import ROOT, run_cli

FAMILIES = list(families.FAMILIES)


def _common(model: Path, data: Path) -> list[str]:
    return ["--model_name_or_path", str(model), "--data_path", str(data), "--template", "no-think",
            "--min_pixels", "3136", "--max_pixels", "3136", "--report_to", "none", "--seed", "0",
            "--eval_max_samples", "8", "--eval_max_new_tokens", "12", "--save_steps", "1000"]


def _spy_generate(model, calls: list):
    """Record every `generate` output of `model` (the ids, before decoding hides special tokens)."""
    original = model.generate

    def generate(*args, **kwargs):
        out = original(*args, **kwargs)
        calls.append((kwargs["input_ids"].shape[1], out))
        return out

    model.generate = generate


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_family_full_chain(family, sample_prepared, tmp_path):
    import torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from medvqa_data.templates import build_messages
    from qlora_grpo import export, infer, tiny
    from qlora_grpo.model import load_for_inference, vision_special_token_ids

    model = tiny.build(tmp_path / f"tiny-{family}", size="test", seed=0, family=family)
    fam = families.for_model(str(model))
    assert fam.name == family

    # 1. SFT warm start (gives the rollouts reward variance, as in the demo)
    sft = tmp_path / "sft"
    r = run_cli(["train_sft.py", "--config", str(ROOT / "configs/cpu_demo_sft.yaml"), *_common(model, sample_prepared),
                 "--output_dir", str(sft), "--max_steps", "20", "--learning_rate", "5e-3",
                 "--per_device_train_batch_size", "8"])
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]

    # 2. two GRPO steps on the 4-bit base, from the SFT adapter
    grpo = tmp_path / "grpo"
    r = run_cli(["train_qlora_grpo.py", "--config", str(ROOT / "configs/cpu_demo.yaml"),
                 *_common(model, sample_prepared), "--init_adapter", str(sft), "--output_dir", str(grpo),
                 "--max_steps", "2", "--num_generations", "4", "--per_device_train_batch_size", "8",
                 "--max_completion_length", "12", "--learning_rate", "5e-3", "--logging_steps", "1",
                 "--temperature", "1.5"])
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "quantization: nf4" in (grpo / "run_config.yaml").read_text()
    before, after = load_file(sft / "adapter_model.safetensors"), load_file(grpo / "adapter_model.safetensors")
    lora = [k for k in after if "lora_" in k]
    assert lora and set(lora) <= set(before)
    changed = [k for k in lora if (after[k] - before[k]).abs().max() > 0]
    assert changed, "GRPO changed no LoRA weight"

    # 3. evaluate (the run's end-of-training evaluation, and the CLI on the adapter)
    ev = tmp_path / "eval"
    r = run_cli(["-m", "eval.evaluate", "--model", str(model), "--adapter", str(grpo), "--data", str(sample_prepared),
                 "--out", str(ev), "--limit", "6", "--batch-size", "3", "--max-new-tokens", "8"])
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert json.loads((ev / "metrics.json").read_text())["overall"]["n"] == 6

    # 4. infer on a PNG of odd size: the ids generated never include a vision placeholder
    vision_ids = set(vision_special_token_ids(AutoProcessor.from_pretrained(str(model))))
    assert len(vision_ids) == len(fam.vision_tokens)
    png = tmp_path / "scan.png"
    Image.new("RGB", (97, 61), (90, 20, 160)).save(png)
    p = infer.load(str(model), adapter=str(grpo), max_new_tokens=8)
    calls = []
    _spy_generate(p.model, calls)
    result = p.ask(png, "Which modality is shown?", ["CT", "MRI", "X-Ray", "Ultrasound"])
    assert set(result) == set(infer.RESULT_KEYS)
    assert calls and not vision_ids & set(calls[0][1][0, calls[0][0]:].tolist())

    # 5. export --merge, reload with plain transformers: same greedy output as the adapter model
    out = export.export(str(model), grpo, tmp_path / "merged", merge=True, dtype="fp32")
    merged = AutoModelForImageTextToText.from_pretrained(str(out)).eval()
    assert not any("lora" in n for n, _ in merged.named_modules())
    processor = AutoProcessor.from_pretrained(str(out))
    text = processor.apply_chat_template(build_messages("Which modality is shown? A)CT, B)MRI"),
                                         add_generation_prompt=True, tokenize=False)
    img = p.image(png)  # the data layer's resize, as in training
    inputs = processor(text=[text], images=[img], return_tensors="pt")
    peft_model, _ = load_for_inference(str(model), str(grpo), quantization="none", min_pixels=3136, max_pixels=3136)
    gen = dict(do_sample=False, max_new_tokens=12, temperature=None, top_p=None, top_k=None,
               suppress_tokens=sorted(vision_ids))
    with torch.inference_mode():
        m_ids = merged.generate(**inputs, **gen)[:, inputs["input_ids"].shape[1]:]
        a_ids = peft_model.generate(**inputs, **gen)[:, inputs["input_ids"].shape[1]:]
    assert torch.equal(m_ids, a_ids)
    assert not vision_ids & set(m_ids[0].tolist())
