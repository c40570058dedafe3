"""bitsandbytes' "Failed to load CPU gemm_4bit_forward from kernels-community" line (logged at import on
CPUs with AVX512-BF16 when the optional `kernels` package is absent) is filtered by setup_env()."""

import logging
import subprocess
import sys

import pytest

from tests.conftest import ROOT

# Re-run bitsandbytes' CPU backend import as on an AVX512-BF16 CPU (this machine may lack one): once
# as is (the notice is real), once after setup_env() (every entry point calls it first).
SNIPPET = """
import importlib, sys
import bitsandbytes.functional as F
F.has_avx512bf16 = lambda: True
import bitsandbytes.backends.cpu.ops as ops
importlib.reload(ops)
print("--- setup_env ---", file=sys.stderr, flush=True)
from qlora_grpo import cpu_compat
cpu_compat.setup_env()
importlib.reload(ops)
"""


def test_setup_env_filters_the_notice_on_bitsandbytes_logger(caplog):
    """Fast: the filter sits on the logger bitsandbytes' CPU backend logs with (its module name)."""
    import bitsandbytes.backends.cpu.ops as ops

    from qlora_grpo import cpu_compat

    cpu_compat.setup_env()
    log = logging.getLogger(ops.__name__)
    assert log is ops.logger
    with caplog.at_level(logging.WARNING):
        log.warning("Failed to load CPU gemm_4bit_forward from kernels-community: %s. Please ...", "x")
        log.warning("another bitsandbytes warning")
    assert [r.getMessage() for r in caplog.records] == ["another bitsandbytes warning"]


@pytest.mark.slow
def test_setup_env_silences_the_bnb_kernels_notice():
    """A fresh process: bitsandbytes' import really logs it, and not after setup_env()."""
    err = subprocess.run([sys.executable, "-c", SNIPPET], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}).stderr
    before, sep, after = err.partition("--- setup_env ---")
    assert sep, err[-2000:]
    assert "gemm_4bit_forward" in before  # without the filter the notice is printed
    assert "gemm_4bit_forward" not in after
