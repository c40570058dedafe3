"""Ask a (fine-tuned) Qwen2-VL one question about one medical image.

    python -m qlora_grpo.infer --model DIR [--adapter RUN_DIR] --image PATH --question TEXT \
        [--options "CT;MRI;X-Ray;Ultrasound"] [--template think|think-after|no-think|zero-shot] \
        [--json] [--max-new-tokens 256] [--quantization nf4|none] [--min-pixels N] [--max-pixels N]

Images: PNG/JPEG/TIFF/BMP, DICOM (.dcm or any file with the DICM preamble; windowed to 8 bits) and
NIfTI (.nii/.nii.gz; middle axial slice), decoded by `medvqa_data.images.load_image` and resized
with the same rule as training and evaluation (`fit_pixels`).

Defaults follow the adapter's run dir (`run_config.yaml`): its training template, prompt mode,
quantization (an adapter trained on an NF4 base is run on an NF4 base) and pixel bounds; for a merged
export given as --model, its run_config.yaml without the quantization (the weights are 16-bit); else
template think, 16-bit (fp32 on CPU) weights. Generation is greedy with the vision
placeholder tokens suppressed, exactly as `eval.evaluate`; the completion is parsed by the shared
parser (`qlora_grpo.parsing`, default mode) into the reasoning and the answer, and the answer is
matched to an option letter (`match_choice`).

Questions without options: every template has an open-answer form (`render_prompt` replaces the
letter instruction by "the answer as a short word or phrase (or yes/no)"), so the question is asked
as an open question and no letter is reported. The exception is an adapter trained with
`prompt_mode: paper` (Med-R1's exact strings, which are multiple choice only): it needs --options.

Python:

    from qlora_grpo.infer import load
    p = load("runs/tiny-qwen2-vl", adapter="runs/demo/grpo")
    p.ask("medvqa_data/sample/scan.dcm", "Which modality is shown?", ["CT", "MRI", "X-Ray", "Ultrasound"])
    # {'answer': 'A', 'letter': 'A', 'option': 'CT', 'reasoning': '...', 'completion': '...', 'format_ok': True}

Bad input (unreadable image, missing dirs, an adapter trained on another base model, bad options)
gives one line `error: ...` and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qlora_grpo import cpu_compat
from qlora_grpo.errors import UserError
from qlora_grpo.run_config import read_run_config

TEMPLATES = ("think", "think-after", "no-think", "zero-shot")
DEFAULT_MIN_PIXELS = 3136
DEFAULT_MAX_PIXELS = 401408
RESULT_KEYS = ("answer", "letter", "option", "reasoning", "completion", "format_ok")


def parse_options(options: str | list | tuple | None) -> list[str]:
    """Option texts in letter order from a list or a "A;B;C" string; [] for none. Checks count and emptiness."""
    if not options or (isinstance(options, str) and not options.strip()):
        return []  # None, "", [] (an already parsed open question): no options
    if isinstance(options, str):
        items = options.split(";")
    else:
        items = list(options)
    texts = [str(o).strip() for o in items]
    if any(not t for t in texts):
        raise UserError(f"options {options!r} contain an empty option; separate the option texts with ';', "
                        "e.g. --options \"CT;MRI;X-Ray\"")
    if len(texts) < 2:
        raise UserError(f"a multiple-choice question needs at least 2 options, got {len(texts)} ({options!r}); "
                        "separate them with ';' or omit --options to ask an open question")
    if len(texts) > 26:
        raise UserError(f"at most 26 options (A-Z) are supported, got {len(texts)}")
    if len({t.casefold() for t in texts}) != len(texts):
        raise UserError(f"options {options!r} repeat an option; each option text must be different")
    return texts


@dataclass
class Predictor:
    """A loaded model + processor and the prompt settings; `ask` answers one question about one image."""

    model: Any
    processor: Any
    template: str = "think"
    prompt_mode: str = "default"
    min_pixels: int = DEFAULT_MIN_PIXELS
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_new_tokens: int = 256
    info: dict = field(default_factory=dict)  # model, adapter, quantization, dtype (for display)

    def prompt(self, question: str, options: list[str]) -> str:
        """The user-turn text: the template's evaluation string (as `eval.evaluate` renders it)."""
        from medvqa_data.templates import render_prompt

        if not question or not question.strip():
            raise UserError("the question is empty")
        if not options and self.prompt_mode == "paper":
            raise UserError("this adapter was trained with Med-R1's multiple-choice prompts (prompt_mode: paper), "
                            "which have no open-answer form; pass the answer options (--options \"A;B;C\")")
        return render_prompt(question, options, self.template, mode=self.prompt_mode, phase="eval",
                             answer_type="closed" if options else "open")

    def image(self, image):
        """An RGB PIL image from a path (PNG/JPEG/DICOM/NIfTI...) or a PIL image, resized as in training."""
        from PIL import Image

        from medvqa_data.images import _pil_to_rgb, fit_pixels, load_image

        if isinstance(image, Image.Image):
            img = _pil_to_rgb(image)
        elif isinstance(image, (str, os.PathLike)):
            img = load_image(image)  # ImageError (a DataError) names the file and the reason
        else:
            raise UserError(f"image must be a file path or a PIL image, got {type(image).__name__}")
        from qlora_grpo.families import resize_kwargs_of

        return fit_pixels(img, self.min_pixels, self.max_pixels, **resize_kwargs_of(self.model))

    def generate(self, image, prompt_text: str, max_new_tokens: int | None = None) -> str:
        """Greedy completion for one image and one user-turn text (vision placeholders suppressed)."""
        import torch

        from medvqa_data.templates import build_messages
        from qlora_grpo.generation import left_padding
        from qlora_grpo.model import vision_special_token_ids

        text = self.processor.apply_chat_template(build_messages(prompt_text), add_generation_prompt=True,
                                                  tokenize=False)
        with left_padding(self.processor):  # as eval.evaluate (one prompt today; callers may batch)
            inputs = self.processor(text=[text], images=[image], return_tensors="pt").to(self.model.device)
        with torch.inference_mode():
            out = self.model.generate(**inputs, do_sample=False, max_new_tokens=max_new_tokens or self.max_new_tokens,
                                      suppress_tokens=vision_special_token_ids(self.processor), temperature=None,
                                      top_p=None, top_k=None)
        return self.processor.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)[0]

    def ask(self, image, question: str, options: str | list | None = None,
            max_new_tokens: int | None = None) -> dict:
        """Answer `question` about `image` (path or PIL). Returns
        {answer, letter, option, reasoning, completion, format_ok}: `answer` is the text of the
        `<answer>` block (the whole text for zero-shot), `letter`/`option` the option it selects
        (None for open questions or when no single option is selected)."""
        from qlora_grpo.parsing import match_choice, parse_completion

        opts = parse_options(options)
        prompt_text = self.prompt(question, opts)
        completion = self.generate(self.image(image), prompt_text, max_new_tokens)
        parsed = parse_completion(completion, self.template, "default")
        letter = match_choice(parsed.answer, opts) if opts else None
        option = opts[ord(letter) - ord("A")] if letter else None
        return {"answer": parsed.answer, "letter": letter, "option": option, "reasoning": parsed.reasoning,
                "completion": completion, "format_ok": parsed.format_ok}


