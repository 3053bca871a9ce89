"""`python -m blkjournal.hwcheck ...`: the same commands without the main CLI (VM guests, scripts)."""

from .cli import hwcheck_app

hwcheck_app(prog_name="blkjournal hwcheck")
