"""Single-image inference: Python API on PNG / DICOM / NIfTI / PIL inputs, the CLI's --json output,
and one-line errors for bad inputs (unreadable image, wrong base model, missing dirs, bad options)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from qlora_grpo import infer
from qlora_grpo.errors import UserError
from tests.conftest import run_cli

OPTIONS = ["CT", "MRI", "X-Ray", "Ultrasound"]


def make_adapter(base: Path, out: Path, seed: int = 0, quantization: str = "none", **run_cfg) -> Path:
    """A non-trivial LoRA adapter run dir on `base`: PEFT LoRA with random lora_B (a fresh adapter
    is a no-op), the processor and a run_config.yaml, as train_qlora_grpo.py leaves them."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoProcessor, Qwen2VLForConditionalGeneration

    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration.from_pretrained(str(base))
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=r".*\.language_model\.layers\.\d+\.(self_attn|mlp)\."
                     r"(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)", task_type="CAUSAL_LM")
    model = get_peft_model(model, cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.5)
    model.save_pretrained(str(out))
    AutoProcessor.from_pretrained(str(base), min_pixels=3136, max_pixels=12544).save_pretrained(str(out))
    config = {"model_name_or_path": str(base), "backend": "hf", "quantization": quantization,
              "compute_dtype": "auto", "lora_r": 4, "lora_alpha": 8, "template": "think", "prompt_mode": "default",
              "min_pixels": 3136, "max_pixels": 12544, "data_path": "runs/data/sample", "reward_weights": [1.0, 1.0],
              "num_generations": 4, "max_steps": 2, **run_cfg}
    (out / "run_config.yaml").write_text("# resolved config; backend: hf\n" + yaml.safe_dump(config, sort_keys=False))
    return out


@pytest.fixture(scope="module")
def adapter_run(tiny_model, tmp_path_factory) -> Path:
    return make_adapter(tiny_model, tmp_path_factory.mktemp("runs") / "grpo_run")


@pytest.fixture(scope="module")
def predictor(tiny_model, adapter_run):
    return infer.load(str(tiny_model), str(adapter_run), max_new_tokens=12)


@pytest.fixture(scope="module")
def png(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("img") / "scan.png"
    Image.fromarray(rng.integers(0, 255, (90, 120), dtype=np.uint8), mode="L").save(path)
    return path


def _ct_small() -> str:
    from pydicom.data import get_testdata_file

    return get_testdata_file("CT_small.dcm", download=False)


def test_api_png_defaults_from_run_config(predictor, png):
    assert predictor.template == "think"  # from run_config.yaml
    assert predictor.info["quantization"] == "none" and (predictor.min_pixels, predictor.max_pixels) == (3136, 12544)
    r = predictor.ask(png, "Which modality is shown?", OPTIONS)
    assert tuple(r) == infer.RESULT_KEYS
    assert isinstance(r["completion"], str) and r["completion"]
    assert r["letter"] in (None, "A", "B", "C", "D")
    assert r["option"] == (OPTIONS[ord(r["letter"]) - 65] if r["letter"] else None)
    # same answer for the decoded PIL image (greedy decoding is deterministic), options as "A;B" string
    same = predictor.ask(Image.open(png), "Which modality is shown?", ";".join(OPTIONS))
    assert same == r


def test_api_dicom_and_nifti(predictor, tmp_path):
    import nibabel as nib

    r = predictor.ask(_ct_small(), "Which modality is shown?", OPTIONS)
    assert tuple(r) == infer.RESULT_KEYS and isinstance(r["completion"], str)
    # a DICOM without the .dcm suffix is recognized by its preamble
    nosuffix = tmp_path / "IM0001"
    shutil.copy(_ct_small(), nosuffix)
    assert predictor.ask(nosuffix, "Which modality is shown?", OPTIONS) == r
    vol = np.random.default_rng(0).random((40, 48, 8)).astype(np.float32)
    nii = tmp_path / "brain.nii.gz"
    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(nii))
    assert tuple(predictor.ask(nii, "Which organ is shown?", ["brain", "liver"])) == infer.RESULT_KEYS


def test_open_question_without_options(predictor, png):
    # no options: the template's open-answer prompt, no letter
    prompt = predictor.prompt("Is there a fracture?", [])
    assert "short word or phrase" in prompt and "single-letter" not in prompt
    r = predictor.ask(png, "Is there a fracture?")
    assert r["letter"] is None and r["option"] is None


