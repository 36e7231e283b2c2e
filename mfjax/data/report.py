"""Frame accounting: every frame read is either used or excluded with a reason; totals add up.

``DatasetReport`` is filled while one file is read (``io.read_structures(..., report=...)``) and
split (``dataset.load_data``); ``DataReport`` collects the datasets of a run, checks the totals and
formats them as a plain-text table (``mfjax check-data``, the start of ``train``).
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DataWarning", "FidelityCounts", "DatasetReport", "DataReport", "where", "warn_frames"]


class DataWarning(UserWarning):
    """Suspicious but usable input (masked label, isolated atom, odd units, duplicates)."""


def where(source: str | None, frames: list[int] | int | None = None, field: str | None = None) -> str:
    """'file, frame k, field 'x'' (or 'frames 1, 4, 9 (+n more)') as in ``DataError`` messages."""
    parts = [str(source)] if source is not None else []
    if isinstance(frames, int):
        parts.append(f"frame {frames}")
    elif frames:
        shown = ", ".join(str(f) for f in frames[:8])
        more = f" (+{len(frames) - 8} more)" if len(frames) > 8 else ""
        parts.append(f"frame {shown}{more}" if len(frames) == 1 else f"frames {shown}{more}")
    if field is not None:
        parts.append(f"field {field!r}")
    return ", ".join(parts)


def warn_frames(message: str, source: str | None, frames: list[int] | int | None = None, field: str | None = None) -> str:
    """Emit a ``DataWarning`` naming file/frames/field; returns the full text (for reports)."""
    place = where(source, frames, field)
    text = f"{place}: {message}" if place else message
    warnings.warn(text, DataWarning, stacklevel=3)
    return text


@dataclass
class FidelityCounts:
    """Frames of one fidelity and how many carry each label."""

    frames: int = 0
    energy: int = 0
    forces: int = 0
    stress: int = 0

    def add(self, has_energy: bool, has_forces: bool, has_stress: bool) -> None:
        self.frames += 1
        self.energy += int(has_energy)
        self.forces += int(has_forces)
        self.stress += int(has_stress)


@dataclass
class DatasetReport:
    """Accounting of one data file: frames_read == used + sum(excluded.values())."""

    source: str
    frames_read: int = 0
    used: int = 0
    excluded: Counter = field(default_factory=Counter)  # reason -> count
    excluded_frames: list[tuple[int, str]] = field(default_factory=list)  # (frame, reason)
    per_fidelity: dict[str, FidelityCounts] = field(default_factory=dict)
    split: dict[str, int] = field(default_factory=lambda: {"train": 0, "valid": 0, "test": 0})
    warnings: list[str] = field(default_factory=list)

    def record_used(self, fidelity: str, has_energy: bool, has_forces: bool, has_stress: bool) -> None:
        self.frames_read += 1
        self.used += 1
        self.per_fidelity.setdefault(fidelity, FidelityCounts()).add(has_energy, has_forces, has_stress)

    def record_excluded(self, frame: int, reason: str, detail: str | None = None) -> None:
        """Count ``frame`` as excluded under ``reason`` (short, aggregated); ``detail`` is kept per frame."""
        self.frames_read += 1
        self.excluded[reason] += 1
        self.excluded_frames.append((frame, detail or reason))

    def totals_ok(self) -> bool:
        return (
            self.frames_read == self.used + sum(self.excluded.values())
            and self.used == sum(c.frames for c in self.per_fidelity.values())
            and (sum(self.split.values()) in (0, self.used))
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "frames_read": self.frames_read,
            "used": self.used,
            "excluded": dict(self.excluded),
            "excluded_frames": [list(x) for x in self.excluded_frames],
            "per_fidelity": {k: vars(v).copy() for k, v in self.per_fidelity.items()},
            "split": dict(self.split),
            "warnings": list(self.warnings),
        }


@dataclass
class DataReport:
    """Accounting of all datasets of a run, plus cross-dataset warnings (duplicates...)."""

    datasets: list[DatasetReport] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: {fidelity: {"train": n, "valid": n, "test": n}} after the split
    split_counts: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def frames_read(self) -> int:
        return sum(d.frames_read for d in self.datasets)

    @property
    def used(self) -> int:
        return sum(d.used for d in self.datasets)

    @property
    def excluded(self) -> Counter:
        total: Counter = Counter()
        for d in self.datasets:
            total.update(d.excluded)
        return total

    def per_fidelity(self) -> dict[str, FidelityCounts]:
        out: dict[str, FidelityCounts] = {}
        for d in self.datasets:
            for name, c in d.per_fidelity.items():
                t = out.setdefault(name, FidelityCounts())
                t.frames += c.frames
                t.energy += c.energy
                t.forces += c.forces
                t.stress += c.stress
        return out

    def totals_ok(self) -> bool:
        return all(d.totals_ok() for d in self.datasets) and self.frames_read == self.used + sum(
            self.excluded.values()
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "frames_read": self.frames_read,
            "used": self.used,
            "excluded": dict(self.excluded),
            "per_fidelity": {k: vars(v).copy() for k, v in self.per_fidelity().items()},
            "split_counts": {k: dict(v) for k, v in self.split_counts.items()},
            "datasets": [d.to_dict() for d in self.datasets],
            "warnings": list(self.warnings),
        }

    def format(self) -> str:
        """A plain-text table: one row per dataset, then per fidelity, then totals."""
        rows = [("dataset", "read", "used", "excluded", "train", "valid", "test")]
        for d in self.datasets:
            reasons = "; ".join(f"{n} {r}" for r, n in d.excluded.items()) or "0"
            rows.append((d.source, d.frames_read, d.used, reasons, d.split["train"], d.split["valid"], d.split["test"]))
        rows.append(("total", self.frames_read, self.used, sum(self.excluded.values()), "", "", ""))
        lines = _table(rows)
        lines.append("")
        frows = [("fidelity", "frames", "energy", "forces", "stress", "train", "valid", "test")]
        for name, c in self.per_fidelity().items():
            split = self.split_counts.get(name, {})
            frows.append((name, c.frames, _pct(c.energy, c.frames), _pct(c.forces, c.frames), _pct(c.stress, c.frames),
                          split.get("train", ""), split.get("valid", ""), split.get("test", "")))
        lines.extend(_table(frows))
        return "\n".join(lines)


def _pct(n: int, total: int) -> str:
    return f"{n} ({100.0 * n / total:.0f}%)" if total else "0"


def _table(rows: list[tuple]) -> list[str]:
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
    out = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    out.insert(1, "  ".join("-" * w for w in widths))
    return out
