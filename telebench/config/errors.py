"""Turn pydantic's validation errors into the one sentence a suite author needs.

Each message names the file, the key path (`cases[1].optimizers[0].lr`), what is wrong and the
allowed values or the fix. Unknown keys get the nearest allowed key, found by walking the
schema models along pydantic's `loc`.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from telebench.errors import UserError


def key_path(loc: Sequence[str | int]) -> str:
    """('cases', 1, 'optimizers', 0, 'lr') -> 'cases[1].optimizers[0].lr'."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _unwrap(tp: Any) -> Any:
    """Strip Annotated and Optional so a field's annotation leads to its model or container."""
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            tp = args[0]
        else:
            return tp


def _model_at(root: type[BaseModel], loc: Sequence[str | int]) -> type[BaseModel] | None:
    """The schema model that the mapping at `loc` is validated against (None past a free-form dict)."""
    tp: Any = root
    for part in loc:
        tp = _unwrap(tp)
        if isinstance(part, int):
            if typing.get_origin(tp) is not list:
                return None
            tp = typing.get_args(tp)[0]
        elif isinstance(tp, type) and issubclass(tp, BaseModel) and part in tp.model_fields:
            tp = tp.model_fields[part].annotation
        else:
            return None
    tp = _unwrap(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _got(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _describe(err: ErrorDetails, root: type[BaseModel]) -> str:
    """What is wrong with one value, and what would be right."""
    kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    if kind == "extra_forbidden":
        key = str(err["loc"][-1])
        model = _model_at(root, err["loc"][:-1])
        allowed = sorted(model.model_fields) if model else []
        near = difflib.get_close_matches(key, allowed, n=1)
        hint = f"did you mean {near[0]!r}? " if near else ""
        case_keys = _model_at(root, ("defaults",)) if model is root else None
        if case_keys is not None and key in case_keys.model_fields:
            hint = f"case settings go under defaults or in a case, e.g. defaults.{key}; "
        return f"unknown key {key!r}; {hint}allowed keys: {', '.join(allowed)}"
    if kind == "missing":
        return "is required but missing"
    if kind in ("value_error", "assertion_error"):
        return str(ctx.get("error", err["msg"]))
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')}, got {_got(value)}"
    bounds = {"greater_than": ("greater than", "gt"), "greater_than_equal": ("at least", "ge"),
              "less_than": ("less than", "lt"), "less_than_equal": ("at most", "le")}
    if kind in bounds:
        words, key = bounds[kind]
        return f"must be {words} {ctx[key]:g}, got {_got(value)}"
    if kind == "too_short":
        return f"needs at least {ctx.get('min_length')} item(s)"
    expected = {
        "int": "an integer", "float": "a number", "bool": "true or false", "string": "a string",
        "list": "a list", "dict": "a mapping (key: value)", "model": "a mapping (key: value)",
    }
    for prefix, noun in expected.items():
        if kind.startswith(prefix):
            return f"must be {noun}, got {_got(value)}"
    return f"{err['msg'][:1].lower()}{err['msg'][1:]}, got {_got(value)}"


def validation_error(source: str, exc: ValidationError, root: type[BaseModel],
                     prefix: Sequence[str | int] = ()) -> UserError:
    """The first problem as one sentence, with a count of any others."""
    errors = exc.errors(include_url=False)
    # An unknown key usually explains the other errors of its mapping (a misspelt `lr` is also a missing one).
    first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = tuple(prefix) + tuple(first["loc"])
    more = len(errors) - 1
    tail = f" ({more} more problem{'s' if more > 1 else ''} after this one)" if more else ""
    return UserError(f"{source}: {key_path(loc)}: {_describe(first, root)}{tail}.")
