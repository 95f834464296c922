"""Shared fixtures: seeds, a small real dataset cut from RecBole's ml-100k, tiny configs."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import recbole
import torch

import recbole_hymoe  # noqa: F401  (repairs RecBole and registers the plugin models)

REPO = Path(__file__).resolve().parent.parent
ML100K_INTER = Path(recbole.__file__).parent / "dataset_example" / "ml-100k" / "ml-100k.inter"
SHARED_DATA = REPO.parent / "shared" / "data"

# Small but real: the first users of RecBole's bundled ml-100k copy (real timestamps).
MINI_USERS = 120


def write_user_slice(source, target_dir, name, n_users):
    """Write the interactions of the first ``n_users`` user ids of ``source`` as ``<name>.inter``."""
    target_dir = Path(target_dir) / name
    target_dir.mkdir(parents=True, exist_ok=True)
    with open(source, newline="", encoding="utf-8") as src, open(
        target_dir / f"{name}.inter", "w", newline="", encoding="utf-8"
    ) as dst:
        reader = csv.reader(src, delimiter="\t")
        writer = csv.writer(dst, delimiter="\t", lineterminator="\n")
        header = next(reader)
        writer.writerow(header)
        for row in reader:
            if int(row[0]) <= n_users:
                writer.writerow(row)
    return target_dir.parent


@pytest.fixture(autouse=True)
def seed():
    """Seed torch for every test; returns the seed."""
    torch.manual_seed(0)
    return 0


@pytest.fixture(scope="session")
def mini_data_path(tmp_path_factory):
    """Folder holding dataset ``mini`` (120 ml-100k users, 12.7k interactions)."""
    return write_user_slice(ML100K_INTER, tmp_path_factory.mktemp("data"), "mini", MINI_USERS)


@pytest.fixture
def tiny_config(mini_data_path, tmp_path):
    """Overrides for fast runs on ``mini``: small model, short sequences, 1 epoch, quiet."""
    return {
        "data_path": str(mini_data_path),
        "checkpoint_dir": str(tmp_path / "saved"),
        "epochs": 1,
        "MAX_ITEM_LIST_LENGTH": 20,
        "hidden_size": 16,
        "inner_size": 32,
        "train_batch_size": 512,
        "eval_batch_size": 512,
        "show_progress": False,
        "state": "ERROR",
        "seed": 2020,
    }


def run_python(code, cwd=None, env=None, timeout=600):
    """Run ``code`` in a fresh interpreter of this environment; return the CompletedProcess."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )


def run_cli(args, cwd, timeout=600):
    """Run the installed ``run_recbole`` console script; return the CompletedProcess."""
    script = Path(sys.executable).parent / "run_recbole"
    return subprocess.run([str(script), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def build_data(model, overrides):
    """Config, dataset and loaders for ``model`` with ``overrides`` (RecBole's own pipeline)."""
    from recbole_hymoe import Config
    from recbole_hymoe.data import prepare_data

    config = Config(model=model, dataset=overrides.get("dataset", "mini"), config_dict=overrides)
    dataset, train_data, valid_data, test_data = prepare_data(config)
    return config, dataset, train_data, valid_data, test_data


def build_model(model, overrides, dataset, **extra):
    """Plugin model ``model`` (a class) configured by ``overrides`` and ``extra`` on ``dataset``.

    ``dataset`` is a RecBole dataset from :func:`build_data` (e.g. ``train_data._dataset``); the
    model is in training mode, as RecBole builds it.
    """
    from recbole_hymoe import Config

    config = Config(model.__name__, overrides.get("dataset", "mini"), config_dict={**overrides, **extra})
    return model(config, dataset)


def first_batch(loader):
    """The first training batch of a RecBole loader."""
    return next(iter(loader))
