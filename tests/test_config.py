"""Config: protocol defaults, precedence, strict keys, dataset checks, value parsing."""

import logging

import pytest
from recbole.config import Config as RecBoleConfig

from recbole_hymoe import Config
from recbole_hymoe.compat import clean_argv
from recbole_hymoe.config import check_dataset_files, parse_value
from recbole_hymoe.errors import ConfigError, DatasetNotFoundError


def test_protocol_defaults_apply_to_plugin_and_builtin_models(mini_data_path):
    for model in ("HyMoERec", "SASRec"):
        config = Config(model, "mini", config_dict={"data_path": str(mini_data_path)})
        assert config["eval_args"]["split"] == {"LS": "valid_and_test"}
        assert config["eval_args"]["order"] == "TO" and config["eval_args"]["mode"]["test"] == "full"
        assert config["valid_metric"] == "NDCG@10"
        assert config["metrics"] == ["Hit", "NDCG", "MRR"] and config["topk"] == [5, 10, 50]
        assert config["load_col"]["inter"] == ["user_id", "item_id", "rating", "timestamp"]


def test_precedence_yaml_then_files_then_dict_then_command_line(tmp_path, mini_data_path):
    config_file = tmp_path / "exp.yaml"
    config_file.write_text("moe_num_experts: 8\nmoe_top_k: 1\nlearning_rate: 0.005\n")
    config = Config("HyMoERec", "mini", config_file_list=[str(config_file)],
                    config_dict={"data_path": str(mini_data_path), "moe_top_k": 2, "learning_rate": 0.002},
                    cmd_args={"learning_rate": "0.003"})
    assert config["moe_warmup_steps"] == 500  # model YAML
    assert config["moe_num_experts"] == 8  # file over YAML
    assert config["moe_top_k"] == 2  # dict over file
    assert config["learning_rate"] == 0.003  # command line over dict


def test_sys_argv_is_ignored(monkeypatch, mini_data_path):
    import sys

    monkeypatch.setattr(sys, "argv", ["prog", "--learning_rate=0.5"])
    config = Config("HyMoERec", "mini", config_dict={"data_path": str(mini_data_path), "learning_rate": 0.01})
    assert config["learning_rate"] == 0.01


def test_negative_sampling_follows_the_loss(mini_data_path):
    base = {"data_path": str(mini_data_path)}
    ce = Config("SASRec", "mini", config_dict=base)
    assert ce["train_neg_sample_args"]["distribution"] == "none"
    bpr = Config("SASRec", "mini", config_dict={**base, "loss_type": "BPR"})
    assert bpr["train_neg_sample_args"]["distribution"] == "uniform"
    assert bpr["train_neg_sample_args"]["sample_num"] == 1
    with pytest.raises(ValueError, match="should be None when the loss_type is CE"):
        Config("SASRec", "mini", config_dict={**base, "train_neg_sample_args": {"distribution": "uniform"}})


def test_misspelt_keys_fail_with_a_suggestion(mini_data_path):
    base = {"data_path": str(mini_data_path)}
    with pytest.raises(ConfigError, match="'moe_topk' is not a key of HyMoERec; did you mean 'moe_top_k'"):
        Config("HyMoERec", "mini", config_dict={**base, "moe_topk": 1})
    with pytest.raises(ConfigError, match="unknown key 'learning_rat'; did you mean 'learning_rate'"):
        Config("SASRec", "mini", config_dict={**base, "learning_rat": 0.1})
    with pytest.raises(ConfigError, match="'moe_colour' is not a key of HyMoERec"):
        Config("HyMoERec", "mini", cmd_args={"moe_colour": "red", "data_path": str(mini_data_path)})


def test_unrelated_unknown_keys_only_warn(mini_data_path, caplog):
    with caplog.at_level(logging.WARNING):
        Config("SASRec", "mini", config_dict={"data_path": str(mini_data_path), "my_experiment_tag": "x"})
    assert "my_experiment_tag" in caplog.text


def test_model_names_are_case_insensitive_for_plugin_and_builtin(mini_data_path):
    base = {"data_path": str(mini_data_path)}
    assert Config("hymoerec", "mini", config_dict=base)["model"] == "HyMoERec"
    assert Config("sasrec", "mini", config_dict=base)["model"] == "SASRec"
    assert Config(dataset="mini", config_dict={**base, "model": "HYMOEREC"})["model"] == "HyMoERec"


def test_missing_dataset_says_where_the_files_go(tmp_path):
    config = Config("HyMoERec", "beauty", config_dict={"data_path": str(tmp_path)})
    with pytest.raises(DatasetNotFoundError) as err:
        check_dataset_files(config)
    message = str(err.value)
    assert str(tmp_path / "beauty" / "beauty.inter") in message
    assert "--data_path" in message and "allow_download" in message


def test_dataset_without_timestamps_is_ordered_by_file_rows(tmp_path):
    from recbole_hymoe.data import prepare_data

    folder = tmp_path / "notime"
    folder.mkdir()
    rows = [f"u{u}\ti{(u * 7 + k) % 40}" for u in range(1, 30) for k in range(6)]  # string ids, file order = time
    (folder / "notime.inter").write_text("user_id:token\titem_id:token\n" + "\n".join(rows) + "\n")
    for model in ("SASRec", "HyMoERec"):
        config = Config(model, "notime", config_dict={"data_path": str(tmp_path), "state": "ERROR"})
        assert config["time_from_file_order"] is True
        dataset, train_data, valid_data, test_data = prepare_data(config)
        assert dataset.time_from_file_order
        test_inter = test_data._dataset.inter_feat
        user = str(dataset.id2token(dataset.uid_field, test_inter["user_id"][:2])[0])
        item = str(dataset.id2token(dataset.iid_field, test_inter["item_id"][:2])[0])
        assert item == [r for r in rows if r.startswith(user + "\t")][-1].split("\t")[1]  # last row is test


def test_missing_config_file_is_a_clear_error():
    with pytest.raises(ConfigError, match="config file.*not found: nowhere.yaml"):
        Config("HyMoERec", "ml-100k", config_file_list=["nowhere.yaml"])


def test_environment_device_mask_is_kept(monkeypatch, mini_data_path):
    import os

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    Config("SASRec", "mini", config_dict={"data_path": str(mini_data_path)})
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3"
    with clean_argv():
        RecBoleConfig("SASRec", "mini", config_dict={"data_path": str(mini_data_path), "train_neg_sample_args": None})
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0"  # what RecBole's own Config does (F12)


@pytest.mark.parametrize(
    "text,value",
    [("0.5", 0.5), ("1e-3", 0.001), ("4", 4), ("[5, 10]", [5, 10]), ("True", True), ("false", False),
     ("none", None), ("~", None), ("gelu", "gelu"), ("{'a': 1}", {"a": 1}), ("__import__('os')", "__import__('os')")],
)
def test_command_line_values_are_parsed_without_eval(text, value):
    assert parse_value(text) == value