@pytest.mark.parametrize("completion,letter", [
    ("<think>bright CSF</think><answer>B</answer>", "B"),
    ("<think>r</think><answer>(d)</answer>", "D"),
    ("<think>r</think><answer>x-ray</answer>", "C"),  # option text -> its letter -> the same option
    ("<think>r</think><answer>A. or b</answer>", None),  # a hedge selects nothing
    ("<think>r</think>no answer block", None),
])
def test_ask_maps_the_scripted_answer_to_its_option(predictor, png, monkeypatch, completion, letter):
    """A scripted `generate`: the letter, the option text and the parsed fields are those of the script."""
    from tests.scripted import scripted_generate

    prompts = []
    monkeypatch.setattr(predictor.model, "generate",
                        scripted_generate(predictor.processor.tokenizer, lambda p: completion, prompts))
    r = predictor.ask(png, "Which modality is shown?", ["CT", "MRI", "X-Ray", "Ultrasound"])
    assert r["completion"] == completion
    assert r["letter"] == letter and r["option"] == (OPTIONS[ord(letter) - 65] if letter else None)
    assert r["format_ok"] is ("<answer>" in completion)
    assert r["reasoning"] == ("bright CSF" if "CSF" in completion else "r")
    # the model saw the template's evaluation prompt, in the chat turn after the image
    assert len(prompts) == 1 and predictor.prompt("Which modality is shown?", OPTIONS) + "<|im_end|>" in prompts[0]
    assert prompts[0].index("<|vision_end|>") < prompts[0].index("Which modality is shown?")


def test_prompt_is_the_eval_prompt_of_the_template(predictor):
    from medvqa_data.templates import render_prompt

    assert predictor.prompt("Which modality?", OPTIONS) == render_prompt("Which modality?", OPTIONS, "think",
                                                                         phase="eval")


def test_cli_json(tiny_model, adapter_run):
    r = run_cli(["-m", "qlora_grpo.infer", "--model", str(tiny_model), "--adapter", str(adapter_run),
                 "--image", _ct_small(), "--question", "Which modality is shown?", "--options", "CT;MRI;X-Ray",
                 "--json", "--max-new-tokens", "8"])
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert set(out) == set(infer.RESULT_KEYS)
    assert out["letter"] in (None, "A", "B", "C") and isinstance(out["format_ok"], bool)


