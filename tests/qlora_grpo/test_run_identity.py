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


# ----------------------------------------------------------------------------- the comparison itself
def argv_of(*argv: str, out: str = "unused") -> list[str]:
    return ["--output_dir", str(out), "--report_to", "none", *argv]


def cfg_of(*argv: str, cls=MedGRPOConfig, out: str = "unused"):
    return parse_config(argv_of(*argv, out=out), cls)


def recorded_by(cfg) -> dict:
    """run_config.yaml as a run with `cfg` writes it, read back."""
    import yaml

    from qlora_grpo.config import to_yaml

    return yaml.safe_load(to_yaml(cfg))


@pytest.mark.parametrize("then, now, expected", [
    ([], [], []),
    (["--seed", "1"], [], ["seed: 1 -> 42"]),
    (["--lr_scheduler_type", "cosine"], [], ["lr_scheduler_type: 'cosine' -> 'linear'"]),
    ([], ["--lr_scheduler_type", "cosine"], ["lr_scheduler_type: 'linear' -> 'cosine'"]),
    (["--learning_rate", "1e-4"], ["--learning_rate", "0.0001"], []),
    (["--beta", "0.04"], ["--beta", "0.05"], ["beta: 0.04 -> 0.05"]),
    (["--reward_weights", "1", "1"], [], []),  # unset weights are 1.0 each, as training fills them in
    (["--reward_weights", "1", "2"], ["--reward_weights", "1.0", "2.0"], []),
    (["--reward_weights", "1", "2"], [], ["reward_weights: [1.0, 2.0] -> [1.0, 1.0]"]),
    ([], ["--reward_funcs", "format", "accuracy", "reasoning"],
     ["reward_funcs: ['format', 'accuracy'] -> ['format', 'accuracy', 'reasoning']",
      "reward_weights: [1.0, 1.0] -> [1.0, 1.0, 1.0]"]),
    (["--lora_target_modules", "q_proj", "v_proj"], ["--lora_target_modules", "q_proj", "k_proj"],
     ["lora_target_modules: ['q_proj', 'v_proj'] -> ['q_proj', 'k_proj']"]),
])
def test_run_differences_compare_values_as_training_uses_them(then, now, expected):
    assert rundir.run_differences(cfg_of(*now), recorded_by(cfg_of(*then)), "grpo") == expected


def test_a_recorded_run_without_weights_means_one_per_reward():
    recorded = recorded_by(cfg_of("--reward_funcs", "format", "accuracy", "length"))
    recorded.pop("reward_weights", None)  # written before reward_weights was recorded
    now = cfg_of("--reward_funcs", "format", "accuracy", "length", "--reward_weights", "1", "1", "1")
    assert rundir.run_differences(now, recorded, "grpo") == []
    recorded.pop("reward_funcs")  # the default rewards
    assert rundir.run_differences(cfg_of(), recorded, "grpo") == []


@pytest.mark.parametrize("kind, expected", [
    ("sft", ["trainer: SFT -> GRPO"]), ("grpo", []), (None, [])])
def test_the_trainer_kind_is_compared_when_known(kind, expected):
    assert rundir.run_differences(cfg_of(), recorded_by(cfg_of()), kind) == expected


def test_an_sft_run_is_compared_on_its_own_keys():
    then = recorded_by(cfg_of(cls=MedSFTConfig))
    assert rundir.run_differences(cfg_of(cls=MedSFTConfig), then, "sft") == []
    changed = cfg_of("--sft_target", "reasoning", cls=MedSFTConfig)  # the last identity key, after GRPO-only ones
    assert rundir.run_differences(changed, then, "sft") == ["sft_target: 'answer' -> 'reasoning'"]
    assert rundir.run_differences(changed, then, "grpo") == ["trainer: GRPO -> SFT",
                                                             "sft_target: 'answer' -> 'reasoning'"]


