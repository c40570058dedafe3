"""Schema rows -> TRL rows: a conversational `prompt` plus the `image`, loaded lazily.

Training (GRPO and SFT) and evaluation both build their inputs here, so the prompt strings and
the image resizing (`images.fit_pixels` with the config's min/max pixels) are identical in both.
Images are decoded on access (`Dataset.with_transform`), never stored in memory or on disk twice.
"""

from __future__ import annotations

from typing import Any

from medvqa_data import images, templates
from medvqa_data.errors import DataError, ImageError

ANSWER_COLUMNS = ["id", "answer", "options", "answer_letter", "answer_type", "question", "modality",
                  "question_type", "dataset"]


def select_training_rows(data_path: str, split: str, subset: str | None = None,
                         exclude_modalities: list[str] | tuple = (), max_rows: int | None = None,
                         seed: int = 0):
    """The training rows of a prepared dataset: one manifest cell (`AXIS=VALUE`), minus excluded
    modalities, then a seeded random subset of `max_rows` rows (splits are stored grouped by
    dataset, so the first rows would be one modality). Errors name what is wrong (DataError)."""
    from medvqa_data.errors import DataError
    from medvqa_data.schema import load_prepared
    from medvqa_data.splits import load_manifest

    if subset:
        axis, sep, value = subset.partition("=")
        if not sep or not value:
            raise DataError(f"train_subset must look like AXIS=VALUE (e.g. modality=CT), got {subset!r}")
        ds = load_manifest(data_path, axis.strip(), value.strip().strip("'\""), split)
    else:
        ds = load_prepared(data_path, split)
    if exclude_modalities:
        excluded = set(exclude_modalities)
        ds = ds.filter(lambda m: m not in excluded, input_columns="modality")
    if max_rows and max_rows < len(ds):
        ds = ds.shuffle(seed=seed).select(range(max_rows))
    if len(ds) == 0:
        raise DataError(f"no training rows left in {data_path} ({split}) after subset={subset!r}, "
                        f"exclude_modalities={list(exclude_modalities)}")
    return ds


def select_eval_rows(data_path: str, split: str, subset: str | None = None):
    """The evaluation rows: the whole split, or one manifest cell (`AXIS=VALUE`)."""
    return select_training_rows(data_path, split, subset)


def prompt_text(row: dict, template: str, mode: str = "default", phase: str = "train",
                diversity: bool = False, seed: int = 0, index: int = 0) -> str:
    style = templates.diversity_style(seed, index) if diversity else None
    return templates.render_prompt(
        row["question"], list(row["options"] or []), template, mode=mode, phase=phase,
        answer_type=row.get("answer_type") or "closed", style=style,
    )


def load_row_image(path: str, min_pixels: int, max_pixels: int, resize: dict | None = None):
    """Decode and resize one image. `resize`: the model family's `fit_pixels` numbers (`factor` or
    `fixed_side`; default Qwen2-VL's 28-px rule)."""
    return images.fit_pixels(images.load_image(path), min_pixels, max_pixels, **(resize or {}))