def load(model: str, adapter: str | None = None, template: str | None = None, quantization: str | None = None,
         compute_dtype: str | None = None, min_pixels: int | None = None, max_pixels: int | None = None,
         max_new_tokens: int = 256, allow_pickle: bool = False) -> Predictor:
    """Load the base `model` (dir or hub id) and optionally a trained adapter (a run dir).

    Every setting left as None comes from the adapter's run_config.yaml (as trained), else the defaults:
    template think, quantization none, compute_dtype auto, pixels 3136..401408.
    Raises UserError for missing dirs, a wrong base model or bad settings.
    """
    from qlora_grpo.model import load_for_inference, resolve_model_path, trained_vision_quantization

    if template is not None and template not in TEMPLATES:
        raise UserError(f"unknown template {template!r}; choose one of: {', '.join(TEMPLATES)}")
    if quantization is not None and quantization not in ("nf4", "none"):
        raise UserError(f"unknown quantization {quantization!r}; choose nf4 or none")
    if adapter is not None:
        if not Path(adapter).is_dir():
            raise UserError(f"adapter directory not found: {adapter}")
        if not (Path(adapter) / "adapter_config.json").is_file():
            raise UserError(f"no LoRA adapter in {adapter} (adapter_config.json missing); pass the run's "
                            "output_dir, or omit --adapter to use the base model")
    run_cfg = read_run_config(adapter)
    if not adapter and Path(model).is_dir():
        # a merged export (qlora_grpo.export --merge) keeps run_config.yaml: its template and pixel bounds
        # apply; its weights are 16-bit now, so the training quantization does not
        run_cfg = {k: v for k, v in read_run_config(model).items() if k != "quantization"}
    trained_template = run_cfg.get("template")
    template = template or trained_template or "think"
    if trained_template and template not in (trained_template, "zero-shot"):
        print(f"warning: the adapter was trained with template {trained_template!r}, asking with {template!r}",
              file=sys.stderr)
    quantization = quantization or run_cfg.get("quantization") or "none"
    compute_dtype = compute_dtype or run_cfg.get("compute_dtype") or "auto"
    min_px = int(min_pixels or run_cfg.get("min_pixels") or DEFAULT_MIN_PIXELS)
    max_px = int(max_pixels or run_cfg.get("max_pixels") or DEFAULT_MAX_PIXELS)
    if min_px > max_px:
        raise UserError(f"min_pixels {min_px} is larger than max_pixels {max_px}")
    if quantization == "nf4" and not cpu_compat.has_cuda():
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise UserError("quantization nf4 needs bitsandbytes; install it or pass --quantization none") from None
    path = resolve_model_path(model)
    m, processor = load_for_inference(path, adapter, quantization=quantization, compute_dtype=compute_dtype,
                                      min_pixels=min_px, max_pixels=max_px, allow_pickle=allow_pickle,
                                      quantize_vision=trained_vision_quantization(run_cfg if adapter else {},
                                                                                  quantization))
    info = {"model": path, "adapter": adapter, "quantization": quantization, "dtype": str(getattr(m, "dtype", "")).replace("torch.", "")}
    return Predictor(m, processor, template=template, prompt_mode=run_cfg.get("prompt_mode") or "default",
                     min_pixels=min_px, max_pixels=max_px, max_new_tokens=max_new_tokens, info=info)


