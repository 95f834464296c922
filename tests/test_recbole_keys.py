"""Every key the package or RecBole reads: a wrong value fails before any data loads.

The property test throws a generated set of wrong values (wrong type, negative, zero, empty,
huge, non-finite, None, an unknown name) at every declared key, through the ``run_recbole``
entry point in-process, and asserts exit code 2, the key named on stderr, no exception, and
nothing written. The targeted tests pin the rules to what RecBole itself does with each value.
"""

import contextlib
import io

import pytest
import torch

from recbole_hymoe import Config, registry
from recbole_hymoe.cli import run_recbole_main
from recbole_hymoe.config import recbole_known_keys
from recbole_hymoe.errors import ConfigError
from recbole_hymoe.recbole_keys import RECBOLE_PARAMS, computed_metrics

# As typed after --key= (parsed by the CLI): an unknown name, negative, zero, empty, the wrong
# container, infinite, huge, None, a boolean, a list holding zero.
WRONG_VALUES = ("unknown_name", "-1", "0", "''", "[]", "1e400", "123456789012345678901234", "none", "True", "[0]")
SEQ_EVAL = "{'split': {'LS': 'valid_and_test'}, 'order': 'RO', 'mode': 'full'}"


def _check(params, key):
    return next(p.check for p in params if p.key == key)


def _refused(check, text):
    from recbole_hymoe.config import parse_value

    try:
        check(parse_value(text))
    except ValueError:
        return True
    return False


def _cases():
    """(model, key, wrong values its rule refuses) for every key."""
    cases, seen = [], set()
    for i, param in enumerate(RECBOLE_PARAMS):
        model = ("SASRec", "HyMoERec")[i % 2]  # RecBole's keys through a built-in and a plugin model
        cases.append((model, param.key, [text for text in WRONG_VALUES if _refused(param.check, text)]))
        seen.add(param.key)
    for model in registry.plugin_models():
        for param in registry.model_class(model).PARAMS:
            if param.key not in seen:
                seen.add(param.key)
                cases.append((model, param.key, [text for text in WRONG_VALUES if _refused(param.check, text)]))
    return cases


CASES = _cases()


def run_cli(args, tmp_path, monkeypatch):
    """Run ``run_recbole`` in-process in ``tmp_path``; return (exit code, stderr)."""
    monkeypatch.chdir(tmp_path)
    quiet = [f"--checkpoint_dir={tmp_path / 'saved'}", "--state=ERROR", "--show_progress=False"]
    given = {arg.split("=")[0] for arg in args}
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = run_recbole_main([*args, *(arg for arg in quiet if arg.split("=")[0] not in given)])
    return code, err.getvalue()


def test_every_key_refuses_several_wrong_values():
    thin = {key: texts for _, key, texts in CASES if len(texts) < 3}
    assert not thin, f"keys refusing fewer than 3 of the generated wrong values: {thin}"
    assert len(CASES) > 130 and sum(len(texts) for _, _, texts in CASES) > 1000


@pytest.mark.parametrize("model,key,texts", CASES, ids=[f"{m}-{k}" for m, k, _ in CASES])
def test_a_wrong_value_exits_2_naming_the_key_before_anything_is_written(tmp_path, monkeypatch, model, key, texts):
    for i, text in enumerate(texts):
        folder = tmp_path / str(i)
        folder.mkdir()
        code, stderr = run_cli([f"--model={model}", "--dataset=ml-100k", f"--{key}={text}"], folder, monkeypatch)
        assert code == 2, (text, stderr)
        assert stderr.startswith("run_recbole: error: ") and f"{key}=" in stderr, (text, stderr)
        assert "Traceback" not in stderr
        assert not any(folder.iterdir()), text  # no run folder, no log


@pytest.mark.parametrize("model", ["HyMoERec", "SASRec"])
def test_random_order_for_a_sequential_model_is_one_line_naming_eval_args(tmp_path, monkeypatch, model):
    code, stderr = run_cli([f"--model={model}", "--dataset=ml-100k", f"--eval_args={SEQ_EVAL}"], tmp_path, monkeypatch)
    assert code == 2
    assert len(stderr.strip().splitlines()) == 1
    assert "eval_args=" in stderr and "'order': 'TO'" in stderr


def test_all_problems_are_listed_in_one_message(tmp_path, monkeypatch):
    code, stderr = run_cli(["--model=HyMoERec", "--dataset=ml-100k", "--moe_top_k=9", "--learning_rate=-1",
                            "--metrics=['NDGC']", "--learner=adamm"], tmp_path, monkeypatch)
    assert code == 2
    assert "(4 problems)" in stderr
    for fragment in ("moe_top_k=9", "learning_rate=-1", "did you mean 'NDCG'", "learner='adamm'"):
        assert fragment in stderr


def test_misspelt_keys_are_refused_with_a_suggestion(tmp_path, monkeypatch):
    known = recbole_known_keys()
    for key in ("learning_rate", "train_batch_size", "MAX_ITEM_LIST_LENGTH", "valid_metric", "stopping_step",
                "eval_args", "checkpoint_dir", "moe_top_k", "hidden_dropout_prob"):
        typo = key[:-2] + key[-1]  # a dropped letter
        assert typo not in known
        code, stderr = run_cli(["--model=HyMoERec", "--dataset=ml-100k", f"--{typo}=1"], tmp_path, monkeypatch)
        assert code == 2 and f"did you mean {key!r}" in stderr, stderr


