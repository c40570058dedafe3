"""A Hugging Face-style model card (README.md) for a run dir.

    python -m qlora_grpo.model_card RUN_DIR          # writes RUN_DIR/README.md

`write_model_card(run_dir)` reads RUN_DIR/run_config.yaml (the resolved config written by
train_qlora_grpo.py / train_sft.py) and RUN_DIR/eval/metrics.json when present, and writes
RUN_DIR/README.md (replacing the generic card TRL's `save_model` may have written there):
YAML front matter (base_model, library_name: peft, tags), then the base model, data, prompt
template, rewards and weights (GRPO) or target (SFT), key hyperparameters, the evaluation table
(overall and per modality), how to use it, the intended use and the clinical limitations.

Keys absent from run_config.yaml had their default values (the config writer leaves out TRL
fields equal to their defaults); they are filled from the config classes.

`render_model_card(run_dir, export=...)` returns the text; `qlora_grpo.export` uses it for the
card of an exported (adapter or merged) model.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from qlora_grpo.errors import UserError
from qlora_grpo.run_config import read_run_config

REWARD_DESCRIPTIONS = {
    "format": "the template's tag format (`<think>` / `<answer>` blocks in order, nothing outside)",
    "accuracy": "the `<answer>` selects the gold option (open questions: yes/no polarity or token F1)",
    "reasoning": "RARL-style reasoning quality: a `<think>` block of sensible length, no loops, no copy "
                 "of the question, not contradicting the answer",
    "length": "penalty for completions approaching max_completion_length",
}
GRPO_DEFAULT_REWARDS = ["format", "accuracy"]
LIMITATIONS = """\
- **Research use only. This is not a medical device and not a diagnostic tool.** It has not been
  validated on patients, in a clinical setting, or by any regulator, and must not be used to make
  or support clinical decisions.
- It answers single-image visual questions (mostly multiple choice) in the style of its training
  data. Accuracy on benchmark splits says little about accuracy on real clinical images, other
  scanners, other institutions, other populations or other question styles.
- The `<think>` reasoning is generated text: it can be fluent and wrong, and it is not a faithful
  explanation of how the answer was produced.
- Training and evaluation data are public research datasets that carry their own biases
  (acquisition devices, demographics, label noise); performance may differ across patient groups.
- Images are downscaled to the run's pixel budget (see the hyperparameters); fine findings may be
  lost. 3-D volumes (NIfTI) are reduced to one axial slice and DICOM series to one frame.
