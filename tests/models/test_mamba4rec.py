"""Mamba4Rec and HyMoERec's mamba host: equality with the MoE branch off, init, training, errors."""

import pytest
import torch
from conftest import build_data, build_model, first_batch

from recbole_hymoe import Config, HyMoERec, Mamba4Rec
from recbole_hymoe.errors import ConfigError


@pytest.fixture(scope="module")
def overrides(mini_data_path):
    return {"data_path": str(mini_data_path), "MAX_ITEM_LIST_LENGTH": 20, "hidden_size": 32, "inner_size": 64,
            "mamba_d_state": 8, "train_batch_size": 32, "state": "ERROR", "show_progress": False}


@pytest.fixture(scope="module")
def data(overrides):
    return build_data("Mamba4Rec", overrides)


@pytest.mark.parametrize("moe", [{"moe_num_experts": 0}, {"moe_warmup_steps": 10**9}], ids=["no-experts", "alpha-zero"])
@pytest.mark.parametrize("rope_target", ["none", "bc"])
def test_hymoerec_on_the_mamba_host_with_moe_off_is_mamba4rec(overrides, data, moe, rope_target):
    mamba4rec = build_model(Mamba4Rec, overrides, data[2]._dataset, rope_target=rope_target, n_layers=2).eval()
    hymoerec = build_model(HyMoERec, overrides, data[2]._dataset, backbone="mamba", rope_target=rope_target,
                           n_layers=2, hidden_dropout_prob=0.2, **moe).eval()
    missing, unexpected = hymoerec.load_state_dict(mamba4rec.state_dict(), strict=False)
    assert not unexpected and all(".moe." in k or k.endswith("alpha_logit") for k in missing)
    batch = first_batch(data[2])
    with torch.no_grad():
        assert torch.allclose(hymoerec.full_sort_predict(batch), mamba4rec.full_sort_predict(batch), atol=1e-5)
        assert hymoerec.calculate_loss(batch)[0].item() == pytest.approx(mamba4rec.calculate_loss(batch)[0].item(),
                                                                          abs=1e-5)


def test_mamba4rec_init_quirk_and_mamba_init(overrides, data):
    quirk = build_model(Mamba4Rec, overrides, data[2]._dataset).eval()
    assert torch.equal(quirk.encoder[0].mamba.dt_proj.bias.data, torch.zeros(64))  # Mamba4Rec's re-init
    native = build_model(Mamba4Rec, overrides, data[2]._dataset, mamba_init="mamba").eval()
    dt = torch.nn.functional.softplus(native.encoder[0].mamba.dt_proj.bias.data)
    assert dt.min() >= 1e-4 - 1e-9 and dt.max() <= 0.1 + 1e-6


@pytest.mark.parametrize("regime", ["prefix", "all_positions"])
def test_training_reaches_the_state_space_parameters(mini_data_path, overrides, regime):
    config, _, train_data, _, _ = build_data("Mamba4Rec", {**overrides, "train_regime": regime, "rope_target": "bc"})
    model = Mamba4Rec(config, train_data._dataset).train()
    rec, aux = model.calculate_loss(first_batch(train_data))
    assert torch.isfinite(rec) and aux.item() == 0.0
    rec.backward()
    mixer = model.encoder[0].mamba
    for name in ("A_log", "D"):
        assert getattr(mixer, name).grad.abs().sum() > 0, name
    assert mixer.conv1d.weight.grad.abs().sum() > 0 and mixer.dt_proj.weight.grad.abs().sum() > 0


def test_trailing_padding_does_not_change_scores(overrides, data):
    model = build_model(Mamba4Rec, overrides, data[2]._dataset, rope_target="bc").eval()
    batch = first_batch(data[2])
    seq = batch["item_id_list"].clone()
    seq[:, 12:] = 0
    length = batch["item_length"].clamp(max=12)
    with torch.no_grad():
        padded = model.forward(seq, length)
        tight = model.forward(seq[:, :12], length)
    assert torch.allclose(padded, tight, atol=1e-5)


@pytest.mark.parametrize(
    "model,extra,fragment",
    [("Mamba4Rec", {"rope_target": "bc", "mamba_d_state": 7}, "mamba_d_state=7 must be even"),
     ("Mamba4Rec", {"rope_target": "pos"}, "rope_target='pos'"),
     ("HyMoERec", {"backbone": "mamba", "rope_target": "bc", "mamba_d_state": 5}, "mamba_d_state=5"),
     ("Mamba4Rec", {"mamba_scan_backend": "gpu"}, "mamba_scan_backend='gpu'"),
     ("Mamba4Rec", {"mamba_init": "xavier"}, "mamba_init='xavier'")],
)
def test_bad_mamba_settings_fail_in_config(overrides, model, extra, fragment):
    with pytest.raises(ConfigError, match=fragment):
        Config(model, "mini", config_dict={**overrides, **extra})
