"""The prompt the GRPO policy sees equals the prompt evaluation uses (default mode), per template.

Policy side: `medvqa_data.dataset.to_trl` rows, then what TRL's GRPOTrainer does with a conversational
prompt and an `image` column (`prepare_multimodal_messages` inserts the image placeholder) and the
processor's chat template. Evaluation side: the text `eval.evaluate.generate_batch` hands to the processor.
"""

from __future__ import annotations

import datasets
import pytest

from medvqa_data.templates import TEMPLATES


class _Stop(Exception):
    pass


class _Recording:
    """The real processor's chat template; stops before the model would run."""

    def __init__(self, processor, seen: list):
        self.processor, self.seen = processor, seen

    def apply_chat_template(self, messages, **kw):
        text = self.processor.apply_chat_template(messages, **kw)
        self.seen.append(text)
        return text

    def __call__(self, *a, **kw):
        raise _Stop


@pytest.fixture(scope="module")
def rows(sample_prepared):
    from medvqa_data.schema import load_prepared

    closed = [dict(r) for r in load_prepared(sample_prepared, "train").select(range(3))]
    opened = {**closed[0], "id": "open-1", "options": [], "answer_letter": "", "answer_type": "open",
              "answer": "left lung", "question": "Where is the {lesion}?"}
    return datasets.Dataset.from_list([*closed, opened])


@pytest.mark.parametrize("template", TEMPLATES)
def test_policy_prompt_equals_the_evaluation_prompt(tiny_model, rows, template):
    from types import SimpleNamespace

    from transformers import AutoConfig, AutoProcessor
    from trl.data_utils import prepare_multimodal_messages

    import eval.evaluate as ev
    from medvqa_data.dataset import to_trl

    processor = AutoProcessor.from_pretrained(tiny_model)
    trl_rows = to_trl(rows, template, "default", "train", min_pixels=3136, max_pixels=12544)
    policy = []
    for i in range(len(trl_rows)):
        row = trl_rows[i]
        messages = prepare_multimodal_messages(row["prompt"], images=[row["image"]])
        policy.append(processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))
    seen: list[str] = []
    with pytest.raises(_Stop):
        ev.generate_batch(SimpleNamespace(config=AutoConfig.from_pretrained(tiny_model)), _Recording(processor, seen), list(rows), template, "default", 8, 3136, 12544)
    assert seen == policy
    assert all(p.count("<|image_pad|>") == 1 and p.endswith("<|im_start|>assistant\n") for p in policy)
    assert "Where is the {lesion}?" in policy[-1] and "short word or phrase" in policy[-1]
    assert len(set(policy[:3])) > 1 or len({r["question"] for r in list(rows)[:3]}) == 1
