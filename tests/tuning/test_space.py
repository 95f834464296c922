"""Sweep files: parsing without eval, and every input problem reported before Ray starts."""

import pytest
import yaml

from recbole_hymoe.errors import ConfigError
from recbole_hymoe.tuning.runner import preflight
from recbole_hymoe.tuning.space import SearchSpace


def test_every_distribution_parses_into_ray_objects():
    space = SearchSpace({"space": {
        "moe_warmup_steps": {"grid": [0, 100]},
        "moe_num_experts": {"choice": [2, 4]},
        "hidden_dropout_prob": {"uniform": [0.1, 0.5]},
        "learning_rate": {"loguniform": [1e-4, 1e-2]},
        "n_layers": {"randint": [1, 4]},
    }})
    ray_space = space.ray_space()
    assert ray_space["moe_warmup_steps"] == {"grid_search": [0, 100]}
    assert set(ray_space["moe_num_experts"].categories) == {2, 4}
    assert (ray_space["hidden_dropout_prob"].lower, ray_space["hidden_dropout_prob"].upper) == (0.1, 0.5)
    assert ray_space["learning_rate"].sample() <= 1e-2
    assert ray_space["n_layers"].sample() in (1, 2, 3)
    assert space.finite_combinations() is None  # continuous entries
    assert len(SearchSpace({"space": {"a": {"grid": [1, 2]}, "b": {"choice": [3, 4, 5]}}}).finite_combinations()) == 6


def test_the_shipped_sweep_files_parse():
    for name in ("hymoerec-warmup", "hymoerec-balance", "hymoerec-experts", "hymoerec-random"):
        space = SearchSpace.from_file(f"yaml/tune/{name}.yaml")
        assert space.model == "HyMoERec" and space.dataset == "ml-100k"
    assert (SearchSpace.from_file("yaml/tune/hymoerec-warmup.yaml").space["moe_warmup_steps"]
            == ("grid", [0, 100, 500, 1000]))
    for prefix, dataset in (("beauty", "beauty"), ("ml1m", "ml-1m")):
        for name in ("experts", "balance", "warmup"):
            space = SearchSpace.from_file(f"yaml/tune/{prefix}-hymoerec-{name}.yaml")
            assert space.dataset == dataset and space.seeds == [2020, 2021, 2022]
            assert space.scheduler == {"type": "fifo"}
        host = SearchSpace.from_file(f"yaml/tune/{prefix}-sasrec-equivalent.yaml")
        experts = SearchSpace.from_file(f"yaml/tune/{prefix}-hymoerec-experts.yaml")
        assert host.dataset == dataset and host.base["moe_num_experts"] == 0
        assert len(host.finite_combinations()) == len(experts.finite_combinations()) == 8  # the same budget


@pytest.mark.parametrize(
    "data,fragment",
    [({"space": {"x": {"normal": [0, 1]}}}, "unknown distribution 'normal'"),
     ({"space": {"x": {"uniform": [1]}}}, "uniform needs [low, high] numbers"),
     ({"space": {"x": {"uniform": [2, 1]}}}, "needs low < high"),
     ({"space": {"x": {"loguniform": [0, 1]}}}, "loguniform needs low > 0"),
     ({"space": {"x": {"randint": [0.5, 3]}}}, "randint needs integer bounds"),
     ({"space": {"x": {"choice": []}}}, "choice needs a non-empty list"),
     ({"space": {"x": [1, 2]}}, "space.x: expected one of"),
     ({"space": {"x": {"grid": [1]}}, "base": {"x": 2}}, "both fixed in 'base' and searched"),
     ({"space": {"x": {"grid": [1]}}, "search": "tpe"}, "'tpe' cannot take grid entries"),
     ({"space": {"x": {"grid": [1]}}, "scheduler": {"type": "pbt"}}, "scheduler.type 'pbt'"),
     ({"space": {"x": {"grid": [1]}}, "num_samples": 0}, "num_samples must be an integer >= 1"),
     ({"space": {"x": {"grid": [1]}}, "trials": 3}, "unknown entries ['trials']"),
     ({"space": {"x": {"grid": ["__import__('os')"]}}}, None)],
)
def test_malformed_sweeps_are_refused_with_the_key_named(data, fragment):
    if fragment is None:  # strings stay strings: nothing is evaluated
        assert SearchSpace(data).space["x"] == ("grid", ["__import__('os')"])
        return
    with pytest.raises(ConfigError) as err:
        SearchSpace(data)
    assert fragment in str(err.value)


def test_preflight_names_keys_the_model_does_not_read(mini_data_path):
    space = SearchSpace({"space": {"moe_num_experts": {"grid": [2]}, "mamba_d_state": {"grid": [8]},
                                   "n_heads": {"grid": [2]}, "learning_rat": {"grid": [0.1]}}})
    with pytest.raises(ConfigError) as err:
        preflight(space, "FuXiAlpha", "mini", None, {"data_path": str(mini_data_path)})
    message = str(err.value)
    assert "FuXiAlpha does not read moe_num_experts, mamba_d_state, learning_rat" in message
    assert "n_heads" not in message.split("keys of")[0]


def test_preflight_lists_combinations_that_can_never_be_valid(mini_data_path):
    space = SearchSpace({"space": {"moe_num_experts": {"grid": [2, 4]}, "moe_top_k": {"grid": [2, 3]}}})
    with pytest.raises(ConfigError) as err:
        preflight(space, "HyMoERec", "mini", None, {"data_path": str(mini_data_path)})
    message = str(err.value)
    assert "1 of 4 combinations can never be valid" in message
    assert "{'moe_num_experts': 2, 'moe_top_k': 3}" in message and "moe_top_k=3" in message


def test_preflight_checks_recbole_keys_in_every_combination(mini_data_path):
    space = SearchSpace({"space": {"learning_rate": {"grid": [0.001, -1]}, "learner": {"grid": ["adam"]}}})
    with pytest.raises(ConfigError) as err:
        preflight(space, "SASRec", "mini", None, {"data_path": str(mini_data_path)})
    message = str(err.value)
    assert "1 of 2 combinations can never be valid" in message and "learning_rate=-1 must be >= 0" in message


def test_sweep_file_on_disk_is_read_with_safe_yaml(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"model": "HyMoERec", "space": {"learning_rate": {"grid": [0.1]}}}))
    assert SearchSpace.from_file(path).model == "HyMoERec"
    with pytest.raises(ConfigError, match="sweep file not found"):
        SearchSpace.from_file(tmp_path / "missing.yaml")


@pytest.mark.parametrize("plot,fragment", [
    ({"file": "a.png", "x": "dropout", "metrics": ["valid_ndcg@10"]},
     "plots[0].x: 'dropout' is not a key of the space"),
    ({"file": "a.png", "x": "learning_rate", "metrics": ["valid_ndcg@20"]}, "plot one metric (or two on twin axes)"),
    ({"file": "a.png", "x": "learning_rate", "y": "learning_rate"}, "takes exactly ['file', 'metric', 'x', 'y']"),
    ({"x": "learning_rate", "metrics": ["valid_ndcg@10"]}, "needs 'file' (a .png name)"),
])
def test_plots_name_searched_keys_and_known_metrics(plot, fragment):
    with pytest.raises(ConfigError) as err:
        SearchSpace({"space": {"learning_rate": {"grid": [0.1]}}, "plots": [plot]})
    assert fragment in str(err.value)
