"""samples.jsonl: written every sample_log_steps steps and at the last step (a run shorter than
sample_log_steps used to end without any sample)."""

import json
from types import SimpleNamespace

from transformers import TrainerControl

from qlora_grpo.callbacks import SampleLogger, SampleRecorder


def _reward(completions, **kwargs):
    return [float(len(c)) for c in completions]


def test_last_step_is_logged_even_below_sample_log_steps(tmp_path):
    recorder = SampleRecorder()
    logger = SampleLogger(recorder, every=10, output_dir=str(tmp_path))
    args = SimpleNamespace(report_to=[], output_dir=str(tmp_path))
    recorder.wrap(_reward)(["<answer>A</answer>", "B"], prompts=["q1", "q1"], answer=["CT", "CT"], id=["x", "x"])
    for step in (1, 2):
        state = SimpleNamespace(is_world_process_zero=True, global_step=step, max_steps=3)
        logger.on_step_end(args, state, TrainerControl())
    assert not (tmp_path / "samples.jsonl").exists()  # steps 1, 2 of 3: not multiples of 10, not the last
    logger.on_step_end(args, SimpleNamespace(is_world_process_zero=True, global_step=3, max_steps=3), TrainerControl())
    rows = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [3, 3] and rows[0]["rewards"] == {"_reward": 18.0}
