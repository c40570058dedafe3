"""The model-family registry: everything that differs between the vision-language families we train.

One `Family` entry per family (Qwen2-VL, Qwen2.5-VL, Qwen3-VL, Gemma 3 / MedGemma). The rest of the
package asks the registry instead of assuming Qwen2-VL: which `model_type`s belong to it, which
vision placeholder tokens must never be generated, the LoRA target regexes (language / vision /
projector x attention / MLP), which modules stay 16-bit under 4-bit quantization, how the pixel
budget maps to an image size (handed to the data layer as plain numbers, so medvqa_data never
imports this package), the chat-template quirks, the backends that support it and its dtype limits.

Adding a family = one `Family(...)` below plus its tiny builder in `qlora_grpo.tiny`.

Defaults match Unsloth's `FastVisionModel`: with `finetune_vision_layers` the vision *blocks* get
LoRA but the projector (Qwen's `merger`, Gemma's `multi_modal_projector`) does not unless asked for,
and the whole vision tower + projector stay 16-bit in the hf QLoRA path (`skip_quant_modules`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from qlora_grpo.errors import UserError

LANG_ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")
LANG_MLP = ("gate_proj", "up_proj", "down_proj")


def _alt(names: tuple[str, ...]) -> str:
    return "(" + "|".join(names) + ")"


@dataclass(frozen=True)
class Family:
    name: str  # registry key
    label: str  # for messages and the README
    model_types: tuple[str, ...]  # config.json `model_type` values of this family
    vision_tokens: tuple[str, ...]  # placeholder tokens the model must never generate as text
    # LoRA regex pieces (PEFT full match over module names of the loaded model)
    language_layers: str  # prefix up to the sub-module: r".*\.language_model\.layers\.\d+\."
    language_attn: tuple[str, ...]
    language_mlp: tuple[str, ...]
    vision_layers: str  # prefix of one vision block
    vision_attn: tuple[str, ...]  # "attn.qkv" style paths relative to `vision_layers`
    vision_mlp: tuple[str, ...]
    projector: str  # regex of the vision -> language projection Linear layers ("" = none LoRA can target)
    vision_modules: tuple[str, ...]  # module names kept 16-bit under NF4 (vision tower, projector)
    # pixel budget
    resize: str  # "smart" (multiples of patch x merge, area in [min_pixels, max_pixels]) or "fixed" (square)
    eos_tokens: tuple[str, ...]  # generation stops at these
    backends: tuple[str, ...]  # "hf", "unsloth", "unsloth-vllm"
    fp16_ok: bool = True  # False: fp16 activations overflow (Gemma 3); refuse compute_dtype float16
    template_notes: str = ""  # chat-template quirks, for the README and error messages
    processor_pixel_kwargs: bool = True  # the processor accepts min_pixels / max_pixels
    examples: tuple[str, ...] = field(default_factory=tuple)  # public checkpoints of this family

    # ------------------------------------------------------------------ LoRA targets
    def lora_target_regex(self, language: bool, vision: bool, attention: bool, mlp: bool,
                          projector: bool = False) -> str:
        """PEFT `target_modules` regex (full match) over the language model, vision blocks and/or projector."""
        parts = []
        if language:
            names = (self.language_attn if attention else ()) + (self.language_mlp if mlp else ())
            if names:
                parts.append(self.language_layers + _alt(names))
        if vision:
            names = (self.vision_attn if attention else ()) + (self.vision_mlp if mlp else ())
            if names:
                parts.append(self.vision_layers + _alt(tuple(n.replace(".", r"\.") for n in names)))
        if projector:
            if not self.projector:
                raise UserError(f"{self.label} has no Linear projector LoRA can target; "
                                "set finetune_projector: false")
            parts.append(self.projector)
        if not parts:
            raise UserError("no LoRA targets: enable finetune_language_layers or finetune_vision_layers "
                            "and attention or MLP modules")
        return "|".join(f"(?:{p})" for p in parts)

    def skip_quant_modules(self, quantize_vision: bool = False) -> list[str]:
        """`llm_int8_skip_modules` for bitsandbytes: the output head plus the vision tower and projector
        (with `quantize_vision`, the `quantize_vision_tower` option of the hf backend: the projector only).

        transformers matches these with `re.match` from the start of the module name (or a name suffix),
        so a bare "visual" would match nothing inside "model.visual.blocks.0..."; hence the `.*\\.` prefix."""
        if quantize_vision:
            return ["lm_head", *([self.projector] if self.projector else [])]
        return ["lm_head", *(rf".*\.{m}" for m in self.vision_modules)]

    # ------------------------------------------------------------------ pixels
    def resize_kwargs(self, config) -> dict:
        """Plain numbers for `medvqa_data.images.fit_pixels` (the data layer's copy of the processor's
        resize), read from the model's config: `factor` (Qwen: patch x merge, 28 or 32 px) or
        `fixed_side` (Gemma 3: the SigLIP input side, 896 px)."""
        v = config.vision_config
        if self.resize == "fixed":
            return {"fixed_side": int(v.image_size)}
        patch = v.patch_size if isinstance(v.patch_size, int) else v.patch_size[0]
        return {"factor": int(patch) * int(v.spatial_merge_size)}

    def image_tokens(self, config, max_pixels: int) -> int:
        """Visual tokens per image in the language model at the pixel budget (memory estimates)."""
        if self.resize == "fixed":
            return int(getattr(config, "mm_tokens_per_image", 256))
        return max(1, max_pixels // self.resize_kwargs(config)["factor"] ** 2)

    def visual_tokens(self, config, side: int) -> int:
        """Exact visual tokens of one `side` x `side` image given with min_pixels = max_pixels = side²:
        Qwen's smart resize to multiples of patch x merge, one token per merged patch; Gemma 3's fixed
        SigLIP input always pools to `mm_tokens_per_image`."""
        if self.resize == "fixed":
            return int(getattr(config, "mm_tokens_per_image", 256))
        from medvqa_data.images import smart_resize

        factor = self.resize_kwargs(config)["factor"]
        height, width = smart_resize(side, side, factor, side * side, side * side)
        return (height // factor) * (width // factor)

    def processor_kwargs(self, min_pixels: int, max_pixels: int) -> dict:
        """Extra `AutoProcessor.from_pretrained` keywords for the pixel budget (none for a fixed-size input)."""
        return {"min_pixels": min_pixels, "max_pixels": max_pixels} if self.processor_pixel_kwargs else {}

    # ------------------------------------------------------------------ backends and dtypes
    def check_backend(self, backend: str, fast_inference: bool = False) -> None:
        key = "unsloth-vllm" if backend == "unsloth" and fast_inference else backend
        if key not in self.backends:
            with_vllm = [f.label for f in FAMILIES.values() if "unsloth-vllm" in f.backends]
            hint = (f"set fast_inference: false (vLLM rollouts: {', '.join(with_vllm)})" if key == "unsloth-vllm"
                    else "use backend: hf")
            raise UserError(f"{self.label} is not supported by backend {key}; {hint}")

    def check_dtype(self, dtype_name: str) -> None:
        if dtype_name == "float16" and not self.fp16_ok:
            raise UserError(f"{self.label} overflows in float16 (activations exceed 65504; Gemma 3 is bf16-only); "
                            "set compute_dtype: bfloat16 on a bf16 GPU (Ampere or newer), or compute_dtype: float32 "
                            "on a T4/V100 (slower, about twice the activation memory)")


QWEN_VISION = ("<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>")
QWEN_LANG = r".*\.language_model\.layers\.\d+\.(?:self_attn|mlp)\."
QWEN_TEMPLATE = ("ChatML (<|im_start|>role ... <|im_end|>); the image is <|vision_start|><|image_pad|><|vision_end|> "
                 "at its place in the user turn, expanded by the processor to one <|image_pad|> per merged patch")

FAMILIES: dict[str, Family] = {
    "qwen2_vl": Family(
        name="qwen2_vl", label="Qwen2-VL", model_types=("qwen2_vl",), vision_tokens=QWEN_VISION,
        language_layers=QWEN_LANG, language_attn=LANG_ATTN, language_mlp=LANG_MLP,
        vision_layers=r".*\.visual\.blocks\.\d+\.", vision_attn=("attn.qkv", "attn.proj"),
        vision_mlp=("mlp.fc1", "mlp.fc2"), projector=r".*\.visual\.merger\.mlp\.(?:0|2)",
        vision_modules=("visual",), resize="smart", eos_tokens=("<|im_end|>", "<|endoftext|>"),
        backends=("hf", "unsloth"),
        template_notes=QWEN_TEMPLATE + "; adds the system prompt 'You are a helpful assistant.' when none is given",
        examples=("Qwen/Qwen2-VL-2B-Instruct", "Qwen/Qwen2-VL-7B-Instruct"),
    ),
    "qwen2_5_vl": Family(
        name="qwen2_5_vl", label="Qwen2.5-VL", model_types=("qwen2_5_vl",), vision_tokens=QWEN_VISION,
        language_layers=QWEN_LANG, language_attn=LANG_ATTN, language_mlp=LANG_MLP,
        vision_layers=r".*\.visual\.blocks\.\d+\.", vision_attn=("attn.qkv", "attn.proj"),
        vision_mlp=("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"), projector=r".*\.visual\.merger\.mlp\.(?:0|2)",
        vision_modules=("visual",), resize="smart", eos_tokens=("<|im_end|>", "<|endoftext|>"),
        backends=("hf", "unsloth", "unsloth-vllm"),
        template_notes=QWEN_TEMPLATE + "; adds the system prompt 'You are a helpful assistant.' when none is given",
        examples=("Qwen/Qwen2.5-VL-3B-Instruct", "Qwen/Qwen2.5-VL-7B-Instruct"),
    ),
    "qwen3_vl": Family(
        name="qwen3_vl", label="Qwen3-VL", model_types=("qwen3_vl",), vision_tokens=QWEN_VISION,
        language_layers=QWEN_LANG, language_attn=LANG_ATTN, language_mlp=LANG_MLP,
        vision_layers=r".*\.visual\.blocks\.\d+\.", vision_attn=("attn.qkv", "attn.proj"),
        vision_mlp=("mlp.linear_fc1", "mlp.linear_fc2"),
        # the final merger and the DeepStack mergers that feed vision features into early LM layers
        projector=r".*\.visual\.(?:merger|deepstack_merger_list\.\d+)\.linear_fc(?:1|2)",
        vision_modules=("visual",), resize="smart", eos_tokens=("<|im_end|>", "<|endoftext|>"),
        backends=("hf", "unsloth"),
        template_notes=QWEN_TEMPLATE + "; 32-px merged patches (patch 16 x merge 2); no default system prompt",
        examples=("Qwen/Qwen3-VL-2B-Instruct", "Qwen/Qwen3-VL-4B-Instruct", "Qwen/Qwen3-VL-8B-Instruct"),
    ),
    "gemma3": Family(
        name="gemma3", label="Gemma 3 / MedGemma", model_types=("gemma3",),
        vision_tokens=("<start_of_image>", "<end_of_image>", "<image_soft_token>"),
        language_layers=r".*\.language_model\.layers\.\d+\.(?:self_attn|mlp)\.", language_attn=LANG_ATTN,
        language_mlp=LANG_MLP,
        vision_layers=r".*\.vision_tower\.encoder\.layers\.\d+\.",
        vision_attn=("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj"),
        vision_mlp=("mlp.fc1", "mlp.fc2"),
        projector="",  # multi_modal_projector is a bare weight matrix (mm_input_projection_weight), not a Linear
        vision_modules=("vision_tower", "multi_modal_projector"), resize="fixed",
        eos_tokens=("<end_of_turn>", "<eos>"), backends=("hf", "unsloth"), fp16_ok=False,
        processor_pixel_kwargs=False,
        template_notes=("<start_of_turn>user / model turns, starts with <bos>; a system message is folded into the "
                        "first user turn; roles must alternate; the image is <start_of_image>, expanded by the "
                        "processor to 256 <image_soft_token> (one 896x896 SigLIP crop, pan-and-scan off)"),
        examples=("google/medgemma-4b-it", "google/gemma-3-4b-it"),
    ),
}

BY_MODEL_TYPE = {t: f for f in FAMILIES.values() for t in f.model_types}
SUPPORTED_MODEL_TYPES = tuple(BY_MODEL_TYPE)


def for_model_type(model_type: str, where: str = "the model") -> Family:
    try:
        return BY_MODEL_TYPE[model_type]
    except KeyError:
        raise UserError(f"{where} is a {model_type!r} model; supported: {', '.join(SUPPORTED_MODEL_TYPES)} "
                        f"({', '.join(f.label for f in FAMILIES.values())})") from None


def for_config(config) -> Family:
    return for_model_type(config.model_type)


def for_model(path: str) -> Family:
    """The family of a checkpoint directory (reads config.json only)."""
    from transformers import AutoConfig

    return for_model_type(AutoConfig.from_pretrained(path, trust_remote_code=False).model_type, str(path))


def check_run(model_path: str, compute_dtype: str) -> Family | None:
    """The entry points' early check (before the run dir is touched): a supported family, and a compute
    dtype it tolerates ("auto" resolved as training will resolve it)."""
    from pathlib import Path

    from qlora_grpo.config import resolve_compute_dtype

    if not Path(model_path).is_dir():  # a hub id: checked once the model is fetched (load_for_training)
        return None
    family = for_model(model_path)
    family.check_dtype(resolve_compute_dtype(compute_dtype))
    return family


def resize_kwargs_of(model) -> dict:
    """`fit_pixels` keywords for a loaded model (or PEFT wrapper): the data layer's resize numbers."""
    return for_config(model.config).resize_kwargs(model.config)


def resize_kwargs_for(path: str) -> dict:
    """`fit_pixels` keywords for a checkpoint: what the entry points hand to the data layer."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path, trust_remote_code=False)
    return for_config(config).resize_kwargs(config)
