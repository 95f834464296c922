"""Exceptions raised for bad input, each naming the offending key or value and what is allowed."""


class ConfigError(ValueError):
    """A configuration value or key is invalid; raised before any data is loaded."""


class UnknownModelError(ConfigError):
    """A model name that is neither a registered plugin model nor a RecBole built-in."""


class DatasetNotFoundError(FileNotFoundError):
    """The dataset's atomic files are not on disk (nothing is downloaded without consent)."""
