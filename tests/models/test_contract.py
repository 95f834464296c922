"""Contract of every plugin model: its YAML holds exactly the keys it reads (plus RecBole's)."""

import pytest
import yaml

from recbole_hymoe import registry

# Keys a model YAML may set for RecBole or the data pipeline rather than for the model itself.
PIPELINE_KEYS = {"train_neg_sample_args", "train_regime"}


@pytest.mark.parametrize("name", registry.plugin_models())
def test_yaml_keys_are_exactly_the_keys_the_model_reads(name):
    model = registry.model_class(name)
    with open(registry.model_yaml(name), encoding="utf-8") as f:
        yaml_keys = set(yaml.safe_load(f))
    read_keys = {param.key for param in model.PARAMS}
    assert yaml_keys - PIPELINE_KEYS == read_keys
