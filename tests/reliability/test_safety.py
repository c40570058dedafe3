"""Safety: offline by default, no remote code, no pickle unless asked, no eval/exec of data, nothing
sent anywhere unless report_to names a service, and no image bytes in logs or samples."""

from __future__ import annotations

import ast
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from qlora_grpo.errors import UserError
from tests.reliability.helpers import ROOT, offline_env, write_train_config

PACKAGE_FILES = sorted(
    p for pattern in ("qlora_grpo/**/*.py", "medvqa_data/**/*.py", "eval/**/*.py", "*.py", "bench/**/*.py")
    for p in ROOT.glob(pattern)
)
IMAGE_MARKERS = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"iVBORw0KGgo", b"data:image", b"<PIL.", b"/9j/4")


def _cli(args: list[str], net_log: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env=offline_env(net_log))


def test_prepare_train_evaluate_with_the_network_blocked(tiny_model, tmp_path):
    """The three entry points on local paths, with every socket connection refused and recorded
    (HF_HUB_OFFLINE unset): they pass and attempt nothing. The run dir holds no image bytes."""
    net = tmp_path / "network-attempts.log"
    data, run = tmp_path / "data", tmp_path / "run"
    # positive control: in the very same environment a probe's connections are refused and logged,
    # so a blocker that silently failed to load cannot make the checks below pass
    probe = ("import socket, urllib.request\n"
             "for f in (lambda: socket.create_connection(('192.0.2.1', 80), timeout=2),\n"
             "          lambda: urllib.request.urlopen('http://huggingface.co', timeout=2),\n"
             "          lambda: socket.socket().connect(('192.0.2.1', 443))):\n"
             "    try:\n        f()\n    except OSError as e:\n        print('refused:', e)\n"
             "    else:\n        print('CONNECTED')\n")
    p = _cli(["-c", probe], net, timeout=60)
    assert p.returncode == 0 and p.stdout.count("refused: ") == 3 and "CONNECTED" not in p.stdout, p.stdout + p.stderr
    attempts = net.read_text().splitlines()
    assert len(attempts) == 3 and "create_connection ('192.0.2.1', 80)" in attempts[0], attempts
    assert "huggingface.co" in attempts[1] and "connect ('192.0.2.1', 443)" in attempts[2], attempts
    net.unlink()
    p = _cli(["-m", "medvqa_data.prepare", "--source", "omnimedvqa", "--root",
              str(ROOT / "medvqa_data" / "sample" / "omnimedvqa"), "--out", str(data), "--split", "modality"], net)
    assert p.returncode == 0, p.stderr[-3000:]
    cfg = write_train_config(tmp_path / "train.yaml")  # report_to: tensorboard (local)
    p = _cli(["train_qlora_grpo.py", "--config", str(cfg), "--model_name_or_path", str(tiny_model),
              "--data_path", str(data), "--output_dir", str(run), "--max_steps", "2"], net)
    assert p.returncode == 0, p.stderr[-3000:]
    p = _cli(["-m", "eval.evaluate", "--model", str(tiny_model), "--adapter", str(run), "--data", str(data),
              "--out", str(run / "eval"), "--batch-size", "4", "--max-new-tokens", "8", "--limit", "4"], net)
    assert p.returncode == 0, p.stderr[-3000:]
    assert not net.exists(), net.read_text()

    # logs and samples stay in the run dir, as text: no image bytes in them, no copy of an input image
    assert (run / "samples.jsonl").is_file() and list(run.glob("runs/*/events.out.tfevents.*"))
    inputs = {hashlib.sha256(p.read_bytes()).hexdigest()
              for p in (ROOT / "medvqa_data" / "sample").rglob("*") if p.is_file()}
    for f in run.rglob("*"):
        if not f.is_file():
            continue
        blob = f.read_bytes()
        assert hashlib.sha256(blob).hexdigest() not in inputs, f"{f} is a copy of an input image"
        if f.suffix not in (".safetensors", ".pt", ".pth", ".bin", ".png"):  # .png: eval's accuracy chart
            assert not [m for m in IMAGE_MARKERS if m in blob], f"image bytes in {f}"
    for line in (run / "samples.jsonl").read_text().splitlines():
        rec = json.loads(line)
        assert set(rec) <= {"step", "id", "prompt", "completion", "answer", "answer_letter", "rewards"}
        assert len(line) < 20_000


