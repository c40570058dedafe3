"""Evaluate a base model or a trained adapter on a prepared dataset.

    python -m eval.evaluate --model DIR [--adapter RUN_DIR] --data PREPARED_DIR [--split test] \
        [--template think|think-after|no-think|zero-shot] [--mode default|paper] --out DIR \
        [--batch-size 8] [--max-new-tokens 256] [--limit N]

Batched greedy generation (left padding, vision special tokens suppressed), answers parsed with the
same parser as the rewards (`qlora_grpo.parsing`). Resumable: `predictions.jsonl` is appended per
batch and finished ids are skipped on rerun. Writes predictions.jsonl, metrics.json, report.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from qlora_grpo import cpu_compat

EVAL_TEMPLATES = ("think", "think-after", "no-think", "zero-shot")
PRED_KEYS = ["id", "modality", "question_type", "dataset", "options", "answer", "answer_letter", "answer_type"]


def score_prediction(row: dict, completion: str, template: str, mode: str, open_metric: str = "f1") -> dict:
    """One predictions.jsonl record: schema columns + completion, reasoning, parsed, correct."""
    from qlora_grpo import parsing

    rec = {k: row.get(k) for k in PRED_KEYS}
    rec["completion"] = completion
    if (row.get("answer_type") or "closed") == "open":
        score, parsed = parsing.score_open(completion, row["answer"], template, mode, metric="exact")
        pred = parsed.answer or ""
        rec.update(reasoning=parsed.reasoning, parsed=parsed.answer, format_ok=parsed.format_ok,
                   correct=score, exact=score, f1=parsing.token_f1(pred, row["answer"]),
                   recall=parsing.token_recall(pred, row["answer"]))
    else:
        score, parsed, letter = parsing.score_closed(completion, list(row["options"] or []), row["answer_letter"],
                                                     template, mode)
        rec.update(reasoning=parsed.reasoning, parsed=letter if mode != "paper" else parsed.answer,
                   format_ok=parsed.format_ok, correct=score)
    return rec


def generate_batch(model, processor, rows: list[dict], template: str, mode: str, max_new_tokens: int,
                   min_pixels: int, max_pixels: int) -> list[str]:
    import torch

    from medvqa_data import templates
    from medvqa_data.dataset import load_row_image, prompt_text
    from qlora_grpo.model import vision_special_token_ids

    texts, imgs = [], []
    for row in rows:
        messages = templates.build_messages(prompt_text(row, template, mode, phase="eval"))
        texts.append(processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))
        imgs.append(load_row_image(row["image"], min_pixels, max_pixels))
    inputs = processor(text=texts, images=imgs, padding=True, return_tensors="pt").to(model.device)
    with torch.inference_mode():
        out = model.generate(**inputs, do_sample=False, max_new_tokens=max_new_tokens,
                             suppress_tokens=vision_special_token_ids(processor), temperature=None, top_p=None,
                             top_k=None)
    new = out[:, inputs["input_ids"].shape[1]:]
    return processor.batch_decode(new, skip_special_tokens=True)


def read_predictions(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    recs = []
    for line in path.read_text().splitlines():
        try:
            recs.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by a kill mid-write: redone on this run
    return recs


def evaluate(model, processor, ds, template: str, out_dir: str | Path, mode: str = "default",
             batch_size: int = 8, max_new_tokens: int = 256, limit: int | None = None,
             min_pixels: int = 3136, max_pixels: int = 401408, title: str = "Evaluation") -> dict:
    """Generate, score and write predictions.jsonl / metrics.json / report.md into out_dir."""
    from tqdm import tqdm

    from eval.metrics import compute_metrics, markdown_report

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pred_file = out / "predictions.jsonl"
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
    done = {r["id"]: r for r in read_predictions(pred_file)}
    with pred_file.open("w") as f:  # rewrite the good lines (drops a line cut by a kill)
        for r in done.values():
            f.write(json.dumps(r) + "\n")
    todo = [row for row in ds if row["id"] not in done]
    bar = tqdm(total=len(ds), initial=len(ds) - len(todo), desc="evaluate", unit="sample")
    t0 = time.time()
    with pred_file.open("a") as f:
        for i in range(0, len(todo), batch_size):
            batch = todo[i:i + batch_size]
            completions = generate_batch(model, processor, batch, template, mode, max_new_tokens,
                                         min_pixels, max_pixels)
            for row, completion in zip(batch, completions):
                rec = score_prediction(row, completion, template, mode)
                done[rec["id"]] = rec
                f.write(json.dumps(rec) + "\n")
            f.flush()
            bar.update(len(batch))
            bar.set_postfix(samples_per_s=f"{(i + len(batch)) / max(time.time() - t0, 1e-9):.2f}")
    bar.close()
    preds = [done[row_id] for row_id in ds["id"] if row_id in done]
    metrics = compute_metrics(preds)
    metrics["template"], metrics["mode"] = template, mode
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (out / "report.md").write_text(markdown_report(metrics, title) + "\n")
    return metrics


def main(argv: list[str] | None = None) -> int:
    cpu_compat.setup_env()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="base model dir (the one the adapter was trained on)")
    p.add_argument("--adapter", help="run dir with the LoRA adapter (omit to evaluate the base model)")
    p.add_argument("--data", required=True, help="output dir of python -m medvqa_data.prepare")
    p.add_argument("--split", default="test")
    p.add_argument("--template", default=None, choices=EVAL_TEMPLATES,
                   help="default: the adapter's training template, else think")
    p.add_argument("--mode", default="default", choices=("default", "paper"))
    p.add_argument("--out", required=True)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--quantization", default=None, choices=("nf4", "none"),
                   help="base weights; default: as the adapter was trained (nf4 for QLoRA runs), else none")
    p.add_argument("--min-pixels", type=int, default=None)
    p.add_argument("--max-pixels", type=int, default=None)
    a = p.parse_args(argv)
    from medvqa_data.errors import DataError
    from qlora_grpo.errors import UserError

    try:
        return _run(a)
    except (UserError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _run(a) -> int:
    import yaml

    from medvqa_data.schema import load_prepared
    from qlora_grpo.errors import UserError
    from qlora_grpo.model import load_for_inference

    run_cfg = {}
    if a.adapter:
        cfg_file = Path(a.adapter) / "run_config.yaml"
        if cfg_file.is_file():
            run_cfg = yaml.safe_load(cfg_file.read_text()) or {}
    template = a.template or run_cfg.get("template", "think")
    if run_cfg.get("template") and template not in (run_cfg["template"], "zero-shot"):
        print(f"warning: the adapter was trained with template {run_cfg['template']!r}, evaluating with "
              f"{template!r}", file=sys.stderr)
    quant = a.quantization or run_cfg.get("quantization", "none")
    min_px = a.min_pixels or run_cfg.get("min_pixels", 3136)
    max_px = a.max_pixels or run_cfg.get("max_pixels", 401408)
    ds = load_prepared(a.data, a.split)
    out = Path(a.out)
    if out.is_file():
        raise UserError(f"--out {out} is a file; give a directory")
    model, processor = load_for_inference(a.model, a.adapter, quantization=quant, min_pixels=min_px,
                                          max_pixels=max_px)
    metrics = evaluate(model, processor, ds, template, out, mode=a.mode, batch_size=a.batch_size,
                       max_new_tokens=a.max_new_tokens, limit=a.limit, min_pixels=min_px, max_pixels=max_px,
                       title=f"Evaluation of {a.adapter or a.model} on {a.data} ({a.split})")
    o = metrics["overall"]
    print(f"accuracy {100 * o['accuracy']:.1f}% (n={o['n']}); predictions, metrics.json and report.md in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
