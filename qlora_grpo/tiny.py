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
    # g_image / g_tokens: Gemma 3's square SigLIP input (patch 14) and its pooled tokens per image.
    "demo": dict(hidden=128, layers=4, heads=4, kv_heads=2, inter=384, v_embed=64, v_depth=4, v_heads=4,
                 g_image=112, g_tokens=16),
    "test": dict(hidden=64, layers=2, heads=2, kv_heads=1, inter=128, v_embed=32, v_depth=2, v_heads=2,
                 g_image=56, g_tokens=4),
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


GEMMA_SPECIAL_TOKENS = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>",
                        "<start_of_image>", "<end_of_image>", "<image_soft_token>"]
FAMILY_NAMES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "gemma3")


def trl_chat_template(name: str) -> str:
    """A model's original chat template as TRL ships it (`trl/chat_templates/NAME.jinja`, copied by TRL
    from the hub checkpoints; see that folder's README): Qwen2.5-VL, Qwen3-VL, Gemma 3."""
    from importlib.resources import files

    return (files("trl") / "chat_templates" / f"{name}.jinja").read_text()


def chat_template(family: str) -> str:
    """The family's real chat template: Qwen2-VL's embedded above (verbatim, = TRL's qwen2_5_vl.jinja
    up to whitespace), the others from TRL's copies of the checkpoints' templates."""
    return {"qwen2_vl": lambda: CHAT_TEMPLATE, "qwen2_5_vl": lambda: trl_chat_template("qwen2_5_vl"),
            "qwen3_vl": lambda: trl_chat_template("qwen3_vl"), "gemma3": lambda: trl_chat_template("gemma3")}[family]()


def build_tokenizer(family: str = "qwen2_vl"):
    """Byte-level BPE with the family's special tokens and chat template (deterministic)."""
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
    if family == "gemma3":
        # Gemma's specials (its real ids differ: 0 pad, 1 eos, 2 bos, ... 262144 image soft token); the
        # processor finds the image tokens through the tokenizer's boi/eoi/image_token attributes.
        tok.add_special_tokens(GEMMA_SPECIAL_TOKENS)
        fast = PreTrainedTokenizerFast(
            tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>",
            additional_special_tokens=GEMMA_SPECIAL_TOKENS[4:],
            extra_special_tokens={"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
                                  "image_token": "<image_soft_token>"},
            model_max_length=32768, padding_side="left", clean_up_tokenization_spaces=False,
        )
    else:
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
    fast.chat_template = chat_template(family)
    return fast


