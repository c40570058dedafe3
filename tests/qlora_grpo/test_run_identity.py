"""Run identity: `resume: auto` continues a run dir only when everything that defines the run matches what
it recorded; otherwise train_qlora_grpo.py / train_sft.py stop before writing anything, name the keys that
differ and the two ways out (a new output_dir, or --restart_run, which moves the old run aside).

The earlier runs here are recorded the way a real run records itself (`rundir.write_run_config` of a parsed
config, committed checkpoints, a final adapter), so the refusals run through `main()` in-process in well
under a second each; `test_real_runs_grpo_into_sft_dir_and_restart` (slow) does the same with real runs.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from qlora_grpo import rundir
from qlora_grpo.config import MedGRPOConfig, MedSFTConfig, parse_config
from qlora_grpo.errors import UserError
from tests.conftest import ROOT, run_cli
from tests.qlora_grpo.test_train import tiny_grpo_config


def digest(folder: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under `folder` (plus the folders themselves)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        out[str(p.relative_to(folder))] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
    return out


def record_run(argv: list[str], cls=MedGRPOConfig, finished: bool = True, steps=(1, 2)) -> Path:
    """A run dir as training leaves it: run_config.yaml, committed checkpoints, the final adapter."""
    cfg = parse_config(argv, cls)
    if cls is MedGRPOConfig:
        cfg.reward_weights = cfg.reward_weights or [1.0] * len(cfg.reward_funcs)  # as build_trainer does
    out = Path(cfg.output_dir)
    out.mkdir(parents=True)
    trainer = SimpleNamespace(accelerator=SimpleNamespace(is_main_process=True))
    rundir.write_run_config(trainer, cfg, "resolved config (SFT); backend: hf" if cls is MedSFTConfig
                            else "resolved config; backend: hf")
    for step in steps:
        ckpt = out / f"checkpoint-{step}"
        ckpt.mkdir()
        (ckpt / "adapter_model.safetensors").write_bytes(b"weights %d" % step)
        rundir.mark_complete(ckpt)
    if finished:
        (out / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": cfg.model_name_or_path}))
        (out / "adapter_model.safetensors").write_bytes(b"final weights")
    return out


def entry(name: str):
    return importlib.import_module(name).main


@pytest.fixture
def grpo_args(tiny_model, sample_prepared, tmp_path):
    config = tiny_grpo_config(tmp_path, tiny_model, sample_prepared)
    return ["--config", str(config), "--output_dir", str(tmp_path / "run")]


@pytest.mark.parametrize("change, named", [
    (["--template", "no-think"], "template: 'think' -> 'no-think'"),
    (["--max_steps", "3"], "max_steps: 2 -> 3 (the run has finished)"),
    (["--reward_weights", "1.0", "2.0"], "reward_weights: [1.0, 1.0] -> [1.0, 2.0]"),
    (["--lora_r", "4"], "lora_r: 8 -> 4"),
    (["--seed", "1"], "seed: 42 -> 1"),
    (["--max_pixels", "50176"], "max_pixels"),
])
def test_other_settings_in_a_used_run_dir_are_refused_and_nothing_is_touched(grpo_args, change, named):
    out = record_run(grpo_args)
    before = digest(out)
    with pytest.raises(UserError) as err:
        entry("train_qlora_grpo")([*grpo_args, *change])
    message = str(err.value)
    assert named in message and "new output_dir" in message and "--restart_run true" in message
    assert digest(out) == before  # not even the lock is left behind


def test_other_data_is_refused(grpo_args, tmp_path, sample_prepared):
    import shutil

    other = tmp_path / "other_data"
    shutil.copytree(sample_prepared, other)
    record_run(grpo_args)
    with pytest.raises(UserError, match="data_path: .* -> .*other_data"):
        entry("train_qlora_grpo")([*grpo_args, "--data_path", str(other)])


def test_grpo_pointed_at_an_sft_run_dir_refuses_without_touching_it(tiny_model, sample_prepared, tmp_path):
    out = tmp_path / "sft"
    common = ["--model_name_or_path", str(tiny_model), "--data_path", str(sample_prepared), "--output_dir", str(out),
              "--max_pixels", "12544", "--report_to", "none"]
    record_run(["--config", str(ROOT / "configs/sft_baseline.yaml"), *common], MedSFTConfig)
    before = digest(out)
    with pytest.raises(UserError, match="trainer: SFT -> GRPO"):
        entry("train_qlora_grpo")(["--config", str(tiny_grpo_config(tmp_path, tiny_model, sample_prepared)),
                                   "--output_dir", str(out)])
    assert digest(out) == before


def test_the_same_run_resumes_and_an_unfinished_one_may_run_longer(grpo_args):
    out = record_run(grpo_args)  # finished: the same command resumes its last checkpoint (nothing to train)
    lock, resume_from = rundir.open_run(parse_config(grpo_args + ["--report_to", "none"], MedGRPOConfig))
    lock.release()
    assert resume_from == str(out / "checkpoint-2")
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        (out / name).unlink()  # killed before its final save: not finished
    lock, resume_from = rundir.open_run(parse_config([*grpo_args, "--max_steps", "5"], MedGRPOConfig))
    lock.release()
    assert resume_from == str(out / "checkpoint-2")
    with pytest.raises(UserError, match="below the step 2 of checkpoint-2"):
        rundir.open_run(parse_config([*grpo_args, "--max_steps", "1"], MedGRPOConfig))


def test_restart_run_moves_the_old_run_aside_and_starts_fresh(grpo_args):
    out = record_run(grpo_args)
    before = digest(out)
    lock, resume_from = rundir.open_run(parse_config([*grpo_args, "--template", "no-think", "--restart_run", "true"],
                                                     MedGRPOConfig))
    lock.release()
    assert resume_from is None and not any(out.iterdir())
    (old,) = out.parent.glob("run.old-*")
    assert digest(old) == before


def test_resume_never_on_a_dir_with_checkpoints_says_what_it_holds(grpo_args):
    out = record_run(grpo_args, finished=False)
    with pytest.raises(UserError) as err:
        entry("train_qlora_grpo")([*grpo_args, "--resume", "never"])
    message = str(err.value)
    assert "holds a previous run (2 complete checkpoint(s), the last checkpoint-2)" in message
    assert "holds no complete checkpoint" not in message and "--restart_run true" in message
    assert (out / "checkpoint-2").is_dir()


def test_a_refused_run_leaves_no_empty_output_dir(grpo_args, tmp_path):
    out = tmp_path / "new" / "deeper" / "run"
    with pytest.raises(UserError, match="not a complete checkpoint"):
        entry("train_qlora_grpo")([*grpo_args[:2], "--output_dir", str(out), "--resume", str(tmp_path / "checkpoint-9")])
    assert not (tmp_path / "new").exists()


def test_lock_release_removes_only_the_empty_folders_it_created(tmp_path):
    lock = rundir.RunLock(tmp_path / "a" / "b").acquire()
    lock.release()
    assert not (tmp_path / "a").exists()
    lock = rundir.RunLock(tmp_path / "c").acquire()
    (tmp_path / "c" / "kept.txt").write_text("x")
    lock.release()
    assert (tmp_path / "c" / "kept.txt").is_file()


@pytest.mark.slow
def test_real_runs_grpo_into_sft_dir_and_restart(tiny_model, sample_prepared, tmp_path):
    """Real runs through the command line: an SFT run, GRPO pointed at it (refused, untouched), then a GRPO
    run with --restart_run (the SFT run moved aside whole), and a validation failure after the lock."""
    sft = tmp_path / "sft"
    base = ["--model_name_or_path", str(tiny_model), "--data_path", str(sample_prepared), "--max_pixels", "12544",
            "--max_steps", "1", "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "1",
            "--evaluate_after_training", "false", "--report_to", "none"]
    first = run_cli(["train_sft.py", "--config", "configs/sft_baseline.yaml", *base, "--output_dir", str(sft)])
    assert first.returncode == 0, first.stderr[-3000:]
    before = digest(sft)
    grpo = ["train_qlora_grpo.py", "--config", str(tiny_grpo_config(tmp_path, tiny_model, sample_prepared)),
            "--output_dir", str(sft), "--max_steps", "1"]
    refused = run_cli(grpo)
    lines = refused.stderr.strip().splitlines()
    assert refused.returncode == 2 and lines[-1].startswith("error: ") and "trainer: SFT -> GRPO" in lines[-1]
    assert "Traceback" not in refused.stderr and digest(sft) == before
    restarted = run_cli([*grpo, "--restart_run", "true"])
    assert restarted.returncode == 0, restarted.stderr[-3000:]
    (old,) = tmp_path.glob("sft.old-*")
    assert digest(old) == before and "(SFT)" not in (sft / "run_config.yaml").read_text()
    fresh = tmp_path / "never" / "run"
    bad = run_cli([*grpo[:3], "--output_dir", str(fresh), "--reward_funcs", "format", "nonsense"])
    assert bad.returncode == 2 and "nonsense" in bad.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "never").exists()
    assert os.listdir(tmp_path)  # sanity: the test dir itself is still there
