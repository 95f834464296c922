"""Strict, typed reads of model hyperparameters from a RecBole ``Config``.

RecBole's ``config[key]`` returns ``None`` for a missing key, so a misspelt YAML key silently
becomes ``None`` inside a model. Models here declare every key they read as a :class:`Param`;
:func:`read_params` raises a :class:`~recbole_hymoe.errors.ConfigError` naming the key, the
bad value and what is allowed, and :class:`~recbole_hymoe.config.Config` runs it before any
data is loaded.
"""

import numbers
from typing import Callable, NamedTuple

from recbole_hymoe.errors import ConfigError


class Param(NamedTuple):
    """One hyperparameter: its config key and a check returning the (normalised) value."""

    key: str
    check: Callable


def integer(minimum=None):
    """Check for an ``int`` (not ``bool``) ≥ ``minimum``."""

    def check(value):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ValueError("must be an integer")
        if minimum is not None and value < minimum:
            raise ValueError(f"must be >= {minimum}")
        return int(value)

    return check


def number(minimum=None, maximum=None, min_exclusive=False):
    """Check for a real number in ``[minimum, maximum]`` (``(minimum, …`` if ``min_exclusive``)."""

    def check(value):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValueError("must be a number")
        if minimum is not None and (value <= minimum if min_exclusive else value < minimum):
            raise ValueError(f"must be {'>' if min_exclusive else '>='} {minimum}")
        if maximum is not None and value > maximum:
            raise ValueError(f"must be <= {maximum}")
        return float(value)

    return check


def boolean():
    """Check for ``True`` or ``False``."""

    def check(value):
        if not isinstance(value, bool):
            raise ValueError("must be True or False")
        return value

    return check


def choice(*options):
    """Check for one of ``options`` (exact spelling)."""

    def check(value):
        if value not in options:
            raise ValueError(f"must be one of {list(options)}")
        return value

    return check


def optional(inner):
    """Accept ``None`` or whatever ``inner`` accepts."""

    def check(value):
        return None if value is None else inner(value)

    return check


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