def _mrope(head_dim: int) -> list[int]:
    """mrope sections (temporal, height, width) summing to head_dim / 2, as [16,24,24] for 128."""
    half = head_dim // 2
    return [half // 4, (half - half // 4) // 2, half - half // 4 - (half - half // 4) // 2]


def _qwen_text(s: dict, ids: dict, vocab: int, **extra) -> dict:
    return dict(vocab_size=vocab, hidden_size=s["hidden"], intermediate_size=s["inter"],
                num_hidden_layers=s["layers"], num_attention_heads=s["heads"], num_key_value_heads=s["kv_heads"],
                max_position_embeddings=4096, bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                pad_token_id=ids["<|endoftext|>"], tie_word_embeddings=True, **extra)


def tiny_config(family: str, s: dict, tokenizer):
    """The transformers config of a tiny model of `family` with sizes `s` (a `SIZES` entry)."""
    from transformers import Gemma3Config, Qwen2_5_VLConfig, Qwen2VLConfig, Qwen3VLConfig

    vocab = len(tokenizer)
    head_dim = s["hidden"] // s["heads"]
    if family == "gemma3":
        ids = {t: tokenizer.convert_tokens_to_ids(t) for t in GEMMA_SPECIAL_TOKENS}
        side, patch = s["g_image"], 14
        return Gemma3Config(
            text_config=dict(vocab_size=vocab, hidden_size=s["hidden"], intermediate_size=s["inter"],
                             num_hidden_layers=s["layers"], num_attention_heads=s["heads"],
                             num_key_value_heads=s["kv_heads"], head_dim=head_dim, query_pre_attn_scalar=head_dim,
                             sliding_window=512, max_position_embeddings=4096, pad_token_id=ids["<pad>"],
                             eos_token_id=ids["<eos>"], bos_token_id=ids["<bos>"], tie_word_embeddings=True),
            # SigLIP, as MedGemma's (patch 14, 896 px there; `g_image` px here)
            vision_config=dict(hidden_size=s["v_embed"], intermediate_size=4 * s["v_embed"],
                               num_hidden_layers=s["v_depth"], num_attention_heads=s["v_heads"],
                               image_size=side, patch_size=patch, vision_use_head=False),
            mm_tokens_per_image=s["g_tokens"], boi_token_index=ids["<start_of_image>"],
            eoi_token_index=ids["<end_of_image>"], image_token_index=ids["<image_soft_token>"],
            pad_token_id=ids["<pad>"], eos_token_id=ids["<eos>"], bos_token_id=ids["<bos>"], tie_word_embeddings=True,
        )
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    tokens = dict(image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                  vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
                  tie_word_embeddings=True)
    rope = {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": _mrope(head_dim)}
    if family == "qwen2_vl":
        return Qwen2VLConfig(
            text_config=_qwen_text(s, ids, vocab, rope_parameters=rope),
            vision_config=dict(depth=s["v_depth"], embed_dim=s["v_embed"], hidden_size=s["hidden"],
                               num_heads=s["v_heads"], mlp_ratio=4, patch_size=14, spatial_merge_size=2,
                               temporal_patch_size=2),
            **tokens)
    if family == "qwen2_5_vl":
        return Qwen2_5_VLConfig(
            text_config=_qwen_text(s, ids, vocab, rope_parameters=rope),
            vision_config=dict(depth=s["v_depth"], hidden_size=s["v_embed"], intermediate_size=2 * s["v_embed"],
                               num_heads=s["v_heads"], out_hidden_size=s["hidden"], patch_size=14,
                               spatial_merge_size=2, temporal_patch_size=2, window_size=56,
                               fullatt_block_indexes=[s["v_depth"] - 1], hidden_act="silu"),
            **tokens)
    if family == "qwen3_vl":
        return Qwen3VLConfig(
            text_config=_qwen_text(s, ids, vocab, head_dim=head_dim,
                                   rope_parameters={**rope, "rope_theta": 5000000.0, "mrope_interleaved": True}),
            # patch 16 x merge 2 = 32 px per visual token (Qwen3-VL); DeepStack feeds block 0's features too
            vision_config=dict(depth=s["v_depth"], hidden_size=s["v_embed"], intermediate_size=2 * s["v_embed"],
                               num_heads=s["v_heads"], out_hidden_size=s["hidden"], patch_size=16,
                               spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=64,
                               deepstack_visual_indexes=[0]),
            **tokens)
    raise ValueError(f"unknown family {family!r}; choose one of {FAMILY_NAMES}")


def tiny_processor(family: str, tokenizer, config, min_pixels: int = 56 * 56, max_pixels: int = 448 * 448):
    """The family's real processor classes around the small tokenizer."""
    import transformers as tf

    if family == "gemma3":
        side = config.vision_config.image_size
        image = tf.Gemma3ImageProcessor(size={"height": side, "width": side}, image_mean=[0.5] * 3,
                                        image_std=[0.5] * 3, do_pan_and_scan=False)
        return tf.Gemma3Processor(image_processor=image, tokenizer=tokenizer, chat_template=chat_template(family),
                                  image_seq_length=config.mm_tokens_per_image)
    if family == "qwen3_vl":
        image = tf.Qwen2VLImageProcessor(min_pixels=min_pixels, max_pixels=max_pixels, patch_size=16, merge_size=2,
                                         image_mean=[0.5] * 3, image_std=[0.5] * 3)
        return tf.Qwen3VLProcessor(image_processor=image, tokenizer=tokenizer,
                                   video_processor=tf.Qwen3VLVideoProcessor(), chat_template=chat_template(family))
    image = tf.Qwen2VLImageProcessor(min_pixels=min_pixels, max_pixels=max_pixels)
    cls = tf.Qwen2_5_VLProcessor if family == "qwen2_5_vl" else tf.Qwen2VLProcessor
    return cls(image_processor=image, tokenizer=tokenizer, video_processor=tf.Qwen2VLVideoProcessor(),
               chat_template=chat_template(family))


def build(out_dir: str | Path, size: str = "demo", seed: int = 0, family: str = "qwen2_vl") -> Path:
    """Write a tiny checkpoint of `family` (default Qwen2-VL) to `out_dir` and return the path."""
    import torch
    from transformers import AutoModelForImageTextToText

    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose one of {sorted(SIZES)}")
    if family not in FAMILY_NAMES:
        raise ValueError(f"unknown family {family!r}; choose one of {FAMILY_NAMES}")
    s = SIZES[size]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    tokenizer = build_tokenizer(family)
    config = tiny_config(family, s, tokenizer)
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config).eval()
    with torch.no_grad():
        # Realistic output sharpness: with tied embeddings of std 0.02 and a unit final-norm gain the
        # largest reachable logit is ~0.02 * hidden (2.6 at 128), so no token can ever get much more
        # than 1% probability and sampled rollouts are noise. Pretrained checkpoints have large final
        # norm gains; set it so logits can reach ~20 (the final norm and embeddings stay frozen under LoRA).
        gain = 20.0 / (0.02 * s["hidden"])
        # Gemma's RMSNorm multiplies by (1 + weight)
        model.model.language_model.norm.weight.fill_(gain - 1.0 if family == "gemma3" else gain)
    if family == "gemma3":
        model.generation_config.eos_token_id = [tokenizer.convert_tokens_to_ids(t) for t in ("<end_of_turn>", "<eos>")]
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.generation_config.bos_token_id = tokenizer.bos_token_id
    else:
        model.generation_config.eos_token_id = [tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>",
                                                                                             "<|endoftext|>")]
        model.generation_config.pad_token_id = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    model.save_pretrained(out, safe_serialization=True)

    # Qwen: 56x56 .. 448x448 pixels (4..256 visual tokens at 28 px); the configs narrow this further.
    tiny_processor(family, tokenizer, config).save_pretrained(out)
    info = {"builder": "qlora_grpo.tiny", "family": family, "size": size, "seed": seed,
            "parameters": sum(p.numel() for p in model.parameters())}
    (out / "tiny_model.json").write_text(json.dumps(info, indent=2) + "\n")
    return out


