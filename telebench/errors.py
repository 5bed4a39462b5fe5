"""User-facing errors: one sentence, exit code 2, no traceback."""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix (bad suite, missing file, unavailable device).

    The message must be one sentence naming the file, the key and the fix.
    """

    exit_code = 2

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code
