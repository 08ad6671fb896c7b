"""Typed configuration: kw-only dataclasses, dict/TOML/YAML/JSON round trips, dotted `--set` overrides.

Every config class is a `@config` dataclass (kw-only) whose fields carry a docstring on the line after them.
A *variant family* (RoPE kinds, tokenizers, optimizers, schedules, FFNs) is a base class declared with
`family=True`; each member sets `kind = "..."` and holds only its own knobs. In dicts a variant is written
with its `kind` key, and `from_dict` picks the member class from it.

Errors are `ConfigError(key, problem)`, whose message names the dotted key, so the CLI can print one line
and exit 2.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import json
import math
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from isoflop.errors import ConfigError
from isoflop.registry import Registry, did_you_mean

C = TypeVar("C", bound="Config")


def config(cls: type[C]) -> type[C]:
    """Class decorator for every config: a kw-only dataclass."""
    return dataclasses.dataclass(kw_only=True)(cls)


def require(condition: bool, key: str, problem: str) -> None:
    """Raise ConfigError(key, problem) unless `condition`: the one-line cross-field check."""
    if not condition:
        raise ConfigError(key, problem)


class Config:
    """Base of all configs. Subclasses are decorated with `@config`."""

    #: Keys that earlier versions wrote and this class no longer has: dropped on load, so every saved run config
    #: still reads (each entry says in a comment when and why it went).
    retired_keys: ClassVar[frozenset[str]] = frozenset()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if isinstance(self, Variant):
            out["kind"] = self.kind
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            out[f.name] = _to_plain(getattr(self, f.name))
        return out

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any]) -> C:
        """Build from a plain dict, strictly: unknown keys and wrong types raise ConfigError."""
        if not isinstance(data, dict):
            raise ConfigError("", f"expected a table of keys, got {type(data).__name__}")
        target: type = cls
        if issubclass(cls, Variant):
            target = cls.variant_class(data.get("kind", cls.default_kind))
        hints = get_type_hints(target)
        fields = {f.name: f for f in dataclasses.fields(target) if f.init}  # type: ignore[arg-type]
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if (key == "kind" and issubclass(target, Variant)) or (key in target.retired_keys and key not in fields):
                continue
            if key not in fields:
                raise ConfigError(key, f"unknown key{did_you_mean(key, list(fields), cutoff=0.5)}")
            try:
                kwargs[key] = _coerce(value, hints[key])
            except ConfigError as e:
                raise e.under(key) from None
        try:
            return target(**kwargs)
        except TypeError as e:  # a required field is missing
            raise ConfigError("", str(e)) from None

    def field_docs(self) -> dict[str, str]:
        return field_docs(type(self))


class Variant(Config):
    """A member of a variant family. Families are declared `class X(Variant, family=True)`; a member registers
    when its class is defined. A family whose members live in other modules names them,
    `class X(Variant, family=True, members=("pkg.mod", ...))`: they are imported at the first lookup, so no
    module needs to import its own members at its bottom (an import cycle) and none is forgotten."""

    kind: ClassVar[str] = ""
    default_kind: ClassVar[str] = ""
    _members: ClassVar[Registry[type]]
    _member_modules: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, family: bool = False, members: tuple[str, ...] = (), **kw: Any):
        super().__init_subclass__(**kw)
        if family:
            cls._members = Registry("kind", unknown="unknown kind", sort_choices=True)
            cls._member_modules = members
        elif cls.__dict__.get("kind"):
            cls._members.register(cls.kind, cls)

    @classmethod
    def _registry(cls) -> Registry[type]:
        for module in cls._member_modules:  # already imported ones are a dictionary lookup
            importlib.import_module(module)
        return cls._members

    @classmethod
    def variant_class(cls, kind: Any) -> type:
        if not isinstance(kind, str):
            raise ConfigError("kind", f"expected a kind name, got {kind!r}; choose from {', '.join(cls.kinds())}")
        return cls._registry().get(kind, key="kind")

    @classmethod
    def kinds(cls) -> list[str]:
        return sorted(cls._registry().names())


def field_docs(cls: type) -> dict[str, str]:
    """The attribute docstrings (a string literal right after a field) of a config class and its bases."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass in (object, Config, Variant):
            continue
        try:
            tree = ast.parse(inspect.getsource(klass).lstrip())
        except (OSError, TypeError, IndentationError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, nxt in zip(body, body[1:], strict=False):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                    and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                    and isinstance(nxt.value.value, str)):
                docs[node.target.id] = inspect.cleandoc(nxt.value.value)
    return docs


# ----------------------------------------------------------------------------- files and overrides

def load_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML, YAML or JSON config file as data (never executed)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(str(path), "no such config file")
    text = path.read_text()
    try:
        if path.suffix == ".toml":
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                import tomli as tomllib  # type: ignore[no-redef]
            return tomllib.loads(text)
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
            return data if data is not None else {}
        if path.suffix == ".json":
            return json.loads(text)
    except Exception as e:  # any parser's error becomes one line naming the file
        raise ConfigError(str(path), f"cannot parse: {str(e).splitlines()[0]}") from None
    raise ConfigError(str(path), "unknown config format; use .toml, .yaml, .yml or .json")


def parse_value(text: str) -> Any:
    """A `--set` value: JSON where it parses (numbers, true/false, null, lists), else the plain string."""
    lowered = text.strip().lower()
    if lowered in ("none", "null"):
        return None
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        try:
            return float(text)  # 1e6, inf
        except ValueError:
            return text


