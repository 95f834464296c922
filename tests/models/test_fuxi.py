"""FuXi-α and Fuxi-MME: time buckets, causality, padding, the M = 1 / E = 0 reduction, errors."""

import pytest
import torch
from conftest import SHARED_DATA, build_data, build_model, first_batch

from recbole_hymoe import Config, FuXiAlpha, FuxiMME
from recbole_hymoe.errors import ConfigError
from recbole_hymoe.nn.relative_bias import next_event_time_deltas, time_buckets


def test_time_buckets_match_the_hand_computed_ones():
    deltas = torch.tensor([60.0, 3600.0, 86400.0, 30 * 86400.0, -60.0, 0.0, 1e12])
    assert time_buckets(deltas).tolist() == [13, 27, 37, 49, 13, 0, 91]
    assert time_buckets(torch.tensor([1e300], dtype=torch.float64), num_buckets=128).tolist() == [128]


def test_next_event_deltas_use_the_next_event_and_the_target_time():
    times = torch.tensor([[10.0, 20.0, 40.0, 0.0]])
    deltas = next_event_time_deltas(times, torch.tensor([3]), torch.tensor([100.0]))
    assert deltas[0, 0, 0].item() == 10.0  # t_next[0] = 20, key 0 at 10
    assert deltas[0, 1, 0].item() == 30.0  # t_next[1] = 40
    assert deltas[0, 2, 1].item() == 80.0  # last real position: the target's time 100 - 20


@pytest.fixture(scope="module")
def overrides(mini_data_path):
    return {"data_path": str(mini_data_path), "MAX_ITEM_LIST_LENGTH": 20, "hidden_size": 32, "n_heads": 2,
            "train_batch_size": 16, "hidden_dropout_prob": 0.0, "state": "ERROR", "show_progress": False}


@pytest.fixture(scope="module")
def data(overrides):
    return build_data("FuxiMME", overrides)


MME_VARIANTS = [{}, {"moe_target": "w_o"}, {"moe_target": "w_u"}, {"n_embedding_sets": 1, "moe_num_experts": 0}]


@pytest.mark.parametrize("extra", MME_VARIANTS, ids=["ffn", "w_o", "w_u", "dense"])
def test_outputs_are_causal_in_items_and_timestamps(overrides, data, extra):
    model = build_model(FuxiMME, overrides, data[2]._dataset, **extra).eval()
    batch = first_batch(data[2])
    seq, length = batch["item_id_list"][:1].clone(), batch["item_length"][:1]
    times = batch["timestamp_list"][:1].clone()
    n = int(length)
    assert n >= 5
    t = n - 3
    with torch.no_grad():
        before = model.encode(seq, length, timestamps=times, target_time=batch["timestamp"][:1]).hidden
        changed_seq = seq.clone()
        changed_seq[0, t + 1 : n] = torch.randint(1, model.n_items, (n - t - 1,))
        changed_times = times.clone()
        changed_times[0, t + 2 : n] += 1e6  # t_next[t] = times[t + 1] may be read, later ones not
        after = model.encode(changed_seq, length, timestamps=changed_times, target_time=batch["timestamp"][:1]).hidden
    assert torch.allclose(before[0, : t + 1], after[0, : t + 1], atol=1e-5)
    assert not torch.allclose(before[0, t + 1 : n], after[0, t + 1 : n], atol=1e-5)


@pytest.mark.parametrize("extra", MME_VARIANTS, ids=["ffn", "w_o", "w_u", "dense"])
def test_trailing_padding_and_the_last_position_shortcut_change_no_score(overrides, data, extra):
    model = build_model(FuxiMME, overrides, data[2]._dataset, **extra).eval()
    batch = first_batch(data[2])
    with torch.no_grad():
        scores = model.full_sort_predict(batch)
        inputs = model.sequence_inputs(batch)
        full = model.encode(batch["item_id_list"], batch["item_length"], **inputs).hidden
    last = model.gather_indexes(full, batch["item_length"] - 1)
    assert torch.allclose(model.user_output(last) @ model.item_table().t() / model.temperature, scores, atol=1e-4)
    # shorten every sequence to 12 items: 12 real columns, then 8 of trailing padding
    seq, times = batch["item_id_list"].clone(), inputs["timestamps"].clone()
    seq[:, 12:], times[:, 12:] = 0, 0
    length = batch["item_length"].clamp(max=12)
    with torch.no_grad():
        padded = model.encode(seq, length, timestamps=times, target_time=inputs["target_time"]).hidden
        tight = model.encode(seq[:, :12], length, timestamps=times[:, :12], target_time=inputs["target_time"]).hidden
    real = seq[:, :12] != 0
    assert torch.allclose(padded[:, :12][real], tight[real], atol=1e-5)
    assert (padded[:, 12:] == 0).all()


def test_fuxi_mme_with_one_set_and_no_experts_is_fuxi_alpha(overrides, data):
    alpha = build_model(FuXiAlpha, overrides, data[2]._dataset).eval()
    mme = build_model(FuxiMME, overrides, data[2]._dataset, n_embedding_sets=1, moe_num_experts=0).eval()
    mme.load_state_dict(alpha.state_dict())  # same parameter names and shapes, strict
    batch = first_batch(data[2])
    with torch.no_grad():
        assert torch.allclose(mme.full_sort_predict(batch), alpha.full_sort_predict(batch), atol=1e-5)
    alpha.train(), mme.train()
    torch.manual_seed(5)
    loss_alpha = alpha.calculate_loss(batch)
    torch.manual_seed(5)
    loss_mme = mme.calculate_loss(batch)
    assert loss_alpha[0].item() == pytest.approx(loss_mme[0].item(), abs=1e-5)


