"""Labelling structures with pyscf at named levels of theory (``mfjax label``).

- ``levels``: parse ``method/basis``, compute energy/forces/stress of one structure.
- ``runner``: resumable, parallel labelling of a structure file into extended XYZ.
- ``sampling``: geometry sampling (xTB Langevin MD snapshots, strained/rattled cells).
- ``cli``: the ``mfjax label`` subcommand.
"""

from mfjax.label.levels import Level, LevelError, Result, Settings, check_level, compute, parse_level
from mfjax.label.runner import Summary, label_file, label_frames, read_output

__all__ = ["Level", "LevelError", "Result", "Settings", "Summary", "check_level", "compute", "label_file",
           "label_frames", "parse_level", "read_output"]