# Same-size random-weight architectures for the memory/throughput benchmark (weights do not change
# memory or speed). Sources of the architecture facts:
# - qwen2-vl-*: ../shared/reference/PROTOCOL.md "Model architecture facts";
# - qwen2.5-vl-3b: its public config.json;
# - qwen3-vl-2b/4b/8b and medgemma-4b: the hub checkpoints' config.json (Qwen/Qwen3-VL-{2,4,8}B-Instruct,
#   google/medgemma-4b-it = Gemma 3 4B) as recalled; NOT confirmed offline against the hub. The 4B's
#   text config was cross-checked against a third-party copy of its config.json found in the code index
#   (hidden 2560, intermediate 9728, 36 layers, 32 heads, 8 KV heads, head_dim 128, tied); the others
#   could not be. `python -m qlora_grpo.tiny --arch NAME --count` prints the parameter count to compare
#   with the model card (Qwen3-VL-2B/4B/8B "2B/4B/8B", MedGemma 4B "4B": published totals 2.13B / 4.44B /
#   8.77B / 4.30B, also not confirmed offline).
# Vocabulary sizes are the real ones (the embedding and LM head cost memory and time); the tokenizer
# stays the small BPE above (ids beyond it decode to "").
ARCHS = {
    "qwen2-vl-2b": dict(model_type="qwen2_vl", hidden=1536, inter=8960, layers=28, heads=12, kv_heads=2,
                        vocab=151936, tied=True,
                        vision=dict(depth=32, embed_dim=1280, num_heads=16, mlp_ratio=4)),
    "qwen2-vl-7b": dict(model_type="qwen2_vl", hidden=3584, inter=18944, layers=28, heads=28, kv_heads=4,
                        vocab=152064, tied=False,
                        vision=dict(depth=32, embed_dim=1280, num_heads=16, mlp_ratio=4)),
    "qwen2.5-vl-3b": dict(model_type="qwen2_5_vl", hidden=2048, inter=11008, layers=36, heads=16, kv_heads=2,
                          vocab=151936, tied=True,
                          vision=dict(depth=32, hidden_size=1280, num_heads=16, intermediate_size=3420,
                                      hidden_act="silu", window_size=112, fullatt_block_indexes=[7, 15, 23, 31],
                                      tokens_per_second=2)),
    "qwen3-vl-2b": dict(model_type="qwen3_vl", hidden=2048, inter=6144, layers=28, heads=16, kv_heads=8,
                        head_dim=128, vocab=151936, tied=True,
                        vision=dict(depth=24, hidden_size=1024, intermediate_size=4096, num_heads=16,
                                    deepstack_visual_indexes=[5, 11, 17], num_position_embeddings=2304)),
    "qwen3-vl-4b": dict(model_type="qwen3_vl", hidden=2560, inter=9728, layers=36, heads=32, kv_heads=8,
                        head_dim=128, vocab=151936, tied=True,
                        vision=dict(depth=24, hidden_size=1024, intermediate_size=4096, num_heads=16,
                                    deepstack_visual_indexes=[5, 11, 17], num_position_embeddings=2304)),
    "qwen3-vl-8b": dict(model_type="qwen3_vl", hidden=4096, inter=12288, layers=36, heads=32, kv_heads=8,
                        head_dim=128, vocab=151936, tied=False,
                        vision=dict(depth=27, hidden_size=1152, intermediate_size=4304, num_heads=16,
                                    deepstack_visual_indexes=[8, 16, 24], num_position_embeddings=2304)),
    # Gemma 3 4B text (34 layers, 5 local : 1 global attention, window 1024) + SigLIP-so400m at 896 px
    "medgemma-4b": dict(model_type="gemma3", hidden=2560, inter=10240, layers=34, heads=8, kv_heads=4,
                        head_dim=256, vocab=262208, tied=True,
                        vision=dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27,
                                    num_attention_heads=16, image_size=896, patch_size=14)),
}


