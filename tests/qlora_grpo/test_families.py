"""The model-family registry against the real transformers classes of each family (fast: shapes only,
models on the meta device): LoRA target regexes hit the intended modules, the vision tower and projector
stay out of 4-bit, the data layer's resize gives the processor's size on odd images, the dtype and
backend rules refuse with one clear line."""

import json
import re

import pytest

from qlora_grpo import families, tiny
from qlora_grpo.errors import UserError

FAMILIES = list(families.FAMILIES)


@pytest.fixture(scope="module", params=FAMILIES)
def fam_setup(request):
    """(family, config, processor, module names) of the family's tiny model, without weights."""
    import torch
    from transformers import AutoModelForImageTextToText

    name = request.param
    tok = tiny.build_tokenizer(name)
    config = tiny.tiny_config(name, tiny.SIZES["test"], tok)
    processor = tiny.tiny_processor(name, tok, config)
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config)
    return families.FAMILIES[name], config, processor, [n for n, _ in model.named_modules()]


def test_every_model_type_maps_to_its_family():
    for fam in families.FAMILIES.values():
        for mtype in fam.model_types:
            assert families.for_model_type(mtype) is fam
    with pytest.raises(UserError, match="'llava' model; supported: qwen2_vl"):
        families.for_model_type("llava")


def test_lora_targets_hit_the_intended_modules(fam_setup):
    fam, _, _, names = fam_setup

    def hits(**kw):
        rx = fam.lora_target_regex(**{"language": False, "vision": False, "attention": True, "mlp": True, **kw})
        return [n for n in names if re.fullmatch(rx, n)]

    lang, vision = hits(language=True), hits(vision=True)
    layers = tiny.SIZES["test"]["layers"]
    assert len(lang) == 7 * layers  # q, k, v, o, gate, up, down in every decoder layer
    assert all(".language_model." in n for n in lang)
    assert vision and not set(vision) & set(lang)
    assert all(any(m in n for m in fam.vision_modules) for n in vision)
    attn_only = [n for n in names if re.fullmatch(fam.lora_target_regex(True, False, True, False), n)]
    assert len(attn_only) == 4 * layers
    if fam.projector:  # off by default (as Unsloth), on when asked
        proj = hits(projector=True)
        assert proj and not set(proj) & set(vision)
        assert not [n for n in hits(language=True, vision=True) if n in proj]
    else:
        with pytest.raises(UserError, match="no Linear projector"):
            hits(projector=True)


def test_vision_tower_and_projector_stay_16_bit(fam_setup):
    from transformers.quantizers.quantizers_utils import should_convert_module

    fam, _, _, names = fam_setup
    skip = fam.skip_quant_modules()
    vision = [n for n in names if any(f".{m}." in f".{n}." for m in fam.vision_modules)]
    lang = [n for n in names if ".language_model.layers." in n]
    assert vision and lang
    assert not any(should_convert_module(n, skip) for n in vision)
    assert all(should_convert_module(n, skip) for n in lang)


@pytest.mark.parametrize("size", [(97, 61), (61, 97), (333, 129), (40, 380), (1023, 767)])
def test_data_layer_resize_matches_the_processor(fam_setup, size):
    """Training and evaluation resize in the data layer (`fit_pixels` with the family's numbers); the
    processor must then see an image of exactly the size it would have produced itself."""
    from PIL import Image

    from medvqa_data.images import fit_pixels

    fam, config, processor, _ = fam_setup
    img = Image.effect_noise(size, 60).convert("RGB")
    resize = fam.resize_kwargs(config)
    fitted = fit_pixels(img, 3136, 50176, **resize)
    text = processor.apply_chat_template([{"role": "user", "content": [{"type": "image"},
                                                                       {"type": "text", "text": "Which?"}]}],
                                         add_generation_prompt=True, tokenize=False)
    kw = {} if fam.resize == "fixed" else {"min_pixels": 3136, "max_pixels": 50176}
    raw = processor(text=[text], images=[img], return_tensors="pt", images_kwargs=kw)
    ours = processor(text=[text], images=[fitted], return_tensors="pt", images_kwargs=kw)
    assert raw["input_ids"].tolist() == ours["input_ids"].tolist()  # same number of image tokens
    assert raw["pixel_values"].shape == ours["pixel_values"].shape
    if fam.resize == "fixed":
        assert fitted.size == (config.vision_config.image_size,) * 2
    else:
        factor = resize["factor"]
        patch = processor.image_processor.patch_size
        assert factor == patch * processor.image_processor.merge_size
        t, gh, gw = ours["image_grid_thw"][0].tolist()
        assert (gw * patch, gh * patch) == fitted.size  # the processor did not resize again
        assert raw["image_grid_thw"].tolist() == ours["image_grid_thw"].tolist()


