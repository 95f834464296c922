"""Strict, typed reads of model hyperparameters from a RecBole ``Config``.

RecBole's ``config[key]`` returns ``None`` for a missing key, so a misspelt YAML key silently
becomes ``None`` inside a model. Models here declare every key they read as a :class:`Param`;
:func:`read_params` raises a :class:`~recbole_hymoe.errors.ConfigError` naming the key, the
bad value and what is allowed, and :class:`~recbole_hymoe.config.Config` runs it before any
data is loaded. Each check is a frozen value that keeps its declared range (``minimum``,
``options``, …) readable, so tests can exercise every allowed value of every key.
"""

import numbers
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, Optional

from recbole_hymoe.errors import ConfigError


class Param(NamedTuple):
    """One hyperparameter: its config key and a check returning the (normalised) value."""

    key: str
    check: Callable


@dataclass(frozen=True)
class Integer:
    """Check for an ``int`` (not ``bool``) ≥ ``minimum``."""

    minimum: Optional[int] = None

    def __call__(self, value):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ValueError("must be an integer")
        if self.minimum is not None and value < self.minimum:
            raise ValueError(f"must be >= {self.minimum}")
        return int(value)


@dataclass(frozen=True)
class Number:
    """Check for a real number in ``[minimum, maximum]`` (``(minimum, …`` if ``min_exclusive``)."""

    minimum: Optional[float] = None
    maximum: Optional[float] = None
    min_exclusive: bool = False

    def __call__(self, value):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValueError("must be a number")
        low = self.minimum
        if low is not None and (value <= low if self.min_exclusive else value < low):
            raise ValueError(f"must be {'>' if self.min_exclusive else '>='} {low}")
        if self.maximum is not None and value > self.maximum:
            raise ValueError(f"must be <= {self.maximum}")
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


def read_params(config, params, owner, yaml_file):
    """Read and check every declared key.

    Args:
        config (Config): RecBole config (anything with ``in`` and ``[]``).
        params (Iterable[Param]): the declared keys.
        owner (str): model name, for messages.
        yaml_file (Path): where the defaults live, for messages.

    Returns:
        dict: key -> checked value.

    Raises:
        ConfigError: a key is missing or holds an invalid value; all problems listed at once.
    """
    values, problems = {}, []
    for param in params:
        if param.key not in config:
            problems.append(f"missing key {param.key!r} (its default lives in {yaml_file})")
            continue
        value = config[param.key]
        try:
            values[param.key] = param.check(value)
        except ValueError as err:
            problems.append(f"{param.key}={value!r} {err}")
    if problems:
        raise ConfigError(f"{owner}: invalid configuration:\n  " + "\n  ".join(problems))
    return values
