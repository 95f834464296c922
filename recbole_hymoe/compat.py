"""Repairs that let RecBole 1.2.1 run on numpy 2, pandas 3, torch >= 2.6 and Ray 2.x.

Every repair is applied from outside RecBole (no file in site-packages changes), only once per
process, and only to RecBole: other libraries keep the behaviour of the installed numpy, pandas
and torch. The catalogue (F1..F12) is documented in the project README ("Compatibility").

| repair      | fixes | what it patches                                                          |
|-------------|-------|--------------------------------------------------------------------------|
| numpy       | F1 F2 | module-level ``np`` of four RecBole modules -> numpy with the 1.x aliases; |
|             |       | ``Config.compatibility_settings`` -> no-op (it edits global numpy)       |
| torchload   | F3    | ``torch.load`` defaults to ``weights_only=False`` for ``recbole.*`` callers |
| fillna      | F4    | ``Dataset._fill_nan`` written with assignments (copy-on-write safe)      |
| seqfill     | F5    | ``pd.read_csv`` seen by ``recbole.data.dataset.dataset`` fills ``*seq`` NaN |
| agglen      | F6    | ``Series.agg(len)`` is row-wise again for ``recbole.*`` callers          |
| gradscaler  | F11   | ``amp`` of ``recbole.trainer.trainer`` -> ``torch.amp.GradScaler("cuda")`` |
| anomaly     | new   | ``recbole.model.sequential_recommender.sine`` calls                      |
|             |       | ``torch.autograd.set_detect_anomaly(True)`` at import, so every RecBole   |
|             |       | process records a stack trace per op and NaN-checks every gradient        |
|             |       | (measured: ≈ 25 % of a training step); switched back off                  |
| warnings    | F5 F11| silence two harmless warnings raised inside RecBole only: torch's "NumPy  |
|             |       | array is not writable" (the DataFrame is discarded right after) and the   |
|             |       | ``ChainedAssignmentError`` of the no-op ``fillna`` that seqfill replaces  |

F9 (``Config`` reads ``sys.argv``) and F12 (``CUDA_VISIBLE_DEVICES`` overwritten, checkpoint name
collisions) are handled where they bite: :class:`recbole_hymoe.config.Config` never reads
``sys.argv`` and keeps a device mask set by the environment, and every run gets its own
checkpoint folder. F8 (RecBole's Ray path) is avoided: :mod:`recbole_hymoe.tuning` drives Ray
Tune directly. ``clean_argv`` is offered for code that must build RecBole's own ``Config``.
"""

import contextlib
import functools
import importlib
import importlib.metadata
import sys
import types
import warnings

import numpy as np
import pandas as pd
import torch

SUPPORTED_RECBOLE = "1.2.1"

# numpy 1.x aliases RecBole still uses, mapped to the targets RecBole's own shim chose.
_NUMPY_ALIASES = {
    "float": np.float64,
    "float_": np.float64,
    "int": np.int_,
    "bool": np.bool_,
    "object": np.object_,
    "str": np.str_,
    "long": np.int_,
    "unicode": np.str_,
    "unicode_": np.str_,
    "complex": np.complex128,
    "complex_": np.complex128,
}
_NUMPY_USERS = (
    "recbole.evaluator.metrics",
    "recbole.data.interaction",
    "recbole.data.dataset.dataset",
    "recbole.trainer.hyper_tuning",
)

_applied = set()


class RecBoleVersionError(ImportError):
    """The installed RecBole is not the release these repairs were written and tested for."""


def _caller_module(depth):
    """Return ``__name__`` of the module ``depth`` frames above the caller of this function."""
    frame = sys._getframe(depth + 1)
    return frame.f_globals.get("__name__", "") or ""


class _NumpyWithAliases(types.ModuleType):
    """Stand-in for ``numpy`` inside RecBole modules: numpy plus the removed 1.x aliases."""

    def __init__(self):
        super().__init__("numpy")
        self.__dict__.update(_NUMPY_ALIASES)

    def __getattr__(self, name):
        return getattr(np, name)


def _repair_numpy():
    from recbole.config.configurator import Config

    Config.compatibility_settings = lambda self: None
    stand_in = _NumpyWithAliases()
    for name in _NUMPY_USERS:
        module = importlib.import_module(name)
        module.np = stand_in


def _repair_torchload():
    original = torch.load

    @functools.wraps(original)
    def load(*args, **kwargs):
        # RecBole pickles its whole Config with protocol 4; torch's weights-only unpickler
        # rejects that framing before it looks at the classes, so allowlisting cannot help.
        if "weights_only" not in kwargs and _caller_module(1).startswith("recbole."):
            kwargs["weights_only"] = False
        return original(*args, **kwargs)

    load.__recbole_hymoe_original__ = original
    torch.load = load


def _fill_nan(self):
    """``Dataset._fill_nan`` with assignments, so pandas copy-on-write keeps the filled values."""
    for feat_name in self.feat_name_list:
        feat = getattr(self, feat_name)
        for field in feat:
            ftype = self.field2type[field]
            if ftype.value == "token":
                feat[field] = feat[field].fillna(value=0)
            elif ftype.value == "float":
                feat[field] = feat[field].fillna(value=feat[field].mean())
            else:
                dtype = np.int64 if ftype.value == "token_seq" else np.float64
                feat[field] = feat[field].apply(
                    lambda x: np.array([], dtype=dtype) if isinstance(x, float) else x
                )


