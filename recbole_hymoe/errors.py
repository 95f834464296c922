"""Exceptions raised for bad input, each naming the offending key or value and what is allowed."""


class ConfigError(ValueError):
    """A configuration value or key is invalid; raised before any data is loaded."""


class UnknownModelError(ConfigError):
    """A model name that is neither a registered plugin model nor a RecBole built-in."""


class DatasetNotFoundError(FileNotFoundError):
    """The dataset's atomic files are not on disk (nothing is downloaded without consent)."""


def listing(title, problems):
    """Join ``problems`` under ``title``: one line for one problem, an indented list for more."""
    if len(problems) == 1:
        return f"{title}: {problems[0]}"
    return f"{title} ({len(problems)} problems):\n  " + "\n  ".join(problems)
