"""One exception type for bad input, so the CLI and notebooks can show a one-line message."""


class CxrnbError(Exception):
    """A problem with the user's input (path, parameter, file) that the user can fix.

    The message is one line that says what is wrong and what to do about it. The CLI prints it
    without a traceback; everything else (bugs) propagates with its traceback.
    """
