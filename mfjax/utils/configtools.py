"""Typed config dataclasses from nested dicts: strict keys with suggestions, docs, templates.

Each config field is declared with ``option(default, "doc")`` so the docstring of a field lives
next to it and ``template()`` can print a complete commented YAML file.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from mfjax.errors import ConfigError  # (re-exported)


def option(default: Any = dataclasses.MISSING, doc: str = "", *, factory: Any = None) -> Any:
    """A dataclass field with a docstring (used for templates and error messages)."""
    meta = {"doc": doc}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} matches none of {tp}")
    if origin is typing.Literal:
        if value not in args:
            hint = difflib.get_close_matches(str(value), [str(a) for a in args], n=1)
            extra = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}{extra}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (list, tuple, typing.Sequence) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        item = args[0] if args else Any
        out = [_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if (origin is tuple or tp is tuple) else out
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        vt = args[1] if len(args) == 2 else Any
        return {str(k): _convert(vt, v, f"{where}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def from_dict(cls: type, data: dict, where: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``; unknown keys are errors with a suggestion."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping of keys for {cls.__name__}, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in fields:
            hint = difflib.get_close_matches(str(key), list(fields), n=1)
            extra = f"; did you mean {hint[0]!r}?" if hint else f"; known keys: {sorted(fields)}"
            raise ConfigError(f"unknown config key {path!r}{extra}")
        kwargs[key] = _convert(hints[key], value, path)
    missing = [
        n for n, f in fields.items()
        if n not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"missing required config key(s) {[f'{where}.{m}' if where else m for m in missing]}")
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate(where)
    return obj


def to_dict(obj: Any) -> Any:
    """Plain nested dicts/lists (YAML/JSON friendly) from config dataclasses."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def _yaml_problem(exc: yaml.YAMLError) -> tuple[str, int | None, int | None]:
    """(problem text, 1-based line, 1-based column) of a YAML parse error, on one line."""
    if not isinstance(exc, yaml.MarkedYAMLError) or exc.problem_mark is None:
        return " ".join(str(exc).split()), None, None
    mark = exc.problem_mark
    problem = " ".join(str(exc.problem or "syntax error").split())
    if exc.context:
        problem += f" ({' '.join(exc.context.split())}"
        if exc.context_mark is not None and exc.context_mark.line != mark.line:
            problem += f" started on line {exc.context_mark.line + 1}"
        problem += ")"
    return problem, mark.line + 1, mark.column + 1


def parse_yaml(text: str, source: str) -> Any:
    """``yaml.safe_load(text)``; a syntax error is one ``ConfigError`` line naming ``source``,
    line and column (``source:LINE:COL: problem: 'offending line'``)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        problem, line, col = _yaml_problem(exc)
        if line is None:
            raise ConfigError(f"{source}: invalid YAML: {problem}") from None
        lines = text.splitlines()
        shown = lines[line - 1] if line <= len(lines) else "<end of file>"
        if "\t" in shown:
            problem += "; YAML indentation must use spaces, not tabs"
        elif "<block end>" in problem:
            problem += "; check the indentation of this line and the lines above it"
        raise ConfigError(f"{source}:{line}:{col}: {problem}: {shown!r}") from None


def read_yaml(path: str | os.PathLike) -> dict:
    """The mapping in a YAML config file (empty file: ``{}``).

    Every way this can fail (missing file, a directory, unreadable, not UTF-8 text, a YAML syntax
    error, a top level that is not a mapping) is one ``ConfigError`` line naming the file (and for
    syntax errors ``PATH:LINE:COL``, the problem and the offending line).
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    if path.is_dir():
        raise ConfigError(f"config file {str(path)!r} is a directory, not a YAML file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a UTF-8 text file (byte {exc.start}): is this the YAML config?") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror or exc})") from None
    data = parse_yaml(text, str(path))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys (data:, model:, ...), "
                          f"got a {type(data).__name__}")
    return data


