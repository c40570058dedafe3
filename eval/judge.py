"""A local LLM judge of reasoning quality (RARL's evaluation), pairwise win rates, and open answers.

    python -m eval.judge --predictions runs/grpo/eval/predictions.jsonl --judge-model models/JUDGE \\
        --out runs/grpo/judge [--open] [--no-rubric]
    python -m eval.judge --compare runs/sft/eval runs/grpo/eval --judge-model models/JUDGE --out runs/judge-sft-grpo

- rubric (default with --predictions): every prediction's reasoning scored 1-5 on five criteria
  (medical correctness, consistency with the final answer, use of visible image findings, no
  hallucinated findings, clarity) as strict JSON;
- --open: open questions (VQA-RAD/SLAKE/PathVQA): does the prediction mean the same as the gold
  answer? Reported next to exact match and token F1, with their agreement;
- --compare BASELINE CANDIDATE: the judge picks the better reasoning of the same row, shown in both
  orders; a win counts only when both orders agree. Win/tie/loss rates of CANDIDATE, bootstrap CIs.

The judge is any local transformers checkpoint: a Qwen2-VL/Qwen2.5-VL or other vision-language
model sees the image; a text-only chat model judges from the text. Greedy, batched (left padding),
resumable (judgements_<task>.jsonl caches every reply, keyed by judge + rendered prompt), with a
progress bar. A reply that is not the JSON asked for gets one repair prompt (--retries), then is
counted as unparsable; nothing crashes. Prompts are the editable files in eval/prompts/ (or
--prompts-dir). Writes metrics.json, report.md, judge.png. See docs/eval.md ("LLM judge").
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

from eval.judge_metrics import (
    TASKS,
    VerdictError,
    open_metrics,
    pairwise_metrics,
    parse_verdict,
    rubric_metrics,
)
from eval.judge_model import Judge, load_judge
from eval.judge_prompts import (
    PROMPTS_DIR,
    load_prompts,
    open_prompt,
    pairwise_prompt,
    prompt_hash,
    render,
    rubric_prompt,
)
from eval.scoring import read_predictions, score_record
from medvqa_data.errors import DataError
from qlora_grpo.errors import UserError

SCHEMA_VERSION = 1


# ----------------------------------------------------------------------------- cached, repaired judging
def _key(judge_id: str, prompt: str, image: str | None) -> str:
    return hashlib.sha256(f"{judge_id}\0{image or ''}\0{prompt}".encode()).hexdigest()[:24]


def _read_cache(path: Path) -> dict[str, dict]:
    recs = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill is redone
            if isinstance(r, dict) and "key" in r and "replies" in r:
                recs[r["key"]] = r
    return recs


def run_items(task: str, items: list[dict], get_judge, cache: Path, repair: str, judge_id: str,
              batch_size: int = 4, retries: int = 1, progress: bool = True) -> dict[str, dict]:
    """Judge `items` ({"id", "order"?, "prompt", "image"}) -> {key: {"key", "id", "order", "replies",
    "verdict" (dict | None), "error"}}. Cached replies are reused; the judge is loaded only if needed."""
    from tqdm import tqdm

    for it in items:
        it["key"] = _key(judge_id, it["prompt"], it.get("image"))
    done = _read_cache(cache)
    _write_cache(cache, done.values())  # drops a line cut by a kill before appending to the file
    todo = [it for it in items if it["key"] not in done]
    bar = tqdm(total=len(items), initial=len(items) - len(todo), desc=f"judge {task}", unit="item",
               disable=not progress, file=sys.stderr)
    with cache.open("a", encoding="utf-8") as f:
        for i in range(0, len(todo), batch_size):
            batch = todo[i:i + batch_size]
            judge = get_judge()
            replies = judge.generate([it["prompt"] for it in batch], [it.get("image") for it in batch])
            recs = [{"key": it["key"], "id": it["id"], "order": it.get("order"), "replies": [r], "verdict": None,
                     "error": None} for it, r in zip(batch, replies)]
            for attempt in range(retries + 1):
                failed = []
                for it, rec in zip(batch, recs):
                    if rec["verdict"] is not None or len(rec["replies"]) != attempt + 1:
                        continue
                    try:
                        rec["verdict"], rec["error"] = parse_verdict(rec["replies"][-1], task), None
                    except VerdictError as e:
                        rec["error"] = str(e)
                        failed.append((it, rec))
                if not failed or attempt == retries:
                    break
                fixes = judge.generate([render(repair, error=rec["error"], task=it["prompt"],
                                               reply=rec["replies"][-1][:2000]) for it, rec in failed],
                                       [it.get("image") for it, _ in failed])
                for (_, rec), reply in zip(failed, fixes):
                    rec["replies"].append(reply)
            for rec in recs:
                done[rec["key"]] = rec
                f.write(json.dumps(rec) + "\n")
            f.flush()
            bar.update(len(batch))
    bar.close()
    keep = {it["key"]: _reparse(done[it["key"]], task) for it in items}
    _write_cache(cache, keep.values())  # the cache ends holding exactly this run's items
    return keep


def _reparse(rec: dict, task: str) -> dict:
    """The verdict of a cached record from its replies with today's parser (first usable reply wins)."""
    rec["verdict"], rec["error"] = None, rec.get("error")
    for reply in rec["replies"]:
        try:
            rec["verdict"], rec["error"] = parse_verdict(reply, task), None
            break
        except VerdictError as e:
            rec["error"] = str(e)
    return rec