@pytest.mark.parametrize(
    "overrides,fragment",
    [
        # each of these fails inside RecBole or torch (most after loading the data) without the checks
        ({"eval_args": {"split": {"LS": "valid_and_test"}, "order": "RO"}}, "order 'RO' cannot be used"),
        ({"eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "none"}}, "group_by 'none'"),
        ({"eval_args": {"split": {"RS": [0.8, 0.2]}, "order": "TO"}}, "must be a list of 3 items for 'RS'"),
        ({"eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "uni0"}}, "mode 'uni0'"),
        ({"eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "labeled"},
          "eval_exclude_history": False}, "mode 'labeled' scores given pairs"),
        ({"eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "uni100"}},
         "works with mode 'full' only"),
        ({"eval_args": {"spilt": {"LS": "valid_and_test"}}}, "did you mean 'split'"),
        ({"metrics": ["Hit", "AUC"]}, "mixes ranking and value metrics"),
        ({"metrics": ["AUC"], "valid_metric": "auc"},
         "value metrics (['AUC']) score given pairs, which RecBole refuses"),
        ({"valid_metric": "NDCG@20"}, "valid_metric='NDCG@20' is not among the computed metrics"),
        ({"valid_metric": "NDCG"}, "valid_metric='NDCG' is not among the computed metrics"),
        ({"topk": [10, 0]}, "topk=[10, 0] must be a positive integer"),
        ({"repeatable": False}, "sequential models support only repeatable=True"),
        ({"train_neg_sample_args": {"distribution": "uniform", "sample_num": 1}},
         "should be None when the loss_type is CE"),
        ({"clip_grad_norm": 5.0}, "clip_grad_norm=5.0 must be a mapping"),
        ({"clip_grad_norm": {"max_norm": -1}}, "max_norm=-1 that must be > 0.0"),
        ({"seed": 2**32}, "seed=4294967296 must be <="),
        ({"learner": "adamm"}, "learner='adamm' must be one of"),
        ({"state": "verbose"}, "state='verbose' must be one of"),
        ({"user_inter_num_interval": "[5,inf"}, "malformed interval '[5,inf'"),
        ({"user_inter_num_interval": "[5,x)"}, "whose ends are not numbers"),
        ({"gpu_id": [0, 1]}, "gpu_id=[0, 1] must be ''"),
        ({"device": "cpu"}, "device='cpu' is not read"),
        ({"encoding": "utf-9"}, "encoding='utf-9' is not a text encoding"),
        ({"benchmark_filename": ["train", "test"]}, "benchmark_filename=['train', 'test'] must be a list of 3"),
        ({"hidden_dropout_prob": float("nan")}, "hidden_dropout_prob=nan must be a finite number"),
    ],
)
def test_rules_derived_from_recbole(mini_data_path, overrides, fragment):
    for model in ("SASRec", "HyMoERec"):
        if model == "SASRec" and "hidden_dropout_prob" in overrides:
            continue  # a plugin model's key
        with pytest.raises(ConfigError) as err:
            Config(model, "mini", config_dict={"data_path": str(mini_data_path), **overrides})
        assert fragment in str(err.value)


def test_checkpoint_dir_must_be_a_folder(tmp_path, mini_data_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="checkpoint_dir=.* is not a folder"):
        Config("SASRec", "mini",
               config_dict={"data_path": str(mini_data_path), "checkpoint_dir": str(blocker / "saved")})


@pytest.mark.parametrize(
    "overrides",
    [
        {"epochs": 0},  # RecBole tests the untrained model
        {"eval_step": 0},  # RecBole never validates
        {"learning_rate": 0},  # torch's optimizers accept it
        {"gpu_id": ""}, {"gpu_id": "0,1"}, {"gpu_id": (0, 1)}, {"gpu_id": 0},
        {"clip_grad_norm": {"max_norm": 5.0, "norm_type": "inf"}}, {"clip_grad_norm": {}},
        {"eval_args": {"split": {"RS": [0.8, 0.1, 0.1]}, "order": "TO", "mode": {"valid": "uni100"}},
         "eval_exclude_history": False},
        {"eval_args": {"split": {"TS": [0.8, 0.1, 0.1]}, "order": "TO"}},
        {"eval_args": {"split": {"LS": "test_only"}, "order": "TO", "group_by": "user", "mode": "full"}},
        {"metrics": "NDCG", "topk": 10, "valid_metric": "ndcg@10"},
        {"metrics": ["Hit", "GAUC", "ItemCoverage"], "valid_metric": "GAUC"},
        {"user_inter_num_interval": "[5,inf)", "item_inter_num_interval": "(0,10];[20,inf)"},
        {"load_col": {"inter": "*"}}, {"state": "warning"}, {"learner": "AdamW"}, {"encoding": "latin-1"},
    ],
)
def test_legitimate_values_are_accepted(mini_data_path, tmp_path, overrides):
    Config("SASRec", "mini",
           config_dict={"data_path": str(mini_data_path), "checkpoint_dir": str(tmp_path), **overrides})


def test_computed_metrics_name_what_the_evaluator_returns():
    assert computed_metrics(["Hit", "GAUC", "GiniIndex"], [5, 10]) == ["hit@5", "hit@10", "gauc", "giniindex@5",
                                                                      "giniindex@10"]


def test_use_gpu_false_trains_on_the_cpu(monkeypatch, mini_data_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    base = {"data_path": str(mini_data_path), "gpu_id": "0"}
    assert Config("SASRec", "mini", config_dict=base)["device"].type == "cuda"  # RecBole's choice from gpu_id
    assert Config("SASRec", "mini", config_dict={**base, "use_gpu": False})["device"].type == "cpu"
