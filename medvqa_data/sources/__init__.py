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

__all__ = ["READERS", "SOURCES", "SourceOptions", "SourceResult", "read_source"]


def read_source(name: str, root: Path, opts: SourceOptions) -> SourceResult:
    """Run the adapter `name` on `root`; `DataError` for an unknown name."""
    if name not in READERS:
        raise DataError(f"unknown source {name!r}; choose one of: {', '.join(SOURCES)}")
    return READERS[name](root, opts)
