"""Fidelity names: the one place that resolves a name to its index and checks a set of names.

A fidelity is a level of theory named by the user ("pbe", "r2scan", "ccsdt"); a model holds an
ordered tuple of names and a graph carries the index of each structure's fidelity. Names are
matched exactly. Two names that differ only by case or surrounding whitespace ("low" and "LOW ")
are an error wherever they meet, because they are almost always a typo of one another.
"""

from __future__ import annotations

from typing import Iterable, Sequence

from mfjax.errors import FidelityError

__all__ = ["normalized", "check_distinct", "resolve", "index_map"]


def normalized(name: str) -> str:
    """The case- and whitespace-folded form under which two names collide."""
    return str(name).strip().casefold()


def check_distinct(names: Iterable[str], where: str = "the data") -> tuple[str, ...]:
    """``names`` (in order, duplicates removed); FidelityError if two differ only by case/whitespace."""
    seen: dict[str, str] = {}
    out: list[str] = []
    for name in names:
        name = str(name)
        if name in out:
            continue
        key = normalized(name)
        if key in seen:
            raise FidelityError(
                f"fidelity names {seen[key]!r} and {name!r} in {where} differ only by case or whitespace; "
                f"fidelity names are matched exactly: use one spelling"
            )
        seen[key] = name
        out.append(name)
    return tuple(out)


def resolve(fidelities: Sequence[str], name: str | None) -> int:
    """Index of ``name`` in ``fidelities``.

    None is accepted only when there is exactly one fidelity. An unknown name is a FidelityError
    listing the available ones (and naming the one it differs from only by case, if any).
    """
    fidelities = tuple(fidelities)
    if name is None:
        if len(fidelities) == 1:
            return 0
        raise FidelityError(
            f"this model has {len(fidelities)} fidelities; choose one with fidelity=NAME (available: {', '.join(fidelities)})"
        )
    if name in fidelities:
        return fidelities.index(name)
    near = [f for f in fidelities if normalized(f) == normalized(name)]
    if near:
        raise FidelityError(
            f"unknown fidelity {name!r}: did you mean {near[0]!r}? Names are matched exactly "
            f"(available: {', '.join(fidelities)})"
        )
    raise FidelityError(f"unknown fidelity {name!r} (available: {', '.join(fidelities)})")


def index_map(fidelities: Sequence[str]) -> dict[str, int]:
    """{name: index} of an ordered tuple of fidelity names."""
    return {name: k for k, name in enumerate(check_distinct(fidelities, "the model"))}
