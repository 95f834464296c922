"""RecBole atomic files, checked as the dataset is read, and the data they leave.

RecBole's reader (``Dataset._load_feat``) splits the first line on ``field_separator`` and each
column on ``:``, then hands the file to pandas, so a header it does not expect, a missing id
column or a time that is not a number fails inside RecBole or pandas with a traceback, and some
damage passes silently (a row with an extra field loses it; a row with a missing field gets the
column's mean). :func:`read_dataset` first reads each atomic file RecBole is about to read
(:func:`check_atomic_files`) and raises :class:`~recbole_hymoe.errors.AtomicFileError` naming the
file, the line or column and the fix; it does the same when RecBole's filters leave no
interaction or no user has a training sample. :func:`check_split` refuses, before training, a
validation or test split that came out empty and a ``topk`` above the number of items.

Handled, not refused (what editors and spreadsheet exports produce):

- a UTF-8 byte-order mark: the files are read as ``utf-8-sig`` (:func:`bom_encoding`, applied by
  :class:`~recbole_hymoe.config.Config`);
- Windows (CRLF) line endings and blank lines: RecBole's reader takes them as they are;
- an empty value in a column other than the ids and the time: RecBole fills it (a float column's
  mean, an empty token).

Refused: an empty file or one with a header only; a header column that is not ``name:type`` with
type ``token``, ``token_seq``, ``float`` or ``float_seq`` (a comma- or semicolon-separated header
names the ``--field_separator`` to pass); duplicate columns; a missing or non-token id column (or
one ``load_col`` leaves out); a time column that is not ``float``; bytes the encoding cannot
decode; a row with more or fewer fields than the header; an empty id; a float value (a time
above all) that is not a number.
"""

import codecs
import functools
import os
from logging import getLogger
from pathlib import Path

from recbole.utils import FeatureType, ModelType

from recbole_hymoe.errors import AtomicFileError, ConfigError, listing

FEATURE_TYPES = tuple(t.value for t in FeatureType)
# Separators a header may use instead of field_separator, named for the message.
SEPARATORS = {"\t": "tab", ",": "comma", ";": "semicolon", "|": "bar", " ": "space"}
MAX_LISTED = 5  # bad rows quoted per file; the rest are counted
_BOM = codecs.BOM_UTF8


def _show(separator):
    return repr(separator).strip("'")


def atomic_paths(config):
    """The atomic files RecBole will read for ``config``, as ``(path, source)`` pairs.

    ``source`` is ``inter``, ``user``, ``item`` or an ``additional_feat_suffix``; ``.user`` and
    ``.item`` count only when they exist and ``load_col`` loads them (RecBole's rule).
    """
    folder, name = Path(config["data_path"]), config["dataset"]
    suffixes = config["benchmark_filename"]
    paths = [(folder / (f"{name}.{s}.inter" if s else f"{name}.inter"), "inter") for s in suffixes or [None]]
    load_col = config["load_col"]
    for source in ("user", "item"):
        path = folder / f"{name}.{source}"
        if path.is_file() and (load_col is None or source in load_col):
            paths.append((path, source))
    extra = config["additional_feat_suffix"]
    for suffix in [extra] if isinstance(extra, str) else extra or []:
        paths.append((folder / f"{name}.{suffix}", suffix))
    return [(path, source) for path, source in paths if path.is_file()]


def bom_encoding(config):
    """``'utf-8-sig'`` when an atomic file starts with a UTF-8 byte-order mark and the encoding is
    UTF-8 (or unset), else None.

    Spreadsheet "CSV UTF-8" exports start with the mark; read as plain UTF-8 it sticks to the
    first column's name and RecBole cannot find the user id column.
    """
    if _decoding(config["encoding"]) != "utf-8-sig":
        return None
    for path, _ in atomic_paths(config):
        with open(path, "rb") as f:
            if f.read(len(_BOM)) == _BOM:
                return "utf-8-sig"
    return None


def _decoding(encoding):
    """The codec for files written in ``encoding`` (None: UTF-8), skipping a UTF-8 byte-order mark."""
    encoding = encoding or "utf-8"
    return "utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding


def header_fields(path, config):
    """Field names in the header of ``path`` as RecBole splits it, or None if it is not readable."""
    try:
        with open(path, encoding=_decoding(config["encoding"])) as f:
            line = f.readline().rstrip("\r\n")
    except (OSError, UnicodeDecodeError, LookupError):
        return None
    separator = config["field_separator"] or "\t"
    return {column.split(":")[0] for column in line.split(separator)}