def _write_cache(cache: Path, recs) -> None:
    tmp = cache.with_suffix(".jsonl.tmp")  # atomic: a kill here loses nothing
    tmp.write_text("".join(json.dumps(r) + "\n" for r in recs), encoding="utf-8")
    tmp.replace(cache)


# ----------------------------------------------------------------------------- inputs
def predictions_file(path: str | Path) -> Path:
    """A predictions.jsonl, or an eval dir / run dir holding one (DIR/predictions.jsonl, DIR/eval/...)."""
    p = Path(path)
    for cand in (p, p / "predictions.jsonl", p / "eval" / "predictions.jsonl"):
        if cand.is_file():
            return cand
    raise UserError(f"{p}: no predictions file (looked for {p / 'predictions.jsonl'}); make one with "
                    "python -m eval.evaluate")


def load_records(path: Path, data: str | None, split: str | None, limit: int | None) -> list[dict]:
    """Scored prediction records with `question` and `image` (path) joined from the prepared data:
    --data/--split, else the eval_config.json next to the predictions (written by eval.evaluate)."""
    recs, bad = read_predictions(path, strict=True)
    if bad:
        print(f"warning: {path}: {len(bad)} malformed line(s) skipped (first: line {bad[0]['line']}: "
              f"{bad[0]['error']})", file=sys.stderr)
    if not recs:
        raise UserError(f"{path}: no usable prediction records")
    recs = recs[:limit] if limit else recs
    cfg_file = path.parent / "eval_config.json"
    cfg = json.loads(cfg_file.read_text()) if cfg_file.is_file() else {}
    out = []
    for r in recs:
        if "reasoning" not in r or "parsed" not in r:  # a bare file (e.g. the calibration set): parse it
            r = {**r, **score_record(r, r["completion"], r.get("template") or "think")}
        out.append(r)
    data = data or cfg.get("data")
    if data and Path(data).exists():
        from medvqa_data.schema import load_prepared

        ds = load_prepared(data, split or cfg.get("split") or "test")
        rows = {str(i): (q, im) for i, q, im in zip(ds["id"], ds["question"], ds["image"])}
        for r in out:
            q, im = rows.get(str(r["id"]), (None, None))
            r.setdefault("question", q)
            r.setdefault("image", im)
    missing = sum(not r.get("question") for r in out)
    if missing:
        print(f"warning: {missing} of {len(out)} records have no question text (pass --data PREPARED_DIR so the "
              "judge sees the questions and images)", file=sys.stderr)
    return out


def _image(rec: dict, use_images: bool) -> str | None:
    im = rec.get("image") if use_images else None
    return im if isinstance(im, str) and Path(im).is_file() else None


def _meta(rec: dict) -> dict:
    return {k: rec.get(k) for k in ("id", "modality", "question_type", "dataset", "correct", "exact", "f1", "label")}


