from pathlib import Path

import pytest

from qlora_grpo.config import MedGRPOConfig, MedSFTConfig, parse_config, to_yaml
from qlora_grpo.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
PROFILES = sorted((ROOT / "configs").glob("*.yaml"))


def test_yaml_then_cli_override(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("output_dir: out\nmax_steps: 3\nlora_r: 8\nlearning_rate: 1e-5\nreward_funcs: [format]\n")
    cfg = parse_config(["--config", str(f), "--max_steps", "5"])
    assert (cfg.max_steps, cfg.lora_r, cfg.learning_rate, cfg.reward_funcs) == (5, 8, 1e-5, ["format"])
    assert cfg.bf16 is False and cfg.fp16 is False  # CPU: fp32 compute
    assert "lora_r: 8" in to_yaml(cfg)


@pytest.mark.parametrize("body,needle", [
    ("lora_rr: 8\n", "unknown config key 'lora_rr'"),
    ("lora_r: eight\n", "'lora_r'"),
    ("template: thinking\n", "template='thinking' is not valid"),
    ("quantization: int3\n", "quantization='int3'"),
    ("- a\n- b\n", "must be a YAML mapping"),
    ("reward_funcs: format\n", "'reward_funcs'"),
])
def test_bad_yaml_names_the_key(tmp_path, body, needle):
    f = tmp_path / "c.yaml"
    f.write_text(body)
    with pytest.raises(UserError, match=needle.replace("(", r"\(").replace("[", r"\[")):
        parse_config(["--config", str(f)])


def test_bad_cli_is_one_line_error():
    with pytest.raises(UserError, match="invalid int value"):
        parse_config(["--lora_r", "abc"])
    with pytest.raises(UserError, match="--nope"):
        parse_config(["--nope", "1"])
    with pytest.raises(UserError, match="not found"):
        parse_config(["--config", "does/not/exist.yaml"])


@pytest.mark.parametrize("profile", PROFILES, ids=[p.name for p in PROFILES])
def test_every_shipped_profile_resolves(profile):
    text = profile.read_text()
    assert text.startswith("#") and "python" in text.splitlines()[1] + text.splitlines()[2] + text.splitlines()[0]
    cls = MedSFTConfig if "sft" in profile.name else MedGRPOConfig
    cfg = parse_config(["--config", str(profile)], cls)
    assert cfg.output_dir
    if cls is MedGRPOConfig:
        from qlora_grpo.rewards import build_reward_funcs

        funcs, weights = build_reward_funcs(dict(zip(cfg.reward_funcs, cfg.reward_weights or [1.0] * 9)),
                                            cfg.template, cfg.prompt_mode)
        assert len(funcs) == len(cfg.reward_funcs)


def test_null_and_lists_on_the_command_line_parse_as_in_yaml(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("eval_subset: modality=CT\nexclude_modalities: [Ultrasound]\nmax_train_samples: 8\n")
    cfg = parse_config(["--config", str(f), "--eval_subset", "null", "--exclude_modalities", "[]",
                        "--max_train_samples=null", "--reward_weights", "[1.0, 0.5]"])
    assert (cfg.eval_subset, cfg.exclude_modalities, cfg.max_train_samples) == (None, [], None)
    assert cfg.reward_weights == [1.0, 0.5]
    assert parse_config(["--exclude_modalities", "[CT, MRI]"]).exclude_modalities == ["CT", "MRI"]
    assert parse_config(["--exclude_modalities", "CT", "MRI"]).exclude_modalities == ["CT", "MRI"]  # argparse form
    assert parse_config(["--report_to", "none"]).report_to == []  # "none" is a value (no loggers), as in YAML
    with pytest.raises(UserError, match="--lora_target_modules"):
        parse_config(["--lora_target_modules", "[1, 2]"])


@pytest.mark.parametrize("argv,needle", [
    (["--max_steps", "0"], "max_steps=0 means nothing"),
    (["--max_steps", "-3"], "max_steps=-3 means nothing"),
    (["--lora_r", "-4"], "lora_r=-4 means nothing"),
    (["--lora_dropout", "1.5"], "lora_dropout=1.5"),
    (["--min_pixels", "5000", "--max_pixels", "4000"], "larger than max_pixels"),
])
def test_values_that_mean_nothing_are_refused(argv, needle):
    with pytest.raises(UserError, match=needle):
        parse_config(argv)


def test_max_steps_minus_one_keeps_trls_epoch_meaning():
    assert parse_config(["--max_steps", "-1"]).max_steps == -1


def test_yaml_syntax_error_is_one_line(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("max_steps: 3\nlora_r: [8\ntemplate: think\n")
    with pytest.raises(UserError, match=r"not valid YAML at line \d+") as e:
        parse_config(["--config", str(f)])
    assert "\n" not in str(e.value)
