"""Where the package's YAML lives, and how files are named in what the package writes.

The top-level ``yaml/`` of the checkout is the one source of the defaults. An installed
distribution carries a copy of it inside the package (``recbole_hymoe/yaml/``, made at build
time by ``setup.py``); a checkout or an editable install reads ``yaml/`` in place. Paths that
users and suites write as ``yaml/…`` resolve against whichever of the two is present.
"""

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent
_PACKAGED_YAML = _PACKAGE_DIR / "yaml"
YAML_DIR = _PACKAGED_YAML if _PACKAGED_YAML.is_dir() else _PACKAGE_DIR.parent / "yaml"
YAML_PREFIX = "yaml"


def find_file(path):
    """Return ``path`` where it exists; else a ``yaml/…`` path's file among the package's YAML.

    Lets ``--config_files=yaml/demo/…``, a suite's ``protocol: yaml/protocol/…`` and the like work
    from any working directory with a non-editable install.

    Args:
        path (str or Path, optional): a file as the user or a suite names it.

    Returns:
        str or None: the path to open (``path`` unchanged when neither exists, so the caller's
        own "not found" message names what was asked for).
    """
    if path is None or Path(path).exists():
        return None if path is None else str(path)
    parts = Path(path).parts
    if parts and parts[0] == YAML_PREFIX:
        packaged = YAML_DIR.joinpath(*parts[1:])
        if packaged.exists():
            return str(packaged)
    return str(path)


def portable(path, within=None):
    """Name ``path`` in a record without this machine's layout.

    The package's YAML as ``yaml/…``; a path under the working directory relative to it (the
    repository, when run from its root); else relative to ``within`` when under it; else the
    file's name.
    """
    path = Path(path).resolve()
    for root, prefix in ((YAML_DIR, Path(YAML_PREFIX)), (Path.cwd(), Path())):
        if path.is_relative_to(root.resolve()):
            return str(prefix / path.relative_to(root.resolve()))
    if within is not None and path.is_relative_to(Path(within).resolve()):
        return str(path.relative_to(Path(within).resolve()))
    return path.name
