"""A scripted stand-in for `model.generate`: the completion is chosen by a script from the decoded
prompt, so tests of inference and evaluation know exactly what the "model" answered (a random tiny
model practically never writes a well-formed `<answer>`, which leaves accuracy checks vacuous)."""

from __future__ import annotations

from collections.abc import Callable


def scripted_generate(tokenizer, script: Callable[[str], str], calls: list | None = None):
    """A `generate(input_ids=..., **kwargs)` that appends `script(decoded prompt)` to each row.

    Works as an instance attribute (``model.generate = ...``) and, through `as_method`, as a class
    attribute. Right-pads the new tokens with the pad token (dropped by ``skip_special_tokens``).
    `calls` collects the decoded prompts.
    """

    def generate(input_ids=None, **kwargs):
        import torch

        new = []
        for ids in input_ids:
            prompt = tokenizer.decode(ids, skip_special_tokens=False)
            if calls is not None:
                calls.append(prompt)
            new.append(tokenizer.encode(script(prompt), add_special_tokens=False))
        width = max(len(n) for n in new)
        pad = tokenizer.pad_token_id
        out = torch.tensor([n + [pad] * (width - len(n)) for n in new], dtype=input_ids.dtype)
        return torch.cat([input_ids, out.to(input_ids.device)], dim=1)

    return generate


def as_method(fn):
    """`fn` as a method (drops `self`), to patch a model class."""

    def method(self, *args, **kwargs):
        return fn(*args, **kwargs)

    return method