def _container(node: Any, part: str, item: str) -> int | str:
    """The key of ``part`` in ``node`` (an int index of a list, else the name in a mapping)."""
    if isinstance(node, list):
        try:
            index = int(part)
            node[index]
        except (ValueError, IndexError):
            raise ConfigError(f"--set {item!r}: {part!r} is not an index of a list of {len(node)}") from None
        return index
    if not isinstance(node, dict):
        raise ConfigError(f"--set {item!r}: cannot set {part!r} inside the value {node!r}, which is not a mapping")
    return part


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``key.sub=value`` overrides (value parsed as YAML) to a nested dict, in place.

    A malformed override (no ``=``, an empty key, a value that is not valid YAML, a path through a
    scalar) is one ``ConfigError`` line quoting the override.
    """
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(p.strip() for p in parts):
            raise ConfigError(f"--set {item!r}: the key {key!r} is empty or has an empty part")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            problem, _, col = _yaml_problem(exc)
            at = f" at column {col}" if col is not None else ""
            raise ConfigError(f"--set {item!r}: the value {raw!r} is not valid YAML: {problem}{at}") from None
        node: Any = data
        for part in parts[:-1]:
            where = _container(node, part, item)
            if isinstance(where, str) and node.get(where) is None:  # absent or an empty section
                node[where] = {}
            node = node[where]
        node[_container(node, parts[-1], item)] = value
    return data


def template(cls: type, indent: int = 0) -> str:
    """A complete commented YAML template of ``cls`` with defaults."""
    pad = "  " * indent
    lines = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        doc = f.metadata.get("doc", "")
        if doc:
            for line in doc.splitlines():
                lines.append(f"{pad}# {line}")
        tp = hints[f.name]
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = None
        if dataclasses.is_dataclass(tp) or dataclasses.is_dataclass(default):
            sub = tp if dataclasses.is_dataclass(tp) else type(default)
            lines.append(f"{pad}{f.name}:")
            lines.append(template(sub, indent + 1))
            continue
        args = [a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)]
        if args and isinstance(default, (list, tuple)) and not default:
            lines.append(f"{pad}{f.name}:")
            item = template(args[0], indent + 2).splitlines()
            first = next(i for i, l in enumerate(item) if not l.strip().startswith("#"))
            item[first] = "  " * (indent + 1) + "- " + item[first].strip()
            lines.extend(item)
            continue
        text = yaml.safe_dump(to_dict(default), default_flow_style=True, width=1000).strip()
        if text.endswith("..."):
            text = text[:-3].strip()
        lines.append(f"{pad}{f.name}: {text}")
    return "\n".join(lines)


def add_config_flags(parser, cls: type, skip: tuple[str, ...] = (), converters: dict | None = None) -> None:
    """One ``--key-name`` flag per field of config dataclass ``cls``, default None (= not given), so
    that a CLI can layer ``--config FILE`` < flags < ``--set``. Booleans are ``store_true``,
    ``Literal`` fields get ``choices``, numbers (optional or not) their type; other fields are
    strings unless ``converters`` maps the field name to a parser."""
    hints = typing.get_type_hints(cls)
    converters = converters or {}
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        tp = hints[f.name]
        base = next((a for a in typing.get_args(tp) if a is not type(None)), tp) if typing.get_origin(tp) in (
            typing.Union, types.UnionType) and len(typing.get_args(tp)) == 2 else tp
        if base is bool:
            kwargs: dict[str, Any] = {"action": "store_true"}
        elif typing.get_origin(base) is typing.Literal:
            kwargs = {"choices": list(typing.get_args(base))}
        elif base in (int, float):
            kwargs = {"type": base, "metavar": base.__name__.upper()}
        else:
            kwargs = {"type": converters.get(f.name, str)}
        default = "" if f.default in (dataclasses.MISSING, None) else f" (default {f.default})"
        parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, default=None,
                            help=f.metadata.get("doc", "") + default, **kwargs)


def given_flags(args, cls: type) -> dict:
    """{field: value} of the ``add_config_flags`` flags that were given on the command line."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if getattr(args, f.name, None) is not None}


def check_choices(obj: Any, where: str = "") -> None:
    """ConfigError for a ``Literal`` field of config dataclass ``obj`` whose value is not one of its
    choices (``from_dict`` checks YAML input; this also covers configs built directly in Python)."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        choices, value = typing.get_args(hints[f.name]), getattr(obj, f.name)
        if typing.get_origin(hints[f.name]) is typing.Literal and value not in choices:
            name = f"{where}.{f.name}" if where else f.name
            raise ConfigError(f"{name}: {value!r} is not one of {list(choices)}")


def load_layered(cls: type, path=None, overrides: typing.Sequence[str] = (), values: dict | None = None) -> Any:
    """Config ``cls`` from a YAML file (or the defaults), then ``values`` (e.g. the CLI flags that
    were given), then ``key=value`` ``overrides``; validated, unknown keys are errors with a
    suggestion, YAML mistakes one line (``read_yaml``)."""
    raw: dict = read_yaml(path) if path is not None else {}
    raw.update(values or {})
    apply_overrides(raw, list(overrides))
    return from_dict(cls, raw)
