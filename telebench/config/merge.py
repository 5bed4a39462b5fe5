"""The one defaults merge of every suite kind, and where a merged value was written.

A case inherits what it does not set from `defaults`. Settings are merged on what each level spelled
out (pydantic's `model_fields_set`, or the keys of a raw mapping), so an explicit `null` still
overrides an inherited value, and an error can name the key the user actually wrote.
"""

from __future__ import annotations

import copy
from collections.abc import Collection, Mapping
from typing import Any

from pydantic import BaseModel

Loc = tuple[str | int, ...]


def is_set(doc: Any, keys: Loc) -> bool:
    """Whether `doc` (a pydantic model or raw YAML data) spells out the value at `keys`."""
    for key in keys:
        if isinstance(key, int):
            if not isinstance(doc, list) or key >= len(doc):
                return False
            doc = doc[key]
        elif isinstance(doc, BaseModel):
            if key not in doc.model_fields_set:
                return False
            doc = getattr(doc, key)
        elif isinstance(doc, Mapping):
            if key not in doc:
                return False
            doc = doc[key]
        else:
            return False
    return True


def given(model: BaseModel) -> dict[str, Any]:
    """The settings a model spelled out, not its defaults."""
    return {k: getattr(model, k) for k in model.model_fields_set}


def merge_models(defaults: BaseModel, case: BaseModel, deep: Collection[str] = (),
                 exclude: Collection[str] = ()) -> dict[str, Any]:
    """defaults ← case: every field of `defaults`, replaced by what `case` spelled out; the `deep` fields
    (sub-models set on both levels) merge field by field instead of being replaced whole."""
    merged = {k: getattr(defaults, k) for k in type(defaults).model_fields}
    merged.update({k: v for k, v in given(case).items() if k not in exclude})
    for key in deep:
        low, high = getattr(defaults, key, None), getattr(case, key, None)
        if isinstance(low, BaseModel) and isinstance(high, BaseModel):
            merged[key] = type(low)(**{**given(low), **given(high)})
    return merged


def merge_raw(defaults: Mapping[str, Any], case: Mapping[str, Any]) -> dict[str, Any]:
    """defaults ← case on raw YAML mappings, before validation: mappings merge key by key at every
    depth; everything else, lists included, is replaced."""
    out = copy.deepcopy(dict(defaults))
    for key, value in case.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge_raw(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def written_at(case: Any, defaults: Any, case_loc: Loc, keys: Loc) -> Loc:
    """The location of the level that wrote `keys`: the case's (`case_loc`), else `defaults`'s when
    only the defaults set it (a value set nowhere is reported at the case, where it is missing)."""
    if not is_set(case, keys) and is_set(defaults, keys):
        return ("defaults",)
    return case_loc
