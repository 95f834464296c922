"""Registry: plugin models found by name wherever RecBole looks."""

import pytest
from recbole.config import Config as RecBoleConfig
from recbole.model.sequential_recommender.sasrec import SASRec
from recbole.utils import get_model, get_trainer

from recbole_hymoe import HyMoERec, MoETrainer, registry
from recbole_hymoe.compat import clean_argv
from recbole_hymoe.errors import UnknownModelError


def test_recbole_lookups_find_the_plugin_model():
    import recbole.quick_start.quick_start as quick_start

    assert get_model("HyMoERec") is HyMoERec
    assert quick_start.get_model("HyMoERec") is HyMoERec  # the copy bound at import time
    assert get_model("SASRec") is SASRec
    assert get_trainer(HyMoERec.type, "HyMoERec") is MoETrainer


def test_recbole_own_config_loads_the_plugin_yaml_where_builtin_yaml_loads(mini_data_path):
    with clean_argv():
        config = RecBoleConfig("HyMoERec", "mini", config_dict={"data_path": str(mini_data_path), "moe_top_k": 1})
    assert config["moe_num_experts"] == 4  # from yaml/model/HyMoERec.yaml
    assert config["moe_top_k"] == 1  # the dict still wins
    assert config["MAX_ITEM_LIST_LENGTH"] == 50  # RecBole's dataset defaults still apply
    assert config["eval_args"]["split"] == {"LS": "valid_and_test"}  # RecBole's sequential quick-start yaml
    with clean_argv():
        sasrec = RecBoleConfig("SASRec", "mini", config_dict={"data_path": str(mini_data_path),
                                                              "train_neg_sample_args": None})
    assert "moe_num_experts" not in sasrec


def test_builtin_names_cannot_be_shadowed():
    shadow = type("SASRec", (HyMoERec,), {"__module__": HyMoERec.__module__})
    with pytest.raises(ValueError, match="shadow RecBole's built-in"):
        registry.register_model(shadow, HyMoERec.yaml_file())


def test_registering_twice_is_harmless_and_names_are_listed():
    registry.register_model(HyMoERec, HyMoERec.yaml_file())
    assert "HyMoERec" in registry.plugin_models()
    assert {"SASRec", "BERT4Rec", "GRU4Rec"} <= set(registry.builtin_models())


def test_unknown_model_lists_plugin_and_builtin_names():
    with pytest.raises(UnknownModelError) as err:
        registry.resolve_model_name("HyMoeRecc")
    message = str(err.value)
    assert "Did you mean HyMoERec" in message
    assert "plugin models: FuXiAlpha, FuxiMME, HM2Rec, HyMoERec, Mamba4Rec" in message and "SASRec" in message
    assert "lightgbm" not in message