@pytest.mark.parametrize("side", [56, 100, 392])
def test_visual_tokens_of_a_square_image_match_the_processor(fam_setup, side):
    """`visual_tokens(config, side)` (the benchmark's count) is the number of image tokens the processor
    puts in the prompt for a side x side image at min_pixels = max_pixels = side²: 28-px merged patches
    for Qwen2/2.5-VL, 32-px for Qwen3-VL, the fixed `mm_tokens_per_image` for Gemma 3."""
    from PIL import Image

    fam, config, processor, _ = fam_setup
    text = processor.apply_chat_template([{"role": "user", "content": [{"type": "image"},
                                                                       {"type": "text", "text": "Which?"}]}],
                                         add_generation_prompt=True, tokenize=False)
    kw = {} if fam.resize == "fixed" else {"min_pixels": side * side, "max_pixels": side * side}
    ids = processor(text=[text], images=[Image.new("RGB", (side, side))], return_tensors="pt", images_kwargs=kw)
    assert (ids["input_ids"][0] == config.image_token_id).sum().item() == fam.visual_tokens(config, side)
    qwen28, qwen32 = {56: 4, 100: 9, 392: 196}, {56: 1, 100: 16, 392: 169}
    expected = (config.mm_tokens_per_image if fam.name == "gemma3" else
                {"qwen2_vl": qwen28, "qwen2_5_vl": qwen28, "qwen3_vl": qwen32}[fam.name][side])
    assert fam.visual_tokens(config, side) == expected


def test_gemma3_refuses_fp16_and_unsupported_backends():
    g = families.FAMILIES["gemma3"]
    with pytest.raises(UserError, match="overflows in float16.*compute_dtype: float32"):
        g.check_dtype("float16")
    g.check_dtype("bfloat16")
    families.FAMILIES["qwen2_vl"].check_dtype("float16")
    with pytest.raises(UserError, match="not supported by backend unsloth-vllm; set fast_inference: false"):
        g.check_backend("unsloth", fast_inference=True)
    families.FAMILIES["qwen2_5_vl"].check_backend("unsloth", fast_inference=True)


@pytest.mark.slow  # ~15 s of CPU: four multi-billion-parameter models instantiated on the meta device
def test_same_size_benchmark_archs_match_the_published_parameter_counts():
    """Qwen3-VL-2B/4B/8B and MedGemma-4B built from `tiny.ARCHS` (meta device) have the published totals."""
    published = {"qwen3-vl-2b": 2_127_532_032, "qwen3-vl-4b": 4_437_815_808, "qwen3-vl-8b": 8_767_123_696,
                 "medgemma-4b": 4_300_079_472}
    for arch, n in published.items():
        assert tiny.arch_parameters(arch) == n, arch


@pytest.mark.slow
@pytest.mark.parametrize("arch", sorted(tiny.ARCHS))
def test_memory_estimate_counts_each_family_within_one_percent(arch, tmp_path):
    from qlora_grpo import hardware

    tiny.arch_config(arch).save_pretrained(tmp_path)
    p = hardware.count_params(str(tmp_path))
    assert abs(p["linear"] + p["embedding"] + p["vision"] - tiny.arch_parameters(arch)) < 0.01 * tiny.arch_parameters(arch)


@pytest.mark.parametrize("family", ["qwen3_vl", "gemma3"])
def test_build_arch_writes_a_loadable_checkpoint_of_each_new_family(family, tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    small = {"qwen3_vl": dict(model_type="qwen3_vl", hidden=64, inter=128, layers=2, heads=2, kv_heads=1,
                              head_dim=32, vocab=2048, tied=True,
                              vision=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2,
                                          deepstack_visual_indexes=[0], num_position_embeddings=64)),
             "gemma3": dict(model_type="gemma3", hidden=64, inter=128, layers=2, heads=2, kv_heads=1, head_dim=32,
                            vocab=2048, tied=True,
                            vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=2, image_size=896, patch_size=14))}[family]
    out = tiny.build_arch(tmp_path / family, small)
    model = AutoModelForImageTextToText.from_pretrained(str(out))
    assert model.config.model_type == family and families.for_model(str(out)).name == family
    assert AutoProcessor.from_pretrained(str(out)).tokenizer.chat_template == tiny.chat_template(family)