def test_set_inner_widths_scales_heads_and_swiglu_with_d_or_with_d_over_m(overrides, data):
    """d = 32, M = 2, two heads: streams 16 wide; 'host' heads 32 / 2 and SwiGLU 32, 'split' 16 / 2 and 16."""
    def shapes(**extra):
        model = build_model(FuxiMME, overrides, data[2]._dataset, moe_num_experts=0, **extra)
        return {name: tuple(p.shape) for name, p in model.blocks[0].named_parameters()}

    host, split = shapes(), shapes(set_inner_widths="split")
    # W_uvqk: u gates the three channels (3 · heads · d_v), then v, q, k (heads · d each)
    assert host["uvqk.weight"] == (3 * 2 * 16 + 3 * 2 * 16, 16) and host["w_1.weight"] == (32, 16)
    assert split["uvqk.weight"] == (3 * 2 * 8 + 3 * 2 * 8, 16) and split["w_1.weight"] == (16, 16)
    assert host["w_o.weight"] == (16, 3 * 2 * 16)  # the AMS output reads the three channels of every head
    # 'split' with the head and SwiGLU widths set by hand builds the 'host' model exactly
    assert shapes(set_inner_widths="split", qk_head_dim=16, v_head_dim=16, ffn_multiply=2.0) == host


def test_the_temporal_channel_reads_the_timestamps(overrides, data):
    model = build_model(FuXiAlpha, overrides, data[2]._dataset).eval()
    batch = first_batch(data[2])
    with torch.no_grad():
        scores = model.full_sort_predict(batch)
        batch.interaction["timestamp_list"] = batch["timestamp_list"] * 0.5
        shifted = model.full_sort_predict(batch)
        no_time = build_model(FuXiAlpha, overrides, data[2]._dataset, use_time_channel=False).eval()
    assert not torch.allclose(scores, shifted, atol=1e-4)
    assert no_time.blocks[0].time_bias is None and no_time.sequence_inputs(batch) == {}


@pytest.mark.skipif(not (SHARED_DATA / "beauty" / "beauty.inter").is_file(),
                    reason="the shared beauty data (real day timestamps) is not available in this checkout")
def test_the_temporal_channel_matters_on_beauty():
    overrides = {"data_path": str(SHARED_DATA), "hidden_size": 32, "train_batch_size": 64,
                 "hidden_dropout_prob": 0.0, "state": "ERROR", "show_progress": False}
    config, _, train_data, _, _ = build_data("FuXiAlpha", {**overrides, "dataset": "beauty"})
    model = FuXiAlpha(config, train_data._dataset).eval()
    batch = first_batch(train_data)
    spans = batch["timestamp_list"].max(1).values - batch["timestamp_list"].min(1).values
    assert spans.max() > 86400  # real timestamps, days apart
    with torch.no_grad():
        scores = model.full_sort_predict(batch)
        batch.interaction["timestamp_list"] = batch["timestamp_list"].flip(1)
        assert not torch.allclose(scores, model.full_sort_predict(batch), atol=1e-4)


def test_every_moe_target_trains_its_experts_and_router(overrides, data):
    batch = first_batch(data[2])
    for target in ("ffn", "w_o", "w_u"):
        model = build_model(FuxiMME, overrides, data[2]._dataset, moe_target=target, loss_type="CE").train()
        rec, aux = model.calculate_loss(batch)
        (rec + aux).backward()
        moe = model.blocks[0].moe
        assert moe.router.proj.weight.grad.abs().sum() > 0, target
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in moe.experts.parameters()), target
        assert model.set_embedding.weight.grad.abs().sum() > 0, target
        assert aux.item() > 0


@pytest.mark.parametrize(
    "extra,fragment",
    [({"n_embedding_sets": 3}, "n_embedding_sets=3 must divide hidden_size=32"),
     ({"n_embedding_sets": 4}, "width hidden_size/n_embedding_sets=8 < 16"),
     ({"moe_top_k": 3, "moe_num_experts": 2}, "moe_top_k=3"),
     ({"moe_target": "uvqk"}, "moe_target='uvqk'"),
     ({"ffn_single_stage": True}, "moe_target='ffn' replaces the SwiGLU stage"),
     ({"n_heads": 3}, "n_heads=3 to divide the width 32"),
     ({"n_heads": 3, "set_inner_widths": "split"}, "n_heads=3 to divide the width 16"),
     ({"set_inner_widths": "half"}, "set_inner_widths='half'")],
)
def test_bad_fuxi_mme_settings_fail_in_config(overrides, extra, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        Config("Fuxi-MME", "mini", config_dict={**overrides, **extra})


def test_a_dataset_without_timestamps_needs_use_time_channel_false(tmp_path):
    folder = tmp_path / "notime"
    folder.mkdir()
    rows = [f"{u}\t{(u * 7 + k) % 40 + 1}" for u in range(1, 30) for k in range(6)]
    (folder / "notime.inter").write_text("user_id:token\titem_id:token\n" + "\n".join(rows) + "\n")
    base = {"data_path": str(tmp_path), "hidden_size": 32, "state": "ERROR"}
    config, _, train_data, _, _ = build_data("FuXiAlpha", {**base, "dataset": "notime"})
    with pytest.raises(ConfigError, match="has no 'timestamp' column.*use_time_channel=False"):
        FuXiAlpha(config, train_data._dataset)
    config, _, train_data, _, _ = build_data("FuXiAlpha", {**base, "dataset": "notime", "use_time_channel": False})
    model = FuXiAlpha(config, train_data._dataset)
    assert torch.isfinite(model.calculate_loss(first_batch(train_data))[0])
