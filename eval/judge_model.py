"""Loading a local judge checkpoint and generating its replies (greedy, batched, left-padded)."""

from __future__ import annotations

from pathlib import Path


class Judge:
    """A loaded judge: greedy, batched, left-padded generation from one user turn (+ image for VLMs)."""

    def __init__(self, model, processor, name: str, vlm: bool, max_new_tokens: int, suppress=(),
                 min_pixels: int = 3136, max_pixels: int = 401408):
        self.model, self.processor, self.name, self.vlm = model, processor, name, vlm
        self.max_new_tokens, self.suppress = max_new_tokens, list(suppress)
        self.min_pixels, self.max_pixels = min_pixels, max_pixels

    def _text(self, prompt: str, with_image: bool) -> str:
        tok = getattr(self.processor, "tokenizer", self.processor)
        if not (getattr(self.processor, "chat_template", None) or getattr(tok, "chat_template", None)):
            return prompt  # a base model without a chat template: the raw prompt
        content = ([{"type": "image"}] if with_image else []) + [{"type": "text", "text": prompt}]
        msgs = [{"role": "user", "content": content if self.vlm else prompt}]
        return self.processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)

    def generate(self, prompts: list[str], images: list[str | None]) -> list[str]:
        import torch

        from medvqa_data.dataset import load_row_image

        pics = [load_row_image(p, self.min_pixels, self.max_pixels) if p else None for p in images]
        texts = [self._text(p, im is not None) for p, im in zip(prompts, pics)]
        if self.vlm:
            given = [im for im in pics if im is not None]
            inputs = self.processor(text=texts, images=given or None, padding=True, return_tensors="pt")
        else:
            inputs = self.processor(texts, padding=True, return_tensors="pt", add_special_tokens=False)
        inputs = inputs.to(self.model.device)
        kw = {"suppress_tokens": self.suppress} if self.suppress else {}
        with torch.inference_mode():
            out = self.model.generate(**inputs, do_sample=False, max_new_tokens=self.max_new_tokens,
                                      temperature=None, top_p=None, top_k=None, **kw)
        tok = getattr(self.processor, "tokenizer", self.processor)
        return tok.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)


def load_judge(path: str, max_new_tokens: int = 256, quantization: str = "none", min_pixels: int = 3136,
               max_pixels: int = 401408) -> Judge:
    """Any local transformers checkpoint: Qwen2(-.5)-VL through qlora_grpo.model, another VLM through
    AutoModelForImageTextToText, a text-only chat model through AutoModelForCausalLM."""
    from qlora_grpo import cpu_compat

    cpu_compat.setup_env()
    from transformers import AutoConfig

    from qlora_grpo.model import (
        SUPPORTED_MODEL_TYPES,
        load_for_inference,
        resolve_model_path,
        vision_special_token_ids,
    )

    path = resolve_model_path(path)
    cfg = AutoConfig.from_pretrained(path, trust_remote_code=False)
    name = Path(path).name
    if cfg.model_type in SUPPORTED_MODEL_TYPES:
        model, proc = load_for_inference(path, quantization=quantization, min_pixels=min_pixels,
                                         max_pixels=max_pixels)
        return Judge(model, proc, name, True, max_new_tokens, vision_special_token_ids(proc), min_pixels, max_pixels)
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor, AutoTokenizer

    kw: dict = {"dtype": "auto", "trust_remote_code": False}
    if quantization == "nf4":
        from transformers import BitsAndBytesConfig

        kw["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                       bnb_4bit_compute_dtype=torch.bfloat16)
    if cpu_compat.has_cuda():
        kw["device_map"] = {"": 0}
    vlm = getattr(cfg, "vision_config", None) is not None
    if vlm:
        proc = AutoProcessor.from_pretrained(path, padding_side="left")
        model = AutoModelForImageTextToText.from_pretrained(path, **kw)
    else:
        proc = AutoTokenizer.from_pretrained(path, padding_side="left")
        model = AutoModelForCausalLM.from_pretrained(path, **kw)
    tok = getattr(proc, "tokenizer", proc)
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model.eval()
    return Judge(model, proc, name, vlm, max_new_tokens, (), min_pixels, max_pixels)
