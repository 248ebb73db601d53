"""One exception type for bad input, so the CLI and notebooks can show a one-line message."""

from pathlib import Path


class CxrnbError(Exception):
    """A problem with the user's input (path, parameter, file) that the user can fix.

    The message is one line that says what is wrong and what to do about it. The CLI prints it
    without a traceback; everything else (bugs) propagates with its traceback.
    """


class DiskFullError(CxrnbError):
    """A write failed on a full disk or quota (``paths.disk_full_error`` says so in one line): work
    that can resume, such as a cache build, keeps what it has."""

    filename: str | Path | None = None     # the file whose write failed, when known