- Do not put identifiable patient data into a tool you do not control; de-identify inputs.
"""
INTENDED_USE = """\
Research on reinforcement-learning fine-tuning of vision-language models for medical visual
question answering (reproductions of Med-R1 and RARL): comparing templates, rewards, quantization
and training budgets on public benchmarks, and demonstrating the pipeline on small hardware.
Out of scope: any clinical, diagnostic, triage or patient-facing use.
"""


# ----------------------------------------------------------------------------- inputs
def run_config_and_kind(run_dir: Path) -> tuple[dict, str]:
    """(resolved config, kind) where kind is "grpo" or "sft"."""
    cfg = read_run_config(run_dir, required=True)
    text = (run_dir / "run_config.yaml").read_text()
    first = text.splitlines()[0] if text else ""
    if "(SFT)" in first or "sft_target" in cfg:
        kind = "sft"
    elif first.startswith("# resolved config") or any(k in cfg for k in ("num_generations", "reward_weights",
                                                                          "reward_funcs", "beta")):
        kind = "grpo"
    else:
        kind = "sft" if "max_length" in cfg else "grpo"
    return cfg, kind


def _defaults(kind: str) -> dict:
    """Field defaults of the config class of `kind` ({} when TRL cannot be imported)."""
    try:
        from qlora_grpo.config import MedGRPOConfig, MedSFTConfig
    except Exception:  # pragma: no cover - card without TRL installed
        return {}
    out = {}
    for f in dataclasses.fields(MedSFTConfig if kind == "sft" else MedGRPOConfig):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def read_metrics(run_dir: Path) -> dict | None:
    path = run_dir / "eval" / "metrics.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) and "overall" in data else None


def read_judge(run_dir: Path) -> dict | None:
    """RUN_DIR/judge/metrics.json of `python -m eval.judge` (rubric / pairwise / open), when present."""
    try:
        data = json.loads((run_dir / "judge" / "metrics.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("judge"), dict) else None


def judge_section(judge: dict | None) -> list[str]:
    """The LLM-judge scores (`judge/metrics.json`), when the run was judged."""
    if not judge:
        return []
    j = judge["judge"]
    lines = ["### LLM-judge scores", "",
             f"Judge `{Path(str(j.get('model', '?'))).name}` (local, greedy; prompt sha256 "
             f"`{str(j.get('prompt_sha256', ''))[:16]}`). An LLM judge is not a clinician: these scores are a "
             "language model's reading of the reasoning, not a clinical validation. Source: `judge/report.md`.", ""]
    r, w, o = judge.get("rubric"), judge.get("pairwise"), judge.get("open")
    if isinstance(r, dict) and r.get("mean") is not None:
        ci = r.get("ci95") or [r["mean"], r["mean"]]
        lines.append(f"- Reasoning quality (rubric, 1-5): mean **{r['mean']:.2f}** (95% CI {ci[0]:.2f}–{ci[1]:.2f}, "
                     f"{r.get('n_judged', 0)} judged, {r.get('n_unparsable', 0)} unparsable)")
    if isinstance(w, dict) and w.get("n_judged"):
        lines.append(f"- Pairwise vs `{w.get('baseline')}` (position-swapped): win {_pct(w['win']['rate'])}%, "
                     f"tie {_pct(w['tie']['rate'])}%, loss {_pct(w['loss']['rate'])}% (n={w['n_judged']})")
    if isinstance(o, dict) and o.get("n_judged"):
        lines.append(f"- Open answers judged equivalent to the gold: {_pct(o['judge_match']['rate'])}% "
                     f"(exact match {_pct(o.get('exact_match') or 0)}%, agreement {_pct(o.get('agreement_exact'))}%)")
    return lines + [""] if len(lines) > 4 else []


def _prepare_report(data_path: str | None) -> dict | None:
    if not data_path:
        return None
    path = Path(data_path) / "prepare_report.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


# ----------------------------------------------------------------------------- formatting
def _v(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(x) for x in value) if value else "—"
    return str(value).replace("|", "\\|")


def _pct(x: Any) -> str:
    try:
        return f"{100 * float(x):.1f}"
    except (TypeError, ValueError):
        return "—"


def _ci(ci: Any) -> str:
    try:
        return f"{_pct(ci[0])}–{_pct(ci[1])}"
    except (TypeError, IndexError, ValueError):
        return "—"


def _yaml_list(items: list[str]) -> list[str]:
    return [f"- {json.dumps(str(i))}" for i in items]


def metrics_section(metrics: dict | None, run_dir: Path) -> list[str]:
    lines = ["## Evaluation", ""]
    if not metrics:
        return lines + [f"No evaluation results in this run dir (`{run_dir.name}/eval/metrics.json`). Evaluate with",
                        "", "```bash", f"python -m eval.evaluate --model BASE_MODEL --adapter {run_dir} "
                        f"--data PREPARED_DATA --out {run_dir}/eval", "```", ""]
    o = metrics["overall"] if isinstance(metrics["overall"], dict) else {}
    desc = []
    if metrics.get("template"):
        desc.append(f"template `{metrics['template']}`")
    if metrics.get("mode"):
        desc.append(f"mode `{metrics['mode']}`")
    lines += [f"Greedy decoding on the run's evaluation split ({', '.join(desc) or 'see eval/report.md'}); "
              "accuracy on closed (multiple-choice) questions with a 95% bootstrap confidence interval. "
              "Source: `eval/metrics.json`.", "",
              "| Split | Accuracy (%) | 95% CI | n |", "|---|---:|---|---:|",
              f"| **Overall** | **{_pct(o.get('accuracy', 0))}** | {_ci(o.get('ci95'))} | {o.get('n', 0)} |"]
    for name, v in (metrics.get("by_modality") or {}).items():
        lines.append(f"| {_v(name)} | {_pct(v.get('accuracy', 0))} | {_ci(v.get('ci95'))} | {v.get('n', 0)} |")
    lines.append("")
    extra = []
    if "format_rate" in metrics:
        extra.append(f"format followed: {_pct(metrics['format_rate'])}%")
    if "unparsed_rate" in metrics:
        extra.append(f"unparsed answers: {_pct(metrics['unparsed_rate'])}%")
    if extra:
        lines += ["Also: " + ", ".join(extra) + ".", ""]
    if metrics.get("by_question_type"):
        lines += ["| Question type | Accuracy (%) | 95% CI | n |", "|---|---:|---|---:|"]
        for name, v in metrics["by_question_type"].items():
            lines.append(f"| {_v(name)} | {_pct(v.get('accuracy', 0))} | {_ci(v.get('ci95'))} | {v.get('n', 0)} |")
        lines.append("")
    op = metrics.get("open") or {}
    if isinstance(op, dict) and op.get("n"):
        lines += ["| Open questions | Exact match (%) | Token F1 (%) | n |", "|---|---:|---:|---:|",
                  f"| all | {_pct(op.get('exact_match', 0))} | {_pct(op.get('token_f1', 0))} | {op.get('n', 0)} |", ""]
    return lines


def _vision_precision(c: dict) -> str:
    """Which parts of an NF4 base were 4-bit, from the recorded run config `c` (the hf backend can
    quantize the vision tower too; hf runs recorded before `quantize_vision_tower` existed did)."""
    if c.get("quantize_vision_tower", c.get("backend") != "unsloth"):
        return "; language model and vision tower 4-bit (output head and vision merger 16-bit)"
    return "; language model 4-bit, vision tower and output head 16-bit (as Unsloth loads it)"


def render_model_card(run_dir: str | Path, export: dict | None = None) -> str:
    """The card text for RUN_DIR. `export` (from qlora_grpo.export): {"merged": bool, "dtype": str,
    "out": path} describes an exported copy (a merged model is a plain transformers checkpoint)."""
    run_dir = Path(run_dir)
    cfg, kind = run_config_and_kind(run_dir)
    c = {**_defaults(kind), **cfg}
    merged = bool(export and export.get("merged"))
    base = str(c.get("model_name_or_path") or "unknown")
    method = "GRPO" if kind == "grpo" else "SFT"
    quant = c.get("quantization", "nf4")
    qlora = quant == "nf4"
    name = Path(export["out"]).name if export and export.get("out") else run_dir.name
    rewards = list(c.get("reward_funcs") or GRPO_DEFAULT_REWARDS) if kind == "grpo" else []
    weights = list(c.get("reward_weights") or [1.0] * len(rewards)) if kind == "grpo" else []
    metrics = read_metrics(run_dir)

    tags = ["medical", "medical-vqa", "vision-language", "qwen2-vl", kind, "trl", "lora"]
    if qlora:
        tags.append("qlora")
    if not merged:
        tags.append(f"base_model:adapter:{base}")
    fm = ["---", f"base_model: {json.dumps(base)}", f"library_name: {'transformers' if merged else 'peft'}",
          "pipeline_tag: image-text-to-text", "language:", "- en", "tags:", *_yaml_list(tags)]
    fm.append("---")

    what = "merged model (base + LoRA, no PEFT needed)" if merged else "LoRA adapter"
    lines = fm + ["", f"# {name}: {method} {what} for medical visual question answering", "",
                  "> **Research use only — not a medical device, not for diagnosis or any clinical decision, "
                  "not validated on patients.** See [Limitations](#limitations-and-clinical-safety).", "",
                  f"A {'QLoRA' if qlora else 'LoRA'} fine-tune of `{base}` trained with "
                  f"{'GRPO (Group Relative Policy Optimization, as in Med-R1 / RARL)' if kind == 'grpo' else 'supervised fine-tuning (SFT baseline)'} "
                  "by this project's single-GPU trainer.", ""]

    # --- model
    targets = []
    if c.get("finetune_language_layers", True):
        targets.append("language model")
    if c.get("finetune_vision_layers"):
        targets.append("vision tower")
    modules = [m for m, on in (("attention", c.get("finetune_attention_modules", True)),
                               ("MLP", c.get("finetune_mlp_modules", True))) if on]
    lines += ["## Model", "", "| | |", "|---|---|",
              f"| Base model | `{base}` |",
              f"| Method | {method}{' (warm start: `' + str(c['init_adapter']) + '`)' if c.get('init_adapter') else ''} |",
              f"| Adapter | LoRA r={_v(c.get('lora_r'))}, alpha={_v(c.get('lora_alpha'))}, "
              f"dropout={_v(c.get('lora_dropout'))}; {' + '.join(targets) or '—'} ({', '.join(modules) or '—'}) |",
              f"| Base weights in training | {'4-bit NF4 with double quantization (QLoRA)' if qlora else '16-bit (LoRA, no quantization)'}"
              f"{_vision_precision(cfg) if qlora else ''} |",
              f"| Compute dtype | {_v(c.get('compute_dtype'))} |",
              f"| Backend | {_v(c.get('backend'))} |", ""]
    if export:
        if merged:
            note = (f"This directory holds the base model with the adapter merged into its weights "
                    f"(`merge_and_unload`), saved in {export.get('dtype', 'bf16')} safetensors; it loads with "
                    "plain `AutoModelForImageTextToText.from_pretrained` (no PEFT).")
            if qlora:
                note += (" The adapter was trained on an NF4 (4-bit) base. It was merged into the base "
                         "checkpoint's original 16-bit weights (the checkpoint loaded without quantization: the "
                         "values the NF4 base was quantized from), not into 4-bit weights, which would be lossy. "
                         "Because training saw NF4-rounded base weights, the merged model's outputs can differ "
                         "slightly from the 4-bit model evaluated after training: re-run "
                         "`python -m eval.evaluate --model <this dir>` before relying on the numbers below.")
        else:
            note = ("This directory holds the LoRA adapter only (plus the processor and `run_config.yaml`); "
                    f"load it on top of `{base}`"
                    + (" — in 4-bit NF4, as trained (the default of `qlora_grpo.infer`)." if qlora else "."))
        lines += ["### Export", "", note, ""]

    # --- data
    lines += ["## Training data", "", "| | |", "|---|---|",
              f"| Prepared dataset | `{_v(c.get('data_path'))}` (split `{_v(c.get('train_split'))}`) |"]
    report = _prepare_report(c.get("data_path"))
    if report:
        lines.append(f"| Source | {_v(report.get('source'))} |")
        split = (report.get("options") or {}).get("split_method") or (report.get("options") or {}).get("split")
        if split:
            lines.append(f"| Split method | {_v(split)} |")
        counts = (report.get("splits") or {})
        if counts:
            lines.append("| Rows per split | " + ", ".join(f"{k}: {v}" for k, v in counts.items()) + " |")
        mods = ((report.get("counts") or {}).get(c.get("train_split") or "train") or {}).get("modality") or {}
        if mods:
            lines.append("| Training modalities | " + ", ".join(f"{k} ({v})" for k, v in mods.items()) + " |")
    if c.get("train_subset"):
        lines.append(f"| Training subset | `{_v(c['train_subset'])}` |")
    if c.get("exclude_modalities"):
        lines.append(f"| Held-out modalities (not trained on) | {_v(c['exclude_modalities'])} |")
    if c.get("max_train_samples"):
        lines.append(f"| Max training rows | {_v(c['max_train_samples'])} |")
    lines.append(f"| Evaluation split | `{_v(c.get('eval_split'))}` |")
    lines += ["", "Check the licence and terms of use of the source dataset before sharing this model.", ""]

    # --- template
    template = c.get("template", "think")
    mode = c.get("prompt_mode", "default")
    example = _example_prompt(template, mode)
    lines += ["## Prompt template", "",
              f"Template `{template}`, prompt mode `{mode}`"
              + (", RARL diversity prompting (seeded explain/short/open reasoning instructions)"
                 if c.get("diversity_prompting") else "") + ". One user turn: the image, then (example question; the string used at evaluation and inference):", "",
              "```text", example, "```", "",
              "Use the same template at inference (`qlora_grpo.infer` and `eval.evaluate` default to it).", ""]

    # --- objective
    if kind == "grpo":
        lines += ["## Rewards", "", "| Reward | Weight | Pays for |", "|---|---:|---|"]
        for r, w in zip(rewards, weights):
            lines.append(f"| `{r}` | {_v(w)} | {REWARD_DESCRIPTIONS.get(r, '—')} |")
        lines += ["", f"Total reward = weighted sum; advantages are normalized within each group of "
                  f"{_v(c.get('num_generations'))} completions per prompt.", ""]
    else:
        lines += ["## Training objective", "",
                  f"Supervised fine-tuning on the completion only (`sft_target: {_v(c.get('sft_target', 'answer'))}`: "
                  + ("answer tags" if c.get("sft_target", "answer") == "answer" else "a short rationale + answer tags")
                  + ").", ""]

    # --- hyperparameters
    hp = [("learning_rate", "Learning rate"), ("lr_scheduler_type", "LR schedule"), ("max_steps", "Max steps"),
          ("num_train_epochs", "Epochs (if max_steps = -1)"), ("per_device_train_batch_size", "Batch size per device"),
          ("gradient_accumulation_steps", "Gradient accumulation")]
    if kind == "grpo":
        hp += [("num_generations", "Completions per prompt (G)"), ("max_completion_length", "Max completion tokens"),
               ("temperature", "Rollout temperature"), ("beta", "KL coefficient (beta)"), ("loss_type", "GRPO loss")]
    hp += [("min_pixels", "Min image pixels"), ("max_pixels", "Max image pixels"),
           ("gradient_checkpointing", "Gradient checkpointing"), ("seed", "Seed")]
    lines += ["## Hyperparameters", "", "| Setting | Value |", "|---|---|"]
    lines += [f"| {label} (`{key}`) | {_v(c.get(key))} |" for key, label in hp if key in c]
    lines += ["", "The full resolved configuration is in `run_config.yaml`.", ""]

    lines += metrics_section(metrics, run_dir)
    lines += judge_section(read_judge(run_dir))

    # --- usage
    model_arg = export["out"] if merged else base
    adapter_arg = "" if merged else f" --adapter {export['out'] if export else run_dir}"
    lines += ["## How to use", "", "```bash",
              f"python -m qlora_grpo.infer --model {model_arg}{adapter_arg} \\",
              '    --image scan.dcm --question "Which modality is shown?" --options "CT;MRI;X-Ray;Ultrasound"',
              "```", "", "```python", "from qlora_grpo.infer import load",
              f"p = load({model_arg!r}" + ("" if merged else f", adapter={str(export['out'] if export else run_dir)!r}")
              + ")", 'p.ask("scan.png", "Which modality is shown?", ["CT", "MRI", "X-Ray", "Ultrasound"])', "```", ""]
    if merged:
        lines += ["Plain transformers:", "", "```python",
                  "from transformers import AutoModelForImageTextToText, AutoProcessor",
                  f"model = AutoModelForImageTextToText.from_pretrained({model_arg!r})",
                  f"processor = AutoProcessor.from_pretrained({model_arg!r})", "```", ""]
    lines += ["## Intended use", "", INTENDED_USE, "## Limitations and clinical safety", "", LIMITATIONS]
    lines += ["## Framework versions", "", _versions(), ""]
    return "\n".join(lines)


def _example_prompt(template: str, mode: str) -> str:
    try:
        from medvqa_data.templates import render_prompt

        return render_prompt("Which imaging modality is shown?", ["CT", "MRI", "X-Ray", "Ultrasound"],
                             template, mode=mode, phase="eval")
    except ValueError:
        return f"(template {template!r}, mode {mode!r})"


def _versions() -> str:
    from importlib import metadata

    parts = []
    for pkg in ("transformers", "trl", "peft", "torch", "bitsandbytes"):
        try:
            parts.append(f"{pkg} {metadata.version(pkg)}")
        except metadata.PackageNotFoundError:
            continue
    return ", ".join(parts)


def write_model_card(run_dir: str | Path) -> Path:
    """Write RUN_DIR/README.md (overwriting TRL's generic card) and return its path."""
    run_dir = Path(run_dir)
    path = run_dir / "README.md"
    text = render_model_card(run_dir)
    tmp = path.with_name(".README.md.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m qlora_grpo.model_card", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", help="a training run's output_dir (with run_config.yaml)")
    a = p.parse_args(argv)
    try:
        if not Path(a.run_dir).is_dir():
            raise UserError(f"run directory not found: {a.run_dir}")
        path = write_model_card(a.run_dir)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"model card written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
