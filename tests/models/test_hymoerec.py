"""HyMoERec: SASRec reduction, strict config, warm-up buffer, losses, telemetry."""

import functools
import io

import pytest
import torch
from conftest import build_data, build_model, first_batch
from recbole.model.sequential_recommender.sasrec import SASRec

from recbole_hymoe import Config, HyMoERec
from recbole_hymoe.errors import ConfigError
from recbole_hymoe.nn import losses
from recbole_hymoe.nn.moe import SparseMoE

@pytest.fixture(scope="module")
def overrides(mini_data_path):
    return {"data_path": str(mini_data_path), "MAX_ITEM_LIST_LENGTH": 20, "train_batch_size": 64,
            "show_progress": False, "state": "ERROR"}


@pytest.fixture(scope="module")
def data(overrides):
    return build_data("HyMoERec", overrides)


@pytest.fixture(scope="module")
def make_model(data, overrides):
    return functools.partial(build_model, HyMoERec, overrides, data[2]._dataset)


def sasrec_with_copy(data, model, overrides):
    _, _, train_data, _, _ = data
    sasrec = SASRec(Config("SASRec", "mini", config_dict=overrides), train_data._dataset).eval()
    model.load_sasrec_weights(sasrec.state_dict())
    return sasrec


@pytest.mark.parametrize("moe", [{"moe_num_experts": 0}, {"moe_warmup_steps": 10**9}],
                         ids=["no-experts", "alpha-zero"])
def test_with_moe_branch_off_scores_equal_recbole_sasrec(data, overrides, make_model, moe):
    model = make_model(**moe).eval()
    sasrec = sasrec_with_copy(data, model, overrides)
    batch = first_batch(data[2])
    with torch.no_grad():
        ours = model.full_sort_predict(batch)
        theirs = sasrec.full_sort_predict(batch)
        assert torch.allclose(ours, theirs, atol=1e-6)
        rec_loss, aux_loss = model.calculate_loss(batch)
        assert rec_loss.item() == pytest.approx(sasrec.calculate_loss(batch).item(), abs=1e-6)
        assert torch.allclose(model.predict(batch), sasrec.predict(batch), atol=1e-6)


def test_end_alignment_reads_the_position_table_from_its_end(make_model):
    # a left-padded sequence of n items reads positions L - n … L - 1: the same as 'start' with the
    # table's last n rows moved to its front
    end = make_model(moe_num_experts=0, position_alignment="end").eval()
    start = make_model(moe_num_experts=0).eval()
    start.load_state_dict(end.state_dict())
    table_len, n = end.max_seq_length, 5
    start.position_embedding.weight.data[:n] = end.position_embedding.weight.data[table_len - n:]
    items = torch.tensor([[3, 4, 5, 6, 7, 0, 0, 0], [9, 8, 7, 6, 5, 0, 0, 0]])
    lengths = torch.tensor([n, n])
    with torch.no_grad():
        ours, _ = end.encode(items, lengths)  # [B, L, H]
        shifted, _ = start.encode(items, lengths)
    assert torch.allclose(ours[:, :n], shifted[:, :n], atol=1e-6)
    start.load_state_dict(end.state_dict())
    with torch.no_grad():  # with the same table, 'start' reads other rows
        assert not torch.allclose(start.encode(items, lengths)[0][:, :n], ours[:, :n], atol=1e-3)


def test_sasrec_weights_reach_every_shared_parameter(data, overrides, make_model):
    model = make_model()
    sasrec_with_copy(data, model, overrides)
    with pytest.raises(KeyError, match="without a HyMoERec counterpart"):
        model.load_sasrec_weights({"not_a_parameter": torch.zeros(1)})


def test_every_block_has_an_moe_layer_with_the_configured_shape(make_model):
    model = make_model(n_layers=3, moe_num_experts=8, moe_top_k=1, moe_inner_size=24)
    layers = model.moe_layers()
    assert len(layers) == 3
    for _, layer in layers:
        assert isinstance(layer, SparseMoE)
        assert layer.num_experts == 8 and layer.top_k == 1
        assert layer.experts.w_in.shape == (8, 64, 24)


def test_warmup_counter_advances_in_training_only_and_survives_a_checkpoint(data, make_model):
    model = make_model(moe_warmup_steps=4)
    batch = first_batch(data[2])
    assert float(model.moe_warmup()) == 0.0
    assert all(alpha == 0.0 for alpha in model.moe_alphas().values())
    model.train()
    for _ in range(2):
        model.calculate_loss(batch)
    assert int(model.moe_step) == 2 and float(model.moe_warmup()) == pytest.approx(0.5)
    model.eval()
    model.calculate_loss(batch)
    model.full_sort_predict(batch)
    assert int(model.moe_step) == 2
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    restored = make_model(moe_warmup_steps=4)
    restored.load_state_dict(torch.load(buffer))
    assert int(restored.moe_step) == 2 and float(restored.moe_warmup()) == pytest.approx(0.5)


