"""One small generic registry for estimators and problems, and the spec strings that name them.

A spec string names a configured entry everywhere (command line, study files, stored results,
report labels)::

    name                          every option at its default
    name:key=value,key=value      values parse as bool (true/false), int, float or string

Each registered class declares its options as data (``info.options``, a tuple of
:class:`Option`); ``make`` checks the keys and the values against them, so a typo answers with
the valid keys instead of a ``TypeError`` deep in a constructor. Every instance made this way
carries a canonical ``spec`` with all defaults filled in, and ``make(x.spec).spec == x.spec``.

Third-party packages add entries through the entry-point groups ``estibench.estimators`` and
``estibench.problems``: an entry point names a class (or a module whose import registers
classes with ``@register``).

Example:
    >>> from estimators import ESTIMATORS
    >>> ESTIMATORS.make("gumbel-softmax:temperature=0.5").spec
    'gumbel-softmax:temperature=0.5'
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.metadata
import math
import re
import warnings
from collections.abc import Callable, Iterator
from typing import Any, ClassVar, Generic, TypeVar

from estimators.errors import SpecError

_NAME = re.compile(r"^[a-z][a-z0-9]*(?:-[a-z0-9]+)*$")
_INT = re.compile(r"^[+-]?\d+$")


@dataclasses.dataclass(frozen=True)
class Option:
    """One declared option of a registered class.

    The option's type is the type of its default (bool, int, float or str). ``check`` returns
    ``None`` for a good value and otherwise a phrase describing what is allowed, e.g.
    ``"a number > 0"``.
    """

    name: str
    default: Any
    doc: str = ""
    choices: tuple[Any, ...] | None = None
    check: Callable[[Any], str | None] | None = None

    @property
    def type(self) -> type:
        return type(self.default)

    def describe(self) -> str:
        """``name=default`` with the choices when there are any."""
        text = f"{self.name}={format_value(self.default)}"
        if self.choices:
            text += " (" + "|".join(format_value(c) for c in self.choices) + ")"
        return text


def positive(value: float) -> str | None:
    """Check for options that must be finite and > 0 (temperatures, rates)."""
    return None if math.isfinite(value) and value > 0 else "a finite number > 0"


def finite(value: float) -> str | None:
    """Check for real-valued options (logits, targets)."""
    return None if math.isfinite(value) else "a finite number"


def at_least(bound: int) -> Callable[[int], str | None]:
    """Check for integer options with a lower bound (dimensions, sizes)."""

    def check(value: int) -> str | None:
        return None if value >= bound else f"an integer >= {bound}"

    return check


def format_value(value: Any) -> str:
    """The canonical text of an option value inside a spec string."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def parse_value(text: str) -> Any:
    """Parse the text of a value: ``true``/``false``, an int, a float, else the string itself."""
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if _INT.match(text):
        return int(text)
    try:
        return float(text)
    except ValueError:
        return text


def split_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """Split ``name:key=value,...`` into the name and the parsed (not yet checked) values."""
    if not isinstance(spec, str) or not spec.strip():
        raise SpecError(f"empty spec {spec!r}: expected 'name' or 'name:key=value,key=value'")
    name, _, rest = spec.strip().partition(":")
    name = name.strip()
    values: dict[str, Any] = {}
    if rest.strip():
        for item in rest.split(","):
            key, eq, text = item.partition("=")
            key, text = key.strip(), text.strip()
            if not eq or not key or not text:
                raise SpecError(
                    f"bad option {item.strip()!r} in spec {spec!r}: expected key=value pairs "
                    "separated by commas"
                )
            if key in values:
                raise SpecError(f"option {key!r} given twice in spec {spec!r}")
            values[key] = parse_value(text)
    return name, values


def coerce(owner: str, option: Option, value: Any) -> Any:
    """Check one value against its declared option and return it in the option's type."""
    expected = option.type
    ok = True
    if expected is bool:
        ok = isinstance(value, bool)
    elif expected is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif expected is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif expected is str:
        value = value if isinstance(value, str) else format_value(value)
    allowed = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    if ok and expected is int and not -2**63 <= value < 2**63:  # torch's sizes and seeds
        ok, allowed[int] = False, "an integer that fits in 64 bits"
    if not ok:
        raise SpecError(
            f"bad value {format_value(value)!r} for option {option.name!r} of {owner}: "
            f"expected {allowed.get(expected, expected.__name__)}"
        )
    if option.choices is not None and value not in option.choices:
        choices = ", ".join(format_value(c) for c in option.choices)
        raise SpecError(
            f"bad value {format_value(value)!r} for option {option.name!r} of {owner}: "
            f"expected one of {choices}"
        )
    if option.check is not None:
        problem = option.check(value)
        if problem is not None:
            raise SpecError(
                f"bad value {format_value(value)!r} for option {option.name!r} of {owner}: "
                f"expected {problem}"
            )
    return value


