"""PathVQA: a Hub-style ``image, question, answer`` copy (parquet, jsonl or csv) with its official splits.

Files are named by split (``train-*.parquet``, ``validation-*``, ``test-*``;
19,654 / 6,259 / 6,719 questions). Embedded image bytes are extracted into OUT;
path cells are looked up under ROOT (``images/``, then by file name).
Yes/no answers are "closed", the rest "open". PathVQA has no modality field;
rows get "Microscopy" (most images are histology slides; a few are gross photos).
The original pickle release is not read (unpickling runs arbitrary code):
convert it to jsonl with columns image, question, answer first.
"""

from __future__ import annotations

from pathlib import Path

from medvqa_data.sources.base import SourceOptions, SourceResult, read_qa_tables


def read(root: Path, opts: SourceOptions) -> SourceResult:
    result = SourceResult(default_split="official")
    read_qa_tables(root, opts, result, dataset="PathVQA", source="pathvqa", modality="Microscopy")
    return result
