"""Training entry points on the tiny model: SFT baseline, prompt masking, resume after SIGKILL, bad input,
backend selection, the fit estimate and its warning, the shipped accelerate configs, the generalization driver."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qlora_grpo import hardware
from qlora_grpo.config import MedSFTConfig, parse_config
from qlora_grpo.errors import UserError
from tests.conftest import ROOT, run_cli

# Qwen2-VL-2B-Instruct / 7B-Instruct and Qwen2.5-VL-3B-Instruct config.json facts (PROTOCOL.md, model cards).
QWEN2_VL_2B = {"model_type": "qwen2_vl", "tie_word_embeddings": True,
               "text_config": {"hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28,
                               "num_attention_heads": 12, "num_key_value_heads": 2, "vocab_size": 151936},
               "vision_config": {"depth": 32, "embed_dim": 1280, "mlp_ratio": 4, "hidden_size": 1536}}
QWEN2_VL_7B = {"model_type": "qwen2_vl", "tie_word_embeddings": False,
               "text_config": {"hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
                               "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064},
               "vision_config": {"depth": 32, "embed_dim": 1280, "mlp_ratio": 4, "hidden_size": 3584}}
QWEN25_VL_3B = {"model_type": "qwen2_5_vl", "tie_word_embeddings": True, "hidden_size": 2048,
                "intermediate_size": 11008, "num_hidden_layers": 36, "num_attention_heads": 16,
                "num_key_value_heads": 2, "vocab_size": 151936,
                "vision_config": {"depth": 32, "hidden_size": 1280, "out_hidden_size": 2048}}


def tiny_grpo_config(tmp_path: Path, tiny_model: Path, data: Path, **extra) -> Path:
    """A 2-step GRPO profile for the tiny model (our own, so other profiles can change freely)."""
    body = {"model_name_or_path": str(tiny_model), "data_path": str(data), "backend": "hf", "quantization": "nf4",
            "gradient_checkpointing": False, "lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.0,
            "template": "think", "min_pixels": 3136, "max_pixels": 12544,
            "reward_funcs": ["format", "accuracy"], "reward_weights": [1.0, 1.0], "num_generations": 2,
            "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1, "max_completion_length": 8,
            "beta": 0.04, "learning_rate": 5.0e-4, "max_steps": 2, "seed": 42, "logging_steps": 1,
            "save_steps": 1, "report_to": "none", "evaluate_after_training": False, **extra}
    path = tmp_path / "tiny_grpo.yaml"
    path.write_text("# tiny GRPO test profile\n# python train_qlora_grpo.py --config tiny_grpo.yaml\n"
                    + "".join(f"{k}: {json.dumps(v)}\n" for k, v in body.items()))
    return path


def config_dir(tmp_path: Path, name: str, cfg: dict) -> Path:
    d = tmp_path / name
    d.mkdir()
    (d / "config.json").write_text(json.dumps(cfg))
    return d


# ----------------------------------------------------------------------------- SFT baseline
def test_sft_baseline_profile_trains_tiny_model(tiny_model, sample_prepared, tmp_path):
    out = tmp_path / "sft"
    proc = run_cli(["train_sft.py", "--config", "configs/sft_baseline.yaml", "--model_name_or_path", str(tiny_model),
                    "--data_path", str(sample_prepared), "--output_dir", str(out), "--max_steps", "2",
                    "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "1",
                    "--max_pixels", "12544", "--evaluate_after_training", "false", "--report_to", "none"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "adapter_model.safetensors").is_file() and (out / "adapter_config.json").is_file()
    resolved = (out / "run_config.yaml").read_text()
    assert "completion_only_loss: true" in resolved and "template: think" in resolved
    assert "SFT adapter saved" in proc.stdout


def test_sft_collator_masks_prompt_and_image_tokens(tiny_model, sample_prepared, tmp_path):
    """The batch TRL's SFTTrainer builds from our to_sft rows: loss only on the completion (+ end of turn)."""
    from trl import SFTTrainer

    from medvqa_data.dataset import select_training_rows, to_sft
    from qlora_grpo.model import load_for_training

    cfg = parse_config(["--config", str(ROOT / "configs/sft_baseline.yaml"), "--model_name_or_path", str(tiny_model),
                        "--data_path", str(sample_prepared), "--output_dir", str(tmp_path / "o"),
                        "--max_pixels", "12544", "--report_to", "none"], MedSFTConfig)
    cfg.max_length, cfg.remove_unused_columns = None, False  # as train_sft.py
    cfg.dataset_kwargs = {"skip_prepare_dataset": False}
    rows = select_training_rows(cfg.data_path, cfg.train_split, max_rows=3)
    dataset = to_sft(rows, cfg.template, cfg.prompt_mode, cfg.sft_target, cfg.min_pixels, cfg.max_pixels)
    model, processor, _ = load_for_training(cfg)
    trainer = SFTTrainer(model=model, args=cfg, train_dataset=dataset, processing_class=processor)
    examples = [trainer.train_dataset[i] for i in range(3)]
    batch = trainer.data_collator(examples)
    tok = processor.tokenizer
    image_pad = tok.convert_tokens_to_ids("<|image_pad|>")
    assistant = tok.encode("<|im_start|>assistant\n", add_special_tokens=False)
    for i, ex in enumerate(examples):
        ids, labels = batch["input_ids"][i].tolist(), batch["labels"][i].tolist()
        assert image_pad in ids
        start = next(j for j in range(len(ids)) if ids[j:j + len(assistant)] == assistant) + len(assistant)
        assert all(label == -100 for label in labels[:start]), "prompt/system/image tokens must be masked"
        assert all(labels[j] == ids[j] for j in range(start, len(ids)) if batch["attention_mask"][i][j])
        target = ex["completion"][0]["content"]
        target = target if isinstance(target, str) else target[0]["text"]
        kept = tok.decode([t for t, label in zip(ids, labels) if label != -100])
        assert kept == target + "<|im_end|>\n"


