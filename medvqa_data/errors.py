"""Exceptions for user-facing data problems.

Every problem a user can fix (a wrong path, a missing column, a broken image)
is raised as a `DataError` with a one-line message. Command-line tools catch it,
print ``error: <message>`` and exit with status 2, without a traceback.
"""

from __future__ import annotations


class DataError(Exception):
    """A data problem the user can fix; the message says what and how."""


class ImageError(DataError):
    """An image that cannot be used: missing, empty, truncated, unknown format, too large."""

    def __init__(self, path: object, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class RowError(DataError):
    """A source record that cannot become a schema row (the reason goes to the report)."""


class StrictError(DataError):
    """`prepare --strict` found problems; `problems` lists them (one line each)."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__(f"{len(problems)} problem(s) found with --strict; nothing was written")
