"""User-facing errors: entry points print `error: <message>` and exit 2, without a traceback."""


class UserError(Exception):
    """A problem the user can fix (bad path, bad config, wrong template...). The message says how."""


class Interrupted(Exception):
    """Ctrl-C during training: the message says at which step, what is saved and the command that resumes.
    Entry points print `error: <message>` and exit 130 (the shell's code for SIGINT)."""