# ----------------------------------------------------------------------------- resume after SIGKILL
def test_resume_after_sigkill_reaches_the_same_final_step(tiny_model, sample_prepared, tmp_path):
    """Killed with two complete checkpoints on disk: the rerun resumes from the newest one, finishes,
    and every step is logged exactly once."""
    from qlora_grpo import rundir

    out, steps = tmp_path / "run", 6
    config = tiny_grpo_config(tmp_path, tiny_model, sample_prepared, max_steps=steps, save_steps=2,
                              save_total_limit=3)
    args = [sys.executable, "train_qlora_grpo.py", "--config", str(config), "--output_dir", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    log = (tmp_path / "first.log").open("w")
    first = subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 300
    while time.time() < deadline and first.poll() is None and not (out / "checkpoint-4" / "COMPLETE").is_file():
        time.sleep(0.01)
    assert first.poll() is None, "the first run ended before it was killed:\n" + (tmp_path / "first.log").read_text()[-3000:]
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert (out / ".run.lock").is_file()  # the dead run's lock stays behind and must not block the resume
    complete = [p.name for p in rundir.checkpoints(out)]
    assert complete[:2] == ["checkpoint-2", "checkpoint-4"] and complete[-1] != f"checkpoint-{steps}", complete
    newest = complete[-1]

    second = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"resuming from {out / newest}\n" in second.stdout, second.stdout[-2000:]
    state = json.loads((out / f"checkpoint-{steps}" / "trainer_state.json").read_text())
    assert state["global_step"] == steps
    logged = [h["step"] for h in state["log_history"] if "loss" in h]
    assert logged == list(range(1, steps + 1))  # logging_steps 1: each step exactly once, none after the end
    assert not (out / ".run.lock").exists()


# ----------------------------------------------------------------------------- bad input
BAD_INPUT = {  # name: (script, overrides, what the one error line says)
    "missing-model": ("train_qlora_grpo.py", ["--model_name_or_path", "does/not/exist-model"],
                      "model directory not found"),
    "missing-data": ("train_qlora_grpo.py", ["--data_path", "does/not/exist-data"], "no prepared dataset"),
    "unknown-key": ("train_qlora_grpo.py", ["--config", "BAD_YAML"], "unknown config key 'lora_rr'"),
    "unknown-template": ("train_qlora_grpo.py", ["--template", "thinking"], "template='thinking' is not valid"),
    "sft-unknown-template": ("train_sft.py", ["--template", "thinking"], "template='thinking' is not valid"),
    "yaml-syntax": ("train_qlora_grpo.py", ["--config", "BAD_SYNTAX"], "is not valid YAML at line 3"),
    "negative-lora-r": ("train_qlora_grpo.py", ["--lora_r", "-4"], "lora_r=-4 means nothing"),
    "sft-max-steps-0": ("train_sft.py", ["--max_steps", "0"], "max_steps=0 means nothing"),
}


def check_bad_input(cases: list[str], tiny_model, sample_prepared, tmp_path):
    """Each case in its own process (the public entry point), all started at once to save wall time."""
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("lora_rr: 8\n")
    bad_syntax = tmp_path / "bad_syntax.yaml"
    bad_syntax.write_text("max_steps: 2\nlora_r: [8\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    grpo_config = tiny_grpo_config(tmp_path, tiny_model, sample_prepared)
    procs = {}
    for name in cases:
        script, override, _ = BAD_INPUT[name]
        config = "configs/sft_baseline.yaml" if script == "train_sft.py" else str(grpo_config)
        override = [{"BAD_YAML": str(bad_yaml), "BAD_SYNTAX": str(bad_syntax)}.get(a, a) for a in override]
        args = ([] if "--config" in override else ["--config", config]) + [
            "--model_name_or_path", str(tiny_model), "--data_path", str(sample_prepared),
            "--output_dir", str(tmp_path / name), *override]
        procs[name] = subprocess.Popen([sys.executable, script, *args], cwd=ROOT, env=env, text=True,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=600)
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert proc.returncode == 2, f"{name}: {stderr[-2000:]}"
        assert lines and lines[-1].startswith("error: ") and BAD_INPUT[name][2] in lines[-1], f"{name}: {lines[-3:]}"
        assert sum(line.startswith("error: ") for line in lines) == 1, name
        assert "Traceback" not in stdout + stderr, name
        assert not (tmp_path / name / "run_config.yaml").exists(), name


def test_bad_input_is_one_error_line_and_exit_2(tiny_model, sample_prepared, tmp_path):
    check_bad_input(["missing-model", "unknown-template", "yaml-syntax"], tiny_model, sample_prepared, tmp_path)


@pytest.mark.slow
def test_more_bad_input_is_one_error_line_and_exit_2(tiny_model, sample_prepared, tmp_path):
    check_bad_input(["missing-data", "unknown-key", "sft-unknown-template", "negative-lora-r", "sft-max-steps-0"],
                    tiny_model, sample_prepared, tmp_path)


# ----------------------------------------------------------------------------- backends (CPU-checkable parts)
def test_backend_auto_is_hf_on_cpu_and_unsloth_needs_a_gpu(monkeypatch):
    from qlora_grpo import cpu_compat
    from qlora_grpo.model import resolve_backend

    monkeypatch.setattr(cpu_compat, "has_cuda", lambda: False)
    assert resolve_backend("auto") == "hf" and resolve_backend("hf") == "hf"
    with pytest.raises(UserError, match="backend=unsloth needs a CUDA GPU"):
        resolve_backend("unsloth")


def test_backend_auto_picks_unsloth_only_when_importable(monkeypatch):
    import types

    from qlora_grpo import cpu_compat
    from qlora_grpo.model import resolve_backend

    monkeypatch.setattr(cpu_compat, "has_cuda", lambda: True)
    monkeypatch.setattr(cpu_compat, "_UNSLOTH_IMPORT", {})  # the import is tried once per process
    monkeypatch.setitem(sys.modules, "unsloth", None)  # import fails
    assert resolve_backend("auto") == "hf"
    monkeypatch.setattr(cpu_compat, "_UNSLOTH_IMPORT", {})
    monkeypatch.setitem(sys.modules, "unsloth", types.ModuleType("unsloth"))
    assert resolve_backend("auto") == "unsloth" and resolve_backend("unsloth") == "unsloth"


def test_preimport_backend_never_imports_unsloth_on_cpu(monkeypatch, tmp_path):
    from qlora_grpo import cpu_compat

    monkeypatch.setattr(cpu_compat, "has_cuda", lambda: False)
    monkeypatch.delitem(sys.modules, "unsloth", raising=False)
    f = tmp_path / "c.yaml"
    f.write_text("backend: unsloth\n")
    assert cpu_compat.preimport_backend(["--config", str(f)]) == "unsloth"
    assert cpu_compat.preimport_backend(["--config", str(f), "--backend", "hf"]) == "hf"
    assert "unsloth" not in sys.modules


def test_fast_inference_only_for_qwen25_vl():
    from qlora_grpo.model import check_fast_inference

    check_fast_inference(True, "qwen2_5_vl", "m")
    check_fast_inference(False, "qwen2_vl", "m")
    with pytest.raises(UserError, match="Qwen2-VL is not supported by backend unsloth-vllm; set fast_inference: false"):
        check_fast_inference(True, "qwen2_vl", "m")


def test_fast_inference_without_vllm_is_a_clear_error(monkeypatch, tmp_path):
    import importlib.util

    import torch

    from qlora_grpo.model import load_unsloth

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a))
    cfg = parse_config(["--config", str(ROOT / "configs/qwen25vl_3b_vllm.yaml"), "--output_dir", str(tmp_path)])
    with pytest.raises(UserError, match=r"fast_inference needs vLLM: .*pip install -r requirements-vllm\.txt"):
        load_unsloth(cfg, "models/Qwen2.5-VL-3B-Instruct", "qwen2_5_vl", torch.bfloat16)


