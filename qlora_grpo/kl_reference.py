"""The KL reference of a GRPO run that starts from an adapter (`init_adapter`, e.g. the SFT warm start).

With `beta > 0` the documented reference is the starting adapter, not the bare base (config.py,
configs/sft_baseline.yaml). TRL's GRPOTrainer does this by adding a frozen copy of the adapter named
"ref" and computing the reference log-probs under it (`use_adapter(model, "ref")`); Unsloth's patched
trainer (2026.10.7, for TRL >= 1.4) cuts that block out, so its reference would silently be the base
model. `ensure_reference_adapter` adds the same copy after the trainer is built, for either backend.
"""

from __future__ import annotations

REF_ADAPTER = "ref"


def ensure_reference_adapter(model, beta: float) -> bool:
    """Give a PEFT model that already carries a trained "default" adapter a frozen "ref" copy of it.

    Does nothing when beta is 0, the model is not a PEFT model, or "ref" exists (TRL added it).
    Returns True when it added the copy. Must run before the optimizer is created (trainer.train).
    """
    import torch

    peft_config = getattr(model, "peft_config", None)
    if not beta or not isinstance(peft_config, dict) or "default" not in peft_config or REF_ADAPTER in peft_config:
        return False
    model.add_adapter(REF_ADAPTER, peft_config["default"])  # as TRL 1.15 GRPOTrainer.__init__ does
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".default." in name:
                ref = model.get_parameter(name.replace(".default.", f".{REF_ADAPTER}."))
                ref.data.copy_(param.data)
                ref.requires_grad_(False)
    return True
