"""The Unsloth CPU tier (issue 14): real unsloth 2026.10.7 code on CPU, in .venv-unsloth.

`make test-unsloth` builds that venv and runs `pytest -m unsloth` with QLORA_UNSLOTH_TIER=1,
UNSLOTH_ALLOW_CPU=1 and UNSLOTH_SKIP_TORCHVISION_CHECK=1. In the main venv (no unsloth) this
folder is not collected; with QLORA_UNSLOTH_TIER=1 a missing or broken unsloth is an error.
"""

import importlib.util
import os

collect_ignore_glob = []
if os.environ.get("QLORA_UNSLOTH_TIER") != "1" and importlib.util.find_spec("unsloth") is None:
    collect_ignore_glob = ["test_*.py"]