# ----------------------------------------------------------------------------- the three tasks
def judge_run(out: str | Path, judge_model: str, predictions: str | None = None, compare: list[str] | None = None,
              rubric: bool = True, open_answers: bool = False, data: str | None = None, split: str | None = None,
              names: list[str] | None = None, prompts_dir: str | None = None, batch_size: int = 4,
              max_new_tokens: int = 256, retries: int = 1, limit: int | None = None, images: bool = True,
              quantization: str = "none", min_pixels: int = 3136, max_pixels: int = 401408,
              progress: bool = True, plot: bool = True) -> dict:
    """Run the requested tasks and write metrics.json, report.md, judge.png and the caches into `out`."""
    from eval.compare import default_name
    from eval.judge_report import judge_figure, markdown_report

    out = Path(out)
    if out.is_file():
        raise UserError(f"--out {out} is a file; give a directory")
    if bool(predictions) == bool(compare):
        raise UserError("give either --predictions FILE (rubric / --open) or --compare BASELINE CANDIDATE")
    if compare and len(compare) != 2:
        raise UserError(f"--compare takes two eval dirs (baseline, candidate), got {len(compare)}")
    tasks = ["pairwise"] if compare else [t for t, on in (("rubric", rubric), ("open", open_answers)) if on]
    if not tasks:
        raise UserError("nothing to do: --no-rubric without --open")
    if prompts_dir and not Path(prompts_dir).is_dir():
        raise UserError(f"--prompts-dir {prompts_dir}: no such directory")
    prompts = load_prompts(prompts_dir)
    if not (Path(judge_model) / "config.json").is_file():
        raise UserError(f"--judge-model {judge_model}: not a local checkpoint dir (no config.json); give the "
                        "directory of a downloaded transformers model")
    judge_path = str(Path(judge_model).resolve())
    loaded: list[Judge] = []

    def get_judge() -> Judge:
        if not loaded:
            loaded.append(load_judge(judge_model, max_new_tokens, quantization, min_pixels, max_pixels))
        return loaded[0]

    try:  # read directly (no transformers import before load_judge sets up the environment)
        vlm = "vision_config" in json.loads((Path(judge_path) / "config.json").read_text())
    except (json.JSONDecodeError, TypeError) as e:
        raise UserError(f"--judge-model {judge_model}: config.json is not a JSON object ({e})") from None
    use_images = images and vlm
    judge_id = f"{judge_path}|{max_new_tokens}|{use_images}"
    out.mkdir(parents=True, exist_ok=True)
    metrics: dict = {"schema_version": SCHEMA_VERSION, "judge": {
        "model": judge_path, "name": Path(judge_path).name, "vision": vlm, "images_shown": use_images,
        "max_new_tokens": max_new_tokens, "retries": retries, "greedy": True,
        "prompt_sha256": prompt_hash(prompts, tasks), "prompts_dir": str(prompts_dir or PROMPTS_DIR)}, "sources": {}}
    run = dict(get_judge=get_judge, repair=prompts["repair"], judge_id=judge_id, batch_size=batch_size,
               retries=retries, progress=progress)
    if compare:
        files = [predictions_file(c) for c in compare]
        runs = names or [default_name(f.parent) for f in files]
        if len(runs) != 2:
            raise UserError(f"--names needs two names (baseline,candidate), got {len(runs)}")
        if runs[0] == runs[1]:
            runs = [runs[0], f"{runs[1]}#2"]
        a, b = ({str(r["id"]): r for r in load_records(f, data, split, None)} for f in files)
        ids = [i for i in a if i in b][:limit] if limit else [i for i in a if i in b]
        if not ids:
            raise UserError(f"{files[0]} and {files[1]} have no prediction ids in common")
        items = []
        for i in ids:
            im = _image(a[i], use_images)
            items.append({"id": i, "order": "ab", "image": im,
                          "prompt": pairwise_prompt(prompts["pairwise"], a[i], b[i], im is not None)})
            items.append({"id": i, "order": "ba", "image": im,
                          "prompt": pairwise_prompt(prompts["pairwise"], b[i], a[i], im is not None)})
        got = run_items("pairwise", items, cache=out / "judgements_pairwise.jsonl", **run)
        by = {(it["id"], it["order"]): got[it["key"]]["verdict"] for it in items}
        rows = [{**_meta(a[i]), "ab": by[(i, "ab")], "ba": by[(i, "ba")]} for i in ids]
        metrics["pairwise"] = pairwise_metrics(rows, runs)
        metrics["sources"] = {"baseline": str(files[0]), "candidate": str(files[1])}
    else:
        path = predictions_file(predictions)
        recs = load_records(path, data, split, limit)
        metrics["sources"] = {"predictions": str(path)}
        if "rubric" in tasks:
            items = []
            for r in recs:
                im = _image(r, use_images)
                items.append({"id": str(r["id"]), "image": im, "prompt": rubric_prompt(prompts["rubric"], r, im is not None)})
            got = run_items("rubric", items, cache=out / "judgements_rubric.jsonl", **run)
            metrics["rubric"] = rubric_metrics([{**_meta(r), "verdict": got[it["key"]]["verdict"]}
                                                for r, it in zip(recs, items)])
        if "open" in tasks:
            opened = [r for r in recs if (r.get("answer_type") or "closed") == "open"]
            items = []
            for r in opened:
                im = _image(r, use_images)
                items.append({"id": str(r["id"]), "image": im, "prompt": open_prompt(prompts["open"], r, im is not None)})
            got = run_items("open", items, cache=out / "judgements_open.jsonl", **run)
            metrics["open"] = open_metrics([{**_meta(r), "verdict": got[it["key"]]["verdict"]}
                                            for r, it in zip(opened, items)])
    old_file = out / "metrics.json"
    if old_file.is_file():  # keep the other tasks' sections of an earlier run with the same judge
        try:
            old = json.loads(old_file.read_text())
        except json.JSONDecodeError:
            old = {}
        if isinstance(old, dict) and (old.get("judge") or {}).get("model") == judge_path:
            for t in TASKS:
                if t not in metrics and t in old:
                    metrics[t] = old[t]
    title = f"LLM-judge evaluation ({metrics['judge']['name']})"
    figure = None
    if plot:
        judge_figure(metrics, out / "judge.png", title=title)
        figure = "judge.png"
    (out / "report.md").write_text(markdown_report(metrics, title, figure) + "\n")
    tmp = out / "metrics.json.tmp"
    tmp.write_text(json.dumps(metrics, indent=2) + "\n")
    tmp.replace(out / "metrics.json")
    return metrics


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eval.judge", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--predictions", help="predictions.jsonl of eval.evaluate (or its eval dir)")
    src.add_argument("--compare", nargs=2, metavar=("BASELINE", "CANDIDATE"),
                     help="two eval dirs (or predictions files) judged pairwise on their common ids")
    p.add_argument("--judge-model", required=True, help="local checkpoint dir of the judge (chat LLM or VLM)")
    p.add_argument("--out", required=True, help="output dir (metrics.json, report.md, judge.png, caches)")
    p.add_argument("--open", action="store_true", help="also grade open answers against the gold answer")
    p.add_argument("--no-rubric", action="store_true", help="skip the rubric scoring (with --open: open only)")
    p.add_argument("--names", default=None, help="with --compare: two display names, comma-separated")
    p.add_argument("--data", default=None, help="prepared data dir for questions/images (default: from "
                                                "the eval_config.json next to the predictions)")
    p.add_argument("--split", default=None)
    p.add_argument("--prompts-dir", default=None, help="dir with your own judge_*.txt prompts (missing files: "
                                                       "the bundled ones)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--retries", type=int, default=1, help="repair prompts after an unusable reply")
    p.add_argument("--limit", type=int, default=None, help="judge the first N rows only")
    p.add_argument("--no-images", action="store_true", help="do not show images to a VLM judge")
    p.add_argument("--quantization", default="none", choices=("none", "nf4"))
    p.add_argument("--min-pixels", type=int, default=3136)
    p.add_argument("--max-pixels", type=int, default=401408)
    a = p.parse_args(argv)
    if a.batch_size < 1 or a.max_new_tokens < 1 or a.retries < 0 or (a.limit is not None and a.limit < 1):
        p.error("--batch-size, --max-new-tokens and --limit must be positive, --retries >= 0")
    names = [n.strip() for n in a.names.split(",")] if a.names else None
    try:
        m = judge_run(a.out, a.judge_model, predictions=a.predictions, compare=a.compare, rubric=not a.no_rubric,
                      open_answers=a.open, data=a.data, split=a.split, names=names, prompts_dir=a.prompts_dir,
                      batch_size=a.batch_size, max_new_tokens=a.max_new_tokens, retries=a.retries, limit=a.limit,
                      images=not a.no_images, quantization=a.quantization, min_pixels=a.min_pixels,
                      max_pixels=a.max_pixels)
    except (UserError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for line in summary_lines(m):
        print(line)
    print(f"wrote metrics.json, report.md, judge.png to {a.out}")
    return 0


def summary_lines(m: dict) -> list[str]:
    def f(x):
        return "–" if x is None else f"{x:g}"

    lines = []
    if "rubric" in m:
        r = m["rubric"]
        lines.append(f"rubric: mean {f(r['mean'])} / 5 over {r['n_judged']} judged; unparsable {r['n_unparsable']} "
                     f"of {r['n']}")
    if "open" in m:
        o = m["open"]
        lines.append(f"open: judge match {f(o['judge_match']['rate'])}, exact match {f(o['exact_match'])}, "
                     f"agreement {f(o['agreement_exact'])}; unparsable {o['n_unparsable']} of {o['n']}")
    if "pairwise" in m:
        w = m["pairwise"]
        lines.append(f"pairwise {w['candidate']} vs {w['baseline']}: win {f(w['win']['rate'])} tie {f(w['tie']['rate'])} "
                     f"loss {f(w['loss']['rate'])}; unparsable {w['n_unparsable']} of {w['n']}")
    return lines


if __name__ == "__main__":
    sys.exit(main())
