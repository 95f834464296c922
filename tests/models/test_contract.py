"""Contract of every plugin model: its YAML holds exactly the keys it reads (plus RecBole's), and
every value its keys allow builds a model that trains one step and runs a full-sort evaluation."""

import math
import re

import pytest
import torch
import yaml
from conftest import build_data, build_model, first_batch
from recbole.utils import get_trainer

from recbole_hymoe import Config, registry
from recbole_hymoe.errors import ConfigError
from recbole_hymoe.models.params import Boolean, Choice, Integer, Nullable, Number
from recbole_hymoe.nn.scan import backend_problem

# Keys a model YAML may set for RecBole or the data pipeline rather than for the model itself.
PIPELINE_KEYS = {"train_neg_sample_args", "train_regime"}


@pytest.mark.parametrize("name", registry.plugin_models())
def test_yaml_keys_are_exactly_the_keys_the_model_reads(name):
    model = registry.model_class(name)
    with open(registry.model_yaml(name), encoding="utf-8") as f:
        yaml_keys = set(yaml.safe_load(f))
    read_keys = {param.key for param in model.PARAMS}
    assert yaml_keys - PIPELINE_KEYS == read_keys


# Tiny settings; each model gets the ones it reads. FuxiMME's sets must stay >= 16 wide.
TINY = {"hidden_size": 16, "inner_size": 16, "n_layers": 1, "n_heads": 1, "mamba_d_state": 4, "n_negatives": 8,
        "vgae_edge_batch": 64, "moe_num_experts": 4, "moe_top_k": 2}
TINY_BY_MODEL = {"FuxiMME": {"hidden_size": 32}}
# An open end of a range (a strictly positive minimum, a maximum the value must stay below) is tested just inside it.
INSIDE_EXCLUSIVE_END = 1e-3
# Keys whose allowed range depends on another key: the values at its edges.
CROSS_KEY_EDGES = {"moe_top_k": (1, TINY["moe_num_experts"])}
# Values that need another setting to be read at all or to be valid (model, key, value or None for any).
COMPANIONS = {
    ("HyMoERec", "mamba_", None): {"backbone": "mamba"},  # the mamba host's keys act on that host only
    ("HyMoERec", "rope_", None): {"backbone": "mamba"},
    ("FuxiMME", "ffn_single_stage", True): {"moe_target": "w_o"},  # moe_target 'ffn' replaces that stage
    ("HM2Rec", "mamba_d_state", 1): {"rope_target": "none"},  # rope 'bc' rotates pairs of the state
}
# Values the model refuses in every combination, with the reason its config check gives.
REFUSED = {("FuxiMME", "hidden_size", 1): "n_embedding_sets=2 must divide hidden_size=1"}


def refusal(name, key, value, device):
    """What the config check says when it refuses ``key=value`` on ``name`` and ``device``, or None.

    A scan backend that cannot run on the test machine's device (``cuda`` on a CPU or without
    mamba-ssm, ``cpu`` on a GPU) is refused before any data is read; tests/nn/test_scan.py runs
    the CUDA scan where it can.
    """
    if key == "mamba_scan_backend" and backend_problem(value, device):
        return f"mamba_scan_backend={value!r} cannot run on device"
    return REFUSED.get((name, key, value))


def edge_values(check):
    """The allowed values a check declares at the edges of its range (every option of a choice)."""
    if isinstance(check, Choice):
        return list(check.options)
    if isinstance(check, Boolean):
        return [False, True]
    if isinstance(check, Nullable):
        return [None, *edge_values(check.inner)]
    if isinstance(check, Integer):
        return [] if check.minimum is None else [check.minimum]
    if isinstance(check, Number):
        low = [] if check.minimum is None else [check.minimum + (INSIDE_EXCLUSIVE_END if check.min_exclusive else 0)]
        return low + ([] if check.maximum is None
                      else [check.maximum - (INSIDE_EXCLUSIVE_END if check.max_exclusive else 0)])
    raise TypeError(f"no edge values known for {check!r}: teach edge_values this kind of check")


