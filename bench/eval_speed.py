"""Evaluation throughput: batched vs one-at-a-time greedy generation through `eval.evaluate`.

CPU (default): builds the tiny "demo" Qwen2-VL (`python -m qlora_grpo.tiny DIR --size demo`) and a
phantom set (`python -m medvqa_data.phantoms --n 200`, prepared with `--split modality`) under
--work, then evaluates the same --rows rows with each --batch-sizes value (default 1 and 16) with
a fixed --max-new-tokens, each into a fresh output dir, after one warm-up batch. Prints a markdown
table of samples/s and the speed-up over the first batch size (target: batch 16 >= 4x batch 1),
the mean completion length (same rows, same greedy decoding: the work done is comparable) and how
many completions are identical to batch size 1's (left padding may change a few greedy choices).

    python bench/eval_speed.py [--work DIR] [--rows 64] [--max-new-tokens 32] [--batch-sizes 1,16] [--threads 1]

GPU (`--gpu`; documented, untested in this repository's CI: no GPU there): a random-weight model
with Qwen2-VL-2B-Instruct's exact sizes (text 1536 x 28 layers, 12 heads, 2 KV heads, vocab 151,936;
vision 1280 x 32), bf16, on phantom images of 392x392 (196 visual tokens), batch --gpu-batch (32)
x --gpu-new-tokens (256) new tokens forced (min_new_tokens = max_new_tokens, no EOS): samples/s of
`model.generate`, the step `eval.evaluate` spends its time in. The tiny model's tokenizer builds
the prompts (its special-token ids are kept in the big config); outputs are not decoded.

    python bench/eval_speed.py --gpu [--gpu-batch 32] [--gpu-new-tokens 256] [--gpu-rows 64]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qlora_grpo import cpu_compat  # noqa: E402

cpu_compat.setup_env()


def build_inputs(work: Path, n_phantoms: int, size: int = 112) -> tuple[Path, Path]:
    """(tiny demo model dir, prepared phantom dir) under `work`, built once."""
    from medvqa_data.phantoms import generate_phantoms
    from medvqa_data.prepare import prepare
    from qlora_grpo import tiny

    model = work / "tiny-demo"
    if not (model / "config.json").is_file():
        tiny.build(model, size="demo", seed=0)
    raw, prepared = work / f"phantoms-{n_phantoms}-{size}", work / f"prepared-{n_phantoms}-{size}"
    if not (raw / "phantom_manifest.json").is_file():
        generate_phantoms(raw, n=n_phantoms, seed=0, size=size)
    if not (prepared / "prepare_report.json").is_file():
        prepare("omnimedvqa", raw, prepared, split="modality", overwrite=True, progress=False)
    return model, prepared


def rows_for(prepared: Path, n: int):
    from medvqa_data.schema import load_prepared

    ds = load_prepared(prepared, "train")
    if len(ds) < n:
        raise SystemExit(f"only {len(ds)} rows in {prepared}; lower --rows")
    return ds.select(range(n))


def cpu_bench(a) -> int:
    import torch

    from eval.evaluate import evaluate, generate_batch
    from qlora_grpo.model import load_for_inference

    if a.threads:
        torch.set_num_threads(a.threads)
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    model_dir, prepared = build_inputs(work, a.phantoms)
    rows = rows_for(prepared, a.rows)
    px = dict(min_pixels=3136, max_pixels=12544)  # 112x112 phantoms: 16 visual tokens each
    model, processor = load_for_inference(str(model_dir), None, quantization="none", **px)
    generate_batch(model, processor, [rows[0], rows[1]], "think", "default", 4, **px)  # warm-up
    sizes = [int(b) for b in a.batch_sizes.split(",")]
    results = []
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        for bs in sizes:
            out = Path(tmp) / f"bs{bs}"
            t0 = time.perf_counter()
            m = evaluate(model, processor, rows, "think", out, batch_size=bs, max_new_tokens=a.max_new_tokens,
                         plot=False, progress=False, **px)
            dt = time.perf_counter() - t0
            comps = [json.loads(line)["completion"] for line in (out / "predictions.jsonl").read_text().splitlines()]
            ntok = [len(processor.tokenizer(c, add_special_tokens=False)["input_ids"]) for c in comps]
            results.append({"batch_size": bs, "seconds": dt, "samples_per_s": len(rows) / dt, "completions": comps,
                            "mean_tokens": sum(ntok) / len(ntok), "n": m["n_predictions"]})
    ref = results[0]
    print(f"\n## Evaluation speed: tiny demo Qwen2-VL, {len(rows)} phantom rows, greedy, max_new_tokens "
          f"{a.max_new_tokens}, torch threads {torch.get_num_threads()}\n")
    print("| batch size | seconds | samples/s | speed-up vs batch " + str(ref["batch_size"])
          + " | mean completion tokens | completions identical to batch " + str(ref["batch_size"]) + " |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in results:
        same = sum(x == y for x, y in zip(r["completions"], ref["completions"]))
        print(f"| {r['batch_size']} | {r['seconds']:.2f} | {r['samples_per_s']:.2f} | "
              f"{r['samples_per_s'] / ref['samples_per_s']:.1f}x | {r['mean_tokens']:.1f} | {same}/{len(rows)} |")
    best = max(results[1:], key=lambda r: r["samples_per_s"], default=None)
    if best is not None:
        ok = best["samples_per_s"] >= 4 * ref["samples_per_s"]
        print(f"\nbatched (batch {best['batch_size']}) vs batch {ref['batch_size']}: "
              f"{best['samples_per_s'] / ref['samples_per_s']:.1f}x ({'meets' if ok else 'MISSES'} the 4x target)")
    return 0


def random_qwen2vl_2b(tiny_dir: Path, device: str = "cuda"):
    """A random-weight Qwen2VLForConditionalGeneration with Qwen2-VL-2B-Instruct's sizes (bf16, on CUDA)."""
    import torch
    from transformers import AutoConfig, Qwen2VLForConditionalGeneration

    cfg = AutoConfig.from_pretrained(tiny_dir)  # keeps the tiny tokenizer's special-token ids
    t = cfg.text_config
    t.hidden_size, t.intermediate_size, t.num_hidden_layers = 1536, 8960, 28
    t.num_attention_heads, t.num_key_value_heads, t.vocab_size = 12, 2, 151936
    t.max_position_embeddings, t.layer_types = 32768, ["full_attention"] * 28
    rope = dict(getattr(t, "rope_parameters", None) or {})
    rope.update(rope_theta=1_000_000.0, mrope_section=[16, 24, 24], rope_type="default")
    t.rope_parameters = rope
    v = cfg.vision_config
    v.depth, v.embed_dim, v.num_heads, v.mlp_ratio, v.hidden_size = 32, 1280, 16, 4, 1536
    cfg.tie_word_embeddings = t.tie_word_embeddings = True
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2VLForConditionalGeneration._from_config(cfg, dtype=torch.bfloat16, attn_implementation="sdpa")
    return model.eval()


