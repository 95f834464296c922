"""RecBole 1.2.1 repairs: each test fails when only its repair is left out.

Tests that need a process without one repair run in a subprocess with
``RECBOLE_HYMOE_SKIP_REPAIRS=<name>``; the same code passes with every repair applied.
"""

import importlib.metadata
import textwrap

import numpy as np
import pytest
import torch
from conftest import ML100K_INTER, run_python

from recbole_hymoe import compat


def run_without(repair, code, cwd):
    env = {"RECBOLE_HYMOE_SKIP_REPAIRS": repair} if repair else {}
    return run_python(textwrap.dedent(code), cwd=cwd, env=env)


def assert_needs(repair, code, cwd, failure):
    """``code`` passes with every repair, and fails with ``failure`` in stderr without ``repair``."""
    fixed = run_without(None, code, cwd)
    assert fixed.returncode == 0, fixed.stderr[-3000:]
    assert "OK" in fixed.stdout
    broken = run_without(repair, code, cwd)
    assert broken.returncode != 0, f"passed without the {repair} repair"
    assert failure in broken.stderr, broken.stderr[-3000:]


def write_gappy_dataset(root):
    """A dataset with NaN gaps in a float, a token and a token_seq column (F4, F5, F6)."""
    folder = root / "gappy"
    folder.mkdir()
    lines = ML100K_INTER.read_text().splitlines()
    header, rows = lines[0], [line for line in lines[1:] if int(line.split("\t")[0]) <= 60]
    out = [header]
    for i, row in enumerate(rows):
        user, item, rating, stamp = row.split("\t")
        out.append("\t".join([user, item, "" if i % 10 == 0 else rating, stamp]))
    (folder / "gappy.inter").write_text("\n".join(out) + "\n")
    items = sorted({row.split("\t")[1] for row in rows}, key=int)
    item_lines = ["item_id:token\tprice:float\tbrand:token\tgenre:token_seq"]
    for i, item in enumerate(items):
        price = "" if i % 7 == 0 else str(1.0 + i % 5)
        brand = "" if i % 5 == 0 else f"b{i % 3}"
        genre = "" if i % 4 == 0 else ["a", "b c", "c", "a b"][i % 4]
        item_lines.append("\t".join([item, price, brand, genre]))
    (folder / "gappy.item").write_text("\n".join(item_lines[:-20]) + "\n")  # last items lack features
    return root


GAPPY_CODE = """
import math, recbole_hymoe
from recbole_hymoe import Config
from recbole.data import create_dataset
config = Config("SASRec", "gappy", config_dict={{"data_path": {root!r}, "state": "ERROR",
    "load_col": {{"inter": ["user_id", "item_id", "rating", "timestamp"],
                  "item": ["item_id", "price", "brand", "genre"]}}}})
dataset = create_dataset(config)
assert int(dataset.inter_feat["rating"].isna().sum()) == 0, "rating NaN"
assert int(dataset.item_feat["price"].isna().sum()) == 0, "price NaN"
assert int(dataset.item_feat["brand"].isna().sum()) == 0, "brand NaN"
genre = list(dataset.field2id_token["genre"])
assert genre[0] == "[PAD]" and sorted(genre[1:]) == ["a", "b", "c"], genre
dataset._change_feat_format()
assert int(dataset.item_feat["brand"].min()) >= 0, "negative brand id"
print("OK")
"""


def test_numpy2_config_builds_and_numpy_stays_clean(mini_data_path):
    from recbole_hymoe import Config

    Config("SASRec", "mini", config_dict={"data_path": str(mini_data_path)})
    assert not hasattr(np, "float_") and "float" not in np.__dict__
    import recbole.evaluator.metrics as metrics

    assert metrics.np.float is np.float64 and metrics.np.bool is np.bool_


def test_numpy_repair_is_needed_for_config(tmp_path, mini_data_path):
    code = f"""
    import recbole_hymoe
    from recbole_hymoe import Config
    Config("SASRec", "mini", config_dict={{"data_path": {str(mini_data_path)!r}}})
    print("OK")
    """
    assert_needs("numpy", code, tmp_path, "np.float_")