def test_paths_compare_as_folders_and_hub_ids_as_text(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    monkeypatch.chdir(tmp_path)
    same = [("data", str(tmp_path / "data")), ("./data/", "data"),  # existing folder, written two ways
            ("./gone/../x", str(tmp_path / "x")),  # written as a path, not there (any more)
            ("/nowhere-xyz/../model-xyz", "/model-xyz"),
            ("~/m", os.path.expanduser("~/m")),
            ("Qwen/Qwen2-VL-2B-Instruct", "Qwen/Qwen2-VL-2B-Instruct")]  # a hub id, from any folder
    for then, now in same:
        recorded = recorded_by(cfg_of("--model_name_or_path", then))
        assert rundir.run_differences(cfg_of("--model_name_or_path", now), recorded, "grpo") == [], (then, now)
    recorded = recorded_by(cfg_of("--model_name_or_path", "org/model"))
    assert rundir.run_differences(cfg_of("--model_name_or_path", "./org/model"), recorded, "grpo") == [
        "model_name_or_path: 'org/model' -> './org/model'"]  # a hub id is not the local folder of that name


# ----------------------------------------------------------------------------- check_same_run, open_run
@pytest.mark.parametrize("finished", [True, False])
def test_a_run_with_default_max_steps_continues_unchanged(tmp_path, finished, capsys):
    out = record_run(argv_of(out=tmp_path / "run"), finished=finished)
    rundir.check_same_run(cfg_of(out=out))  # max_steps not recorded (the default): not a change
    assert capsys.readouterr().out == ""


def test_the_refusal_names_every_difference_and_whether_the_run_finished(tmp_path):
    out = record_run(argv_of("--max_steps", "4", out=tmp_path / "run"), finished=True)
    with pytest.raises(UserError) as err:
        rundir.check_same_run(cfg_of("--max_steps", "6", "--seed", "1", out=out))
    assert str(err.value) == (
        f"output_dir {out} holds a finished run with other settings (seed: 42 -> 1; max_steps: 4 -> 6 (the run has "
        "finished)); continuing it would mix two runs. Use a new output_dir, or pass --restart_run true to move "
        f"the old run to run.old-<time>/ and start over")
    (out / "adapter_config.json").unlink()
    with pytest.raises(UserError, match=r"holds a run with other settings \(seed: 42 -> 1\); continuing"):
        rundir.check_same_run(cfg_of("--max_steps", "6", "--seed", "1", out=out))


@pytest.mark.parametrize("resume, max_steps, refused", [
    ("auto", "1", True), ("auto", "2", False), ("never", "1", False), ("checkpoint-4", "3", True),
    ("checkpoint-4", "4", False), ("auto", "-1", False)])
def test_an_unfinished_run_may_change_max_steps_but_not_below_its_checkpoint(tmp_path, capsys, resume, max_steps,
                                                                             refused):
    out = record_run(argv_of("--max_steps", "8", out=tmp_path / "run"), finished=False, steps=(2, 4))
    if resume == "auto":
        (out / "checkpoint-4" / "COMPLETE").unlink()  # auto resumes checkpoint-2
    resume = str(out / resume) if resume.startswith("checkpoint") else resume
    cfg = cfg_of("--max_steps", max_steps, "--resume", resume, out=out)
    if refused:
        step = 2 if resume == "auto" else 4
        with pytest.raises(UserError, match=rf"max_steps: 8 -> {max_steps} \(below the step {step} of "
                                            rf"checkpoint-{step}, which this run would continue\)"):
            rundir.check_same_run(cfg)
    else:
        rundir.check_same_run(cfg)
        assert capsys.readouterr().out == (f"max_steps 8 -> {max_steps}: continuing the unfinished run in {out} to "
                                           "the new max_steps\n")


def test_only_rank_0_announces_a_longer_run(tmp_path, capsys, monkeypatch):
    out = record_run(argv_of("--max_steps", "8", out=tmp_path / "run"), finished=False)
    cfg = cfg_of("--max_steps", "9", out=out)
    monkeypatch.setattr(type(cfg), "process_index", property(lambda self: 1))
    rundir.check_same_run(cfg)
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("header, kind", [
    ("# resolved config (SFT); backend: hf", "sft"), ("# resolved config; backend: unsloth", "grpo"),
    ("seed: 1", None)])
def test_recorded_kind_reads_the_header(tmp_path, header, kind):
    (tmp_path / "run_config.yaml").write_text(f"{header}\nmodel_name_or_path: m\n# resolved config (SFT)\n")
    assert rundir.recorded_kind(tmp_path) == kind
    assert rundir.recorded_kind(tmp_path / "missing") is None
    assert rundir.trainer_kind(cfg_of(cls=MedSFTConfig)) == "sft" and rundir.trainer_kind(cfg_of()) == "grpo"


def test_restart_run_with_a_checkpoint_to_resume_is_refused(tmp_path):
    with pytest.raises(UserError) as err:
        rundir.open_run(cfg_of("--restart_run", "true", "--resume", str(tmp_path / "checkpoint-2"), out=tmp_path))
    assert str(err.value) == (f"restart_run starts a new run, resume={tmp_path / 'checkpoint-2'} continues one; "
                              "drop one of them")


def test_restart_run_says_where_the_old_run_went(tmp_path, capsys, monkeypatch):
    from qlora_grpo import hardware

    monkeypatch.setattr(hardware, "print_startup", lambda cfg, resume_from: print(f"startup {resume_from}"))
    out = record_run(argv_of(out=tmp_path / "run"), finished=True)
    lock, resume_from = rundir.open_run(cfg_of("--restart_run", "true", "--resume", "never", out=out))
    lock.release()
    (old,) = tmp_path.glob("run.old-*")
    assert resume_from is None
    assert capsys.readouterr().out == f"restart_run: moved the previous run in {out} to {old}\nstartup None\n"
    lock, resume_from = rundir.open_run(cfg_of(out=tmp_path / "fresh"))
    lock.release()
    assert capsys.readouterr().out == "startup None\n"
    out2 = record_run(argv_of(out=tmp_path / "again"), finished=False)
    lock, resume_from = rundir.open_run(cfg_of(out=out2))
    lock.release()
    assert resume_from == str(out2 / "checkpoint-2")
    assert capsys.readouterr().out == f"startup {out2 / 'checkpoint-2'}\n"


def test_other_ranks_neither_lock_nor_refuse_the_run_dir(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    out.mkdir()
    (out / "logs.txt").write_text("rank 0 was here first")
    cfg = cfg_of(out=out)
    monkeypatch.setattr(type(cfg), "process_index", property(lambda self: 1))
    assert rundir.open_run(cfg) == (None, None)
    assert not (out / rundir.LOCK).exists() and capsys.readouterr().out == ""


def test_the_old_run_goes_to_a_dated_sibling_with_a_free_name(tmp_path, monkeypatch):
    import re
    import time

    out = tmp_path / "run"
    out.mkdir()
    assert rundir.move_run_aside(out) is None and rundir.move_run_aside(tmp_path / "missing") is None
    (out / "a.txt").write_text("1")
    (out / rundir.LOCK).write_text("held")
    moved = rundir.move_run_aside(out)
    assert re.fullmatch(r"run\.old-\d{8}-\d{6}", moved.name) and (moved / "a.txt").read_text() == "1"
    assert [p.name for p in out.iterdir()] == [rundir.LOCK]
    monkeypatch.setattr(time, "strftime", lambda fmt: "20261204-120000")
    for n in ("", "-2", "-3"):
        (out / "b.txt").write_text(n)
        assert rundir.move_run_aside(out).name == f"run.old-20261204-120000{n}"
    assert (tmp_path / "run.old-20261204-120000-3" / "b.txt").read_text() == "-3"
