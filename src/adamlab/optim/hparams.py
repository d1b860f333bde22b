"""Hyperparameter values checked against the types an optimizer's signature declares, before it is built.

Optimizers take whatever they are given: ``Adam(amsgrad="no")`` switches AMSGrad *on* (a non-empty string is
true), and ``eps="small"`` fails only at the first step. Values from the command line and from YAML arrive as
strings more often than one would think, so every value is checked against the annotation of the parameter it
sets (or, for classes without annotations, the type of its default):

* a bool must be ``True``/``False``, or the string ``"true"``/``"false"`` in any case (nothing else: ``"no"``,
  ``"yes"``, ``0`` or ``1`` are refused rather than guessed);
* an int must be an integer; a float accepts any number (a tensor too, where the optimizer takes one);
* a tuple must have the declared length and element types (a YAML or JSON list is turned into one);
* ``None`` only where the annotation is optional. Parameters with other types (strings, dtypes, paths) are left to
  the optimizer's own checks.

``typing.get_type_hints`` and ``inspect`` read the declarations; nothing in the ecosystem checks call arguments
against them without also requiring a runtime type-checking decorator on the optimizer classes, which torch's own
classes do not have.
"""

from __future__ import annotations

import inspect
import types
import typing
from dataclasses import dataclass
from typing import Any

import torch

BOOL_WORDS = {"true": True, "false": False}


@dataclass(frozen=True)
class Kind:
    """What a parameter accepts: ``bool``, ``int``, ``number`` or ``tuple`` (of ``items``), maybe ``None``."""

    name: str
    optional: bool = False
    items: tuple[Kind, ...] = ()

    def describe(self) -> str:
        text = {"bool": "true or false", "int": "an integer", "number": "a number"}.get(self.name)
        if self.name == "tuple":
            text = f"a tuple of {len(self.items)} ({', '.join(item.describe() for item in self.items)})"
        return text + (" or None" if self.optional else "")


def _kind(annotation: Any) -> Kind | None:
    """The kind an annotation declares; ``None`` for types this module leaves alone."""
    if annotation is bool:
        return Kind("bool")
    if annotation is int:
        return Kind("int")
    if annotation is float:
        return Kind("number")
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is tuple and args and Ellipsis not in args:
        items = tuple(_kind(arg) for arg in args)
        return None if None in items else Kind("tuple", items=items)
    if origin in (typing.Union, types.UnionType):
        optional = type(None) in args
        members = [arg for arg in args if arg not in (type(None), torch.Tensor)]
        kinds = {_kind(member) for member in members}
        if None in kinds or not kinds:
            return None
        names = {kind.name for kind in kinds}
        if names <= {"int", "number"}:
            return Kind("number" if "number" in names else "int", optional)
        if len(kinds) == 1:
            (kind,) = kinds
            return Kind(kind.name, optional, kind.items)
    return None


def _kind_of_default(default: Any) -> Kind | None:
    """For classes without annotations: the default's type. An int default (``weight_decay=0``) reads as any
    number, since such classes take floats there too."""
    if isinstance(default, bool):
        return Kind("bool")
    if isinstance(default, (int, float)):
        return Kind("number")
    if isinstance(default, tuple) and default and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                      for v in default):
        return Kind("tuple", items=tuple(Kind("number") for _ in default))
    return None


def declared_kinds(cls: type) -> dict[str, Kind]:
    """The kind of each hyperparameter of ``cls.__init__`` that this module checks."""
    signature = inspect.signature(cls.__init__)
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # an annotation naming something not importable here: fall back to defaults for all
        hints = {}
    kinds = {}
    for name, parameter in signature.parameters.items():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        kind = _kind(hints[name]) if name in hints else None
        if kind is None and name not in hints and parameter.default is not parameter.empty:
            kind = _kind_of_default(parameter.default)
        if kind is not None:
            kinds[name] = kind
    return kinds


class _Mismatch(Exception):
    pass


def _coerce(value: Any, kind: Kind) -> Any:
    if value is None:
        if kind.optional:
            return None
        raise _Mismatch
    if kind.name == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in BOOL_WORDS:
            return BOOL_WORDS[value.strip().lower()]
        raise _Mismatch
    if kind.name in ("int", "number"):
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Mismatch
        if kind.name == "int" and not isinstance(value, int):
            raise _Mismatch
        return value
    if kind.name == "tuple":
        if not isinstance(value, (tuple, list)) or len(value) != len(kind.items):
            raise _Mismatch
        return tuple(_coerce(item, item_kind) for item, item_kind in zip(value, kind.items))
    return value


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def coerce_hparams(optimizer: str, cls: type, hparams: dict[str, Any]) -> dict[str, Any]:
    """``hparams`` with each value checked against ``cls``'s declared type: the strings ``"true"``/``"false"``
    become bools and lists become tuples; anything else that does not fit raises ``ValueError`` (one line naming
    the optimizer, the hyperparameter, what it takes and what it got)."""
    kinds = declared_kinds(cls)
    checked = dict(hparams)
    for key, value in hparams.items():
        if key not in kinds:
            continue
        try:
            checked[key] = _coerce(value, kinds[key])
        except _Mismatch:
            raise ValueError(f"hyperparameter {key!r} of optimizer {optimizer!r} must be {kinds[key].describe()}, "
                             f"got {_short(value)} ({type(value).__name__})") from None
    return checked