def resolve_options(owner: str, declared: tuple[Option, ...], given: dict[str, Any]) -> dict:
    """Fill defaults and check every given value; unknown keys name the valid ones."""
    known = {opt.name: opt for opt in declared}
    unknown = [key for key in given if key not in known]
    if unknown:
        valid = ", ".join(opt.describe() for opt in declared) or "none"
        raise SpecError(f"unknown option {unknown[0]!r} for {owner}; valid options: {valid}")
    return {
        opt.name: coerce(owner, opt, given[opt.name]) if opt.name in given else opt.default
        for opt in declared
    }


def format_spec(name: str, values: dict[str, Any]) -> str:
    """The canonical spec string: every option, in declared order."""
    if not values:
        return name
    return name + ":" + ",".join(f"{k}={format_value(v)}" for k, v in values.items())


class Configurable:
    """Base of every registered class: options checked on construction, a canonical spec.

    Subclasses set the class attribute ``info`` (an info dataclass with ``name``,
    ``description`` and ``options``) and read their option values as attributes, except an
    option named like a method of the class, which is read from ``self.options``.
    """

    info: ClassVar[Any]

    def __init__(self, **options: Any) -> None:
        self.options: dict[str, Any] = resolve_options(
            repr(self.info.name), self.info.options, options
        )
        for key, value in self.options.items():
            if not callable(getattr(type(self), key, None)):  # never shadow a method: an option
                setattr(self, key, value)  # named like one (a task's `distribution`) stays in
                # self.options only

    @property
    def spec(self) -> str:
        return format_spec(self.info.name, self.options)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.spec}>"


T = TypeVar("T", bound=Configurable)


class Registry(Generic[T]):
    """Name -> class, filled by ``@register`` where each class is defined and by entry points.

    Args:
        kind: what the entries are, for messages ("estimator", "problem").
        group: the entry-point group third-party packages use to add entries.
    """

    def __init__(self, kind: str, group: str) -> None:
        self.kind = kind
        self.group = group
        self._entries: dict[str, type[T]] = {}
        self._entry_points_loaded = False

    def register(self, cls: type[T]) -> type[T]:
        """Class decorator: register ``cls`` under ``cls.info.name``."""
        name = cls.info.name
        if not _NAME.match(name):
            raise ValueError(f"{self.kind} name {name!r} must be lower-case words joined by '-'")
        for option in cls.info.options:
            if not option.name.isidentifier():
                raise ValueError(f"option {option.name!r} of {name!r} is not an identifier")
        existing = self._entries.get(name)
        if existing is not None and existing is not cls:
            raise ValueError(f"{self.kind} {name!r} is already registered by {existing!r}")
        self._entries[name] = cls
        return cls

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        for entry_point in importlib.metadata.entry_points(group=self.group):
            try:
                loaded = entry_point.load()
            except Exception as error:  # a broken plug-in must not break every command
                warnings.warn(
                    f"could not load {self.kind} plug-in {entry_point.name!r} "
                    f"({entry_point.value}): {error}",
                    stacklevel=2,
                )
                continue
            if isinstance(loaded, type) and hasattr(loaded, "info"):
                self.register(loaded)

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        self._load_entry_points()
        return sorted(self._entries)

    def __iter__(self) -> Iterator[type[T]]:
        return iter(self.get(name) for name in self.names())

    def __contains__(self, name: str) -> bool:
        return name in self.names()

    def get(self, name: str) -> type[T]:
        """The class registered as ``name``; an unknown name answers with the closest ones."""
        if name not in self._entries:
            self._load_entry_points()
        try:
            return self._entries[name]
        except KeyError:
            close = difflib.get_close_matches(name, self._entries, n=3, cutoff=0.5)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            known = ", ".join(sorted(self._entries))
            raise SpecError(f"unknown {self.kind} {name!r}{hint} (known: {known})") from None

    def make(self, spec: str | T) -> T:
        """Build an entry from a spec string (an already built entry is returned as it is)."""
        if isinstance(spec, Configurable):
            return spec
        name, values = split_spec(spec)
        return self.get(name)(**values)

    def short(self, spec: str) -> str:
        """The spec with only the options that differ from their defaults (for labels)."""
        name, values = split_spec(spec)
        declared = {opt.name: opt.default for opt in self.get(name).info.options}
        kept = {k: v for k, v in values.items() if k not in declared or declared[k] != v}
        return format_spec(name, kept)

    def canonical(self, spec: str) -> str:
        """The canonical form of a spec string, defaults filled in, without building it."""
        name, values = split_spec(spec)
        cls = self.get(name)
        return format_spec(name, resolve_options(repr(name), cls.info.options, values))