def check_atomic_files(config):
    """Read every atomic file RecBole will read and refuse one it would choke on.

    Raises:
        AtomicFileError: naming each file's problems (line, column, value) and the fix.
    """
    extra = config["additional_feat_suffix"]
    for suffix in [extra] if isinstance(extra, str) else extra or []:
        path = Path(config["data_path"]) / f"{config['dataset']}.{suffix}"
        if not path.is_file():
            raise AtomicFileError(f"additional_feat_suffix names {suffix!r}, but {path} does not exist")
    for path, source in atomic_paths(config):
        load = _columns_setting(config["load_col"], source)
        unload = _columns_setting(config["unload_col"], source)
        stat = os.stat(path)
        _check_file(str(path), (stat.st_mtime_ns, stat.st_size), source, config["field_separator"],
                    config["seq_separator"], config["encoding"] or "utf-8", config["USER_ID_FIELD"],
                    config["ITEM_ID_FIELD"], config["TIME_FIELD"], load, unload)


def _columns_setting(setting, source):
    """``load_col``/``unload_col`` of one file as a hashable value (None: no restriction)."""
    if setting is None or source not in setting:
        return None
    columns = setting[source]
    return "*" if columns == "*" else tuple(columns)


@functools.lru_cache(maxsize=16)
def _check_file(path, stamp, source, separator, seq_separator, encoding, uid, iid, time_field, load, unload):
    """Check one file (cached on its path, size and time stamp, and the settings that read it)."""
    raw = Path(path).read_bytes()
    if not raw.strip():
        raise AtomicFileError(
            f"{path} is empty: an atomic file starts with a header of {_show(separator)}-separated name:type "
            f"columns, e.g. user_id:token{_show(separator)}item_id:token{_show(separator)}timestamp:float, "
            "then one row per line")
    try:
        text = raw.decode(_decoding(encoding))
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise AtomicFileError(
            f"{path}, line {line}: byte 0x{raw[err.start]:02x} is not valid {encoding}: re-save the file as "
            "UTF-8, or pass --encoding=<its encoding> (e.g. --encoding=latin-1)") from None
    lines = [line.rstrip("\r") for line in text.split("\n")]  # splitlines() would also split at \x85, \x0c, …
    columns, problems = _header(lines[0], separator, source, uid, iid, time_field, load, unload)
    if problems:
        raise AtomicFileError(listing(f"{path}, line 1 (header)", problems))
    problems, count = _rows(lines, separator, seq_separator, columns, load, unload, (uid, iid), time_field)
    if count > len(problems):
        raise AtomicFileError(f"{path}: {count} bad lines, the first {len(problems)}:\n  " + "\n  ".join(problems))
    if problems:
        raise AtomicFileError(listing(f"{path}", problems))


def _header(line, separator, source, uid, iid, time_field, load, unload):
    """Parse a header; return ``[(name, type)]`` and its problems."""
    parts = line.split(separator)
    if len(parts) == 1:
        for other, word in SEPARATORS.items():
            if other != separator and _looks_like_header(line.split(other)):
                quoted = " and without quotes" if '"' in line else ""
                return [], [f"the columns are separated by {word}s, not by field_separator "
                            f"'{_show(separator)}': pass --field_separator='{_show(other)}' (RecBole reads every "
                            f"atomic file of the dataset with it), or save the file "
                            f"{SEPARATORS.get(separator, repr(separator))}-separated{quoted}"]
    columns, problems = [], []
    for part in parts:
        name, colon, kind = part.partition(":")
        if not colon or not name or ":" in kind:
            problems.append(f"column {part!r} is not name:type (type one of {', '.join(FEATURE_TYPES)})")
        elif kind not in FEATURE_TYPES:
            problems.append(f"column {name!r} has type {kind!r}: use one of {', '.join(FEATURE_TYPES)} "
                            "(ids and other labels are token, numbers and times float)")
        else:
            columns.append((name, kind))
    names = [name for name, _ in columns]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        problems.append(f"column(s) {duplicated} appear twice: rename one")
    if problems:
        return columns, problems
    types = dict(columns)
    required = {"inter": [("USER_ID_FIELD", uid), ("ITEM_ID_FIELD", iid)], "user": [("USER_ID_FIELD", uid)],
                "item": [("ITEM_ID_FIELD", iid)]}.get(source, [])
    for key, field in required:
        if field not in types:
            problems.append(f"there is no {field!r} column (the columns are {', '.join(names)}): name the column "
                            f"{field}:token, or set {key} to its name")
        elif types[field] != "token":
            problems.append(f"the id column {field!r} has type {types[field]!r}: ids must be token")
        elif not _loaded(field, load, unload):
            problems.append(f"load_col/unload_col leave out the id column {field!r}: load it")
    if time_field in types and types[time_field] != "float" and _loaded(time_field, load, unload):
        problems.append(f"the time column {time_field!r} has type {types[time_field]!r}: times must be float "
                        "(numbers such as Unix seconds)")
    return columns, problems


def _looks_like_header(parts):
    parts = [p.strip('"') for p in parts]
    return len(parts) > 1 and all(p.partition(":")[2] in FEATURE_TYPES and p.partition(":")[0] for p in parts)


def _loaded(field, load, unload):
    return (load is None or load == "*" or field in load) and (unload is None or field not in unload)