def gpu_bench(a) -> int:
    import torch

    from medvqa_data import templates
    from medvqa_data.dataset import load_row_image
    from qlora_grpo.model import load_processor, vision_special_token_ids

    if not torch.cuda.is_available():
        print("error: --gpu needs a CUDA GPU", file=sys.stderr)
        return 2
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    model_dir, prepared = build_inputs(work, a.phantoms, size=392)
    rows = rows_for(prepared, a.gpu_rows)
    px = dict(min_pixels=3136, max_pixels=401408)  # Med-R1's max_pixels; 392x392 -> 196 visual tokens
    processor = load_processor(str(model_dir), **px)
    model = random_qwen2vl_2b(model_dir)
    n_params = sum(p.numel() for p in model.parameters())

    def run(batch):
        texts = [processor.apply_chat_template(templates.build_messages(templates.render_prompt(
            r["question"], list(r["options"]), "think", phase="eval")), add_generation_prompt=True, tokenize=False)
            for r in batch]
        imgs = [load_row_image(r["image"], **px) for r in batch]
        inputs = processor(text=texts, images=imgs, padding=True, return_tensors="pt").to("cuda")
        with torch.inference_mode():
            model.generate(**inputs, do_sample=False, max_new_tokens=a.gpu_new_tokens,
                           min_new_tokens=a.gpu_new_tokens, suppress_tokens=vision_special_token_ids(processor),
                           temperature=None, top_p=None, top_k=None)

    run([rows[i] for i in range(min(4, len(rows)))])  # warm-up
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for i in range(0, len(rows), a.gpu_batch):
        run([rows[j] for j in range(i, min(i + a.gpu_batch, len(rows)))])
    torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    print(f"\n## Evaluation speed: random-weight Qwen2-VL-2B sizes ({n_params / 1e9:.2f} B parameters), bf16, "
          f"{torch.cuda.get_device_name()}\n")
    print("| rows | batch size | new tokens | seconds | samples/s | new tokens/s | peak GPU memory (GiB) |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| {len(rows)} | {a.gpu_batch} | {a.gpu_new_tokens} | {dt:.1f} | {len(rows) / dt:.2f} | "
          f"{len(rows) * a.gpu_new_tokens / dt:.0f} | {torch.cuda.max_memory_allocated() / 2**30:.1f} |")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default="runs/bench-eval", help="where the tiny model and phantom data are built (reused)")
    p.add_argument("--phantoms", type=int, default=200)
    p.add_argument("--rows", type=int, default=64)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--batch-sizes", default="1,16", help="comma-separated; the first is the reference")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: on a small shared CPU, 2+ threads oversubscribe the cores "
                        "and make both settings several times slower; 0 = torch's choice)")
    p.add_argument("--gpu", action="store_true", help="random Qwen2-VL-2B-size model on CUDA instead (see above)")
    p.add_argument("--gpu-batch", type=int, default=32)
    p.add_argument("--gpu-new-tokens", type=int, default=256)
    p.add_argument("--gpu-rows", type=int, default=64)
    a = p.parse_args(argv)
    return gpu_bench(a) if a.gpu else cpu_bench(a)


if __name__ == "__main__":
    sys.exit(main())
