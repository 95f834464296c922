"""``precision: bf16``: the forward pass of a training batch in bfloat16, everything else float32."""

import pytest
import torch
from conftest import build_data, build_model, first_batch
from recbole.utils import get_model

from recbole_hymoe import Config, registry, run
from recbole_hymoe.errors import ConfigError
from recbole_hymoe.nn.moe import ExpertBank
from recbole_hymoe.trainer import MoETrainer, build_trainer, in_precision

CPU = torch.device("cpu")
TINY = {"hidden_size": 32, "inner_size": 32, "n_layers": 1, "n_heads": 1, "mamba_d_state": 4, "n_negatives": 8,
        "vgae_edge_batch": 64, "moe_num_experts": 4, "moe_top_k": 2}


@pytest.fixture(scope="module")
def pipelines(mini_data_path):
    cache = {}

    def get(name):
        if name not in cache:
            keys = ({param.key for param in registry.model_class(name).PARAMS} if registry.is_plugin_model(name)
                    else set())
            overrides = {"data_path": str(mini_data_path), "MAX_ITEM_LIST_LENGTH": 10, "train_batch_size": 32,
                         "state": "ERROR", "show_progress": False, "train_regime": "all_positions",
                         **{k: v for k, v in TINY.items() if k in keys}}
            cache[name] = overrides, build_data(name, overrides)
        return cache[name]

    return get


def loss_and_grads(model, loss_func, batch):
    torch.manual_seed(1)  # the same dropout masks in both precisions
    losses = loss_func(batch)
    total = sum(losses) if isinstance(losses, tuple) else losses
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(total, params, allow_unused=True)
    flat = torch.cat([g.flatten() for g in grads if g is not None])
    return total, flat


def test_fp32_leaves_the_loss_function_as_it_is():
    def loss(interaction):
        return interaction

    assert in_precision(loss, CPU, "fp32") is loss


@pytest.mark.parametrize("name", registry.plugin_models())
def test_bf16_loss_and_gradients_follow_float32(pipelines, name):
    overrides, (config, _, train_data, _, _) = pipelines(name)
    torch.manual_seed(0)
    model = build_model(registry.model_class(name), overrides, train_data._dataset)
    batch = first_batch(train_data)
    loss32, grad32 = loss_and_grads(model, model.calculate_loss, batch)
    loss16, grad16 = loss_and_grads(model, in_precision(model.calculate_loss, CPU, "bf16"), batch)
    assert loss16.dtype == torch.float32 and torch.isfinite(grad16).all()
    assert abs(loss16.item() - loss32.item()) < 0.01 * abs(loss32.item())
    assert torch.nn.functional.cosine_similarity(grad16, grad32, dim=0) > 0.99
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights stay float32


def test_bf16_runs_the_matrix_products_in_bfloat16(pipelines):
    overrides, (config, _, train_data, _, _) = pipelines("HyMoERec")
    model = build_model(registry.model_class("HyMoERec"), overrides, train_data._dataset)
    seen = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            module.register_forward_hook(lambda mod, args, out, name=name: seen.__setitem__(name, out.dtype))
    in_precision(model.calculate_loss, CPU, "bf16")(first_batch(train_data))
    assert seen and set(seen.values()) == {torch.bfloat16}
    seen.clear()
    model.calculate_loss(first_batch(train_data))
    assert set(seen.values()) == {torch.float32}


class Doubling(ExpertBank):
    """Expert e multiplies by e + 1, in bfloat16 (what an autocast linear returns)."""

    num_experts, in_features, out_features = 3, 2, 2

    def expert_forward(self, e, x):
        return (x * (e + 1)).to(torch.bfloat16)


def test_expert_dispatch_sums_mixed_dtypes_in_the_wider_one():
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]])  # [N=2, 2], float32
    idx = torch.tensor([[0, 2], [1, 0]])  # [N, K=2]
    weight = torch.tensor([[0.25, 0.75], [0.5, 0.5]])
    out = Doubling()(x, idx, weight)
    assert out.dtype == torch.float32
    # token 0: 0.25·1x + 0.75·3x = 2.5x; token 1: 0.5·2x + 0.5·1x = 1.5x
    torch.testing.assert_close(out, torch.tensor([[2.5, 5.0], [4.5, 6.0]]))


def test_builtin_sequential_models_get_the_package_trainer_in_bf16(pipelines, mini_data_path):
    config = Config("SASRec", "mini", config_dict={"data_path": str(mini_data_path), "precision": "bf16"})
    overrides, (_, _, train_data, _, _) = pipelines("SASRec")
    model = get_model("SASRec")(config, train_data._dataset)
    trainer = build_trainer(config, model)
    assert isinstance(trainer, MoETrainer) and trainer.batch_loss is not model.calculate_loss


def test_bad_precision_settings_are_refused_before_the_data(mini_data_path):
    base = {"data_path": str(mini_data_path)}
    with pytest.raises(ConfigError, match=r"precision.*'fp16'.*'fp32', 'bf16'"):
        Config("HyMoERec", "mini", config_dict={**base, "precision": "fp16"})
    with pytest.raises(ConfigError, match="precision='bf16' is available for sequential models .* not BPR"):
        Config("BPR", "mini", config_dict={**base, "precision": "bf16"})
    with pytest.raises(ConfigError, match="enable_amp=True and precision='bf16'"):
        Config("HyMoERec", "mini", config_dict={**base, "precision": "bf16", "enable_amp": True})


@pytest.mark.integration
def test_a_bf16_run_trains_and_evaluates(tiny_config):
    result = run("HyMoERec", "mini", config_dict={**tiny_config, "train_regime": "all_positions", "precision": "bf16",
                                                  "epochs": 2, "train_batch_size": 16})
    assert result["precision"] == "bf16" and 0.0 < result["test_result"]["ndcg@10"] <= 1.0