def test_fast_inference_with_hf_backend_is_a_clear_error(tiny_model, sample_prepared, tmp_path):
    from qlora_grpo.model import load_for_training

    cfg = parse_config(["--model_name_or_path", str(tiny_model), "--backend", "hf", "--fast_inference", "true",
                        "--output_dir", str(tmp_path)])
    with pytest.raises(UserError, match="fast_inference .* needs backend: unsloth"):
        load_for_training(cfg)


# Parameter names of Unsloth 2026.x `FastModel.from_pretrained` / `FastBaseModel.get_peft_model`
# (FastVisionModel subclasses FastModel), read from unsloth/models/loader.py and vision.py.
UNSLOTH_FROM_PRETRAINED = {
    "model_name", "max_seq_length", "dtype", "load_in_4bit", "load_in_8bit", "load_in_16bit", "full_finetuning",
    "token", "device_map", "trust_remote_code", "use_gradient_checkpointing", "resize_model_vocab", "revision",
    "use_exact_model_name", "offload_embedding", "float32_mixed_precision", "fast_inference",
    "gpu_memory_utilization", "float8_kv_cache", "random_state", "max_lora_rank", "disable_log_stats",
    "qat_scheme", "load_in_fp8", "unsloth_tiled_mlp", "target_parameters", "text_only",
}
UNSLOTH_GET_PEFT_MODEL = {
    "r", "target_modules", "lora_alpha", "lora_dropout", "bias", "finetune_vision_layers",
    "finetune_language_layers", "finetune_attention_modules", "finetune_mlp_modules", "layers_to_transform",
    "layers_pattern", "use_gradient_checkpointing", "random_state", "max_seq_length", "use_rslora",
    "modules_to_save", "init_lora_weights", "loftq_config", "temporary_location",
}


