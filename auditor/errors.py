"""Errors a user can cause. They become a one-line message and exit code 2, never a traceback."""


class InputError(Exception):
    """Bad or missing input: path, git object, waiver file, labels file, option values."""


class UsageError(InputError):
    """Command-line misuse."""
