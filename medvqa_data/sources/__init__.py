"""Source adapters: one module per dataset layout, each turning files on disk into schema rows.

======================  ====================================================
``omnimedvqa``          `medvqa_data.sources.omnimedvqa` (raw OmniMedVQA)
``medr1``               `medvqa_data.sources.medr1` (Med-R1 Splits files)
``vqa-rad``             `medvqa_data.sources.vqa_rad`
``slake``               `medvqa_data.sources.slake`
``pathvqa``             `medvqa_data.sources.pathvqa`
``pmc-vqa``             `medvqa_data.sources.pmc_vqa`
``jsonl``               `medvqa_data.sources.jsonl` (our schema, users' own data)
======================  ====================================================
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from medvqa_data.errors import DataError
from medvqa_data.sources import jsonl, medr1, omnimedvqa, pathvqa, pmc_vqa, slake, vqa_rad
from medvqa_data.sources.base import SourceOptions, SourceResult

READERS: dict[str, Callable[[Path, SourceOptions], SourceResult]] = {
    "omnimedvqa": omnimedvqa.read,
    "medr1": medr1.read,
    "vqa-rad": vqa_rad.read,
    "slake": slake.read,
    "pathvqa": pathvqa.read,
    "pmc-vqa": pmc_vqa.read,
    "jsonl": jsonl.read,
}
SOURCES = tuple(READERS)

__all__ = ["READERS", "SOURCES", "SourceOptions", "SourceResult", "guess_source", "read_source"]


def read_source(name: str, root: Path, opts: SourceOptions) -> SourceResult:
    """Run the adapter `name` on `root`; `DataError` for an unknown name."""
    if name not in READERS:
        raise DataError(f"unknown source {name!r}; choose one of: {', '.join(SOURCES)}")
    return READERS[name](root, opts)


def guess_source(path: Path) -> str | None:
    """The source whose layout `path` looks like (a cheap look at the top level), or None."""
    if not path.is_dir():
        return None
    children = {child.name for child in path.iterdir()}
    if "QA_information" in children or any((path / c / "QA_information").is_dir() for c in children):
        return "omnimedvqa"
    if "Splits" in children or path.name == "Splits" or {"modality", "question_type"} & children:
        return "medr1"
    if "imgs" in children and "train.json" in children:
        return "slake"
    if "train.csv" in children or "test.csv" in children:
        return "pmc-vqa"
    if any("vqa_rad" in c.lower() for c in children):
        return "vqa-rad"
    if any(c.endswith(".jsonl") for c in children):
        return "jsonl"
    return None
