"""Molecular dynamics with trained mfjax models: ASE calculator, jax-md energy functions and
integrators, an episode runner with neighbour-list overflow recovery, stability and transport
analysis, and the ``mfjax md`` command."""