def arch_config(arch: str | dict, tokenizer=None):
    """The transformers config of an `ARCHS` preset (or a dict of the same shape), with the small
    tokenizer's special-token ids."""
    import torch
    from transformers import Gemma3Config, Qwen2_5_VLConfig, Qwen2VLConfig, Qwen3VLConfig

    a = ARCHS[arch] if isinstance(arch, str) else arch
    family = a["model_type"]
    tokenizer = tokenizer or build_tokenizer(family)
    if family == "gemma3":
        ids = {t: tokenizer.convert_tokens_to_ids(t) for t in GEMMA_SPECIAL_TOKENS}
        config = Gemma3Config(
            text_config=dict(vocab_size=a["vocab"], hidden_size=a["hidden"], intermediate_size=a["inter"],
                             num_hidden_layers=a["layers"], num_attention_heads=a["heads"],
                             num_key_value_heads=a["kv_heads"], head_dim=a["head_dim"], query_pre_attn_scalar=256,
                             sliding_window=1024, max_position_embeddings=131072, pad_token_id=ids["<pad>"],
                             eos_token_id=ids["<eos>"], bos_token_id=ids["<bos>"], tie_word_embeddings=a["tied"]),
            vision_config=dict(a["vision"], vision_use_head=False), mm_tokens_per_image=256,
            boi_token_index=ids["<start_of_image>"], eoi_token_index=ids["<end_of_image>"],
            image_token_index=ids["<image_soft_token>"], tie_word_embeddings=a["tied"],
        )
        config.dtype = torch.bfloat16
        return config
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    text = dict(
        vocab_size=a["vocab"], hidden_size=a["hidden"], intermediate_size=a["inter"],
        num_hidden_layers=a["layers"], num_attention_heads=a["heads"], num_key_value_heads=a["kv_heads"],
        max_position_embeddings=32768, rms_norm_eps=1e-6, hidden_act="silu",
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0,
                         "mrope_section": a.get("mrope_section", [16, 24, 24])},
        bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
        tie_word_embeddings=a["tied"],
    )
    vision = dict(a["vision"], patch_size=14, spatial_merge_size=2, temporal_patch_size=2)
    if family == "qwen2_vl":
        cls, vision["hidden_size"] = Qwen2VLConfig, a["hidden"]  # merger output = text hidden size
    elif family == "qwen2_5_vl":
        cls, vision["out_hidden_size"] = Qwen2_5_VLConfig, a["hidden"]
    elif family == "qwen3_vl":
        cls = Qwen3VLConfig
        vision.update(patch_size=16, out_hidden_size=a["hidden"], hidden_act="gelu_pytorch_tanh")
        text.update(head_dim=a["head_dim"], max_position_embeddings=262144,
                    rope_parameters={"rope_type": "default", "rope_theta": 5000000.0, "mrope_section": [24, 20, 20],
                                     "mrope_interleaved": True})
    else:
        raise ValueError(f"unknown model_type {family!r}")
    config = cls(
        text_config=text, vision_config=vision,
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=a["tied"],
    )
    config.dtype = torch.bfloat16
    return config


def arch_parameters(arch: str | dict) -> int:
    """Parameter count of an `ARCHS` preset (meta device: no memory), tied embeddings counted once."""
    import torch
    from transformers import AutoModelForImageTextToText

    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(arch_config(arch))
    return sum(p.numel() for p in model.parameters())


