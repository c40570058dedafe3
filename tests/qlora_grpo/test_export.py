"""Export: the adapter alone, the merged model (greedy outputs equal the adapter model's; loads with
plain transformers, no PEFT), and refusing a non-empty OUT."""

import json

import pytest
import yaml

from qlora_grpo import export
from qlora_grpo.errors import UserError
from tests.qlora_grpo.test_infer import make_adapter


@pytest.fixture(scope="module")
def adapter_run(tiny_model, tmp_path_factory):
    return make_adapter(tiny_model, tmp_path_factory.mktemp("runs") / "grpo_run", seed=1)


def _png(tmp_path):
    from PIL import Image

    path = tmp_path / "x.png"
    Image.new("RGB", (60, 40), "white").save(path)
    return path


def _inputs(model_dir, prompts):
    from PIL import Image
    from transformers import AutoProcessor

    from medvqa_data.templates import build_messages

    processor = AutoProcessor.from_pretrained(str(model_dir), min_pixels=3136, max_pixels=12544)
    texts = [processor.apply_chat_template(build_messages(p), add_generation_prompt=True, tokenize=False)
             for p in prompts]
    imgs = [Image.new("RGB", (84, 56), c) for c in ("red", "gray")]
    return processor, processor(text=texts, images=imgs, padding=True, return_tensors="pt")


def _greedy(model, processor, inputs):
    import torch

    from qlora_grpo.model import vision_special_token_ids

    with torch.inference_mode():
        logits = model(**inputs).logits[:, -1]
        out = model.generate(**inputs, do_sample=False, max_new_tokens=16, temperature=None, top_p=None,
                             top_k=None, suppress_tokens=vision_special_token_ids(processor))
    return logits, out[:, inputs["input_ids"].shape[1]:]


def test_adapter_only(tiny_model, adapter_run, tmp_path):
    out = export.export(str(tiny_model), adapter_run, tmp_path / "adapter")
    names = {p.name for p in out.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "run_config.yaml", "README.md",
            "processor_config.json", "tokenizer.json"} <= names
    assert "model.safetensors" not in names and not any(n.startswith(".") for n in names)
    assert (out / "adapter_model.safetensors").read_bytes() == (adapter_run / "adapter_model.safetensors").read_bytes()
    card = (out / "README.md").read_text()
    assert "library_name: peft" in card and "Research use only" in card
    assert not list(tmp_path.glob(".adapter.partial-*"))


def test_merged_matches_adapter_and_needs_no_peft(tiny_model, adapter_run, tmp_path):
    import torch
    from safetensors import safe_open
    from transformers import Qwen2VLForConditionalGeneration

    from qlora_grpo.model import load_for_inference

    out = export.export(str(tiny_model), adapter_run, tmp_path / "merged", merge=True, dtype="fp32")
    names = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "config.json", "generation_config.json", "processor_config.json",
            "README.md"} <= names
    assert not any(n.startswith("adapter_") for n in names)
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert not [k for k in f.keys() if "lora" in k]
    assert "library_name: transformers" in (out / "README.md").read_text()

    prompts = ["Which modality is shown? A)CT, B)MRI Think step by step.", "Is this normal?"]
    processor, inputs = _inputs(out, prompts)
    merged = Qwen2VLForConditionalGeneration.from_pretrained(str(out)).eval()  # plain transformers
    assert not any("lora" in n for n, _ in merged.named_modules())
    peft_model, _ = load_for_inference(str(tiny_model), str(adapter_run), quantization="none",
                                       min_pixels=3136, max_pixels=12544)
    base = Qwen2VLForConditionalGeneration.from_pretrained(str(tiny_model)).eval()
    m_logits, m_ids = _greedy(merged, processor, inputs)
    a_logits, a_ids = _greedy(peft_model, processor, inputs)
    b_logits, _ = _greedy(base, processor, inputs)
    assert (b_logits - a_logits).abs().max() > 1e-2  # the adapter changes the model
    torch.testing.assert_close(m_logits, a_logits, atol=1e-4, rtol=1e-4)
    assert torch.equal(m_ids, a_ids)


def test_cli_merge_bf16_from_nf4_run(tiny_model, adapter_run, tmp_path, capsys):
    import shutil

    nf4_run = tmp_path / "nf4_run"
    shutil.copytree(adapter_run, nf4_run)
    cfg = yaml.safe_load((nf4_run / "run_config.yaml").read_text())
    (nf4_run / "run_config.yaml").write_text("# resolved config; backend: hf\n"
                                              + yaml.safe_dump({**cfg, "quantization": "nf4", "template": "no-think"}))
    rc = export.main(["--model", str(tiny_model), "--adapter", str(nf4_run), "--out", str(tmp_path / "m"),
                      "--merge"])
    assert rc == 0, capsys.readouterr().err
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert "bfloat16" in json.dumps(config)
    card = (tmp_path / "m" / "README.md").read_text()
    assert "trained on an NF4 (4-bit) base" in card and "not into 4-bit weights" in card
    # infer on the merged dir: the trained template, 16-bit weights (not the training quantization)
    from qlora_grpo import infer

    p = infer.load(str(tmp_path / "m"), max_new_tokens=4)
    assert p.template == "no-think" and p.info["quantization"] == "none"
    assert tuple(p.ask(_png(tmp_path), "Which?", ["CT", "MRI"])) == infer.RESULT_KEYS


def test_refuses_non_empty_out(tiny_model, adapter_run, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty"):
        export.export(str(tiny_model), adapter_run, out)
    rc = export.main(["--model", str(tiny_model), "--adapter", str(adapter_run), "--out", str(out), "--merge"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error: ") and "not empty" in err and "\n" not in err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    # an empty existing dir is fine
    (tmp_path / "empty").mkdir()
    assert (export.export(str(tiny_model), adapter_run, tmp_path / "empty") / "adapter_config.json").is_file()


def test_bad_adapter_and_model(tiny_model, adapter_run, tmp_path):
    with pytest.raises(UserError, match="adapter directory not found"):
        export.export(str(tiny_model), tmp_path / "nope", tmp_path / "o")
    with pytest.raises(UserError, match="model directory not found"):
        export.export(str(tmp_path / "nomodel"), adapter_run, tmp_path / "o2")
    assert not (tmp_path / "o").exists() and not (tmp_path / "o2").exists()