@pytest.mark.parametrize("loss_type", ["CE", "BPR"])
def test_losses_are_finite_and_train_every_part(mini_data_path, loss_type):
    overrides = {"data_path": str(mini_data_path), "MAX_ITEM_LIST_LENGTH": 20, "train_batch_size": 64,
                 "loss_type": loss_type, "moe_warmup_steps": 0, "show_progress": False, "state": "ERROR"}
    config, _, train_data, _, _ = build_data("HyMoERec", overrides)
    model = HyMoERec(config, train_data._dataset).train()
    rec_loss, aux_loss = model.calculate_loss(first_batch(train_data))
    assert torch.isfinite(rec_loss) and torch.isfinite(aux_loss)
    (rec_loss + aux_loss).backward()
    for name, param in model.named_parameters():
        if name == "position_embedding.weight":
            continue  # positions beyond the batch's longest sequence see no data
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_all_positions_ce_in_chunks_equals_the_plain_form(overrides, monkeypatch):
    overrides = {**overrides, "train_regime": "all_positions"}
    _, _, train_data, _, _ = build_data("HyMoERec", overrides)
    model = build_model(HyMoERec, overrides, train_data._dataset, moe_warmup_steps=0, temperature=0.5).eval()
    batch = first_batch(train_data)
    chunked_cross_entropy, backward_kinds = losses.chunked_cross_entropy, []

    def spy(*args, **kwargs):
        loss = chunked_cross_entropy(*args, **kwargs)
        backward_kinds.append(type(loss.grad_fn).__name__)
        return loss

    def loss_and_grads(chunk_rows):
        monkeypatch.setattr(losses, "CE_CHUNK_ELEMENTS", chunk_rows * model.item_table().size(0))
        model.zero_grad()
        rec_loss, _ = model.calculate_loss(batch)
        rec_loss.backward()
        return rec_loss.detach(), {name: param.grad.clone() for name, param in model.named_parameters()
                                   if param.grad is not None}

    monkeypatch.setattr(losses, "chunked_cross_entropy", spy)
    plain_loss, plain_grads = loss_and_grads(10**6)  # far more rows than a batch has: the plain form
    loss, grads = loss_and_grads(100)
    assert backward_kinds == ["NllLossBackward0", "_ChunkedCrossEntropyBackward"]
    torch.testing.assert_close(loss, plain_loss)
    assert grads.keys() == plain_grads.keys()
    # float32 rounding relative to the model's largest gradient: some are zero up to rounding
    # (a key bias shifts every attention score of a query alike)
    atol = 1e-5 * max(grad.abs().max().item() for grad in plain_grads.values())
    for name, grad in grads.items():
        torch.testing.assert_close(grad, plain_grads[name], rtol=1e-5, atol=atol,
                                   msg=lambda message, name=name: f"{name}: {message}")


def test_telemetry_reports_alpha_share_gate_and_entropy(data, make_model):
    model = make_model(moe_warmup_steps=0).train()
    model.reset_moe_usage()
    batch = first_batch(data[2])
    model.calculate_loss(batch)
    telemetry = model.moe_telemetry()
    assert telemetry["step"] == 1 and telemetry["warmup"] == 1.0
    assert len(telemetry["layers"]) == 2
    real_tokens = int((batch["item_id_list"] != 0).sum())
    first, last = telemetry["layers"].values()
    assert first["tokens"] == real_tokens
    assert last["tokens"] == len(batch)  # prefix regime: the last layer computes the last position only
    for stats in (first, last):
        assert stats["alpha"] == pytest.approx(0.5)  # σ(0) · w = 0.5 · 1
        assert sum(stats["token_share"]) == pytest.approx(1.0)
        assert sum(stats["mean_gate"]) == pytest.approx(1.0)
        assert 0.0 <= stats["usage_entropy"] <= torch.log(torch.tensor(4.0)).item() + 1e-6


BAD_SETTINGS = [
    ({"moe_top_k": 5, "moe_num_experts": 4}, ["moe_top_k=5", "moe_num_experts=4"]),
    ({"moe_top_k": 0}, ["moe_top_k=0"]),
    ({"moe_num_experts": -1}, ["moe_num_experts=-1", ">= 0"]),
    ({"moe_balance_weight": -0.1}, ["moe_balance_weight=-0.1"]),
    ({"moe_warmup_steps": -5}, ["moe_warmup_steps=-5"]),
    ({"backbone": "lstm"}, ["backbone='lstm'", "transformer"]),
    ({"backbone": "mamba", "rope_target": "bc", "mamba_d_state": 7}, ["mamba_d_state=7", "even"]),
    ({"moe_fusion": "sum"}, ["moe_fusion='sum'", "additive"]),
    ({"moe_router": "deep"}, ["moe_router='deep'", "linear"]),
    ({"moe_balance_loss": "cv"}, ["moe_balance_loss='cv'", "entropy"]),
    ({"hidden_size": 30, "n_heads": 4}, ["hidden_size=30", "n_heads=4"]),
    ({"moe_warmup_schedule": "step"}, ["moe_warmup_schedule='step'"]),
    ({"hidden_act": "mish"}, ["hidden_act='mish'"]),
    ({"moe_top_k": 1.5}, ["moe_top_k=1.5", "integer"]),
]


@pytest.mark.parametrize("overrides,fragments", BAD_SETTINGS)
def test_bad_settings_fail_in_config_naming_the_key(overrides, fragments):
    # The dataset does not exist: the error must come from the config check, before any data.
    with pytest.raises(ConfigError) as err:
        Config("HyMoERec", "no-such-dataset", config_dict=overrides)
    for fragment in fragments:
        assert fragment in str(err.value)
