"""User-facing errors: the CLI prints these as one line and exits non-zero, no traceback."""


class R1kitError(Exception):
    """Bad input or an unusable environment, explained in one line for the user."""
