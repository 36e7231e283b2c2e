"""jax-md energy functions for a trained model at one fidelity, in free and periodic (triclinic) space.

``energy_fn_for`` returns a :class:`JaxMDPotential`: ``energy_fn(R, *, neighbor, box=None,
perturbation=None, variables=None) -> []`` (eV), the neighbour-list functions (``allocate``,
``update``), and the jax-md ``displacement_fn`` / ``shift_fn`` of the space.

Conventions
-----------
* jax-md boxes hold lattice vectors as **columns** (``box = cell.T`` of an ASE cell).
* With ``fractional=True`` positions ``R`` are fractional (needed by ``simulate.npt_nose_hoover``);
  gradients w.r.t. ``R`` are still real-space (``space.transform``'s custom JVP), as jax-md expects.
* ``perturbation`` (scalar or [3, 3], e.g. ``I + eps`` from ``jax_md.quantity.stress``) multiplies
  every edge vector: ``r -> perturbation @ r``. ``quantity.stress`` therefore returns
  ``-(ASE stress)`` plus the kinetic term; :func:`ase_stress` returns the ASE-sign virial stress.
* Neighbour lists are jax-md Sparse/OrderedSparse (``idx = (receivers, senders)``, invalid = N).
  Periodic cells thinner than 2 x (cutoff + skin) use ``custom_partition.neighbor_list_multi_image``
  (explicit image shifts); otherwise ``partition.neighbor_list`` (minimum image).
* Inside ``energy_fn`` the list becomes an mfjax graph through the one single-structure builder
  (``mfjax.data.single.single_graph``): N + 1 nodes (one padding node) and two graphs (the system,
  then padding). Valid edges come first; invalid ones (padding entries, and pairs beyond the cutoff
  when a skin is used) become self-loops on the padding node with zero vectors.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax_md import custom_partition, partition, space

from mfjax.data.single import single_graph, valid_first

Array = jax.Array


class JaxMDPotential(NamedTuple):
    """What :func:`energy_fn_for` returns.

    energy_fn: ``(R [N,3], *, neighbor, box=None, perturbation=None, variables=None) -> []`` eV.
    neighbor_fn: jax-md neighbour-list functions (``allocate(R, **kw)``, ``update(R, nbr, **kw)``).
    displacement_fn, shift_fn: the jax-md space (pass ``shift_fn`` to ``jax_md.simulate``).
    box: [3, 3] (columns = lattice vectors) or None for free space.
    fractional: whether ``R`` is fractional. multi_image: which neighbour list is used.
    species: [N] atomic numbers. cutoff: Å.
    edges_fn: ``(R, neighbor, box=None, perturbation=None) -> (receivers, senders, vectors [E,3],
        valid [E], Cartesian R [N,3], box)`` — the edges the energy sees (for distances, RDFs).
    """

    energy_fn: Callable[..., Array]
    neighbor_fn: Any
    displacement_fn: Callable
    shift_fn: Callable
    box: Array | None
    fractional: bool
    multi_image: bool
    species: Array
    cutoff: float
    edges_fn: Callable


def box_from_cell(cell: np.ndarray) -> np.ndarray:
    """jax-md box [3, 3] (columns = lattice vectors) from an ASE cell (rows = lattice vectors)."""
    return np.asarray(cell, dtype=np.float64).reshape(3, 3).T


def min_height(box: np.ndarray) -> float:
    """Smallest perpendicular width (Å) of the cell spanned by the columns of ``box``."""
    cell = np.asarray(box, dtype=np.float64).T
    volume = abs(np.linalg.det(cell))
    areas = [np.linalg.norm(np.cross(cell[(k + 1) % 3], cell[(k + 2) % 3])) for k in range(3)]
    return float(volume / max(areas))


def _symmetrize(receivers, senders, shifts):
    """OrderedSparse (i < j only) -> both directions; image shifts flip sign."""
    r = jnp.concatenate([receivers, senders])
    s = jnp.concatenate([senders, receivers])
    return r, s, None if shifts is None else jnp.concatenate([shifts, -shifts])


def energy_fn_for(
    model: Any,
    fidelity: str | None,
    species: np.ndarray,
    box: np.ndarray | None = None,
    *,
    fractional: bool = False,
    capacity_multiplier: float = 1.1,
    dr_threshold: float = 0.0,
    multi_image: bool | None = None,
    ordered: bool = False,
    disable_cell_list: bool = True,
) -> JaxMDPotential:
    """jax-md energy function and neighbour list for ``model`` at ``fidelity``.

    species: [N] atomic numbers. box: [3, 3] jax-md box (columns = lattice vectors; see
    :func:`box_from_cell`) for a fully periodic cell, None for free space. dr_threshold: neighbour
    skin (Å); pairs beyond the cutoff are masked. multi_image: None = automatic (multi-image list when
    the cell is thinner than 2 x (cutoff + skin)). ordered: OrderedSparse list (half the pairs).
    capacity_multiplier: spare neighbour-list slots (jax-md's own default is 1.25). Every slot costs
    a full edge of the model, so the default is 1.1; an overflow is caught by
    ``mfjax.md.runner.EpisodeRunner`` (reallocate, rerun the episode) — check
    ``neighbor.did_buffer_overflow`` in hand-written loops.
    disable_cell_list: passed to ``partition.neighbor_list`` (the cell list needs a large box, and
    ``nvt_langevin`` with fractional coordinates fails with it on).
    """
    fidelity_id = int(model.fidelity_index(fidelity))  # FidelityError lists the names
    cutoff = float(model.cutoff)
    species = jnp.asarray(np.asarray(species), jnp.int32)
    n = int(species.shape[0])
    fmt = partition.OrderedSparse if ordered else partition.Sparse
    apply_fn, default_variables = model.apply_fn, model.variables
    periodic = box is not None
    if periodic:
        box = jnp.asarray(np.asarray(box))
        if multi_image is None:
            multi_image = min_height(np.asarray(box)) < 2.0 * (cutoff + dr_threshold)
        displacement_fn, shift_fn = space.periodic_general(box, fractional_coordinates=fractional)
        if multi_image:
            neighbor_fn = custom_partition.neighbor_list_multi_image(
                None, box, cutoff, dr_threshold=dr_threshold, capacity_multiplier=capacity_multiplier,
                fractional_coordinates=fractional, format=fmt,
            )
        else:
            neighbor_fn = partition.neighbor_list(
                displacement_fn, box, cutoff, dr_threshold=dr_threshold,
                capacity_multiplier=capacity_multiplier, disable_cell_list=disable_cell_list,
                fractional_coordinates=fractional, format=fmt,
            )
    else:
        if fractional:
            raise ValueError("fractional coordinates need a periodic box")
        multi_image = False
        displacement_fn, shift_fn = space.free()
        neighbor_fn = partition.neighbor_list(
            displacement_fn, 1.0, cutoff, dr_threshold=dr_threshold,
            capacity_multiplier=capacity_multiplier, disable_cell_list=True, format=fmt,
        )

    def edges_fn(R: Array, neighbor, box: Array | None = None, perturbation=None):
        """(receivers [E], senders [E], vectors [E, 3], valid [E], Cartesian positions [N, 3], box)."""
        b = (neighbor.box if multi_image else default_box) if box is None else box
        receivers, senders = neighbor.idx[0], neighbor.idx[1]
        shifts = neighbor.shifts if multi_image else None
        if ordered:
            receivers, senders, shifts = _symmetrize(receivers, senders, shifts)
        r_safe, s_safe = jnp.clip(receivers, 0, n - 1), jnp.clip(senders, 0, n - 1)
        real = space.transform(b, R) if (periodic and fractional) else R  # [N, 3]
        if multi_image:
            vectors = real[s_safe] - real[r_safe] + space.transform(b, shifts.astype(R.dtype))
        elif periodic:
            disp = jax.vmap(lambda a, c: displacement_fn(a, c, box=b))
            vectors = disp(R[s_safe], R[r_safe])
        else:
            vectors = R[s_safe] - R[r_safe]
        if perturbation is not None:
            vectors = space.raw_transform(perturbation, vectors)
        r2 = jnp.sum(vectors**2, axis=-1)
        valid = (receivers < n) & (senders < n) & (r2 > 0) & (r2 < cutoff**2)
        return receivers, senders, vectors, valid, real, b

    def energy_fn(R: Array, *, neighbor, box: Array | None = None, perturbation=None,
                  variables=None, **unused) -> Array:
        """Total energy (eV) of positions ``R`` [N, 3] with jax-md neighbour list ``neighbor``."""
        variables = default_variables if variables is None else variables
        receivers, senders, vectors, valid, real, b = edges_fn(R, neighbor, box, perturbation)
        valid, receivers, senders, vectors = valid_first(valid, receivers, senders, vectors)
        graph = single_graph(real, species, senders, receivers, cell=jnp.transpose(b) if periodic else None,
                             pbc=jnp.full(3, periodic), fidelity=fidelity_id, valid=valid)
        vectors = jnp.where(valid[:, None], vectors, 0.0)
        atomic = apply_fn(variables, graph, vectors)  # [N + 1]
        return jnp.sum(atomic[:n])

    default_box = box
    return JaxMDPotential(energy_fn, neighbor_fn, displacement_fn, shift_fn, box, fractional,
                          bool(multi_image), species, cutoff, edges_fn)


def ase_stress(potential: JaxMDPotential, R: Array, neighbor, box: Array | None = None, **kwargs) -> Array:
    """[3, 3] virial stress in the ASE convention, (1/V) dE/dε (eV/Å³, positive = tensile)."""
    b = potential.box if box is None else box
    eye = jnp.eye(3, dtype=R.dtype)

    def energy(eps):
        return potential.energy_fn(R, neighbor=neighbor, box=b, perturbation=eye + eps, **kwargs)

    return jax.grad(energy)(jnp.zeros((3, 3), R.dtype)) / jnp.abs(jnp.linalg.det(b))
