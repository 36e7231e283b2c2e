"""Active learning across fidelities: which pool structures to label at the high fidelity.

``select`` (``mfjax select``) scores or embeds a pool with a (multi-fidelity, usually ensemble) model
and picks N structures by HF ensemble disagreement, the predicted HF-LF difference and its
uncertainty, feature-space diversity (farthest-point, k-means++), uncertainty-weighted diversity or
at random (the baseline). ``loop`` runs select -> label -> retrain rounds, resumably.
"""

from mfjax.active.rules import RULES
from mfjax.active.select import Selection, select, write_selection

__all__ = ["RULES", "Selection", "select", "write_selection"]