def _rows(lines, separator, seq_separator, columns, load, unload, ids, time_field):
    """Problems of the data rows: field counts, empty ids, values of float columns that are not numbers.

    Returns:
        tuple[list[str], int]: the first ``MAX_LISTED`` problems, and the number of bad rows.
    """
    width = len(columns)
    checks = [(i, name, kind) for i, (name, kind) in enumerate(columns)
              if _loaded(name, load, unload) and (name in ids or kind in ("float", "float_seq"))]
    bad, count, rows = [], 0, 0
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue  # pandas skips blank lines
        rows += 1
        values = line.split(separator)
        problem = None
        if len(values) != width:
            problem = (f"line {number} has {len(values)} fields, the header {width} (a stray or missing "
                       f"'{_show(separator)}'?)")
        else:
            for i, name, kind in checks:
                problem = _value_problem(values[i], name, kind, ids, time_field, seq_separator)
                if problem:
                    problem = f"line {number}: {problem}"
                    break
        if problem:
            count += 1
            if len(bad) < MAX_LISTED:
                bad.append(problem)
    if rows == 0:
        return ["has a header but no rows"], 1
    return bad, count


def _value_problem(value, name, kind, ids, time_field, seq_separator):
    if name in ids:
        return None if value.strip() else f"empty {name}"
    if kind == "float_seq":
        pieces = [p for p in value.split(seq_separator) if p]
    elif not value.strip():
        return f"empty {name}: every interaction needs its time" if name == time_field else None
    else:
        pieces = [value]
    for piece in pieces:
        try:
            float(piece)
        except ValueError:
            fix = " (times must be numbers, e.g. Unix seconds)" if name == time_field else ""
            return f"{name} {piece!r} is not a number{fix}"
    return None


FILTER_KEYS = ("user_inter_num_interval", "item_inter_num_interval", "val_interval", "rm_dup_inter")


def read_dataset(config, build):
    """Check the atomic files, read the dataset with ``build(config)``, check what is left.

    Args:
        config (Config): the run's config.
        build (callable): makes the RecBole dataset, e.g. ``recbole.data.create_dataset``.

    Returns:
        Dataset: the dataset, filtered and not yet split.

    Raises:
        AtomicFileError: a file RecBole cannot read (:func:`check_atomic_files`), RecBole's
            filters leave no interaction, or no user has a training sample.
    """
    check_atomic_files(config)
    inter = _inter_files(config)
    try:
        dataset = build(config)
    except ValueError as err:
        if "Some feat is empty" not in str(err):  # RecBole 1.2.1's words for data its filters emptied
            raise
        filters = ", ".join(f"{key}={config[key]!r}" for key in FILTER_KEYS if config[key] is not None)
        raise AtomicFileError(f"{inter}: RecBole's filters leave no interaction ({filters or 'no filter set'}): "
                              "relax them") from None
    if config["MODEL_TYPE"] == ModelType.SEQUENTIAL and not config["benchmark_filename"]:
        counts = dataset.inter_feat[dataset.uid_field].value_counts()
        single = int((counts < 2).sum())
        if single == len(counts):
            raise AtomicFileError(
                f"{inter}: no user has two interactions, so a sequential model has nothing to train on "
                "(a user's first item is never a target, and leave-one-out keeps the last one or two for "
                "validation and test): add interactions, or relax user_inter_num_interval / item_inter_num_interval")
        if single:
            getLogger().warning(f"{single} of {len(counts)} users have a single interaction: a sequential model "
                                "has no target for them, so they take no part in training or evaluation")
    return dataset


def _inter_files(config):
    return ", ".join(str(path) for path, source in atomic_paths(config) if source == "inter")


def check_split(config, dataset, valid_data, test_data):
    """Refuse a validation or test split ``eval_args`` asks for that came out empty, or a ``topk``
    above the items that full ranking orders (RecBole's evaluator would fail on either after
    training); called before a model is trained and evaluated.

    Raises:
        AtomicFileError: an empty validation or test split.
        ConfigError: a ``topk`` cut-off above the number of items.
    """
    split = config["eval_args"]["split"]
    kind, arg = next(iter(split.items()))
    wanted = {"valid": arg in ("valid_and_test", "valid_only"), "test": arg in ("valid_and_test", "test_only")} \
        if kind == "LS" else {"valid": arg[1] > 0, "test": arg[2] > 0}
    for phase, data in (("valid", valid_data), ("test", test_data)):
        if wanted[phase] and len(data._dataset) == 0:
            raise AtomicFileError(
                f"{_inter_files(config)}: the {phase} split is empty (eval_args={config['eval_args']!r}): users "
                "have too few interactions for it; add interactions per user, or choose a split without it "
                "(e.g. {'LS': 'test_only'})")
    items = dataset.item_num - 1  # id 0 is RecBole's padding
    if "full" in config["eval_args"]["mode"].values() and max(config["topk"]) > items:
        raise ConfigError(f"topk={config['topk']!r} asks for more items than the {items} items of dataset "
                          f"{config['dataset']!r} that full ranking orders: use cut-offs <= {items}")
