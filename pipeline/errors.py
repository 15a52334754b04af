"""The one exception type users see: a one-line message naming the bad input."""

from __future__ import annotations


class GhostboxError(Exception):
    """A problem with user input (file, field, value) that the CLI prints as one line.

    Raise it where the bad input enters, with a message that names the file, the field and
    the value, so the CLI can print it without a traceback.
    """