# ----------------------------------------------------------------------------- static checks
NETWORK_MODULES = ("requests", "httpx", "urllib.request", "urllib3", "http.client", "aiohttp", "wandb", "ftplib",
                   "smtplib", "paramiko")
UNSAFE_CALLS = {
    ("pickle", "load"), ("pickle", "loads"), ("pickle", "Unpickler"), ("dill", "load"), ("dill", "loads"),
    ("marshal", "loads"), ("marshal", "load"), ("shelve", "open"), ("joblib", "load"), ("yaml", "load"),
    ("yaml", "unsafe_load"), ("yaml", "full_load"), ("os", "system"), ("os", "popen"),
}


def _name(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_name(node.value)}.{node.attr}"
    return ""


def _violations(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            found += [f"{where}: imports {n}" for n in names if n.startswith(NETWORK_MODULES)]
        if not isinstance(node, ast.Call):
            continue
        func = _name(node.func)
        kw = {k.arg: k.value for k in node.keywords}
        if func in ("eval", "exec", "compile", "execfile"):
            found.append(f"{where}: {func}()")
        if func == "__import__" and not (node.args and isinstance(node.args[0], ast.Constant)):
            found.append(f"{where}: __import__ of a computed name")
        parts = tuple(func.split("."))
        if len(parts) >= 2 and parts[-2:] in UNSAFE_CALLS:
            found.append(f"{where}: {func}()")
        if parts[-1:] == ("load",) and parts[-2:-1] == ("torch",):
            wo = kw.get("weights_only")
            if not (isinstance(wo, ast.Constant) and wo.value is True):
                found.append(f"{where}: torch.load without weights_only=True")
        if parts[-1:] == ("load",) and parts[-2:-1] in (("np",), ("numpy",)):
            ap = kw.get("allow_pickle")
            if ap is not None and not (isinstance(ap, ast.Constant) and ap.value is False):
                found.append(f"{where}: numpy.load(allow_pickle=...)")
        if "trust_remote_code" in kw:
            v = kw["trust_remote_code"]
            if not (isinstance(v, ast.Constant) and v.value is False):
                found.append(f"{where}: trust_remote_code={ast.unparse(v)}")
        if parts and parts[0] == "subprocess" and "shell" in kw:
            v = kw["shell"]
            if not (isinstance(v, ast.Constant) and v.value is False):
                found.append(f"{where}: subprocess with shell=")
    return found


def test_no_eval_exec_pickle_remote_code_or_network_clients_in_the_code():
    """AST check over the package, the entry scripts and bench/: no eval/exec/compile, no pickle-like
    loaders (torch.load only with weights_only=True), yaml only via safe_load, trust_remote_code only
    as the literal False, no shell=True, and no network client libraries."""
    assert len(PACKAGE_FILES) > 20
    found = [v for f in PACKAGE_FILES for v in _violations(f)]
    assert not found, "\n".join(found)


def test_the_static_check_catches_what_it_looks_for(tmp_path):
    bad = ROOT / "qlora_grpo" / "_safety_probe_tmp.py"
    bad.write_text("import requests\nimport torch, pickle, yaml\n"
                   "eval('1')\npickle.loads(b'')\nyaml.load('', Loader=None)\ntorch.load('x')\n"
                   "f(trust_remote_code=True)\ng(trust_remote_code=flag)\n")
    try:
        found = _violations(bad)
    finally:
        bad.unlink()
    assert len(found) == 7, found


# ----------------------------------------------------------------------------- runtime checks
def test_model_loading_never_trusts_remote_code(tiny_model, monkeypatch):
    """Every from_pretrained call made while loading the tiny model + an adapter passes
    trust_remote_code=False (or leaves transformers' default, False)."""
    import peft
    import transformers

    from qlora_grpo import model as model_mod

    seen = []

    def spy(cls_name, orig):
        def wrapped(*args, **kwargs):
            seen.append((cls_name, kwargs.get("trust_remote_code", False)))
            return orig(*args, **kwargs)
        return wrapped

    for name in ("AutoConfig", "AutoProcessor", "AutoModelForImageTextToText", "AutoTokenizer"):
        cls = getattr(transformers, name)
        monkeypatch.setattr(cls, "from_pretrained", spy(name, cls.from_pretrained))
    model, processor = model_mod.load_for_inference(str(tiny_model), quantization="none", compute_dtype="float32")
    adapter = _adapter_dir(model, tiny_model, model.__class__)
    monkeypatch.setattr(peft.PeftModel, "from_pretrained", spy("PeftModel", peft.PeftModel.from_pretrained))
    model_mod.load_for_inference(str(tiny_model), adapter=str(adapter), quantization="none", compute_dtype="float32")
    assert {n for n, _ in seen} >= {"AutoConfig", "AutoProcessor", "AutoModelForImageTextToText", "PeftModel"}
    assert all(v is False for _, v in seen), seen


def _adapter_dir(base_model, tiny_model: Path, _cls) -> Path:
    from peft import LoraConfig, get_peft_model

    out = tiny_model.parent / "safety-adapter"
    if not (out / "adapter_model.safetensors").is_file():
        peft_model = get_peft_model(base_model, LoraConfig(r=2, target_modules=["q_proj"]))
        peft_model.save_pretrained(out)
    return out


def test_pickle_weights_are_refused_unless_allowed(tiny_model, tmp_path):
    """A checkpoint dir with only pytorch_model.bin, and an adapter with only adapter_model.bin."""
    import safetensors.torch
    import torch

    from qlora_grpo import model as model_mod

    pickled = tmp_path / "pickle-only"
    shutil.copytree(tiny_model, pickled)
    state = safetensors.torch.load_file(pickled / "model.safetensors")
    torch.save(state, pickled / "pytorch_model.bin")
    (pickled / "model.safetensors").unlink()
    with pytest.raises(UserError, match=r"no safetensors weights.*--allow_pickle"):
        model_mod.load_for_inference(str(pickled), quantization="none", compute_dtype="float32")
    model, _ = model_mod.load_for_inference(str(pickled), quantization="none", compute_dtype="float32",
                                            allow_pickle=True)  # the user asked for it
    assert sum(p.numel() for p in model.parameters()) > 0

    adapter = tmp_path / "pickle-adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tiny_model)}))
    torch.save({}, adapter / "adapter_model.bin")
    with pytest.raises(UserError, match=r"no adapter_model.safetensors.*--allow_pickle"):
        model_mod.check_adapter(str(adapter), str(tiny_model))
    model_mod.check_adapter(str(adapter), str(tiny_model), allow_pickle=True)


def test_nothing_is_reported_anywhere_by_default(tmp_path):
    """Shipped configs report to TensorBoard (local) or nowhere and never push to the hub; without a
    config, report_to is empty; telemetry of the HF libraries is off."""
    import os

    from qlora_grpo import cpu_compat
    from qlora_grpo.config import MedGRPOConfig, MedSFTConfig, parse_config

    configs = sorted((ROOT / "configs").glob("*.yaml"))
    assert configs
    for path in configs:
        data = yaml.safe_load(path.read_text()) or {}
        report = data.get("report_to", "none")
        report = [report] if isinstance(report, str) else list(report or [])
        assert set(report) <= {"tensorboard", "none"}, f"{path.name}: report_to {report}"
        assert not data.get("push_to_hub"), f"{path.name} pushes to the hub"
        assert "hub_model_id" not in data
    for cls in (MedGRPOConfig, MedSFTConfig):
        cfg = parse_config(["--output_dir", str(tmp_path / "x")], cls)
        assert cfg.report_to in ([], ["none"], "none", None), cfg.report_to
        assert not cfg.push_to_hub
    cpu_compat.setup_env()
    assert os.environ["HF_HUB_DISABLE_TELEMETRY"] == "1" and os.environ["DO_NOT_TRACK"] == "1"