@pytest.mark.parametrize("profile", ["rtx_24gb", "colab_t4", "qwen25vl_3b_vllm", "gpu_8gb"])
def test_unsloth_arguments_match_unsloth_api(profile):
    import torch

    from qlora_grpo.model import unsloth_load_kwargs, unsloth_peft_kwargs

    cfg = parse_config(["--config", str(ROOT / f"configs/{profile}.yaml")])
    load = unsloth_load_kwargs(cfg, torch.float16)
    peft = unsloth_peft_kwargs(cfg)
    assert set(load) <= UNSLOTH_FROM_PRETRAINED and set(peft) <= UNSLOTH_GET_PEFT_MODEL
    assert load["load_in_4bit"] is (cfg.quantization == "nf4") and load["use_gradient_checkpointing"] == "unsloth"
    assert load["max_seq_length"] >= cfg.max_pixels // 784 + cfg.max_completion_length
    assert peft["r"] == cfg.lora_r and peft["finetune_vision_layers"] is cfg.finetune_vision_layers
    if cfg.fast_inference:
        assert load["max_lora_rank"] == cfg.lora_r and load["gpu_memory_utilization"] == 0.4
    else:
        assert "max_lora_rank" not in load


def test_auto_compute_dtype_is_fp16_on_a_t4(monkeypatch):
    """torch reports emulated bf16 as supported on a T4; auto must still choose fp16 there."""
    import torch

    from qlora_grpo.config import resolve_compute_dtype

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    assert resolve_compute_dtype("auto") == "float16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert resolve_compute_dtype("auto") == "bfloat16"


