"""Faults injected into real training/evaluation processes on the tiny model (see faultlib.py):
SIGKILL at chosen and random points, disk full, NaN/inf, a raising reward, two runs on one dir,
and an evaluation killed midway. All of it runs with the network blocked."""

from __future__ import annotations

import pytest

from tests.reliability.helpers import run_harness


def _assert_campaign(k: dict, injected: int) -> None:
    assert not k["problems"], "\n".join(k["problems"])
    assert k["injected"] == injected and k["not_triggered"] == 0
    assert k["resumed"] >= injected
    assert k["steps_lost"] == 0  # no committed step trained twice, every run ends at max_steps
    assert k["crashes"] == 0
    assert k["corrupt_picks"] == 0  # resume never points at a checkpoint that does not load completely
    for r in k["rounds"]:
        assert r["final_global_step"] == r["max_steps"]
        assert r["logged_steps"] == list(range(1, r["max_steps"] + 1))  # each step logged exactly once
        assert r["same_data_order"] and r["final_adapter_error"] is None


def test_sigkill_during_saves_then_resume_loses_no_step(fast_faults):
    """Killed (1) after half of optimizer.pt of checkpoint-2 is written, (2) after checkpoint-2 is written
    but before it is committed, (3) during the final save: each resume finishes at the same step."""
    k = fast_faults["kill"]
    _assert_campaign(k, injected=3)
    runs = k["runs"]
    assert runs[0]["resume_pick_after"] == "checkpoint-1" and "checkpoint-2" in runs[0]["half_written_left"]
    assert runs[1]["trained"][0] == 2  # resumed right after the last committed step
    assert runs[-1]["fault"].startswith("none") and runs[-1]["trained"] == []  # only the final save was left


@pytest.mark.slow
def test_sigkill_at_20_random_points(tmp_path):
    """The full campaign of bench/fault_report.py: 20 kill points of every kind, with resume."""
    k = run_harness(tmp_path, "--scenarios", "kill", "--kills", "20", "--seed", "0")["kill"]
    _assert_campaign(k, injected=20)


def test_disk_full_keeps_the_previous_checkpoint(fast_faults):
    cases = fast_faults["enospc"]["cases"]
    assert len(cases) >= 2
    for c in cases:
        assert c["rc"] == 2 and not c["crashed"], c
        assert "disk full (No space left on device)" in c["error"], c
        assert "checkpoint-1 is intact" in c["error"] and "half-written checkpoint-2 was removed" in c["error"], c
        assert c["pick_after"] == "checkpoint-1" and c["pick_error"] is None and c["unmarked"] == []
        assert c["resume_rc"] == 0 and c["final_global_step"] == 3 and c["adapter_error"] is None


def test_nan_loss_stops_and_names_the_step(fast_faults):
    c = next(c for c in fast_faults["nonfinite"]["cases"] if c["case"] == "nan-stop")
    assert c["rc"] == 2 and not c["crashed"]
    assert any("non-finite gradients" in w and "at step 3" in w and "not applied" in w for w in c["warnings"])
    assert "training stopped" in c["error"] and "at step 3" in c["error"] and "checkpoint-2" in c["error"]
    assert c["pick"] == "checkpoint-2" and c["pick_error"] is None and c["marked"] == ["checkpoint-1", "checkpoint-2"]
    assert not c["final_adapter_written"]  # no adapter saved from a run that went wrong


def test_nan_loss_skip_goes_on(fast_faults):
    c = next(c for c in fast_faults["nonfinite"]["cases"] if c["case"] == "nan-skip")
    assert c["rc"] == 0 and not c["crashed"]
    assert any("at step 2" in w and "next batch" in w for w in c["warnings"])
    assert c["global_step"] == 4 and c["adapter_error"] is None  # finite weights, every step done
    assert c["nonfinite_logged"] == 1


def test_inf_reward_is_detected_with_its_step(fast_faults):
    c = next(c for c in fast_faults["nonfinite"]["cases"] if c["case"] == "inf-reward-stop")
    assert c["rc"] == 2 and not c["crashed"]
    assert any("non-finite reward at step 2" in w for w in c["warnings"])
    assert c["pick"] == "checkpoint-1" and c["pick_error"] is None


def test_raising_reward_scores_zero_and_training_goes_on(fast_faults):
    r = fast_faults["reward"]
    assert r["rc"] == 0 and not r["crashed"] and r["global_step"] == 3
    assert "raised ValueError" in r["warning"] and "scored 0.0" in r["warning"]
    assert r["reward_errors_logged"] > 0 and r["format_errors_logged"] > 0  # counted in trainer_state/TensorBoard


def test_second_run_on_the_same_dir_refuses_until_the_first_dies(fast_faults):
    r = fast_faults["lock"]
    assert r["b_rc"] == 2 and not r["b_crashed"]
    assert "another run" in r["b_error"] and ".run.lock" in r["b_error"]
    assert r["c_rc"] == 0 and r["c_trained"] == [2, 3] and r["global_step"] == 3  # took the dead run's lock over
    assert not r["lock_left"]


def test_evaluation_killed_midway_reuses_cached_predictions(fast_faults):
    r = fast_faults["eval"]
    assert r["first_killed"] and r["cached"] == 4  # two batches of 2 were written before the kill
    assert r["rerun_rc"] == 0 and not r["crashed"]
    assert r["rerun_generated"] == r["total"] - r["cached"]  # only the missing rows were generated
    assert r["unique_ids"] == r["total"] == 14 and not r["torn_line_kept"] and r["cached_unchanged"]  # sample test split
    assert r["metrics"]


def test_fault_runs_never_touched_the_network(fast_faults):
    assert fast_faults["network_attempts"] == ""
