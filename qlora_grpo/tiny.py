"""Build the embedded tiny Qwen2-VL: a real checkpoint directory made offline, deterministically.

    python -m qlora_grpo.tiny OUT_DIR [--size demo|test] [--seed 0]

The result is a genuine `Qwen2VLForConditionalGeneration` checkpoint (config.json, safetensors
weights, processor, tokenizer, chat template) loadable with `AutoProcessor.from_pretrained` and
`Qwen2VLForConditionalGeneration.from_pretrained`. Only the sizes are small:

- tokenizer: a byte-level BPE trained on a fixed in-repo corpus (medical VQA words, our prompt
  templates, the answer tags), carrying Qwen2-VL's special tokens and its chat template;
- text model: hidden 128 x 4 layers ("demo"; learns the phantom task on CPU) or 64 x 2 ("test");
- vision tower: depth 4 x 64 (patch 14, spatial merge 2, as Qwen2-VL: 28x28 pixels per token).

Building twice with the same seed gives byte-identical weights (seeded init, no timestamps).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# Qwen2-VL's special tokens, in Qwen's order. ids = base vocab size + index.
SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
# Tokens that must never be generated as text (a random model may emit them; the next forward
# pass would then fail with "Image features and image tokens do not match").
VISION_SPECIAL_TOKENS = ["<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"]

# Qwen2-VL-Instruct's chat template, verbatim.
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture "
    "{{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video "
    "{{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

SIZES = {
    # text hidden x layers, vision embed x depth. "demo" is the 0.9M-parameter size that learns
    # image-dependent questions on CPU; "test" is smaller still for fast unit tests.
    "demo": dict(hidden=128, layers=4, heads=4, kv_heads=2, inter=384, v_embed=64, v_depth=4, v_heads=4),
    "test": dict(hidden=64, layers=2, heads=2, kv_heads=1, inter=128, v_embed=32, v_depth=2, v_heads=2),
}
BPE_VOCAB = 1200  # learned merges + 256 byte symbols; specials come after


def _corpus() -> list[str]:
    """Fixed text the BPE is trained on: our prompt strings, tags, medical VQA words."""
    words = (
        "CT MRI X-Ray Ultrasound ultrasound Dermoscopy Fundus fundus photography OCT Microscopy microscopy "
        "Computed Tomography Magnetic Resonance Imaging Optical Coherence brain chest abdomen lung liver "
        "kidney heart retina cells skin knee spine pelvis head neck breast bone organ lesion tumor nodule "
        "mass normal abnormal left right upper lower quadrant one two three four none yes no image shows "
        "which what where how many is the of in this a an modality imaging used visible lesions side "
        "Disease Diagnosis Anatomy Identification Modality Recognition Other Biological Attributes "
        "Lesion Grading question answer option correct because therefore so I see appears bright dark "
        "round region located count there are"
    )
    prompts = [
        "Your task: 1. Think through the question step by step, enclose your reasoning process in "
        "<think>...</think> tags. 2. Then provide the correct single-letter choice (A, B, C, D,...) "
        "inside <answer>...</answer> tags. 3. No extra information or text outside of these tags.",
        "Your task: 1. Provide the correct single-letter choice (A, B, C, D,...) inside "
        "<answer>...</answer> tags. 2. No extra information or text outside of this tag.",
        "Think through the question step by step in <think>...</think> tags. Then provide the correct "
        "single-letter choice (A, B, C, D,...) inside <answer>...</answer> tags.",
        "Provide the correct single-letter choice (A, B, C, D,...).",
        "You are a helpful assistant.",
    ]
    tags = "<think> </think> <answer> </answer> <answer>A</answer> <answer>B</answer> <answer>C</answer> <answer>D</answer>"
    options = "A)CT, B)MRI, C)X-Ray, D)Ultrasound A) B) C) D) (A) (B) (C) (D) A. B. C. D."
    return [words] * 20 + prompts * 20 + [tags] * 50 + [options] * 20 + ["0 1 2 3 4 5 6 7 8 9 . , ; : ? ! ( ) - \n"] * 5


def build_tokenizer():
    """Byte-level BPE with Qwen2-VL's special tokens and chat template (deterministic)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
        special_tokens=[],
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    tok.add_special_tokens(SPECIAL_TOKENS)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        bos_token=None,
        additional_special_tokens=SPECIAL_TOKENS[1:],
        model_max_length=32768,
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build(out_dir: str | Path, size: str = "demo", seed: int = 0) -> Path:
    """Write a tiny Qwen2-VL checkpoint to `out_dir` and return the path."""
    import torch
    from transformers import (
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose one of {sorted(SIZES)}")
    s = SIZES[size]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    tokenizer = build_tokenizer()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    vocab = len(tokenizer)
    head_dim = s["hidden"] // s["heads"]
    half = head_dim // 2  # mrope sections (temporal, height, width) sum to head_dim / 2, as [16,24,24] for 128
    mrope = [half // 4, (half - half // 4) // 2, half - half // 4 - (half - half // 4) // 2]
    config = Qwen2VLConfig(
        text_config=dict(
            vocab_size=vocab,
            hidden_size=s["hidden"],
            intermediate_size=s["inter"],
            num_hidden_layers=s["layers"],
            num_attention_heads=s["heads"],
            num_key_value_heads=s["kv_heads"],
            max_position_embeddings=4096,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": mrope},
            bos_token_id=ids["<|endoftext|>"],
            eos_token_id=ids["<|im_end|>"],
            pad_token_id=ids["<|endoftext|>"],
            tie_word_embeddings=True,
        ),
        vision_config=dict(
            depth=s["v_depth"],
            embed_dim=s["v_embed"],
            hidden_size=s["hidden"],
            num_heads=s["v_heads"],
            mlp_ratio=4,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
        ),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(config).eval()
    with torch.no_grad():
        # Realistic output sharpness: with tied embeddings of std 0.02 and a unit final-norm gain the
        # largest reachable logit is ~0.02 * hidden (2.6 at 128), so no token can ever get much more
        # than 1% probability and sampled rollouts are noise. Pretrained checkpoints have large final
        # norm gains; set it so logits can reach ~20 (the final norm and embeddings stay frozen under LoRA).
        model.model.language_model.norm.weight.fill_(20.0 / (0.02 * s["hidden"]))
    model.generation_config.eos_token_id = [ids["<|im_end|>"], ids["<|endoftext|>"]]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.save_pretrained(out, safe_serialization=True)

    # 56x56 .. 448x448 pixels: 4..256 visual tokens; the configs narrow this further.
    image_processor = Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=448 * 448)
    video_processor = Qwen2VLVideoProcessor()
    processor = Qwen2VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=CHAT_TEMPLATE,
    )
    processor.save_pretrained(out)
    info = {"builder": "qlora_grpo.tiny", "size": size, "seed": seed,
            "parameters": sum(p.numel() for p in model.parameters())}
    (out / "tiny_model.json").write_text(json.dumps(info, indent=2) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out_dir")
    p.add_argument("--size", default="demo", choices=sorted(SIZES))
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    out = build(a.out_dir, a.size, a.seed)
    info = json.loads((out / "tiny_model.json").read_text())
    print(f"tiny Qwen2-VL ({a.size}, {info['parameters']:,} parameters) written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
