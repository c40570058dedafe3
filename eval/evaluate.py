"""Evaluate a base model or a trained adapter on a prepared dataset.

    python -m eval.evaluate --model DIR [--adapter RUN_DIR] --data PREPARED_DIR [--split test] \\
        [--template think|think-after|no-think|zero-shot] [--mode default|paper] --out DIR \\
        [--batch-size 8] [--max-new-tokens 256] [--limit N]

Batched greedy generation (left padding, vision special tokens suppressed); answers parsed with the
parser of the rewards (`qlora_grpo.parsing`). `--mode paper` reproduces Med-R1's evaluation script:
its evaluation prompt strings and its answer regex ``<answer>\\s*(\\w+)\\s*</answer>`` (exact compare).
Resumable: `predictions.jsonl` is appended per batch and finished ids are skipped on rerun (a line
cut by a kill is redone). Writes predictions.jsonl, metrics.json, report.md, accuracy.png and
eval_config.json into --out. See docs/eval.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from eval.scoring import EVAL_TEMPLATES, PRED_KEYS, check_mode, prompt_mode, read_predictions, score_record
from medvqa_data.errors import ImageError
from qlora_grpo.run_config import read_run_config

__all__ = ["EVAL_TEMPLATES", "PRED_KEYS", "evaluate", "generate_batch", "main", "score_prediction"]

CONFIG_NAME = "eval_config.json"
#: eval_config.json keys that make cached predictions stale when they change.
_GEN_KEYS = ("template", "mode", "max_new_tokens", "min_pixels", "max_pixels", "model", "adapter", "data", "split")


def score_prediction(row: dict, completion: str, template: str, mode: str, open_metric: str = "f1") -> dict:
    """One predictions.jsonl record (kept for callers of the skeleton; see eval.scoring.score_record)."""
    return score_record(row, completion, template, mode)


def generate_batch(model, processor, rows: list[dict], template: str, mode: str, max_new_tokens: int,
                   min_pixels: int, max_pixels: int) -> list[str]:
    """Greedy completions for `rows` in one padded batch (always padded on the left)."""
    import torch

    from medvqa_data import templates
    from medvqa_data.dataset import load_row_image
    from qlora_grpo.families import resize_kwargs_of
    from qlora_grpo.generation import left_padding
    from qlora_grpo.model import vision_special_token_ids

    texts, imgs, resize = [], [], resize_kwargs_of(model)
    for row in rows:
        prompt = templates.render_prompt(row["question"], list(row["options"] or []), template,
                                         mode=prompt_mode(mode), phase="eval",
                                         answer_type=row.get("answer_type") or "closed")
        messages = templates.build_messages(prompt)
        texts.append(processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))
        imgs.append(load_row_image(row["image"], min_pixels, max_pixels, resize))
    # one image list per prompt: Gemma 3's processor reads a flat list as all images of one prompt
    with left_padding(processor):  # whatever the processor was left at (Unsloth's trainers set "right")
        inputs = processor(text=texts, images=[[im] for im in imgs], padding=True,
                           return_tensors="pt").to(model.device)
    with torch.inference_mode():
        out = model.generate(**inputs, do_sample=False, max_new_tokens=max_new_tokens,
                             suppress_tokens=vision_special_token_ids(processor), temperature=None, top_p=None,
                             top_k=None)
    new = out[:, inputs["input_ids"].shape[1]:]
    return processor.batch_decode(new, skip_special_tokens=True)


def _load_cache(out: Path, config: dict) -> dict[str, dict]:
    """Finished predictions of an earlier run with the same settings, by id (others are set aside)."""
    pred_file = out / "predictions.jsonl"
    cfg_file = out / CONFIG_NAME
    if pred_file.is_file() and cfg_file.is_file():
        try:
            old = json.loads(cfg_file.read_text())
        except json.JSONDecodeError:
            old = {}
        changed = [k for k in _GEN_KEYS if k in old and k in config and old[k] != config[k]]
        if changed:
            stale = out / "predictions.stale.jsonl"
            pred_file.replace(stale)
            print(f"warning: {out} holds predictions made with other settings ({', '.join(changed)}); "
                  f"moved them to {stale.name} and starting afresh", file=sys.stderr)
    recs, _ = read_predictions(pred_file)  # a line cut by a kill mid-write is dropped and redone
    return {str(r["id"]): r for r in recs if "completion" in r}


def evaluate(model, processor, ds, template: str, out_dir: str | Path, mode: str = "default",
             batch_size: int = 8, max_new_tokens: int = 256, limit: int | None = None,
             min_pixels: int = 3136, max_pixels: int = 401408, title: str = "Evaluation",
             run_info: dict | None = None, plot: bool = True, progress: bool = True) -> dict:
    """Generate, score and write predictions.jsonl / metrics.json / report.md / accuracy.png into out_dir.

    `ds`: schema rows (a `datasets.Dataset` or a list of dicts). `mode`: "default" or "paper"
    (Med-R1's evaluation prompts and parser). `run_info` (model, adapter, data, split, ...) is stored
    in eval_config.json; predictions cached under different settings are not reused. Returns metrics.
    """
    from tqdm import tqdm

    from eval.scoring import write_outputs

    mode = check_mode(mode)
    if template not in EVAL_TEMPLATES:
        raise ValueError(f"unknown template {template!r}; valid: {', '.join(EVAL_TEMPLATES)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds)))) if hasattr(ds, "select") else list(ds)[:limit]
    config = {"template": template, "mode": mode, "max_new_tokens": max_new_tokens, "min_pixels": min_pixels,
              "max_pixels": max_pixels, "batch_size": batch_size, "limit": limit, **(run_info or {})}
    done = _load_cache(out, config)
    (out / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    pred_file = out / "predictions.jsonl"
    tmp = out / "predictions.jsonl.tmp"
    with tmp.open("w") as f:  # rewrite the good lines (drops a line cut by a kill); atomic: a kill here loses none
        for r in done.values():
            f.write(json.dumps(r) + "\n")
    tmp.replace(pred_file)
    rows = list(ds)
    ids = [str(r["id"]) for r in rows]
    todo = [row for row, i in zip(rows, ids) if i not in done]
    bar = tqdm(total=len(rows), initial=len(rows) - len(todo), desc="evaluate", unit="sample",
               disable=not progress, file=sys.stderr)
    t0, n_new, skipped = time.perf_counter(), 0, {}
    with pred_file.open("a") as f:
        for i in range(0, len(todo), batch_size):
            batch = todo[i:i + batch_size]
            try:
                completions = generate_batch(model, processor, batch, template, mode, max_new_tokens,
                                             min_pixels, max_pixels)
            except ImageError:  # one unreadable image must not end an evaluation: skip and count its rows
                batch = _drop_unreadable(batch, skipped, min_pixels, max_pixels)
                completions = generate_batch(model, processor, batch, template, mode, max_new_tokens,
                                             min_pixels, max_pixels) if batch else []
            for row, completion in zip(batch, completions):
                rec = score_record(row, completion, template, mode)
                done[str(rec["id"])] = rec
                f.write(json.dumps(rec) + "\n")
            f.flush()
            n_new += len(batch)
            bar.update(len(batch))
            bar.set_postfix(samples_per_s=f"{n_new / max(time.perf_counter() - t0, 1e-9):.2f}")
    bar.close()
    # rescore every record from its completion against today's row: cached ones too, so the parser
    # and the gold answers are always the current ones
    preds = [score_record(row, done[i]["completion"], template, mode) for row, i in zip(rows, ids) if i in done]
    tmp = out / "predictions.jsonl.tmp"  # the final file holds exactly the scored rows, atomically
    with tmp.open("w") as f:
        for r in preds:
            f.write(json.dumps(r) + "\n")
    tmp.replace(pred_file)
    extra = {}
    if skipped:
        extra["skipped_images"] = list(skipped.values())
        first = next(iter(skipped.values()))
        print(f"warning: skipped {len(skipped)} row(s) whose image cannot be read (e.g. {first['image']}: "
              f"{first['reason']}); they are not scored and are listed in {out / 'report.md'}; re-run "
              "`python -m medvqa_data.prepare` to rebuild the dataset", file=sys.stderr)
    return write_outputs(preds, out, template, mode, title, plot=plot, extra=extra)


def _drop_unreadable(batch: list[dict], skipped: dict, min_pixels: int, max_pixels: int) -> list[dict]:
    """The rows of `batch` whose image decodes; the others go into `skipped` (id -> id, image, reason)."""
    from medvqa_data.dataset import load_row_image

    good = []
    for row in batch:
        try:
            load_row_image(row["image"], min_pixels, max_pixels)
        except ImageError as e:
            skipped[str(row["id"])] = {"id": str(row["id"]), "image": str(row["image"]), "reason": e.reason}
        else:
            good.append(row)
    return good


def warn_template(run_cfg: dict, template: str, adapter: str | Path | None) -> None:
    trained = run_cfg.get("template")
    if trained and template not in (trained, "zero-shot"):
        print(f"warning: the adapter {adapter} was trained with template {trained!r} but is evaluated with "
              f"{template!r}; its answers may not follow the expected format", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eval.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="base model dir (the one the adapter was trained on)")
    p.add_argument("--adapter", help="run dir with the LoRA adapter (omit to evaluate the base model)")
    p.add_argument("--data", required=True, help="output dir of python -m medvqa_data.prepare")
    p.add_argument("--split", default="test")
    p.add_argument("--template", default=None, choices=EVAL_TEMPLATES,
                   help="default: the adapter's training template, else think")
    p.add_argument("--mode", default=None, choices=("default", "paper"),
                   help="default: our parser and the training prompts; paper: Med-R1's evaluation prompts and "
                        "parser (default: the adapter's prompt_mode, else default)")
    p.add_argument("--out", required=True)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N rows only")
    p.add_argument("--subset", default=None,
                   help="AXIS=VALUE: one manifest cell of the split only, e.g. question_type='Modality Recognition'")
    p.add_argument("--quantization", default=None, choices=("nf4", "none"),
                   help="base weights; default: as the adapter was trained (nf4 for QLoRA runs), else none")
    p.add_argument("--min-pixels", type=int, default=None)
    p.add_argument("--max-pixels", type=int, default=None)
    a = p.parse_args(argv)
    if a.batch_size < 1 or a.max_new_tokens < 1 or (a.limit is not None and a.limit < 1):
        p.error("--batch-size, --max-new-tokens and --limit must be positive")
    from medvqa_data.errors import DataError
    from qlora_grpo.errors import UserError

    try:
        return _run(a)
    except (UserError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _run(a) -> int:
    from medvqa_data.schema import load_prepared
    from qlora_grpo.errors import UserError

    out = Path(a.out)
    if out.is_file():
        raise UserError(f"--out {out} is a file; give a directory")
    if a.adapter and not Path(a.adapter).is_dir():
        raise UserError(f"--adapter {a.adapter}: no such directory")
    run_cfg = read_run_config(a.adapter)
    template = a.template or run_cfg.get("template", "think")
    warn_template(run_cfg, template, a.adapter)
    mode = a.mode or ("paper" if run_cfg.get("prompt_mode") == "paper" else "default")
    quant = a.quantization or run_cfg.get("quantization", "none")
    min_px = a.min_pixels or run_cfg.get("min_pixels", 3136)
    max_px = a.max_pixels or run_cfg.get("max_pixels", 401408)
    ds = load_prepared(a.data, a.split)  # names any missing column (checked before the slow model imports)
    if a.subset:
        from medvqa_data.dataset import select_eval_rows

        ds = select_eval_rows(a.data, a.split, a.subset)
    from qlora_grpo import cpu_compat

    cpu_compat.setup_env()  # before torch/triton/trl are imported by the model loader
    from qlora_grpo.model import load_for_inference, trained_vision_quantization

    model, processor = load_for_inference(a.model, a.adapter, quantization=quant, min_pixels=min_px,
                                          quantize_vision=trained_vision_quantization(run_cfg, quant),
                                          max_pixels=max_px)
    info = {"model": str(Path(a.model).resolve()), "adapter": str(Path(a.adapter).resolve()) if a.adapter else None,
            "data": str(Path(a.data).resolve()), "split": a.split}
    t0 = time.perf_counter()
    metrics = evaluate(model, processor, ds, template, out, mode=mode, batch_size=a.batch_size,
                       max_new_tokens=a.max_new_tokens, limit=a.limit, min_pixels=min_px, max_pixels=max_px,
                       title=f"Evaluation of {a.adapter or a.model} on {a.data} ({a.split})", run_info=info)
    o = metrics["overall"]
    print(f"accuracy {100 * o['accuracy']:.1f}% (n={o['n']}, 95% CI {100 * o['ci95'][0]:.1f}-"
          f"{100 * o['ci95'][1]:.1f}); unparsed {100 * metrics['unparsed_rate']:.1f}%; "
          f"{metrics['n_predictions']} predictions in {time.perf_counter() - t0:.1f} s")
    print(f"wrote predictions.jsonl, metrics.json, report.md, accuracy.png to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
