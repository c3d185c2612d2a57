"""Errors that reach the user as one line and an exit code, never a traceback."""


class SelectLensError(Exception):
    """Base class: ``str(err)`` is the one-line message; ``exit_code`` the process status."""

    exit_code = 1


class InputError(SelectLensError, ValueError):
    """Bad user input: config, flag, data file, checkpoint, output path."""

    exit_code = 2