def test_metrics_work_in_a_process_that_never_built_a_config(tmp_path):
    code = """
    import numpy as np, recbole_hymoe
    from recbole.evaluator.metrics import MRR, NDCG
    pos_index = np.array([[True, False, False], [False, False, True]])
    pos_len = np.array([1, 1])
    ndcg = NDCG.metric_info(None, pos_index, pos_len)
    mrr = MRR.metric_info(None, pos_index)
    assert np.allclose(ndcg[:, -1], [1.0, 0.5]), ndcg
    assert np.allclose(mrr[:, -1], [1.0, 1 / 3]), mrr
    print("OK")
    """
    assert_needs("numpy", code, tmp_path, "has no attribute 'float'")


def test_float_and_token_nans_are_filled(tmp_path):
    root = write_gappy_dataset(tmp_path)
    assert_needs("fillna", GAPPY_CODE.format(root=str(root)), tmp_path, "NaN")


@pytest.mark.parametrize("repair,failure", [("seqfill", "has no attribute 'split'"), ("agglen", "Length of values")])
def test_empty_token_seq_cell_and_seq_remap(tmp_path, repair, failure):
    root = write_gappy_dataset(tmp_path)
    assert_needs(repair, GAPPY_CODE.format(root=str(root)), tmp_path, failure)


@pytest.mark.integration
def test_fit_evaluate_best_and_reload_in_a_fresh_process(tmp_path, mini_data_path):
    code = f"""
    import recbole_hymoe
    from recbole_hymoe import run
    result = run("SASRec", "mini", config_dict={{"data_path": {str(mini_data_path)!r}, "epochs": 1,
        "hidden_size": 16, "inner_size": 32, "MAX_ITEM_LIST_LENGTH": 20, "show_progress": False,
        "state": "ERROR", "checkpoint_dir": {str(tmp_path / "saved")!r}}})
    from recbole.quick_start import load_data_and_model
    config, model, dataset, train_data, valid_data, test_data = load_data_and_model(result["checkpoint"])
    print("OK")
    """
    assert_needs("torchload", code, tmp_path, "Weights only load failed")


def test_torch_load_keeps_the_safe_default_outside_recbole(tmp_path):
    path = tmp_path / "object.pth"
    torch.save({"value": compat.RecBoleVersionError("x")}, path)  # a pickled class, not a tensor
    with pytest.raises(Exception, match="Weights only load failed"):
        torch.load(path)
    assert torch.load(path, weights_only=False)["value"].args == ("x",)


def test_series_agg_len_is_unchanged_outside_recbole():
    import pandas as pd

    series = pd.Series([[1, 2], [3]])
    assert series.agg(len) == 2  # pandas 3 semantics for everyone but RecBole


def test_repairs_are_idempotent():
    before = torch.load
    compat.apply()
    compat.apply()
    assert torch.load is before
    assert not hasattr(torch.load.__recbole_hymoe_original__, "__recbole_hymoe_original__")
    assert compat.applied() >= {"numpy", "torchload", "fillna", "seqfill", "agglen", "gradscaler"}


def test_an_unexpected_recbole_version_is_refused(monkeypatch):
    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "1.2.0" if name == "recbole" else real(name))
    with pytest.raises(compat.RecBoleVersionError, match=r"recbole 1\.2\.0 is installed.*recbole==1\.2\.1"):
        compat.apply()


def test_gradscaler_is_the_non_deprecated_one():
    import warnings

    import recbole.trainer.trainer as trainer_module

    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        scaler = trainer_module.amp.GradScaler(enabled=False)
    assert isinstance(scaler, torch.amp.GradScaler)


def test_clean_argv_hides_the_command_line(monkeypatch):
    import sys

    monkeypatch.setattr(sys, "argv", ["prog", "--learning_rate=0.5"])
    with compat.clean_argv():
        assert sys.argv == ["prog"]
    assert sys.argv == ["prog", "--learning_rate=0.5"]


def test_autograd_anomaly_detection_is_switched_back_off(tmp_path):
    # RecBole's sine.py turns it on for the whole process when its models are imported.
    code = """
    import torch, recbole_hymoe
    assert not torch.is_anomaly_enabled(), "anomaly detection on"
    print("OK")
    """
    assert_needs("anomaly", code, tmp_path, "anomaly detection on")
