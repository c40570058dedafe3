"""Shared fixtures: the tiny model (built once per session) and small prepared datasets."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
if "triton" not in sys.modules:
    os.environ.setdefault("TRITON_INTERPRET", "1")


def run_cli(args: list[str], cwd: Path = ROOT, timeout: int = 900, env: dict | None = None):
    """Run a project command in a subprocess (the public entry point) and return CompletedProcess."""
    e = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=e)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """The 'test'-size tiny Qwen2-VL (built once per test session)."""
    from qlora_grpo import tiny

    return tiny.build(tmp_path_factory.mktemp("models") / "tiny-test", size="test", seed=0)


@pytest.fixture(scope="session")
def sample_prepared(tmp_path_factory) -> Path:
    """The bundled OmniMedVQA-layout sample, prepared with a modality split."""
    from medvqa_data.prepare import prepare

    out = tmp_path_factory.mktemp("data") / "sample"
    prepare("omnimedvqa", ROOT / "medvqa_data" / "sample" / "omnimedvqa", out, split="modality")
    return out


@pytest.fixture(autouse=True)
def _fresh_parser_caches():
    """Each test starts with empty parser/reward memo caches, so no result computed by an earlier test
    (or, under `make mutants`, by the unmutated code before the fork) can stand in for a fresh one."""
    import sys

    parsing, rewards = sys.modules.get("qlora_grpo.parsing"), sys.modules.get("qlora_grpo.rewards")
    if parsing is not None:
        for name in ("_parse_cached", "_parse_cached_big", "_normalized_options", "_match_choice"):
            cached = getattr(parsing, name, None)
            if hasattr(cached, "cache_clear"):
                cached.cache_clear()
    if rewards is not None and hasattr(getattr(rewards, "_question_ngrams", None), "cache_clear"):
        rewards._question_ngrams.cache_clear()
    yield


@pytest.fixture
def ascii_locale():
    """A C (ASCII) locale, as on a system without a UTF-8 one: files that must be read as UTF-8 still are.
    (Python picks `open`'s default encoding from LC_CTYPE at each call, so a test can switch it.)"""
    import locale

    saved = locale.setlocale(locale.LC_CTYPE)
    locale.setlocale(locale.LC_CTYPE, "C")
    yield
    locale.setlocale(locale.LC_CTYPE, saved)
