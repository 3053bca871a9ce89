"""The error types the CLI turns into one-line messages and exit codes.

Library code raises these instead of printing, so a test (or another tool) sees the same verdict
the CLI would show, and so a traceback never reaches a user for input that is merely bad.
"""


class BlkError(Exception):
    """Bad input or a refused operation: exit code 2, nothing written."""

    exit_code = 2


class CorruptError(BlkError):
    """On-disk bytes that fail magic, type, version or checksum checks: reported, never trusted.

    `fault` names the kind of damage (fsck reports it under that name); subclasses below name the
    faults a block's own checksum cannot see.
    """

    fault = "checksum"


class MisdirectedError(CorruptError):
    """A valid block found at an address other than the one its header names: a misdirected write."""

    fault = "misdirected-write"


class StaleBlockError(CorruptError):
    """A valid block at the right address that is not the version its pointer expects (a lost write)."""

    fault = "stale-block"


class DeviceReadError(CorruptError):
    """The device returned an I/O error (EIO) for a block: a latent sector error, never a traceback."""

    fault = "read-error"
    errno = 5  # EIO, what the kernel returned


class FieldError(CorruptError):
    """A block whose checksum holds but a field is out of range (a pointer outside the device, a
    size no map can cover, a count that overruns its block): what a damaged or hostile disk, or a
    bug that wrote a bad value and sealed it, looks like."""

    fault = "bad-field"


class RefusedError(BlkError):
    """A device that is mounted, in use, or carries a signature: the safety checks said no."""


class NoSpaceError(BlkError):
    """The store, its object map or its journal is full."""


PREFIX = "blkjournal: "


def error_line(message: object) -> str:
    """The one format of every error the CLI prints: `blkjournal: <message>`, on one line.

    Messages may quote untrusted text (a file name, a mark, a sidecar field); whatever line breaks
    it carries are escaped, so a reader (or a test) always sees exactly one line.
    """
    text = str(message)
    flat = "".join(ch if ch.isprintable() or ch == " " else ch.encode("unicode_escape").decode() for ch in text)
    return PREFIX + flat


def fail(e: BlkError):
    """Print `e` in the one format on stderr and return the typer.Exit carrying its exit code
    (for sub-apps that also run on their own, outside cli.main)."""
    import typer

    typer.echo(error_line(e), err=True)
    return typer.Exit(getattr(e, "exit_code", 2))
