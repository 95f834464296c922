"""Strict, typed reads of config keys from a RecBole ``Config``.

RecBole's ``config[key]`` returns ``None`` for a missing key, so a misspelt YAML key silently
becomes ``None`` inside a model. Models here declare every key they read as a :class:`Param`
(and :mod:`recbole_hymoe.recbole_keys` declares RecBole's own keys the same way);
:func:`param_problems` names each bad key, its value and what is allowed, and
:class:`~recbole_hymoe.config.Config` raises them all as one
:class:`~recbole_hymoe.errors.ConfigError` before any data is loaded. The basic checks are frozen
values that keep their declared range (``minimum``, ``options``, …) readable, so tests can
exercise every allowed value of every key.
"""

import difflib
import math
import numbers
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, Optional



class Param(NamedTuple):
    """One hyperparameter: its config key and a check returning the (normalised) value."""

    key: str
    check: Callable


@dataclass(frozen=True)
class Integer:
    """Check for an ``int`` (not ``bool``) in ``[minimum, maximum]``."""

    minimum: Optional[int] = None
    maximum: Optional[int] = None

    def __call__(self, value):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ValueError("must be an integer")
        if self.minimum is not None and value < self.minimum:
            raise ValueError(f"must be >= {self.minimum}")
        if self.maximum is not None and value > self.maximum:
            raise ValueError(f"must be <= {self.maximum}")
        return int(value)


@dataclass(frozen=True)
class Number:
    """Check for a finite real number in ``[minimum, maximum]`` (open at an end marked ``…_exclusive``)."""

    minimum: Optional[float] = None
    maximum: Optional[float] = None
    min_exclusive: bool = False
    max_exclusive: bool = False

    def __call__(self, value):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValueError("must be a number")
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        low = self.minimum
        if low is not None and (value <= low if self.min_exclusive else value < low):
            raise ValueError(f"must be {'>' if self.min_exclusive else '>='} {low}")
        high = self.maximum
        if high is not None and (value >= high if self.max_exclusive else value > high):
            raise ValueError(f"must be {'<' if self.max_exclusive else '<='} {high}")
        return float(value)


@dataclass(frozen=True)
class Boolean:
    """Check for ``True`` or ``False``."""

    def __call__(self, value):
        if not isinstance(value, bool):
            raise ValueError("must be True or False")
        return value


@dataclass(frozen=True, init=False)
class Choice:
    """Check for one of ``options`` (exact spelling)."""

    options: tuple

    def __init__(self, *options):
        object.__setattr__(self, "options", options)

    def __call__(self, value):
        if value not in self.options:
            raise ValueError(f"must be one of {list(self.options)}")
        return value


@dataclass(frozen=True)
class Nullable:
    """Accept ``None`` or whatever ``inner`` accepts."""

    inner: Any

    def __call__(self, value):
        return None if value is None else self.inner(value)


def name(*options):
    """Check for a string that is one of ``options`` in any letter case (as RecBole compares them)."""

    def check(value):
        if not isinstance(value, str) or value.lower() not in {o.lower() for o in options}:
            raise ValueError(f"must be one of {list(options)} (any case)")
        return value

    return check


def text():
    """Check for a non-empty string."""

    def check(value):
        if not isinstance(value, str) or not value:
            raise ValueError("must be a non-empty string")
        return value

    return check


def list_of(inner, length=None, empty=False):
    """Check for a list (of ``length`` items if given, non-empty unless ``empty``) whose items
    ``inner`` accepts."""

    def check(value):
        if (not isinstance(value, (list, tuple)) or (not value and not empty)
                or (length is not None and len(value) != length)):
            what = f"{length} items" if length is not None else "items" if empty else "one or more items"
            raise ValueError(f"must be a list of {what}")
        for item in value:
            try:
                inner(item)
            except ValueError as err:
                raise ValueError(f"has an item {item!r} that {err}") from None
        return list(value)

    return check


def mapping(key_check, value_check):
    """Check for a dict whose keys and values the two checks accept."""

    def check(value):
        if not isinstance(value, dict):
            raise ValueError("must be a mapping {key: value}")
        for key, item in value.items():
            try:
                key_check(key)
                value_check(item)
            except ValueError as err:
                raise ValueError(f"has an entry {key!r}: {item!r} that {err}") from None
        return value

    return check


def anything(value):
    """Accept any value (a shape RecBole itself does not constrain)."""
    return value


def either(*checks, message):
    """Accept what any of ``checks`` accepts; otherwise fail with ``message``."""

    def check(value):
        for inner in checks:
            try:
                return inner(value)
            except ValueError:
                continue
        raise ValueError(message)

    return check


def keyed(allowed, required=(), **checks):
    """Check a dict of keyword arguments: keys among ``allowed``, ``required`` present, values checked."""

    def check(value):
        if not isinstance(value, dict):
            raise ValueError(f"must be a mapping with keys among {list(allowed)}")
        unknown = [k for k in value if k not in allowed]
        if unknown:
            close = [difflib.get_close_matches(str(k), [str(a) for a in allowed], n=1) for k in unknown]
            hint = "".join(f"; did you mean {c[0]!r}?" for c in close if c)
            raise ValueError(f"has unknown key(s) {unknown}{hint}; allowed: {list(allowed)}")
        missing = [k for k in required if k not in value]
        if missing:
            raise ValueError(f"needs the key(s) {missing}")
        for key, inner in checks.items():
            if key in value:
                try:
                    inner(value[key])
                except ValueError as err:
                    raise ValueError(f"has {key}={value[key]!r} that {err}") from None
        return value

    return check


def param_problems(config, params, yaml_file=None):
    """Check every declared key; return the checked values and the problems.

    Args:
        config (Config): RecBole config (anything with ``in`` and ``[]``).
        params (Iterable[Param]): the declared keys.
        yaml_file (Path, optional): where the defaults live; a missing key is then a problem
            (without it, a missing key is skipped: the reader has its own default).

    Returns:
        tuple[dict, list[str]]: key -> checked value, and one line per problem naming the key.
    """
    values, problems = {}, []
    for param in params:
        if param.key not in config:
            if yaml_file is not None:
                problems.append(f"missing key {param.key!r} (its default lives in {yaml_file})")
            continue
        value = config[param.key]
        try:
            values[param.key] = param.check(value)
        except ValueError as err:
            problems.append(f"{param.key}={value!r} {err}")
    return values, problems