def _repair_fillna():
    from recbole.data.dataset.dataset import Dataset

    Dataset._fill_nan = _fill_nan


class _PandasWithSeqFill(types.ModuleType):
    """Stand-in for ``pandas`` inside ``recbole.data.dataset.dataset``.

    Its ``read_csv`` fills empty ``*_seq`` cells with ``""`` right after reading, which is what
    RecBole's ``fillna(inplace=True)`` no longer does under copy-on-write.
    """

    def __init__(self):
        super().__init__("pandas")

    def __getattr__(self, name):
        return getattr(pd, name)

    @staticmethod
    def read_csv(*args, **kwargs):
        df = pd.read_csv(*args, **kwargs)
        seq_columns = [c for c in df.columns if str(c).endswith("seq")]
        if seq_columns:
            df[seq_columns] = df[seq_columns].fillna("")
        return df


def _repair_seqfill():
    module = importlib.import_module("recbole.data.dataset.dataset")
    module.pd = _PandasWithSeqFill()


def _row_wise_len(original):
    @functools.wraps(original)
    def agg(self, func=None, *args, **kwargs):
        # pandas 3 turned Series.agg(len) into len(Series); RecBole wants one length per row.
        if func is len and not args and not kwargs and _caller_module(1).startswith("recbole."):
            return self.map(len)
        return original(self, func, *args, **kwargs)

    agg.__recbole_hymoe_original__ = original
    return agg


def _repair_agglen():
    for name in ("agg", "aggregate"):
        setattr(pd.Series, name, _row_wise_len(getattr(pd.Series, name)))


class _AmpWithDeviceScaler(types.ModuleType):
    """Stand-in for ``torch.cuda.amp`` in RecBole's trainer: the non-deprecated GradScaler."""

    def __init__(self):
        super().__init__("torch.cuda.amp")

    @staticmethod
    def GradScaler(*args, **kwargs):  # noqa: N802 - mirrors torch's class name
        return torch.amp.GradScaler("cuda", *args, **kwargs)


def _repair_gradscaler():
    # torch.cuda.amp.GradScaler(...) is deprecated (FutureWarning on every epoch) and will go.
    importlib.import_module("recbole.trainer.trainer").amp = _AmpWithDeviceScaler()


def _repair_anomaly():
    # Importing RecBole's sequential models imports SINE, whose module turns autograd anomaly
    # detection on for the whole process. Turn it off again; a user who wants anomaly mode
    # enables it after importing recbole_hymoe.
    importlib.import_module("recbole.model.sequential_recommender")
    torch.autograd.set_detect_anomaly(False)


def _repair_warnings():
    warnings.filterwarnings(
        "ignore", message="The given NumPy array is not writable", category=UserWarning, module=r"recbole\."
    )
    warnings.filterwarnings("ignore", category=pd.errors.ChainedAssignmentError, module=r"recbole\.")


REPAIRS = {
    "numpy": _repair_numpy,
    "torchload": _repair_torchload,
    "fillna": _repair_fillna,
    "seqfill": _repair_seqfill,
    "agglen": _repair_agglen,
    "gradscaler": _repair_gradscaler,
    "anomaly": _repair_anomaly,
    "warnings": _repair_warnings,
}


def check_recbole_version():
    """Raise :class:`RecBoleVersionError` unless RecBole 1.2.1 is installed."""
    try:
        version = importlib.metadata.version("recbole")
    except importlib.metadata.PackageNotFoundError as err:
        raise RecBoleVersionError(
            f"recbole is not installed; recbole_hymoe needs recbole=={SUPPORTED_RECBOLE} "
            f"(install it with `pip install --no-deps recbole=={SUPPORTED_RECBOLE}`, see README)"
        ) from err
    if version != SUPPORTED_RECBOLE:
        raise RecBoleVersionError(
            f"recbole {version} is installed, but recbole_hymoe's compatibility repairs were written "
            f"and tested for recbole=={SUPPORTED_RECBOLE} only; install that release "
            f"(`pip install --no-deps recbole=={SUPPORTED_RECBOLE}`)"
        )


def apply(skip=()):
    """Apply every repair not yet applied in this process (idempotent).

    Args:
        skip (Iterable[str]): names from :data:`REPAIRS` to leave out (used by tests that show
            what breaks without one repair).

    Raises:
        RecBoleVersionError: the installed RecBole is not 1.2.1.
    """
    check_recbole_version()
    for name, repair in REPAIRS.items():
        if name in skip or name in _applied:
            continue
        repair()
        _applied.add(name)


def applied():
    """Return the names of the repairs active in this process."""
    return frozenset(_applied)


@contextlib.contextmanager
def clean_argv():
    """Hide ``sys.argv[1:]`` while RecBole's own ``Config`` is built (F9).

    RecBole's ``Config`` parses every ``--key=value`` of the process command line and ranks it
    above config files and dicts, so a driver's or a Ray worker's arguments leak into it.
    """
    saved = sys.argv[:]
    sys.argv[1:] = []
    try:
        yield
    finally:
        sys.argv[:] = saved