def format_result(result: dict, options: list[str]) -> str:
    """Human-readable reasoning + answer."""
    lines = ["Reasoning:", f"  {result['reasoning']}" if result["reasoning"] else "  (none)"]
    if options:
        if result["letter"]:
            lines.append(f"Answer: {result['letter']}) {result['option']}")
        else:
            lines.append(f"Answer: no single option selected (answer text: {result['answer']!r})")
    else:
        lines.append(f"Answer: {result['answer']}" if result["answer"] else "Answer: (none parsed)")
    if not result["format_ok"]:
        lines.append("Note: the completion does not follow the template's format; raw completion:")
        lines.append(f"  {result['completion']!r}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m qlora_grpo.infer", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="base model dir (the one the adapter was trained on) or hub id")
    p.add_argument("--adapter", help="run dir with the trained LoRA adapter (omit for the base model)")
    p.add_argument("--image", required=True, help="PNG/JPEG/..., DICOM or NIfTI file")
    p.add_argument("--question", required=True)
    p.add_argument("--options", default=None,
                   help='answer options separated by ";" (e.g. "CT;MRI;X-Ray"); omit for an open question')
    p.add_argument("--template", default=None, choices=TEMPLATES,
                   help="default: the adapter's training template, else think")
    p.add_argument("--json", action="store_true", help="print one JSON object: " + ", ".join(RESULT_KEYS))
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--quantization", default=None, choices=("nf4", "none"),
                   help="base weights; default: as the adapter was trained, else none")
    p.add_argument("--min-pixels", type=int, default=None, help="default: the run's min_pixels, else 3136")
    p.add_argument("--max-pixels", type=int, default=None, help="default: the run's max_pixels, else 401408")
    p.add_argument("--allow-pickle", action="store_true", help="allow non-safetensors weights (can run code)")
    return p


def main(argv: list[str] | None = None) -> int:
    cpu_compat.setup_env()
    a = build_parser().parse_args(argv)
    from medvqa_data.errors import DataError

    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        if a.max_new_tokens < 1:
            raise UserError("--max-new-tokens must be at least 1")
        options = parse_options(a.options)
        from medvqa_data.images import load_image

        image = load_image(a.image)  # fail on a bad image before loading the model
        predictor = load(a.model, a.adapter, template=a.template, quantization=a.quantization,
                         min_pixels=a.min_pixels, max_pixels=a.max_pixels, max_new_tokens=a.max_new_tokens,
                         allow_pickle=a.allow_pickle)
        result = predictor.ask(image, a.question, options)
    except (UserError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if a.json:
        print(json.dumps({k: result[k] for k in RESULT_KEYS}, ensure_ascii=False))
    else:
        print(format_result(result, options))
    return 0


if __name__ == "__main__":
    sys.exit(main())
