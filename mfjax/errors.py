"""Error types that the CLI reports as one clear line (file, frame, field)."""

from __future__ import annotations


class MfjaxError(Exception):
    """Base of errors that are the user's input, not a bug."""


class DataError(MfjaxError, ValueError):
    """Bad input data. The message names the file, the frame index and the field."""

    def __init__(self, message: str, *, source: str | None = None, frame: int | None = None, field: str | None = None):
        where = []
        if source is not None:
            where.append(str(source))
        if frame is not None:
            where.append(f"frame {frame}")
        if field is not None:
            where.append(f"field {field!r}")
        self.source, self.frame, self.field = source, frame, field
        super().__init__((", ".join(where) + ": " if where else "") + message)


class FidelityError(MfjaxError, KeyError):
    """An unknown or missing fidelity name; the message lists the available ones."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class ConfigError(MfjaxError, ValueError):
    """A config value or key is wrong; the message names the key path."""