def test_cli_text_output(tiny_model, adapter_run, png, capsys):
    rc = infer.main(["--model", str(tiny_model), "--adapter", str(adapter_run), "--image", str(png),
                     "--question", "Which modality?", "--options", "CT;MRI", "--max-new-tokens", "6",
                     "--template", "no-think"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "Reasoning:" in out.out and "Answer:" in out.out
    assert "trained with template 'think'" in out.err  # warns about the template mismatch


def _error(capsys, argv) -> str:
    rc = infer.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert err and err[-1].startswith("error: ") and "Traceback" not in "\n".join(err)
    return err[-1]


@pytest.mark.parametrize("content", [None, b"", b"not an image at all"])
def test_unreadable_image(tiny_model, adapter_run, tmp_path, capsys, content):
    img = tmp_path / "scan.png"
    if content is not None:
        img.write_bytes(content)
    msg = _error(capsys, ["--model", str(tiny_model), "--adapter", str(adapter_run), "--image", str(img),
                          "--question", "q?", "--options", "CT;MRI"])
    assert str(img) in msg


def test_adapter_for_another_base_model(tiny_model, adapter_run, png, tmp_path, capsys):
    other = tmp_path / "other-base"
    other.mkdir()
    cfg = json.loads((tiny_model / "config.json").read_text())
    cfg["text_config"]["hidden_size"] = 2 * cfg["text_config"]["hidden_size"]
    (other / "config.json").write_text(json.dumps(cfg))
    wrong = tmp_path / "wrong"
    shutil.copytree(adapter_run, wrong)
    acfg = json.loads((wrong / "adapter_config.json").read_text())
    acfg["base_model_name_or_path"] = str(other)
    (wrong / "adapter_config.json").write_text(json.dumps(acfg))
    msg = _error(capsys, ["--model", str(tiny_model), "--adapter", str(wrong), "--image", str(png),
                          "--question", "q?", "--options", "CT;MRI"])
    assert "trained on" in msg and str(other) in msg


def test_missing_dirs_and_bad_options(tiny_model, adapter_run, png, tmp_path, capsys):
    base = ["--image", str(png), "--question", "q?"]
    assert "model directory not found" in _error(capsys, ["--model", str(tmp_path / "nope"), *base])
    assert "adapter directory not found" in _error(
        capsys, ["--model", str(tiny_model), "--adapter", str(tmp_path / "nope"), *base])
    assert "adapter_config.json missing" in _error(
        capsys, ["--model", str(tiny_model), "--adapter", str(tmp_path), *base])
    assert "at least 2 options" in _error(capsys, ["--model", str(tiny_model), *base, "--options", "CT"])
    assert "empty option" in _error(capsys, ["--model", str(tiny_model), *base, "--options", "CT;;MRI"])


def test_paper_mode_adapter_needs_options(tiny_model, adapter_run, png, tmp_path):
    paper = tmp_path / "paper"
    shutil.copytree(adapter_run, paper)
    cfg = yaml.safe_load((paper / "run_config.yaml").read_text())
    (paper / "run_config.yaml").write_text(yaml.safe_dump({**cfg, "prompt_mode": "paper"}))
    p = infer.load(str(tiny_model), str(paper), max_new_tokens=4)
    with pytest.raises(UserError, match="multiple-choice"):
        p.ask(png, "Is there a fracture?")
    assert "single-letter" in p.prompt("Which modality?", OPTIONS)


@pytest.mark.parametrize("paper", [False, True])
def test_cli_open_and_multiple_choice(tiny_model, adapter_run, png, tmp_path, capsys, paper):
    """The CLI without --options asks an open question (the options were once parsed twice and it
    always failed); with --options a multiple-choice one; a paper-mode adapter refuses open questions."""
    run = adapter_run
    if paper:
        run = tmp_path / "paper"
        shutil.copytree(adapter_run, run)
        cfg = yaml.safe_load((run / "run_config.yaml").read_text())
        (run / "run_config.yaml").write_text(yaml.safe_dump({**cfg, "prompt_mode": "paper"}))
    base = ["--model", str(tiny_model), "--adapter", str(run), "--image", str(png), "--max-new-tokens", "4",
            "--json"]
    rc = infer.main([*base, "--question", "Which modality?", "--options", "CT;MRI"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert json.loads(out.out.strip().splitlines()[-1])["letter"] in (None, "A", "B")
    if paper:
        assert "multiple-choice" in _error(capsys, [*base, "--question", "Is there a fracture?"])
    else:
        rc = infer.main([*base, "--question", "Is there a fracture?"])
        out = capsys.readouterr()
        assert rc == 0, out.err
        result = json.loads(out.out.strip().splitlines()[-1])
        assert result["letter"] is None and result["option"] is None


def _documented_infer_commands() -> list[list[str]]:
    """Every `python -m qlora_grpo.infer` command of README.md and docs/inference.md, as argv lists."""
    import re
    import shlex

    root = Path(__file__).resolve().parents[2]
    commands = []
    for doc in (root / "README.md", root / "docs" / "inference.md"):
        text = doc.read_text().replace("\\\n", " ")
        for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
            commands += [shlex.split(line)[3:] for line in block.splitlines()
                         if line.startswith("python -m qlora_grpo.infer")]
    return commands


def test_documented_infer_commands_run_on_the_shipped_dicom_and_nifti(tiny_model, adapter_run, capsys):
    """The README / docs/inference.md commands as written (model and adapter swapped for the tiny ones):
    their --image files ship with the project (a real CT DICOM, a real brain NIfTI)."""
    commands = _documented_infer_commands()
    images = {a[a.index("--image") + 1] for a in commands}
    assert {"medvqa_data/sample/scan.dcm", "medvqa_data/sample/scan.nii.gz"} <= images
    root = Path(__file__).resolve().parents[2]
    for argv in commands:
        argv = list(argv)
        argv[argv.index("--model") + 1] = str(tiny_model)
        argv[argv.index("--adapter") + 1] = str(adapter_run)
        argv[argv.index("--image") + 1] = str(root / argv[argv.index("--image") + 1])
        rc = infer.main([*argv, "--max-new-tokens", "4"])
        out = capsys.readouterr()
        assert rc == 0, (argv, out.err)
        assert "Answer:" in out.out