def build_arch(out_dir: str | Path, arch: str | dict, seed: int = 0, shard_gb: float = 4.0) -> Path:
    """Write a same-size random-weight checkpoint of an `ARCHS` preset to `out_dir` (bf16 safetensors).

    Fast and lean: the model is instantiated on the meta device (shapes only) and each tensor is drawn
    directly in bf16 (N(0, 0.02); norms 1, biases 0) and written shard by shard, never holding the
    whole model or an fp32 copy in memory. Tensor names are the checkpoint (hub) layout that
    `save_pretrained` writes. Deterministic for a given seed.
    """
    import torch
    from safetensors.torch import save_file
    from transformers import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING, GenerationConfig
    from transformers.core_model_loading import revert_weight_conversion

    name = arch if isinstance(arch, str) else "custom"
    if isinstance(arch, str) and arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {sorted(ARCHS)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    family = (ARCHS[arch] if isinstance(arch, str) else arch)["model_type"]
    tokenizer = build_tokenizer(family)
    config = arch_config(arch, tokenizer)
    model_cls = MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING[type(config)]
    with torch.device("meta"):
        model = model_cls(config)
    state = model.state_dict()
    if config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    state = revert_weight_conversion(model, state)  # in-memory names -> checkpoint names
    n_params = sum(t.numel() for t in state.values())

    gen = torch.Generator().manual_seed(seed)
    limit, shards, shard, size = int(shard_gb * 1024**3), [], {}, 0
    for key in sorted(state):
        shape = state[key].shape
        t = torch.empty(shape, dtype=torch.bfloat16)
        if key.endswith(".bias"):
            t.zero_()
        elif len(shape) == 1:
            t.fill_(1.0)  # norm gains
        else:
            t.normal_(0.0, 0.02, generator=gen)
        if shard and size + t.numel() * 2 > limit:
            shards.append(shard)
            shard, size = {}, 0
        shard[key], size = t, size + t.numel() * 2
        if size >= limit:
            shards.append(shard)
            shard, size = {}, 0
    if shard:
        shards.append(shard)
    for old in list(out.glob("model*.safetensors")) + list(out.glob("model.safetensors.index.json")):
        old.unlink()
    weight_map, total = {}, 0
    for i, tensors in enumerate(shards):
        fname = "model.safetensors" if len(shards) == 1 else f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(tensors, str(out / fname), metadata={"format": "pt"})
        for key, t in tensors.items():
            weight_map[key], total = fname, total + t.numel() * 2
    if len(shards) > 1:
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    config.architectures = [model_cls.__name__]
    config.save_pretrained(out)
    if family == "gemma3":
        eos = [tokenizer.convert_tokens_to_ids(t) for t in ("<end_of_turn>", "<eos>")]
        GenerationConfig(eos_token_id=eos, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id).save_pretrained(out)
    else:
        ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
        GenerationConfig(eos_token_id=[ids["<|im_end|>"], ids["<|endoftext|>"]], pad_token_id=ids["<|endoftext|>"],
                         bos_token_id=ids["<|endoftext|>"]).save_pretrained(out)
    # the checkpoints' processor defaults: Qwen up to 1280 visual tokens; Gemma 3 one 896 px crop
    tiny_processor(family, tokenizer, config, max_pixels=28 * 28 * 1280).save_pretrained(out)
    info = {"builder": "qlora_grpo.tiny.build_arch", "arch": name, "seed": seed, "parameters": n_params,
            "dtype": "bfloat16", "weights": "random N(0, 0.02); norms 1; biases 0"}
    (out / "tiny_model.json").write_text(json.dumps(info, indent=2) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out_dir", nargs="?")
    p.add_argument("--arch", choices=sorted(ARCHS), help="write a same-size random-weight ARCH checkpoint instead")
    p.add_argument("--count", action="store_true", help="with --arch: print the parameter count only")
    p.add_argument("--size", default="demo", choices=sorted(SIZES))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--family", default="qwen2_vl", choices=FAMILY_NAMES,
                   help="model family (qlora_grpo.families); default qwen2_vl, the demo's")
    a = p.parse_args(argv)
    if a.arch:
        if a.count:
            print(f"{a.arch}: {arch_parameters(a.arch):,} parameters")
            return 0
        if not a.out_dir:
            p.error("OUT_DIR is required")
        out = build_arch(a.out_dir, a.arch, a.seed)
        print(f"{a.arch} (random weights, {json.loads((out / 'tiny_model.json').read_text())['parameters']:,} "
              f"parameters) written to {out}")
        return 0
    if not a.out_dir:
        p.error("OUT_DIR is required")
    out = build(a.out_dir, a.size, a.seed, a.family)
    info = json.loads((out / "tiny_model.json").read_text())
    print(f"tiny {a.family} ({a.size}, {info['parameters']:,} parameters) written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
