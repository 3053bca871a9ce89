"""Recovery takes each file's newest valid origin as the file, whatever later writes say was durable.

Formats 5 and 6: origins and object map blocks name the generations that were durable when they
were written (`seen`).  Without holding files to those claims, a lost or misdirected-over newest
origin leaves a valid older origin that is silently taken as the file.
"""

from . import Mutant

MUTANT = Mutant(
    "ordered-ignores-seen", __doc__.splitlines()[0],
    "blkjournal.protocols:OrderedProtocol.lost_origins",
    (("""
if weak_detection():
""", """
if True:
"""),),
    protocols=("ordered",), kind="faults")
