"""The error types the CLI turns into one-line messages and exit codes.

Library code raises these instead of printing, so a test (or another tool) sees the same verdict
the CLI would show, and so a traceback never reaches a user for input that is merely bad.
"""


class BlkError(Exception):
    """Bad input or a refused operation: exit code 2, nothing written."""

    exit_code = 2


class CorruptError(BlkError):
    """On-disk bytes that fail magic, type, version or checksum checks: reported, never trusted."""


class RefusedError(BlkError):
    """A device that is mounted, in use, or carries a signature: the safety checks said no."""


class NoSpaceError(BlkError):
    """The store, its object map or its journal is full."""
