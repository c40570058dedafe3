"""The judge's prompts: editable template files (eval/prompts/), their hash, and rendering one item.

Templates use `{name}` placeholders filled in one pass (values may contain braces; the JSON examples
in the templates are left alone). A user's --prompts-dir overrides any of the bundled files.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

PROMPTS_DIR = Path(__file__).parent / "prompts"
PROMPT_FILES = {"rubric": "judge_rubric.txt", "pairwise": "judge_pairwise.txt", "open": "judge_open.txt",
                "repair": "judge_repair.txt"}
IMAGE_NOTE = {True: "The medical image the question is about is attached.",
              False: "You cannot see the image: judge the use of image findings from the question and the "
                     "reasoning alone, and do not reward findings that cannot be checked."}


def load_prompts(prompts_dir: str | Path | None = None) -> dict[str, str]:
    """The prompt templates: a file of `prompts_dir` where present, else the bundled one."""
    out = {}
    for name, file in PROMPT_FILES.items():
        user = Path(prompts_dir) / file if prompts_dir else None
        out[name] = (user if user and user.is_file() else PROMPTS_DIR / file).read_text(encoding="utf-8")
    return out


def prompt_hash(prompts: dict[str, str], tasks) -> str:
    """sha256 of the templates a run used (its task prompts and the repair prompt)."""
    h = hashlib.sha256()
    for name in sorted({*tasks, "repair"}):
        h.update(f"{name}\0{prompts[name]}\0".encode())
    return h.hexdigest()


def render(template: str, **values: str) -> str:
    """Fill `{name}` placeholders in one pass (values may contain braces; JSON examples are left alone)."""
    return re.sub(r"\{(\w+)\}", lambda m: str(values[m.group(1)]) if m.group(1) in values else m.group(0), template)


def _letter_text(rec: dict, letter: str | None) -> str | None:
    opts = list(rec.get("options") or [])
    if letter and len(letter) == 1 and 0 <= ord(letter.upper()) - 65 < len(opts):
        return f"{letter.upper()}) {opts[ord(letter.upper()) - 65]}"
    return letter


def options_text(rec: dict) -> str:
    opts = list(rec.get("options") or [])
    if not opts or (rec.get("answer_type") or "closed") == "open":
        return "Options: none (answer in free text)"
    return "Options: " + ", ".join(f"{chr(65 + i)}) {o}" for i, o in enumerate(opts))


def reference_text(rec: dict) -> str:
    if rec.get("options") and rec.get("answer_letter") and (rec.get("answer_type") or "closed") != "open":
        return _letter_text(rec, rec["answer_letter"]) or str(rec.get("answer"))
    return str(rec.get("answer") or "")


def reasoning_text(rec: dict) -> str:
    """The `<think>` text; the whole completion when there is none (no-think templates); never empty."""
    text = (rec.get("reasoning") or rec.get("completion") or "").strip()
    return text or "(no reasoning given)"


def final_answer_text(rec: dict) -> str:
    parsed = rec.get("parsed")
    if parsed in (None, ""):
        return "(no parseable answer)"
    return _letter_text(rec, str(parsed)) if rec.get("options") else str(parsed)


def rubric_prompt(template: str, rec: dict, vlm_image: bool) -> str:
    return render(template, image_note=IMAGE_NOTE[vlm_image], question=rec.get("question") or "(not available)",
                  options=options_text(rec), reference=reference_text(rec), reasoning=reasoning_text(rec),
                  final_answer=final_answer_text(rec))


def pairwise_prompt(template: str, first: dict, second: dict, vlm_image: bool) -> str:
    """`first` is shown as A, `second` as B."""
    return render(template, image_note=IMAGE_NOTE[vlm_image], question=first.get("question") or "(not available)",
                  options=options_text(first), reference=reference_text(first),
                  reasoning_a=reasoning_text(first), final_answer_a=final_answer_text(first),
                  reasoning_b=reasoning_text(second), final_answer_b=final_answer_text(second))


def open_prompt(template: str, rec: dict, vlm_image: bool) -> str:
    return render(template, image_note=IMAGE_NOTE[vlm_image], question=rec.get("question") or "(not available)",
                  reference=str(rec.get("answer") or ""), prediction=final_answer_text(rec))