def to_trl(ds, template: str, mode: str = "default", phase: str = "train", min_pixels: int = 3136,
           max_pixels: int = 401408, diversity: bool = False, seed: int = 0, resize: dict | None = None):
    """Add `prompt` (conversational) and decode `image` lazily.

    Returns a `datasets.Dataset` whose rows have `prompt`, `image` (PIL, resized), and the answer
    columns that the reward functions read (`answer`, `options`, `answer_letter`, `answer_type`, ...).
    The prompt is TRL's canonical VLM form: one user turn with string content; TRL inserts the
    image placeholder before it (rendering exactly as `templates.build_messages` does).
    """
    prompts = [
        [{"role": "user", "content": prompt_text(row, template, mode, phase, diversity, seed, i)}]
        for i, row in enumerate(ds.select_columns(["question", "options", "answer_type"]))
    ]
    ds = ds.add_column("prompt", prompts)
    substitute = _Substitutes(ds, min_pixels, max_pixels, resize)

    def _decode(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        out = {k: list(v) for k, v in batch.items()}
        if "image" in batch:
            decoded = []
            for i, path in enumerate(batch["image"]):
                try:
                    decoded.append(load_row_image(path, min_pixels, max_pixels, resize))
                except ImageError as e:  # a run hours in must not die on one file
                    row, image = substitute(path, e.reason)
                    for k in out:
                        if k != "image" and k in row:
                            out[k][i] = row[k]
                    decoded.append(image)
            out["image"] = decoded
        return out

    return ds.with_transform(_decode)


class _Substitutes:
    """Training rows whose image cannot be read are skipped: each is replaced (all columns) by the next
    row of the dataset whose image decodes, always the same one, so GRPO's groups stay one prompt each
    and every process agrees. A warning names the file and counts the bad images so far."""

    def __init__(self, ds, min_pixels: int, max_pixels: int, resize: dict | None = None):
        self.ds, self.min_pixels, self.max_pixels, self.resize = ds, min_pixels, max_pixels, resize
        self.paths: list[str] | None = None
        self.bad: dict[str, str] = {}  # path -> reason
        self.chosen: dict[str, int] = {}  # bad path -> index of its substitute row

    def __call__(self, path: str, reason: str):
        import sys

        if path not in self.bad:
            self.bad[path] = reason
            print(f"warning: training image {path} cannot be read ({reason}); its row is skipped "
                  f"({len(self.bad)} unreadable training image(s) so far); re-run `python -m medvqa_data.prepare` "
                  "to rebuild the dataset", file=sys.stderr, flush=True)
        if path not in self.chosen:
            self.paths = self.paths or [str(p) for p in self.ds["image"]]
            start = self.paths.index(path) if path in self.paths else 0
            for step in range(1, len(self.paths) + 1):
                j = (start + step) % len(self.paths)
                candidate = self.paths[j]
                if candidate in self.bad:
                    continue
                try:
                    load_row_image(candidate, self.min_pixels, self.max_pixels, self.resize)
                except ImageError as e:
                    self.bad[candidate] = e.reason
                    continue
                self.chosen[path] = j
                break
            else:
                raise DataError(f"no training image of the dataset can be read (e.g. {path}: {reason}); "
                                "re-run `python -m medvqa_data.prepare`")
        row = self.ds[self.chosen[path]]
        return row, load_row_image(row["image"], self.min_pixels, self.max_pixels, self.resize)


def sft_target(row: dict, template: str, kind: str = "answer") -> str:
    """The SFT completion for a row, in the template's format.

    kind="answer": the answer tag (think templates get a fixed, content-free think block, so SFT
    teaches the format and the answer, not reasoning: the Med-R1 SFT baseline);
    kind="reasoning": a one-sentence rationale naming the option, then the answer.
    """
    letter = row.get("answer_letter") or ""
    answer = letter if letter else row["answer"]
    if kind == "reasoning":
        what = f"{letter}) {row['answer']}" if letter else row["answer"]
        thought = f"The image shows {row['answer']}, so the answer is {what}."
    else:
        thought = "I look at the image and compare it with each option."
    if template == "no-think":
        return f"<answer>{answer}</answer>"
    if template == "think-after":
        return f"<answer>{answer}</answer>\n<think>{thought}</think>"
    return f"<think>{thought}</think>\n<answer>{answer}</answer>"


def to_sft(ds, template: str, mode: str = "default", kind: str = "answer", min_pixels: int = 3136,
           max_pixels: int = 401408, diversity: bool = False, seed: int = 0, resize: dict | None = None):
    """Prompt-completion rows for TRL's SFTTrainer (the loss covers the completion only)."""
    completions = [[{"role": "assistant", "content": sft_target(row, template, kind)}]
                   for row in ds.select_columns(["answer", "answer_letter"])]
    ds = ds.add_column("completion", completions)
    return to_trl(ds, template, mode, "train", min_pixels, max_pixels, diversity, seed, resize)
