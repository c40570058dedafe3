"""A run's saved config: ``RUN_DIR/run_config.yaml``, read back by eval, infer, export and the model card.

`rundir.write_run_config` writes the resolved config (`config.to_yaml`) at the start of a run; this
module reads it. It lives apart from `config.py` on purpose: `config.py` imports TRL (and with it
torch and triton) at import time, while the CLIs read a run's config *before* the CPU fixes
(`cpu_compat.setup_env`) may let triton be imported, and `--help` should stay instant. Only
`yaml` is imported here, and only when a file is read.
"""

from __future__ import annotations

import os
from pathlib import Path

from qlora_grpo.errors import UserError


def read_run_config(run_dir: str | os.PathLike | None, required: bool = False) -> dict:
    """The resolved training config a run dir carries (`run_config.yaml`, written at train start).

    {} when `run_dir` is None or has no such file (unless `required`); a file that is not a YAML
    mapping is a `UserError` naming it, never silently ignored (it decides template, prompts, quantization).
    """
    if not run_dir:
        return {}
    cfg_file = Path(run_dir) / "run_config.yaml"
    if not cfg_file.is_file():
        if required:
            raise UserError(f"{cfg_file} not found: it is written by train_qlora_grpo.py / train_sft.py at the "
                            "start of a run; point to a training run directory")
        return {}
    import yaml

    try:
        data = yaml.safe_load(cfg_file.read_text())
    except yaml.YAMLError as e:
        raise UserError(f"{cfg_file} is not valid YAML ({e}); restore it from the run's checkpoint-*/ "
                        "or the config you trained with") from None
    if data is None and not required:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{cfg_file} is not a YAML mapping of config keys; restore it from the config you trained with")
    return data
