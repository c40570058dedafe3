"""Where the model comes from: a missing local model is one error line saying where to put it, decided without
the network (and fast when the hub cannot be reached); an adapter loaded on another checkpoint of the same
architecture gets a warning naming both."""

from __future__ import annotations

import json
import shutil
import socket
import time
from pathlib import Path

import pytest

from qlora_grpo import model as model_mod
from qlora_grpo.errors import UserError
from tests.conftest import run_cli
from tests.reliability.helpers import offline_env

README_PATH = "models/Qwen2-VL-2B-Instruct"
DOWNLOAD = "huggingface-cli download Qwen/Qwen2-VL-2B-Instruct --local-dir models/Qwen2-VL-2B-Instruct"


@pytest.fixture
def no_network(monkeypatch):
    """Every connection attempt fails at once and is recorded."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args[:2])
        raise OSError(101, "network is unreachable (test)")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts


def test_readme_model_path_missing_is_decided_locally_without_the_network(tmp_path, monkeypatch, no_network):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()  # the README layout: models/ exists, the checkpoint is not in it yet
    for name in (README_PATH, "./models/Qwen2-VL-2B-Instruct", str(tmp_path / "nowhere"), "~/no-such-model"):
        with pytest.raises(UserError, match="model directory not found") as err:
            model_mod.resolve_model_path(name)
        assert "no such folder" in str(err.value)
    assert DOWNLOAD in str(err.value) or "--local-dir ~/no-such-model" in str(err.value)
    with pytest.raises(UserError) as err:
        model_mod.resolve_model_path(README_PATH)
    assert f"at {tmp_path / README_PATH} " in str(err.value) and DOWNLOAD in str(err.value)
    assert no_network == []


def test_a_hub_id_that_cannot_be_reached_is_the_same_one_line_error_fast(tmp_path, monkeypatch, no_network):
    from huggingface_hub import constants

    monkeypatch.chdir(tmp_path)  # no models/ here: README_PATH could be a hub id
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    for name in (README_PATH, "Qwen/Qwen2-VL-2B-Instruct"):
        started = time.perf_counter()
        with pytest.raises(UserError, match="cannot be reached from this machine") as err:
            model_mod.resolve_model_path(name)
        assert time.perf_counter() - started < 5
        assert DOWNLOAD in str(err.value) and "\n" not in str(err.value)
    attempts = len(no_network)
    assert 2 <= attempts <= 4  # the hub was tried (our probe: one connect per lookup), without 5 retries of backoff
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(UserError, match="HF_HUB_OFFLINE=1 is set"):
        model_mod.resolve_model_path("Qwen/Qwen2-VL-2B-Instruct")
    assert len(no_network) == attempts  # HF_HUB_OFFLINE: not even a probe


@pytest.mark.slow  # a subprocess with the model imports (~15 s CPU); the in-process tests above cover the logic
def test_evaluate_with_the_readme_model_missing_offline_is_one_line_and_writes_nothing(sample_prepared, tmp_path):
    (tmp_path / "models").mkdir()
    net_log = tmp_path / "net.log"
    proc = run_cli(["-m", "eval.evaluate", "--model", README_PATH, "--data", str(sample_prepared),
                    "--out", "runs/new/eval"], cwd=tmp_path, env=offline_env(net_log), timeout=300)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and lines[-1].startswith("error: model directory not found: models/Qwen2-VL")
    assert sum(line.startswith("error:") for line in lines) == 1 and "Traceback" not in proc.stderr
    assert DOWNLOAD in lines[-1] and not net_log.exists() and not (tmp_path / "runs").exists()


def _adapter(tmp_path: Path, base: Path) -> Path:
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(base)}))
    (adapter / "adapter_model.safetensors").write_bytes(b"")
    return adapter


def test_adapter_on_another_checkpoint_of_the_same_architecture_warns_naming_both(tiny_model, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    adapter = _adapter(tmp_path, tiny_model)
    copy = tmp_path / "copy-of-tiny"
    shutil.copytree(tiny_model, copy)
    model_mod.check_adapter(str(adapter), str(copy))  # the same weights elsewhere: silent
    assert "warning" not in capsys.readouterr().err
    other = tmp_path / "other-tiny"  # same architecture, other weights (as base vs instruct)
    shutil.copytree(tiny_model, other)
    weights = load_file(other / "model.safetensors")
    save_file({k: v + 0.01 if v.is_floating_point() else v for k, v in weights.items()}, other / "model.safetensors",
              metadata={"format": "pt"})
    model_mod.check_adapter(str(adapter), str(other))
    err = capsys.readouterr().err
    assert err.startswith("warning: ") and str(tiny_model) in err and str(other) in err
    (other / "config.json").write_text(json.dumps({**json.loads((other / "config.json").read_text()),
                                                   "model_type": "qwen2_5_vl"}))
    with pytest.raises(UserError, match="was trained on"):
        model_mod.check_adapter(str(adapter), str(other))
