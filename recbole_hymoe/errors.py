"""Exceptions raised for bad input, each naming the offending key or value and what is allowed."""


class ConfigError(ValueError):
    """A configuration value or key is invalid; raised before any data is loaded."""


class UnknownModelError(ConfigError):
    """A model name that is neither a registered plugin model nor a RecBole built-in."""


class DatasetNotFoundError(FileNotFoundError):
    """The dataset's atomic files are not on disk (nothing is downloaded without consent)."""


class AtomicFileError(ValueError):
    """A dataset's atomic file breaks RecBole's format or leaves nothing to train on.

    Raised as the dataset is read; the message names the file, the line or field, and the fix.
    """


# What the command-line tools report as bad input (exit code 2, no traceback).
BAD_INPUT = (ConfigError, DatasetNotFoundError, AtomicFileError)


def listing(title, problems):
    """Join ``problems`` under ``title``: one line for one problem, an indented list for more."""
    if len(problems) == 1:
        return f"{title}: {problems[0]}"
    return f"{title} ({len(problems)} problems):\n  " + "\n  ".join(problems)