def apply_overrides(data: dict[str, Any], overrides: list[str], root: type[Config]) -> dict[str, Any]:
    """Apply `a.b.c=value` overrides to a config dict, checking each key against the config tree.

    Setting a variant's `kind` (`model.rope.kind=yarn`, or `model.rope=yarn`: the variant named by its kind
    alone) replaces that whole sub-table, since other kinds have other knobs. Kind switches are applied first,
    outer ones before inner ones (`model.ffn.kind=moe` before `model.ffn.router=...`), so the order of the
    overrides on the command line is free.
    """
    data = json.loads(json.dumps(data))  # deep copy of plain data
    pending: list[tuple[str, Any]] = []
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(item, "an override is written key.path=value")
        pending.append((key.strip(), parse_value(value)))
    while switches := [(i, path) for i, (key, _) in enumerate(pending)
                       if (path := _switched_variant(key, root, data)) is not None]:
        i, path = min(switches, key=lambda s: s[1].count("."))  # the outermost switch first
        parts = path.split(".")
        _descend(data, parts[:-1], path)[parts[-1]] = {"kind": pending.pop(i)[1]}
    for key, value in pending:
        valid = valid_keys(root, data)
        if key not in valid:
            raise ConfigError(key, f"unknown config key{did_you_mean(key, sorted(valid), cutoff=0.5)}")
        parts = key.split(".")
        _descend(data, parts[:-1], key)[parts[-1]] = value
    return data


def _switched_variant(key: str, root: type[Config], data: dict[str, Any]) -> str | None:
    """The variant table whose kind `key` sets (`path.kind`, or `path` itself), or None for any other key."""
    paths = _variant_paths(root, data)
    if key in paths:
        return key
    head, _, last = key.rpartition(".")
    return head if last == "kind" and head in paths else None


def valid_keys(root: type[Config], data: dict[str, Any] | None = None) -> set[str]:
    """All dotted leaf keys of the tree rooted at `root`, following the variant kinds chosen in `data`."""
    return {key for key, is_variant in _walk(root, data or {}, "") if not is_variant}


def _variant_paths(root: type[Config], data: dict[str, Any]) -> set[str]:
    """Dotted paths of the variant sub-tables (where a `kind` key switches the class)."""
    return {key for key, is_variant in _walk(root, data, "") if is_variant and key}


def _walk(root: type[Config], data: dict[str, Any], prefix: str) -> Iterator[tuple[str, bool]]:
    """(dotted key, is a variant table) for every leaf and every variant table below `root`."""
    cls: type = root
    if issubclass(root, Variant):
        yield prefix.rstrip("."), True
        yield prefix + "kind", False
        try:
            cls = root.variant_class(data.get("kind", root.default_kind))
        except ConfigError:
            return
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        sub = _config_type(hints[f.name])
        if sub is None:
            yield prefix + f.name, False
        else:
            child = data.get(f.name) if isinstance(data.get(f.name), dict) else {}
            yield from _walk(sub, child, f"{prefix}{f.name}.")


def _descend(data: dict[str, Any], parts: list[str], key: str) -> dict[str, Any]:
    node = data
    for p in parts:
        if not isinstance(node.get(p), dict):
            node[p] = {}
        node = node[p]
    return node


# ----------------------------------------------------------------------------- typing helpers

def _config_type(tp: Any) -> type[Config] | None:
    """The Config class a field holds, or None for a leaf (int, str, ...)."""
    args = [a for a in get_args(tp) if a is not type(None)] if _is_union(tp) else [tp]
    for a in args:
        if inspect.isclass(a) and issubclass(a, Config):
            return a
    return None


def _is_union(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType)


def _coerce(value: Any, tp: Any) -> Any:
    """Check `value` against the annotation `tp` and convert where lossless (1e6 -> 1000000 for an int)."""
    if _is_union(tp):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a)
            except ConfigError as e:
                errors.append(e.problem)
        raise ConfigError("", errors[0] if len(errors) == 1 else f"{value!r} fits none of {tp}")
    if inspect.isclass(tp) and issubclass(tp, Config):
        if isinstance(value, tp):
            return value
        if isinstance(value, str) and issubclass(tp, Variant):  # a variant written as its kind alone
            return tp.from_dict({"kind": value})
        return tp.from_dict(value)
    origin = get_origin(tp)
    if origin is Literal:
        if value not in get_args(tp):
            choices = ", ".join(repr(a) for a in get_args(tp))
            raise ConfigError("", f"{value!r} is not one of {choices}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError("", f"expected a list, got {value!r}")
        item_types = get_args(tp)
        if origin is tuple and not (len(item_types) == 2 and item_types[1] is Ellipsis):
            if len(value) != len(item_types):
                raise ConfigError("", f"expected {len(item_types)} values, got {len(value)}")
            return tuple(_coerce(v, t) for v, t in zip(value, item_types, strict=True))
        item = item_types[0] if item_types else Any
        out = [_coerce(v, item) for v in value]
        return tuple(out) if origin is tuple else out
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError("", f"expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            return int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError("", f"expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError("", f"expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError("", f"expected a string, got {value!r}")
        return value
    raise TypeError(f"config field type {tp} is not supported")  # a programming error, not bad input


def _to_plain(value: Any) -> Any:
    if isinstance(value, Config):
        return value.to_dict()
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    return value


__all__ = [
    "Config", "ConfigError", "Variant", "apply_overrides", "config", "field_docs", "load_file", "parse_value",
    "require", "valid_keys",
]
