"""How one setting is declared and parsed: its environment variable, type, default and description.

A settings group is a frozen dataclass whose fields are declared with :func:`env`. :func:`from_environ`
builds a group from an environment mapping: a variable that is unset or empty takes the field's
default, any other value is parsed by the field's kind, and a value that does not parse raises
:class:`SettingsError` naming the variable, what was expected and what was found.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

G = TypeVar("G")


class SettingsError(ValueError):
    """A setting's value is not usable; the message starts with the variable's name."""


@dataclass(frozen=True)
class Kind:
    """How a variable's text becomes a value: ``parse`` returns it or raises ValueError; ``expected``
    completes "expected …" in the error."""

    parse: Callable[[str], Any]
    expected: str


def _number(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


def _at_least(parse: Callable[[str], Any], minimum: float, above: bool = False) -> Callable[[str], Any]:
    def parsed(text: str) -> Any:
        value = parse(text)
        if value < minimum or (above and value == minimum):
            raise ValueError(text)
        return value
    return parsed


def text() -> Kind:
    return Kind(str, "text")


def integer(minimum: int = 0, what: str = "a whole number") -> Kind:
    return Kind(_at_least(int, minimum), f"{what} (at least {minimum})")


def number(what: str, minimum: float = 0.0, positive: bool = False) -> Kind:
    bound = f"above {minimum:g}" if positive else f"at least {minimum:g}"
    return Kind(_at_least(_number, minimum, above=positive), f"{what} ({bound})")


def fraction() -> Kind:
    def parse(text: str) -> float:
        value = _number(text)
        if not 0 <= value <= 1:
            raise ValueError(text)
        return value
    return Kind(parse, "a fraction between 0 and 1, e.g. 0.05")


def choice(*options: str) -> Kind:
    def parse(text: str) -> str:
        if text not in options:
            raise ValueError(text)
        return text
    return Kind(parse, f"one of {', '.join(options)}")


def day(*keywords: str) -> Kind:
    def parse(text: str) -> str:
        if text not in keywords:
            dt.date.fromisoformat(text)
        return text
    return Kind(parse, " or ".join(["a day YYYY-MM-DD", *keywords]))


@dataclass(frozen=True)
class Spec:
    """One setting: its variable, kind, default and description (the configuration table's row)."""

    variable: str
    kind: Kind
    default: Any
    description: str

    def parse(self, raw: str | None) -> Any:
        if not raw:
            return self.default
        try:
            return self.kind.parse(raw)
        except ValueError:
            raise SettingsError(f"{self.variable}: expected {self.kind.expected}, got {raw!r}") from None

    def default_text(self) -> str:
        """The default as an environment variable would spell it."""
        return "" if self.default in ("", None) else f"{self.default:g}" if isinstance(self.default, float) \
            else str(self.default)


def env(variable: str, default: Any, description: str, kind: Kind | None = None) -> Any:
    """A dataclass field read from ``variable``; ``kind`` defaults to plain text."""
    spec = Spec(variable, kind or text(), default, description)
    return dataclasses.field(default=default, metadata={"setting": spec})


def specs(group: type) -> dict[str, Spec]:
    """The settings of a group, by field name, in declaration order."""
    return {f.name: f.metadata["setting"] for f in dataclasses.fields(group) if "setting" in f.metadata}


def spec_of(group: type, name: str) -> Spec:
    return specs(group)[name]


def from_environ(group: type[G], variables: Mapping[str, str]) -> G:
    """``group`` with each setting parsed from ``variables`` (unset or empty: the default)."""
    return group(**{name: spec.parse(variables.get(spec.variable)) for name, spec in specs(group).items()})
