"""Pydantic base types shared by every experiment kind's schema: strict mappings, checked numbers, names."""

from __future__ import annotations

import difflib
import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from telebench.config import registry


def _not_bool(value: Any) -> Any:
    """Pydantic's lax mode reads `true` as 1; in a count or a rate it is always a mistake."""
    if isinstance(value, bool):
        raise ValueError(f"must be a number, got {str(value).lower()}")
    return value


PosInt = Annotated[int, BeforeValidator(_not_bool), Field(gt=0)]


NonNegInt = Annotated[int, BeforeValidator(_not_bool), Field(ge=0)]


PosFloat = Annotated[float, BeforeValidator(_not_bool), Field(gt=0, allow_inf_nan=False)]


NonNegFloat = Annotated[float, BeforeValidator(_not_bool), Field(ge=0, allow_inf_nan=False)]


DEVICE_PATTERN = re.compile(r"^(cpu|auto|cuda(:\d+)?)$")


def check_name(kind: str, value: str, allowed: tuple[str, ...]) -> str:
    """Accept a registry name, or fail with the allowed names and the nearest match."""
    if value in allowed:
        return value
    near = difflib.get_close_matches(value, allowed, n=1)
    hint = f"did you mean {near[0]!r}? " if near else ""
    raise ValueError(f"unknown {kind} {value!r}; {hint}allowed: {', '.join(allowed)}")


def distinct_seeds(seeds: list[int]) -> list[int]:
    """A seed listed twice would run one trial twice and count it as two seeds."""
    if len(set(seeds)) != len(seeds):
        raise ValueError("seeds repeat; list each seed once")
    return seeds


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def given(self) -> dict[str, Any]:
        """The settings this mapping spelled out (not its defaults), for merging over inherited ones."""
        return {k: getattr(self, k) for k in self.model_fields_set}


class DatasetConfig(BaseModel):
    """`name` picks the dataset; every other key is a dataset parameter, checked by the data module."""

    model_config = ConfigDict(extra="allow")

    name: str

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_name("dataset", v, registry.dataset_names())

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class ModelConfig(Strict):
    widths: list[PosInt] | None = Field(default=None, min_length=2)
    activation: str = "leaky_relu"
    negative_slope: float = 0.1
    bias: bool = True

    @field_validator("activation")
    @classmethod
    def _activation(cls, v: str) -> str:
        return check_name("activation", v, registry.activation_names())


