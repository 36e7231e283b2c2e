"""The edge tensor product of the convolution, written for XLA's CPU (and GPU) code generators.

``e3nn.tensor_product`` evaluates every path as ``einsum("ui,vj,ijk->uvk", x, y, cg)``: XLA turns
it into an outer product materialised per edge, then a matrix product whose inner and outer
dimensions are 1-5 (e.g. [E*128, 3] @ [3, 3]). On a CPU that shape runs at a few % of the
machine's speed and was ~80 % of the potential's E+F+S time (benchmarks/README.md).

Here the same "uvu" tensor product (each channel u of the node features times the edge
spherical harmonics, times a per-edge, per-channel, per-path radial weight) is written as
element-wise arithmetic on [E, u] row blocks, which XLA fuses into large vectorised loops:

1. node features are split into rows: per irrep chunk and component i an [N, u] array
   (``node_rows``), gathered per edge by sender;
2. per edge, the Clebsch-Gordan coefficients are contracted with the spherical harmonics into
   [E] coupling columns ``c[e, (p, i, k)] = sum_j C_p[i, j, k] Y_j(e)`` (unrolled over the
   non-zero coefficients);
3. every message row ``m[e, (p, k), u] = w_p[e, u] sum_i c[e, (p, i, k)] x_i[e, u]`` is a sum of
   at most 2l+1 products; each row is summed over receivers separately (``segment_sum``) and the
   rows are assembled into e3nn's layout at the nodes (cheap: N << E);
4. the derivative rule is a ``jax.custom_jvp`` whose tangent is linear in the tangents
   (``_messages_jvp``: the messages are linear in each of x, Y and w, so the tangent is three
   row sums with the primal rows as coefficients). Forward mode (``jax.jvp``, ``jax.jacfwd``,
   ``jax.hessian``) uses it directly; reverse mode is JAX's transpose of it, which has the same
   row structure as a hand-written backward pass and ran as fast as the former hand-written
   ``custom_vjp`` (E+F+S and a training step of sevennet-0, 64-atom Si, CPU). Every
   derivative stays differentiable, to any order and in any mode combination (training
   differentiates forces; Hessians are forward over reverse). Zero tangents are symbolic and
   skipped (e.g. the harmonics when only parameters are differentiated). Arrays are split once
   with ``jnp.split``, whose transpose is one concatenation, never sliced repeatedly (the
   transpose of many slices is a sum of padded copies).

The result equals ``e3nn.tensor_product(x_j, Y, filter_ir_out, regroup_output=False)`` times
the radial weights, in the same (sorted) irreps order, to float rounding
(``tests/test_tensor_product.py``), and so are its first and second derivatives in forward,
reverse and mixed modes; parameters and trained models are unchanged.

Shapes: ``N`` nodes, ``E`` edges; ``u`` channels of a path; ``d`` = 2l + 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache, partial

import e3nn_jax as e3nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import SymbolicZero

Array = jax.Array


@dataclass(frozen=True)
class Path:
    """One "uvu" path: ``mul`` channels of x chunk ``x_chunk`` (irrep ``ir_in``) times sh chunk
    ``sh_chunk`` (``ir_sh``) -> ``ir_out``.

    ``weight_start``: first of its ``mul`` columns in the radial weights [E, P] (e3nn's sorted
    order); ``coupling_start``: first of its ``d_in * d_out`` columns in the coupling matrix;
    ``nonzero``: for every output component k, the input components i whose coupling is not
    identically zero.
    """

    x_chunk: int
    sh_chunk: int
    mul: int
    ir_in: e3nn.Irrep
    ir_sh: e3nn.Irrep
    ir_out: e3nn.Irrep
    weight_start: int
    coupling_start: int
    nonzero: tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class TensorProductPlan:
    """Static description of the convolution's tensor product (hashable, built once per irreps).

    ``paths`` in e3nn's loop order (x chunk, sh chunk, ir_out); ``sorted_order``: path indices
    in the order of the output irreps (e3nn sorts them, stably, by irrep); ``coupling``:
    [sh.dim, sum_p d_in d_out] numpy float64, the Clebsch-Gordan coefficients of every path
    (e3nn's irrep normalisation), column ``coupling_start + i d_out + k`` for path p;
    ``coupling_terms``: its non-zero entries as (j, column, value), the only ones the code uses.
    """

    irreps_x: e3nn.Irreps
    irreps_sh: e3nn.Irreps
    irreps_out: e3nn.Irreps
    paths: tuple[Path, ...]
    sorted_order: tuple[int, ...]
    coupling: np.ndarray
    coupling_terms: tuple[tuple[int, int, float], ...]

    def _key(self) -> tuple[str, str, str]:
        return (str(self.irreps_x), str(self.irreps_sh), str(self.irreps_out))

    def __hash__(self) -> int:
        return hash(self._key())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TensorProductPlan) and self._key() == other._key()


def _clebsch_gordan(ir_in: e3nn.Irrep, ir_sh: e3nn.Irrep, ir_out: e3nn.Irrep) -> np.ndarray:
    """[d_in, d_sh, d_out] coupling of e3nn.tensor_product (e3nn's irrep normalisation)."""
    cg = np.asarray(e3nn.clebsch_gordan(ir_in.l, ir_sh.l, ir_out.l), dtype=np.float64)
    normalization = e3nn.config("irrep_normalization")
    if normalization == "component":
        return cg * math.sqrt(ir_out.dim)
    if normalization == "norm":
        return cg * math.sqrt(ir_in.dim * ir_sh.dim)
    if normalization == "none":
        return cg
    raise ValueError(f"irrep_normalization={normalization!r} is not supported")


#: Clebsch-Gordan coefficients below this are structural zeros (float64 round-off of 0).
_ZERO = 1e-12


@lru_cache(maxsize=None)
def _plan(irreps_x: str, irreps_sh: str, filter_ir_out: tuple[str, ...]) -> TensorProductPlan:
    irreps_x_, irreps_sh_ = e3nn.Irreps(irreps_x), e3nn.Irreps(irreps_sh)
    filt = {e3nn.Irrep(ir) for ir in filter_ir_out}
    loop = []  # (x chunk, sh chunk, mul, ir_in, ir_sh, ir_out) in e3nn's loop order
    for a, (mul, ir_in) in enumerate(irreps_x_):
        for b, (_, ir_sh) in enumerate(irreps_sh_):
            loop += [(a, b, mul, ir_in, ir_sh, ir) for ir in ir_in * ir_sh if ir in filt]
    unsorted = e3nn.Irreps([(mul, ir_out) for _, _, mul, _, _, ir_out in loop])
    sorted_irreps, position, order = unsorted.sort()  # position[path] = its rank; order = inverse
    weight_starts = np.cumsum([0] + [mul for mul, _ in sorted_irreps])
    sh_slices = irreps_sh_.slices()

    paths, blocks, coupling_start = [], [], 0
    for index, (a, b, mul, ir_in, ir_sh, ir_out) in enumerate(loop):
        cg = _clebsch_gordan(ir_in, ir_sh, ir_out)  # [i, j, k]
        block = np.zeros((irreps_sh_.dim, ir_in.dim, ir_out.dim))
        block[sh_slices[b]] = cg.transpose(1, 0, 2)
        nonzero = tuple(
            tuple(i for i in range(ir_in.dim) if np.any(np.abs(cg[i, :, k]) > _ZERO))
            for k in range(ir_out.dim)
        )
        paths.append(
            Path(a, b, mul, ir_in, ir_sh, ir_out, int(weight_starts[position[index]]), coupling_start, nonzero)
        )
        blocks.append(block.reshape(irreps_sh_.dim, -1))
        coupling_start += ir_in.dim * ir_out.dim
    coupling = np.concatenate(blocks, axis=1) if blocks else np.zeros((irreps_sh_.dim, 0))
    terms = tuple((int(j), int(c), float(coupling[j, c])) for j, c in zip(*np.nonzero(np.abs(coupling) > _ZERO)))
    return TensorProductPlan(
        irreps_x_, irreps_sh_, sorted_irreps, tuple(paths), tuple(int(i) for i in order), coupling, terms
    )


def tensor_product_plan(
    irreps_x: e3nn.Irreps, irreps_sh: e3nn.Irreps, filter_ir_out: tuple[e3nn.Irrep, ...]
) -> TensorProductPlan:
    """The plan of the "uvu" tensor product x (irreps_x) times sh (irreps_sh), outputs filtered."""
    return _plan(str(e3nn.Irreps(irreps_x)), str(e3nn.Irreps(irreps_sh)), tuple(str(e3nn.Irrep(ir)) for ir in filter_ir_out))


def node_rows(x: Array, irreps: e3nn.Irreps) -> tuple[tuple[Array, ...], ...]:
    """[N, irreps.dim] (e3nn's mul_ir layout) -> per chunk, per component i: [N, mul]."""
    rows = []
    for (mul, ir), s in zip(irreps, irreps.slices()):
        chunk = x[:, s].reshape(x.shape[0], mul, ir.dim)
        rows.append(tuple(chunk[:, :, i] for i in range(ir.dim)))
    return tuple(rows)


def rows_to_irreps_array(plan: TensorProductPlan, rows: list[list[Array]], divisor: float = 1.0) -> e3nn.IrrepsArray:
    """Per path, per output component k: [N, mul] -> IrrepsArray [N, irreps_out.dim] (mul_ir,
    e3nn's sorted path order), divided by ``divisor``.

    The irreps are ``plan.irreps_out.regroup()`` (the sorted paths of one irrep merged: the same
    layout) and the array is built from its chunks (``e3nn.from_chunks``), one [N, mul, d] chunk
    per irrep. e3nn's layers read ``.chunks``: its ``Linear`` regroups and then slices its input
    per chunk, so an array with un-merged irreps was sliced into its 15 path chunks and
    reassembled; the transpose of that is a sum of 15 padded [N, dim] copies, which XLA fused
    into every one of the backward pass's receiver gathers (~30 % of E+F+S at 64 atoms, see
    benchmarks/README.md). With ready chunks no slice and no pad is left.
    """
    groups: list[tuple[e3nn.Irrep, list[Array]]] = []
    for p in plan.sorted_order:
        block = jnp.stack(rows[p], axis=-1)  # [N, mul, d_out]
        ir = plan.paths[p].ir_out
        if groups and groups[-1][0] == ir:
            groups[-1][1].append(block)
        else:
            groups.append((ir, [block]))
    chunks = [(jnp.concatenate(blocks, axis=1) if len(blocks) > 1 else blocks[0]) / divisor for _, blocks in groups]
    irreps = e3nn.Irreps([(chunk.shape[1], ir) for (ir, _), chunk in zip(groups, chunks)])
    assert irreps == plan.irreps_out.regroup(), (irreps, plan.irreps_out)
    n = rows[plan.sorted_order[0]][0].shape[0]
    return e3nn.from_chunks(irreps, chunks, (n,), chunks[0].dtype)


def weighted_edge_messages(
    plan: TensorProductPlan,
    x_edge: tuple[tuple[Array, ...], ...],
    edge_sh: Array,
    weights: Array,
) -> tuple[tuple[Array, ...], ...]:
    """Per path and output component k: ``m[e, u] = w[e, u] sum_i c[e, i, k] x_i[e, u]`` [E, mul].

    x_edge: per x chunk, per component i, the sender features [E, mul] (``node_rows`` gathered
    by senders); edge_sh: [E, sh.dim]; weights: [E, P] radial weights in e3nn's sorted path
    order. Equals ``e3nn.tensor_product(x_j, Y, filter_ir_out) * weights``, path by path.

    Every array inside is an [E] column or an [E, mul] row block, split once (``jnp.split``,
    whose transpose is one concatenation) so that no derivative becomes a sum of padded slices.
    Differentiable in forward and reverse mode to any order (``jax.grad`` of forces for
    training, ``jax.hessian`` for vibrations): the tangent rule (``_messages_jvp``) is written
    as element-wise [E, mul] row arithmetic, which XLA fuses well, and JAX transposes it for
    reverse mode.
    """
    sh_columns = tuple(c[:, 0] for c in jnp.split(edge_sh, edge_sh.shape[1], axis=1))
    starts = sorted({path.weight_start for path in plan.paths} | {weights.shape[1]})
    blocks = dict(zip(starts[:-1], jnp.split(weights, starts[1:-1], axis=1)))
    path_weights = tuple(blocks[path.weight_start] for path in plan.paths)
    return _messages(plan, x_edge, sh_columns, path_weights)


def _couplings(plan: TensorProductPlan, sh_columns: tuple[Array, ...]) -> dict[int, Array]:
    """Coupling column -> [E]: c[e, (p, i, k)] = sum_j C_p[i, j, k] Y_j(e), non-zero C only."""
    out = {}
    for j, column, value in plan.coupling_terms:
        out[column] = _add(out.get(column), value * sh_columns[j])
    return out


def _column(path: Path, i: int, k: int) -> int:
    return path.coupling_start + i * path.ir_out.dim + k


def _unweighted(path: Path, coupling: dict[int, Array], x: tuple[Array, ...], k: int) -> Array:
    """[E, u]: sum_i c[e, i, k] x_i[e, u] over the non-zero couplings of output component k."""
    terms = [coupling[_column(path, i, k)][:, None] * x[i] for i in path.nonzero[k]]
    return sum(terms) if terms else jnp.zeros_like(x[0])


def _forward(plan, x_edge, sh_columns, path_weights):
    coupling = _couplings(plan, sh_columns)
    return tuple(
        tuple(_unweighted(path, coupling, x_edge[path.x_chunk], k) * w for k in range(path.ir_out.dim))
        for path, w in zip(plan.paths, path_weights)
    )


@partial(jax.custom_jvp, nondiff_argnums=(0,))
def _messages(plan, x_edge, sh_columns, path_weights):
    return _forward(plan, x_edge, sh_columns, path_weights)


def _add(a: Array | None, b: Array) -> Array:
    return b if a is None else a + b


def _is_zero(tangent) -> bool:
    return isinstance(tangent, SymbolicZero)


def _messages_jvp(plan, primals, tangents):
    """Tangent rule of the messages, linear in the tangents (JAX transposes it for reverse mode).

    ``m_k = w * sum_i c_ik(Y) x_i`` is linear in each of x, Y (through the couplings c) and w, so

        dm_k = w * (sum_i c_ik(Y) dx_i + sum_i c_ik(dY) x_i) + dw * sum_i c_ik(Y) x_i

    with the primal couplings, features, weights and unweighted rows as coefficients. Its
    transpose has the row structure of a hand-written backward pass (``c * (g w)`` for dx,
    ``sum_u (g w) x`` for dc, ``sum_k g u_k`` for dw). Tangents that are symbolically zero (the
    first layer's features, or the spherical harmonics when only parameters are differentiated)
    contribute no terms.
    """
    x_edge, sh_columns, path_weights = primals
    dx_edge, d_sh, d_weights = tangents
    coupling = _couplings(plan, sh_columns)
    d_coupling = {}  # column -> [E], only from non-zero dY_j
    for j, column, value in plan.coupling_terms:
        if not _is_zero(d_sh[j]):
            d_coupling[column] = _add(d_coupling.get(column), value * d_sh[j])
    out, d_out = [], []
    for path, w, dw in zip(plan.paths, path_weights, d_weights):
        x, dx = x_edge[path.x_chunk], dx_edge[path.x_chunk]
        rows, d_rows = [], []
        for k in range(path.ir_out.dim):
            u = _unweighted(path, coupling, x, k)
            terms = [coupling[_column(path, i, k)][:, None] * dx[i] for i in path.nonzero[k] if not _is_zero(dx[i])]
            terms += [d_coupling[c][:, None] * x[i] for i in path.nonzero[k] if (c := _column(path, i, k)) in d_coupling]
            d = sum(terms[1:], terms[0]) * w if terms else None
            if not _is_zero(dw):
                d = _add(d, u * dw)
            rows.append(u * w)
            d_rows.append(jnp.zeros_like(u) if d is None else d)
        out.append(tuple(rows))
        d_out.append(tuple(d_rows))
    return tuple(out), tuple(d_out)


_messages.defjvp(_messages_jvp, symbolic_zeros=True)