@pytest.mark.parametrize("profile,arch,gpu_gb", [("qwen3vl_2b_24gb", "qwen3-vl-2b", 24.0),
                                                 ("qwen3vl_2b_8gb", "qwen3-vl-2b", 8.0),
                                                 ("medgemma_4b_24gb", "medgemma-4b", 24.0),
                                                 ("medgemma_4b_8gb", "medgemma-4b", 8.0)])
def test_new_family_profiles_parse_and_fit_their_gpu(profile, arch, gpu_gb, tmp_path, monkeypatch, capsys):
    """The shipped profiles parse, and the start-up estimate (which knows the family: visual tokens per
    image, KV heads, vocabulary) fits the GPU each is made for, with the 16-bit headroom the estimate adds."""
    from qlora_grpo import hardware
    from qlora_grpo.config import parse_config
    from tests.conftest import ROOT

    tiny.arch_config(arch).save_pretrained(tmp_path / "m")
    cfg = parse_config(["--config", str(ROOT / f"configs/{profile}.yaml"), "--model_name_or_path",
                        str(tmp_path / "m"), "--compute_dtype", "bfloat16", "--output_dir", str(tmp_path / "o")])
    est = hardware.profile_estimate(cfg)
    assert est and est["total"] < gpu_gb
    fam = families.for_model(str(tmp_path / "m"))
    monkeypatch.setattr(hardware, "gpu_info", lambda: ("GPU", gpu_gb))
    hardware.print_startup(cfg, None)
    out = capsys.readouterr().out
    assert "memory estimate:" in out and "WARNING" not in out
    if fam.name == "gemma3":  # a fixed 256 tokens per image, whatever max_pixels says
        bigger = parse_config(["--config", str(ROOT / f"configs/{profile}.yaml"), "--model_name_or_path",
                               str(tmp_path / "m"), "--max_pixels", "1003520", "--compute_dtype", "bfloat16"])
        assert hardware.profile_estimate(bigger)["total"] == pytest.approx(est["total"])


@pytest.mark.parametrize("family", FAMILIES)
def test_inference_never_generates_vision_placeholders(family, tmp_path):
    """A model that wants to write its vision placeholders (their logits pushed up by +100): plain
    `generate` emits them, the project's inference path (`qlora_grpo.infer`) never does."""
    import torch
    from PIL import Image

    from qlora_grpo import infer

    model_dir = tmp_path / family
    assert tiny.main([str(model_dir), "--family", family, "--size", "test"]) == 0  # python -m qlora_grpo.tiny
    assert json.loads((model_dir / "tiny_model.json").read_text())["family"] == family
    p = infer.load(str(model_dir), max_new_tokens=4)
    vocab = p.processor.tokenizer.get_vocab()
    ids = [vocab[t] for t in families.FAMILIES[family].vision_tokens]

    def push_placeholders(module, args, output):
        output.logits[..., ids] += 100.0
        return output

    p.model.register_forward_hook(push_placeholders)
    generated = []
    original = p.model.generate

    def spy(*args, **kwargs):
        out = original(*args, **kwargs)
        generated.append(out[0, kwargs["input_ids"].shape[1]:].tolist())
        return out

    p.model.generate = spy
    img = p.image(Image.new("RGB", (97, 61), "gray"))
    text = p.processor.apply_chat_template([{"role": "user", "content": [{"type": "image"},
                                                                          {"type": "text", "text": "Which?"}]}],
                                           add_generation_prompt=True, tokenize=False)
    inputs = p.processor(text=[text], images=[img], return_tensors="pt")
    with torch.inference_mode():
        raw = original(**inputs, do_sample=False, max_new_tokens=2)[0, inputs["input_ids"].shape[1]:].tolist()
    assert set(raw) & set(ids)  # without suppression the placeholders come out
    p.ask(Image.new("RGB", (97, 61), "gray"), "Which modality is shown?", ["CT", "MRI"])
    assert generated and not set(generated[0]) & set(ids)


def test_entry_check_refuses_gemma3_in_fp16_on_a_t4(tmp_path, monkeypatch):
    """`compute_dtype: auto` resolves to float16 on a T4: a Gemma 3 run stops before its run dir exists."""
    import torch

    for name in ("gemma3", "qwen3_vl"):
        tiny.tiny_config(name, tiny.SIZES["test"], tiny.build_tokenizer(name)).save_pretrained(tmp_path / name)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    with pytest.raises(UserError, match="Gemma 3 / MedGemma overflows in float16"):
        families.check_run(str(tmp_path / "gemma3"), "auto")
    families.check_run(str(tmp_path / "gemma3"), "float32")
    assert families.check_run(str(tmp_path / "qwen3_vl"), "auto").name == "qwen3_vl"
