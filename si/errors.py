"""Errors that reach the user as one line on stderr and a non-zero exit."""


class SiError(Exception):
    """An error whose message is fit to show the user as is (one line, no traceback)."""

    exit_code = 1


class PackageError(SiError):
    """A sequence package (directory or archive) is refused; the message names the problem."""
