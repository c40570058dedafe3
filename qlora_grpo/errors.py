"""User-facing errors: entry points print `error: <message>` and exit 2, without a traceback."""


class UserError(Exception):
    """A problem the user can fix (bad path, bad config, wrong template...). The message says how."""