def cases():
    """(model, key, value) for every plugin model, key it reads and value at the edges of that key."""
    for name in registry.plugin_models():
        for param in registry.model_class(name).PARAMS:
            for value in [*edge_values(param.check), *CROSS_KEY_EDGES.get(param.key, ())]:
                yield pytest.param(name, param.key, value, id=f"{name}-{param.key}={value}")


def companions(name, key, value):
    """The other settings ``key=value`` needs on ``name`` (see COMPANIONS)."""
    found = {}
    for (model, prefix, wanted), extra in COMPANIONS.items():
        if model == name and key.startswith(prefix) and (wanted is None or wanted == value):
            found.update(extra)
    return found


@pytest.fixture(scope="module")
def pipelines(mini_data_path):
    """Per model: its tiny settings and RecBole's data for them (built once)."""
    cache = {}

    def get(name):
        if name not in cache:
            keys = {param.key for param in registry.model_class(name).PARAMS}
            tiny = {k: v for k, v in {**TINY, **TINY_BY_MODEL.get(name, {})}.items() if k in keys}
            overrides = {"data_path": str(mini_data_path), "MAX_ITEM_LIST_LENGTH": 10, "train_batch_size": 32,
                         "eval_batch_size": 4096, "state": "ERROR", "show_progress": False, **tiny}
            cache[name] = overrides, build_data(name, overrides)
        return cache[name]

    return get


@pytest.mark.parametrize("name,key,value", cases())
def test_every_allowed_value_trains_a_step_and_evaluates(pipelines, name, key, value, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # RecBole's trainer writes its tensorboard folder into the working directory
    overrides, (config, _, train_data, valid_data, _) = pipelines(name)
    extra = {**companions(name, key, value), key: value}
    refused = refusal(name, key, value, config["device"])
    if refused:
        with pytest.raises(ConfigError, match=re.escape(refused)):
            Config(name, "mini", config_dict={**overrides, **extra})
        return
    model = build_model(registry.model_class(name), overrides, train_data._dataset, **extra).to(config["device"])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = model.calculate_loss(first_batch(train_data).to(config["device"]))
    total = sum(losses) if isinstance(losses, tuple) else losses
    assert torch.isfinite(total), losses
    total.backward()
    optimizer.step()
    trainer = get_trainer(config["MODEL_TYPE"], name)(config, model)  # evaluation reads no model key
    metrics = trainer.evaluate(valid_data, load_best_model=False, show_progress=False)
    assert metrics and all(0.0 <= v <= 1.0 and not math.isnan(v) for v in metrics.values()), metrics


@pytest.mark.parametrize("name", registry.plugin_models())
def test_scores_encoded_in_length_groups_equal_the_whole_batch(pipelines, name, monkeypatch):
    from recbole_hymoe.models import base

    overrides, (config, _, train_data, valid_data, _) = pipelines(name)
    model = build_model(registry.model_class(name), overrides, train_data._dataset).to(config["device"]).eval()
    batch = next(iter(valid_data))[0].to(config["device"])
    items = batch[model.ITEM_SEQ]
    lengths = torch.randint(1, items.size(1) + 1, (items.size(0),), generator=torch.Generator().manual_seed(0))
    batch[model.ITEM_SEQ_LEN] = lengths.to(items.device)  # histories of every length: groups differ in width
    batch[model.ITEM_SEQ] = items * (torch.arange(items.size(1)) < lengths.unsqueeze(1)).to(items.device)
    monkeypatch.setattr(base, "EVAL_GROUP_ROWS", 3)
    with torch.no_grad():
        whole = model._scaled(model.last_state(batch)[0] @ model.item_table().t())  # one batch, one width
        grouped = model.full_sort_predict(batch)
    assert torch.allclose(grouped, whole, atol=1e-5)