# ----------------------------------------------------------------------------- fit estimate and warning
def test_estimate_matches_qwen2_vl_sizes(tmp_path):
    two, seven = config_dir(tmp_path, "2b", QWEN2_VL_2B), config_dir(tmp_path, "7b", QWEN2_VL_7B)
    p2, p7 = hardware.count_params(str(two)), hardware.count_params(str(seven))
    assert 2.1e9 < p2["linear"] + p2["embedding"] + p2["vision"] < 2.3e9  # Qwen2-VL-2B: 2.2B parameters
    assert 8.2e9 < p7["linear"] + p7["embedding"] + p7["vision"] < 8.4e9  # Qwen2-VL-7B: 8.3B parameters
    prompt = 64 + 401408 // 784
    q2 = hardware.estimate_gb(str(two), "nf4", 2, 8, prompt, 256, 16)  # rtx_24gb: G=8, 256 tokens, nf4
    assert q2["total"] < 12 and 2.1 < q2["weights"] < 2.5  # vision tower 16-bit (~0.67B x 2 B), as Unsloth
    q2v = hardware.estimate_gb(str(two), "nf4", 2, 8, prompt, 256, 16, quantize_vision=True)
    assert 1.2 < q2v["weights"] < 1.6  # quantize_vision_tower: the vision tower at the NF4 rate too
    assert 0.2 < q2["lora_optimizer"] < 0.4  # 18.5M LoRA params x 16 B
    b7 = hardware.estimate_gb(str(seven), "none", 2, 8, prompt, 256, 16)
    assert b7["weights"] > 15 and b7["total"] > 16  # a 16-bit 7B base does not fit a T4
    smaller = hardware.estimate_gb(str(two), "nf4", 2, 8, prompt, 256, 16, train_batch=2, generation_batch=8)
    assert smaller["activations"] < q2["activations"] / 3  # lowering per_device_train_batch_size helps


def _startup(cfg, monkeypatch, capsys, gpu):
    monkeypatch.setattr(hardware, "gpu_info", lambda: gpu)
    hardware.print_startup(cfg, None)
    return capsys.readouterr().out


