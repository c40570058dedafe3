import hashlib

from qlora_grpo import tiny


def _digest(path):
    return hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()


def test_tiny_is_a_real_loadable_qwen2_vl_with_qwen_tokens(tiny_model):
    from PIL import Image
    from transformers import AutoProcessor, Qwen2VLForConditionalGeneration

    processor = AutoProcessor.from_pretrained(tiny_model)
    model = Qwen2VLForConditionalGeneration.from_pretrained(tiny_model)
    tok = processor.tokenizer
    for t in tiny.SPECIAL_TOKENS:
        assert tok.convert_tokens_to_ids(t) is not None and len(tok.tokenize(t)) == 1, t
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Which modality? A)CT, B)MRI"}]}]
    text = processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    assert text == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                    "<|vision_start|><|image_pad|><|vision_end|>Which modality? A)CT, B)MRI<|im_end|>\n"
                    "<|im_start|>assistant\n")
    inputs = processor(text=[text], images=[Image.new("RGB", (112, 112), "red")], return_tensors="pt")
    n_image_tokens = int((inputs["input_ids"] == model.config.image_token_id).sum())
    assert n_image_tokens == (112 // 28) ** 2
    out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 3


def test_tiny_build_is_deterministic(tmp_path):
    a = tiny.build(tmp_path / "a", size="test", seed=0)
    b = tiny.build(tmp_path / "b", size="test", seed=0)
    c = tiny.build(tmp_path / "c", size="test", seed=1)
    assert _digest(a) == _digest(b) != _digest(c)
    assert (a / "tokenizer.json").read_bytes() == (b / "tokenizer.json").read_bytes()


def test_tiny_cli(tmp_path):
    from tests.conftest import run_cli

    r = run_cli(["-m", "qlora_grpo.tiny", str(tmp_path / "m"), "--size", "test"])
    assert r.returncode == 0, r.stderr
    assert "parameters" in r.stdout and (tmp_path / "m" / "config.json").is_file()
