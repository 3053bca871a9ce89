"""blkjournal: a crash-consistent file store on a raw block device, and the harness that proves it."""

__version__ = "0.1.0"
