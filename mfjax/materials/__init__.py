"""Materials evaluations of a model at one fidelity: relaxation (``relax``) and phase stability
(``hull``: energies above the convex hull, formation energies, stability classification)."""