def test_startup_warns_when_the_profile_will_not_fit(tmp_path, monkeypatch, capsys):
    seven = config_dir(tmp_path, "7b", QWEN2_VL_7B)
    cfg = parse_config(["--config", str(ROOT / "configs/rtx_24gb.yaml"), "--model_name_or_path", str(seven),
                        "--quantization", "none", "--output_dir", str(tmp_path / "o")])
    out = _startup(cfg, monkeypatch, capsys, ("Tesla T4", 15.0))
    assert "device: Tesla T4 (15.0 GB)" in out
    assert "WARNING: this profile is estimated at" in out and "but the GPU has 15.0 GB" in out
    assert "CUDA out of memory. Lower these" in out and "quantization: nf4 (now none)" in out
    out = _startup(cfg, monkeypatch, capsys, ("NVIDIA A100-SXM4-80GB", 79.2))
    assert "memory estimate:" in out and "WARNING" not in out


@pytest.mark.parametrize("profile", ["rtx_24gb", "gpu_8gb", "colab_t4", "a100_40gb_paper", "medr1_modality",
                                     "medr1_question_type"])
def test_qwen2_vl_2b_profiles_fit_their_gpu(tmp_path, monkeypatch, capsys, profile):
    two = config_dir(tmp_path, "2b", QWEN2_VL_2B)
    gpu_gb = {"rtx_24gb": 24.0, "gpu_8gb": 8.0, "colab_t4": 15.0, "a100_40gb_paper": 40.0}.get(profile, 24.0)
    cfg = parse_config(["--config", str(ROOT / f"configs/{profile}.yaml"), "--model_name_or_path", str(two),
                        "--output_dir", str(tmp_path / "o")])
    out = _startup(cfg, monkeypatch, capsys, ("GPU", gpu_gb))
    assert "memory estimate:" in out and "WARNING" not in out


PROFILE_ARCHS = {"Qwen2-VL-2B-Instruct": "qwen2-vl-2b", "Qwen2.5-VL-3B-Instruct": "qwen2.5-vl-3b",
                  "Qwen3-VL-2B-Instruct": "qwen3-vl-2b", "medgemma-4b-it": "medgemma-4b"}


@pytest.mark.parametrize("profile", sorted(p.stem for p in (ROOT / "configs").glob("*.yaml")
                                           if "Estimated peak" in p.read_text()))
def test_profile_header_states_the_start_up_estimate(tmp_path, profile):
    """The "Estimated peak ~X GB" a profile's header promises is what start-up prints for that profile's
    model (its same-size architecture from qlora_grpo.tiny), to the header's precision."""
    import re

    from qlora_grpo.config import MedGRPOConfig, MedSFTConfig
    from qlora_grpo.tiny import arch_config

    text = (ROOT / "configs" / f"{profile}.yaml").read_text()
    stated = float(re.search(r"Estimated peak[^~]*~([\d.]+) GB", text, re.S).group(1))
    model = re.search(r"^model_name_or_path: (\S+)", text, re.M).group(1)
    arch_config(PROFILE_ARCHS[Path(model).name]).save_pretrained(tmp_path / "model")
    cls = MedSFTConfig if "sft" in profile else MedGRPOConfig
    cfg = parse_config(["--config", str(ROOT / "configs" / f"{profile}.yaml"), "--model_name_or_path",
                        str(tmp_path / "model"), "--output_dir", str(tmp_path / "o")], cls)
    assert hardware.profile_estimate(cfg)["total"] == pytest.approx(stated, abs=0.06)


def test_vllm_reservation_is_part_of_the_estimate(tmp_path):
    three = config_dir(tmp_path, "3b", QWEN25_VL_3B)
    cfg = parse_config(["--config", str(ROOT / "configs/qwen25vl_3b_vllm.yaml"), "--model_name_or_path", str(three),
                        "--output_dir", str(tmp_path / "o")])
    plain = hardware.profile_estimate(cfg)
    with_gpu = hardware.profile_estimate(cfg, 24.0)
    assert with_gpu["vllm_reserved"] == pytest.approx(0.4 * 24.0)
    assert with_gpu["total"] == pytest.approx(plain["total"] + 9.6)
    assert 3.5e9 < sum(hardware.count_params(str(three))[k] for k in ("linear", "embedding", "vision")) < 4.0e9


