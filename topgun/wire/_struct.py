"""Declarative mapping between frozen dataclasses and wire maps.

A wire struct is a dataclass whose fields carry their camelCase wire name and a converter
(``wire_field``). ``read_struct``/``write_struct`` do the mapping generically; absent and
nil optional fields both read as ``None`` and ``None`` is omitted on write (protocol §1.2:
the stock client strips ``undefined`` and tolerates absent optionals).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Protocol, TypeVar

from topgun.wire._convert import Context, Converter

_FIELD_SPECS = "__wire_fields__"


class WireStruct(Protocol):
    __wire_fields__: ClassVar[tuple[tuple[str, str, Converter[Any], bool], ...]]


S = TypeVar("S")


def wire_field(name: str, converter: Converter[Any], *, optional: bool = False) -> Any:
    """Declare a dataclass field's wire name and converter; optional fields default to None."""
    metadata = {"wire": name, "converter": converter}
    if optional:
        return dataclasses.field(default=None, metadata=metadata)
    return dataclasses.field(metadata=metadata)


def wire_struct(cls: type[S]) -> type[S]:
    """Record the wire specs of a dataclass (apply after ``@dataclass``)."""
    specs = []
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if "wire" not in f.metadata:
            continue
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        specs.append((f.name, f.metadata["wire"], f.metadata["converter"], required))
    setattr(cls, _FIELD_SPECS, tuple(specs))
    return cls


def read_struct(cls: type[S], body: dict[str, Any], ctx: Context, path: str) -> S:
    """Build ``cls`` from a decoded wire map, validating every declared field."""
    kwargs: dict[str, Any] = {}
    prefix = f"{path}." if path else ""
    for name, wire, converter, required in getattr(cls, _FIELD_SPECS):
        value = body.get(wire)
        if value is None:
            if required:
                raise ctx.error(prefix + wire, "missing")
            continue
        kwargs[name] = converter.read(value, ctx, prefix + wire)
    return cls(**kwargs)


def write_struct(obj: object) -> dict[str, Any]:
    """The wire map of a struct built by ``read_struct`` (or constructed directly)."""
    out: dict[str, Any] = {}
    for name, wire, converter, _required in getattr(type(obj), _FIELD_SPECS):
        value = getattr(obj, name)
        if value is not None:
            out[wire] = converter.write(value)
    return out
