"""Dotted keys over a dataclass config or a plain nested dict, and the range each field declares.

    get_key(config, "model.tau")            # 0.2; also get_key(config.to_dict(), "model.tau")
    set_key(config, "model.tau", "0.5")     # type-checked (strings parsed, as from --set)
    flatten(config)                         # {"profile": "demo", ..., "model.tau": 0.5, ...}
    field_range(config, "model.tau")        # the Range declared next to the field

This is the one walker of dotted keys in the package: `protoef.config` builds its overrides,
its JSON round trip and its validation on it, and the run directory compares stored and
requested configs with `flatten`. A field declares its range where it is declared,
``tau: float = knob(0.2, above(0.0, "..."))``; a field without one fails validation
(`field_range`), so a new knob cannot slip through unchecked.
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import types
import typing
from dataclasses import dataclass

__all__ = ["Range", "knob", "at_least", "above", "within", "one_of", "optional", "FLAG",
           "get_key", "set_key", "flatten", "field_range"]


# ----------------------------------------------------------------------------- ranges
@dataclass(frozen=True)
class Range:
    """The values a field accepts: a check, and the words an error shows after "expected"."""
    check: typing.Callable[[typing.Any], bool]
    expected: str

    def accepts(self, value) -> bool:
        if isinstance(value, float) and not math.isfinite(value):
            return False  # no field means NaN or inf
        try:
            return bool(self.check(value))
        except (TypeError, AttributeError):  # a value of another type, assigned directly instead of via set_key
            return False


def knob(default, valid: Range):
    """A dataclass field with its default and its range (read by `field_range`)."""
    return dataclasses.field(default=default, metadata={"range": valid})


def _explained(text: str, why: str) -> str:
    return f"{text} ({why})" if why else text


def at_least(low, why: str = "") -> Range:
    """``value >= low``; an int bound reads "an int >= 1", a float bound ">= 0"."""
    text = f"an int >= {low}" if isinstance(low, int) else f">= {low:g}"
    return Range(lambda value: value >= low, _explained(text, why))


def above(low: float, why: str = "") -> Range:
    return Range(lambda value: value > low, _explained(f"> {low:g}", why))


def within(low, high, what: str, why: str = "") -> Range:
    """``low <= value <= high``, e.g. ``within(0.0, 180.0, "degrees")``: "degrees in [0, 180]"."""
    return Range(lambda value: low <= value <= high, _explained(f"{what} in [{low:g}, {high:g}]", why))


def one_of(*choices) -> Range:
    names = [repr(choice) for choice in choices]
    return Range(lambda value: value in choices, ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else names[0])


def optional(valid: Range, none_means: str) -> Range:
    """None (which means `none_means`) or a value `valid` accepts."""
    return Range(lambda value: value is None or valid.accepts(value), f"None ({none_means}) or {valid.expected}")


FLAG = Range(lambda value: isinstance(value, bool), "True or False")


# ----------------------------------------------------------------------------- walking dotted keys
def _is_section(value) -> bool:
    return isinstance(value, dict) or (dataclasses.is_dataclass(value) and not isinstance(value, type))


def _names(node) -> list[str]:
    return list(node) if isinstance(node, dict) else [f.name for f in dataclasses.fields(node)]


def _child(node, name: str):
    if isinstance(node, dict):
        return node[name]
    if name not in _names(node):
        raise KeyError(name)
    return getattr(node, name)


def flatten(node, prefix: str = "") -> dict:
    """Every leaf of a dataclass config or nested dict under its dotted key, in field order."""
    flat = {}
    for name in _names(node):
        value = _child(node, name)
        if _is_section(value):
            flat.update(flatten(value, f"{prefix}{name}."))
        else:
            flat[f"{prefix}{name}"] = value
    return flat


def _unknown(root, key: str) -> KeyError:
    close = difflib.get_close_matches(key, list(flatten(root)), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return KeyError(f"unknown config key {key!r}{hint} (valid keys: see protoef.config)")


def _parent(root, key: str):
    """(the section holding `key`'s last part, that part); a key that names no leaf raises."""
    *path, name = key.split(".")
    node = root
    try:
        for part in path:
            node = _child(node, part)
        leaf = _child(node, name)
    except (KeyError, TypeError):  # TypeError: a part below a leaf, e.g. "seed.x"
        raise _unknown(root, key) from None
    if not _is_section(node) or _is_section(leaf):  # a section is not a value
        raise _unknown(root, key)
    return node, name


def get_key(root, key: str):
    """The value of a dotted key (``"model.tau"``, ``"seed"``); unknown keys raise naming the closest."""
    node, name = _parent(root, key)
    return _child(node, name)


def set_key(root, key: str, value) -> None:
    """Set a dotted key in place. In a dataclass config the value is checked against the
    field's type (a string, as from ``--set``, is parsed); a plain dict takes it as it is."""
    node, name = _parent(root, key)
    if isinstance(node, dict):
        node[name] = value
        return
    annotation = _field_types(type(node))[name]
    try:
        setattr(node, name, _coerce(value, annotation, key))
    except ValueError:  # a string that does not parse as the field's type
        raise ValueError(f"{key}: {value!r} is not a valid {getattr(annotation, '__name__', annotation)}") from None


def field_range(root, key: str) -> Range:
    """The range the field behind `key` declares (`knob`). A field without one is a bug in
    the config's declaration, reported as such, so no field goes unvalidated."""
    node, name = _parent(root, key)
    declared = {f.name: f for f in dataclasses.fields(node)}[name].metadata.get("range")
    if not isinstance(declared, Range):
        raise TypeError(f"config field {key!r} declares no valid range: declare it as "
                        f"`{name}: ... = knob(default, Range)` (protoef.config_keys), so validation can check it")
    return declared


# ----------------------------------------------------------------------------- types
@functools.cache
def _field_types(cls) -> dict[str, typing.Any]:
    return typing.get_type_hints(cls)


def _coerce(value, annotation, key: str):
    """Check (and, for strings from a command line, parse) ``value`` against a field type."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in options:
                return None
        for option in (a for a in options if a is not type(None)):
            try:
                return _coerce(value, option, key)
            except (TypeError, ValueError):
                pass  # the next option may fit
        raise TypeError(f"{key}: {value!r} is not a valid {annotation}")
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
            return value.lower() in ("true", "1", "yes")
        raise TypeError(f"{key}: expected a bool, got {value!r}")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            return int(value)
        raise TypeError(f"{key}: expected an int, got {value!r}")
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            return float(value)
        raise TypeError(f"{key}: expected a number, got {value!r}")
    if annotation is str:
        if isinstance(value, str):
            return value
        raise TypeError(f"{key}: expected a string, got {value!r}")
    raise TypeError(f"{key}: unsupported field type {annotation}")