# ----------------------------------------------------------------------------- shipped accelerate configs
@pytest.mark.parametrize("name,kind", [("ddp", "MULTI_GPU"), ("zero2", "DEEPSPEED")])
def test_accelerate_configs_load(name, kind):
    from accelerate.commands.config.config_args import load_config_from_file

    path = ROOT / "configs" / "accelerate" / f"{name}.yaml"
    cfg = load_config_from_file(str(path))
    assert cfg.distributed_type.name == kind and cfg.num_processes == 2
    head = path.read_text().splitlines()[:3]
    assert head[0].startswith("#") and any("accelerate launch" in line for line in head)
    if kind == "DEEPSPEED":
        assert cfg.deepspeed_config["zero_stage"] == 2


# ----------------------------------------------------------------------------- generalization driver
def test_generalization_driver_trains_each_value_once(tiny_model, sample_prepared, tmp_path):
    runs = tmp_path / "gen"
    driver = ["scripts/run_generalization.py", "--config", "configs/medr1_modality.yaml", "--axis", "modality",
              "--runs", str(runs), "--data_path", str(sample_prepared)]
    train_args = ["--", "--model_name_or_path", str(tiny_model), "--max_pixels", "12544", "--max_steps", "1",
                  "--num_generations", "2", "--per_device_train_batch_size", "2", "--gradient_accumulation_steps",
                  "1", "--max_completion_length", "8", "--evaluate_after_training", "false", "--report_to", "none"]
    plan = run_cli([*driver, "--dry_run"], timeout=120)
    assert plan.returncode == 0, plan.stderr[-2000:]
    assert plan.stdout.count("--train_subset modality=") == 5 and "dry run: 5 run(s) to start" in plan.stdout
    first = run_cli([*driver, "--values", "CT", *train_args], timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    assert (runs / "CT" / "DONE.json").is_file() and (runs / "CT" / "adapter_model.safetensors").is_file()
    assert "modality=CT" in (runs / "CT" / "run_config.yaml").read_text()
    index = json.loads((runs / "runs.json").read_text())
    assert index["axis"] == "modality" and index["runs"] == [
        {"value": "CT", "run_dir": str(runs / "CT"), "status": "done"}]
    again = run_cli([*driver, "--values", "CT", *train_args], timeout=120)
    assert again.returncode == 0 and "finished earlier" in again.stdout and "train_qlora_grpo.py" not in again.stdout
    bad = run_cli([*driver, "--values", "PET", "--dry_run"], timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "Traceback" not in bad.stdout + bad.stderr


# ----------------------------------------------------------------------------- reproducibility
def test_fresh_lora_weights_follow_the_seed(tiny_model, tmp_path):
    """The Trainer seeds after the model exists: load_for_training must seed before LoRA is created."""
    import torch

    from qlora_grpo.config import MedGRPOConfig
    from qlora_grpo.model import load_for_training

    def lora(seed: int, state: int) -> dict:
        cfg = parse_config(["--model_name_or_path", str(tiny_model), "--backend", "hf", "--quantization", "nf4",
                            "--lora_r", "4", "--seed", str(seed), "--output_dir", str(tmp_path / "o")], MedGRPOConfig)
        torch.manual_seed(state)  # whatever RNG state the process is in must not matter
        model, _, _ = load_for_training(cfg)
        return {k: v.detach().clone() for k, v in model.named_parameters() if "lora_A" in k}

    a, b, c = lora(1, state=11), lora(1, state=12), lora(2, state=11)
    assert a and a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
