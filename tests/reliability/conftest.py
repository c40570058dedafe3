"""Fixtures of the reliability tests: the fault-injection harness (tests/reliability/faultlib.py) run
once per session in a subprocess with the network blocked, its JSON results shared by the tests."""

from __future__ import annotations

import pytest

from tests.reliability.helpers import FAST_KILLS, run_harness


@pytest.fixture(scope="session")
def fast_faults(tmp_path_factory) -> dict:
    """3 SIGKILL points, 2 disk-full cases, NaN/inf, a raising reward, the lock, and an eval kill."""
    work = tmp_path_factory.mktemp("faults")
    return run_harness(work, "--scenarios", "kill,enospc,nonfinite,reward,lock,eval", "--kill-faults", FAST_KILLS,
                       "--per-round", "3", "--quick")
