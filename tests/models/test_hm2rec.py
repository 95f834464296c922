"""HM2Rec: training-only graph, curvature, Mamba4Rec reduction, loss tuple, ablations, errors, eval cache."""

import copy
import re
from pathlib import Path

import pytest
import torch
from conftest import build_data, build_model, first_batch

from recbole_hymoe import Config, HM2Rec, Mamba4Rec
from recbole_hymoe.errors import ConfigError
from recbole_hymoe.nn.moe import SparseMoE


@pytest.fixture(scope="module")
def overrides(mini_data_path):
    return {"data_path": str(mini_data_path), "MAX_ITEM_LIST_LENGTH": 20, "hidden_size": 16, "inner_size": 32,
            "mamba_d_state": 8, "train_batch_size": 32, "state": "ERROR", "show_progress": False}


@pytest.fixture(scope="module")
def data(overrides):
    return build_data("HM2Rec", overrides)


@pytest.fixture(scope="module")
def data_all_positions(overrides):
    return build_data("HM2Rec", {**overrides, "train_regime": "all_positions"})


@pytest.mark.parametrize("regime", ["prefix", "all_positions"])
def test_graph_holds_exactly_the_training_interactions(request, overrides, regime):
    _, dataset, train, valid, test = request.getfixturevalue("data" if regime == "prefix" else "data_all_positions")
    graph = build_model(HM2Rec, overrides, train._dataset, train_regime=regime).graph
    uid, iid = dataset.uid_field, dataset.iid_field
    for split in (valid, test):  # leave-one-out: one validation and one test target per user
        targets = split._dataset.inter_feat
        assert len(targets) == 120
        assert not graph.is_edge(targets[uid], targets[iid]).any()
    users, items = (torch.from_numpy(a) for a in dataset.train_interactions)
    assert graph.is_edge(users, items).all()
    # every interaction but the two held out per user (mini's users repeat no item)
    interactions = len((Path(overrides["data_path"]) / "mini" / "mini.inter").read_text().splitlines()) - 1
    assert graph.num_edges == len(users) == interactions - 2 * 120
    # whichever split the model is handed, the graph is the training graph
    for split in (valid, test):
        assert torch.equal(build_model(HM2Rec, overrides, split._dataset, train_regime=regime).graph.edge_keys,
                           graph.edge_keys)


def test_both_regimes_build_the_same_graph(overrides, data, data_all_positions):
    prefix = build_model(HM2Rec, overrides, data[2]._dataset).graph
    windows = build_model(HM2Rec, overrides, data_all_positions[2]._dataset, train_regime="all_positions").graph
    assert len(data_all_positions[2]._dataset) < len(data[2]._dataset)  # the windows are a filtered copy
    assert torch.equal(prefix.edge_keys, windows.edge_keys)
    assert torch.equal(prefix.adjacency.values(), windows.adjacency.values())


def test_a_dataset_without_the_training_split_is_refused(overrides, data):
    bare = copy.copy(data[2]._dataset)
    bare.train_interactions = None
    with pytest.raises(ValueError, match="train_interactions"):
        build_model(HM2Rec, overrides, bare)


@pytest.mark.parametrize("graph_agg", ["tangent", "centroid"])
def test_curvature_changes_the_loss(overrides, data, graph_agg):
    base = build_model(HM2Rec, overrides, data[2]._dataset, graph_agg=graph_agg).eval()
    curved = build_model(HM2Rec, overrides, data[2]._dataset, graph_agg=graph_agg, hyp_curvature=3.0).eval()
    with torch.no_grad():  # a generic point: at the initialisation every latent is within ≈ 0.03 of the origin
        base.node_embedding.weight.normal_()
        for layer in (base.vgae.gcn, base.vgae.mu):
            layer.weight.normal_(std=0.5)
    curved.load_state_dict(base.state_dict())
    batch = first_batch(data[2])
    with torch.no_grad():
        torch.manual_seed(1)
        rec_1, graph_1, _, _ = base.calculate_loss(batch)
        torch.manual_seed(1)  # same sampled edges
        rec_2, graph_2, _, _ = curved.calculate_loss(batch)
    assert abs(graph_1.item() - graph_2.item()) > 1e-3  # the Fermi-Dirac decoder's hyperbolic distance
    if graph_agg == "tangent":  # tangent aggregation is LightGCN + exp_o: c enters through the decoder only
        assert rec_1.item() == pytest.approx(rec_2.item(), abs=1e-6)
    else:  # the Lorentzian centroid moves the item latents themselves
        assert abs(rec_1.item() - rec_2.item()) > 1e-4


@pytest.mark.parametrize("graph_agg, manifold_dtype, adj_dtype", [
    ("tangent", "float64", torch.float32), ("centroid", "float64", torch.float64),
    ("centroid", "float32", torch.float32)])
def test_the_adjacency_is_float64_only_where_it_multiplies_hyperboloid_points(overrides, data, graph_agg,
                                                                              manifold_dtype, adj_dtype):
    model = build_model(HM2Rec, overrides, data[2]._dataset, graph_agg=graph_agg, manifold_dtype=manifold_dtype)
    assert model.graph.adjacency.dtype == adj_dtype
    assert model.graph_forward(with_loss=False).item_latent.dtype == torch.float32


@pytest.mark.parametrize("n_layers", [1, 2])
def test_without_graph_experts_and_rope_the_model_is_mamba4rec(overrides, data, n_layers):
    shared = {"n_layers": n_layers, "rope_target": "none", "mamba_init": "mamba4rec", "hidden_dropout_prob": 0.2}
    mamba4rec = build_model(Mamba4Rec, overrides, data[2]._dataset, **shared)
    hm2rec = build_model(HM2Rec, overrides, data[2]._dataset, use_graph=False, moe_num_experts=0, **shared)
    hm2rec.load_state_dict(mamba4rec.state_dict())  # strict: the same parameter names
    batch = first_batch(data[2])
    rec = {}
    for model in (mamba4rec, hm2rec):
        model.train()
        torch.manual_seed(3)  # the same dropout masks
        losses = model.calculate_loss(batch)
        sum(losses).backward()
        rec[model] = losses[0].item()
    assert rec[hm2rec] == pytest.approx(rec[mamba4rec], abs=1e-6)
    grads = dict(mamba4rec.named_parameters())
    for name, param in hm2rec.named_parameters():
        assert torch.allclose(param.grad, grads[name].grad, atol=1e-6), name
    mamba4rec.eval(), hm2rec.eval()
    valid_batch = first_batch(data[3])[0]
    with torch.no_grad():
        scores = hm2rec.full_sort_predict(valid_batch)
        assert torch.allclose(scores, mamba4rec.full_sort_predict(valid_batch), atol=1e-6)


@pytest.mark.parametrize("regime", ["prefix", "all_positions"])
def test_loss_is_four_finite_terms_whose_gradients_reach_every_part(request, overrides, regime):
    _, _, train, _, _ = request.getfixturevalue("data" if regime == "prefix" else "data_all_positions")
    model = build_model(HM2Rec, overrides, train._dataset, train_regime=regime).train()
    losses = model.calculate_loss(first_batch(train))
    assert isinstance(losses, tuple) and len(losses) == 4
    assert all(torch.isfinite(term) and term.item() > 0 for term in losses)
    sum(losses).backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    for name in ("node_embedding.weight", "vgae.logstd.weight", "graph_proj.weight",
                 "encoder.0.feed_forward.moe.router.proj.weight", "encoder.0.feed_forward.moe.experts.w_in"):
        assert name in dict(model.named_parameters())


def test_graph_loss_terms_are_the_vgae_parts_weighted_by_lambda_and_beta(overrides, data):
    model = build_model(HM2Rec, overrides, data[2]._dataset, graph_loss_weight=0.5, vgae_kl_weight=0.25).train()
    batch = first_batch(data[2])
    with torch.no_grad():
        torch.manual_seed(3)
        graph = model.graph_forward(with_loss=True)
        torch.manual_seed(3)  # the same ε and the same sampled edges
        _, recon, kl, _ = model.calculate_loss(batch)
    assert recon.item() == pytest.approx(0.5 * graph.recon_loss.item(), rel=1e-6)
    assert kl.item() == pytest.approx(0.5 * 0.25 * graph.kl_loss.item(), rel=1e-6)


def test_one_graph_pass_per_training_step(overrides, data, monkeypatch):
    model = build_model(HM2Rec, overrides, data[2]._dataset).train()
    calls, forward = [], model.graph_forward
    monkeypatch.setattr(model, "graph_forward", lambda with_loss: calls.append(with_loss) or forward(with_loss))
    model.calculate_loss(first_batch(data[2]))
    assert calls == [True]  # input lookup and scoring share the step's sampled table


ABLATIONS = {
    "no-graph": {"use_graph": False},
    "no-vgae": {"use_vgae": False},
    "dense-ffn": {"moe_num_experts": 0},
    "rope-input": {"rope_target": "input"},
    "rope-none": {"rope_target": "none"},
    "centroid": {"graph_agg": "centroid"},
    "inner-decoder": {"vgae_decoder": "inner"},
    "gate": {"fusion": "gate"},
    "fuse-vgae-mean": {"vgae_fusion_latent": "mean"},
    "replace": {"fusion": "replace"},
    "row-self-loop": {"adj_norm": "row_self_loop"},
    "learned-curvature": {"learn_curvature": True},
    "float32-manifold": {"manifold_dtype": "float32"},
    "top1-entropy": {"moe_top_k": 1, "moe_balance_loss": "entropy"},
    "no-kl": {"vgae_kl_weight": 0.0},
}


@pytest.mark.parametrize("extra", ABLATIONS.values(), ids=ABLATIONS.keys())
def test_every_ablation_switch_trains_and_scores(overrides, data, extra):
    model = build_model(HM2Rec, overrides, data[2]._dataset, **extra).train()
    rec, recon, kl, aux = model.calculate_loss(first_batch(data[2]))
    assert all(torch.isfinite(term) for term in (rec, recon, kl, aux))
    (rec + recon + kl + aux).backward()
    assert (recon.item() > 0) == (model.use_graph and model.use_vgae)
    assert (kl.item() > 0) == (model.use_graph and model.use_vgae and model.vgae_kl_weight > 0)
    assert (aux.item() > 0) == bool(model.moe_layers())
    if extra.get("moe_num_experts") == 0:
        assert not any(isinstance(m, SparseMoE) for m in model.modules())
    if extra.get("learn_curvature"):
        assert model.log_curvature.grad.abs() > 0
    if model.use_graph:
        assert model.node_embedding.weight.grad.abs().sum() > 0
    assert hasattr(model, "item_embedding") == (extra.get("fusion") != "replace")
    model.eval()
    valid_batch = first_batch(data[3])[0]
    with torch.no_grad():
        scores = model.full_sort_predict(valid_batch)
        table = model.item_table()
    assert scores.shape == (len(valid_batch), model.n_items) and torch.isfinite(scores).all()
    if model.use_graph:
        assert torch.equal(table[0], torch.zeros_like(table[0]))  # the padding row stays 0


@pytest.mark.parametrize("latent", ["sample", "mean"])
def test_training_fuses_the_vgae_sample_or_its_mean_and_evaluation_the_mean(overrides, data, latent):
    model = build_model(HM2Rec, overrides, data[2]._dataset, vgae_fusion_latent=latent)
    with torch.no_grad():
        mean_latent = model.eval().graph_forward(with_loss=False).item_latent  # [I, H], μ
        model.train()
        first, second = (model.graph_forward(with_loss=True) for _ in range(2))
    assert first.recon_loss > 0 and first.kl_loss > 0  # the reconstruction still decodes the samples
    if latent == "mean":
        torch.testing.assert_close(first.item_latent, mean_latent)
    else:  # two steps draw two samples around μ
        assert not torch.allclose(first.item_latent, second.item_latent)
        assert not torch.allclose(first.item_latent, mean_latent)


def test_last_position_shortcut_matches_the_full_encoding(overrides, data):
    model = build_model(HM2Rec, overrides, data[2]._dataset, n_layers=2).eval()
    batch = first_batch(data[3])[0]
    seq, length = batch["item_id_list"], batch["item_length"]
    with torch.no_grad():
        full = model.encode(seq, length).hidden
        scores = model.full_sort_predict(batch)
    assert torch.allclose(model.gather_indexes(full, length - 1) @ model.item_table().t(), scores, atol=1e-5)


def test_evaluation_caches_the_item_table_until_train(overrides, data, monkeypatch):
    model = build_model(HM2Rec, overrides, data[2]._dataset).eval()
    batch = first_batch(data[3])[0]
    calls, forward = [], model.graph_forward
    monkeypatch.setattr(model, "graph_forward", lambda with_loss: calls.append(with_loss) or forward(with_loss))
    with torch.no_grad():
        first = model.full_sort_predict(batch)
        model.node_embedding.weight.add_(0.5)
        assert torch.equal(model.full_sort_predict(batch), first)  # one graph pass per evaluation
        assert calls == [False]
    model.train()
    assert model._eval_table is None
    model.eval()
    with torch.no_grad():
        assert not torch.allclose(model.full_sort_predict(batch), first)
    assert calls == [False, False]
    cached = model._eval_table
    model.full_sort_predict(batch)  # with grad enabled the cache is neither read nor written
    assert model._eval_table is cached and len(calls) == 4  # input lookup and scoring
    model.load_state_dict(model.state_dict())
    assert model._eval_table is None


@pytest.mark.parametrize(
    "extra,fragment",
    [({"hyp_curvature": 0.0}, "hyp_curvature=0.0 must be > 0"),
     ({"hyp_curvature": -1.0}, "hyp_curvature=-1.0 must be > 0"),
     ({"vgae_decoder": "dot"}, "vgae_decoder='dot' must be one of"),
     ({"fusion": "concat"}, "fusion='concat' must be one of"),
     ({"graph_agg": "mean"}, "graph_agg='mean' must be one of"),
     ({"adj_norm": "rw"}, "adj_norm='rw' must be one of"),
     ({"manifold_dtype": "float16"}, "manifold_dtype='float16' must be one of"),
     ({"max_tangent_norm": 0}, "max_tangent_norm=0 must be > 0"),
     ({"learn_curvature": "yes"}, "learn_curvature='yes' must be True or False"),
     ({"rope_target": "bc", "mamba_d_state": 7}, "mamba_d_state=7 must be even"),
     ({"moe_top_k": 5}, "moe_top_k=5 must satisfy"),
     ({"fusion": "replace", "use_graph": False}, "fusion='replace'"),
     ({"graph_layers": 0}, "graph_layers=0 must be >= 1"),
     ({"graph_edge_dropout": 1.0}, "graph_edge_dropout=1.0 must be < 1.0"),
     ({"graph_edge_dropout": -0.1}, "graph_edge_dropout=-0.1 must be >= 0.0"),
     ({"graph_weight_decay": -1e-4}, "graph_weight_decay=-0.0001 must be >= 0.0")],
)
def test_bad_settings_fail_in_config_naming_the_key(overrides, extra, fragment):
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        Config("HM2Rec", "mini", config_dict={**overrides, **extra})


@pytest.mark.parametrize("fusion", ["add", "gate", "replace"])
def test_graph_telemetry_measures_the_table_parts_and_draws_nothing(overrides, data, fusion):
    model = build_model(HM2Rec, overrides, data[2]._dataset, fusion=fusion)
    rng = torch.get_rng_state()
    stats = model.graph_telemetry()
    assert torch.equal(torch.get_rng_state(), rng)  # the runs' random streams are untouched
    with torch.no_grad():
        model.eval()
        table = model.item_table()[1:]  # [I-1, H], μ fused
        mu = model.graph_forward(with_loss=False).item_latent  # [I, H]
        model.train()
        draws = torch.stack([model.graph_forward(with_loss=False).item_latent for _ in range(2000)])  # [D, I, H]
    assert stats["table_norm"] == pytest.approx(table.norm(dim=1).mean().item(), rel=1e-6)
    assert ("id_norm" in stats) == (fusion != "replace") and ("gate" in stats) == (fusion == "gate")
    if fusion == "replace":
        graph_part, noise = mu, draws - mu
    else:
        graph_part = model.graph_proj(mu)
        noise = model.graph_proj(draws - mu)  # W_g σε, linear in the sample
        assert stats["id_norm"] == pytest.approx(model.item_embedding.weight[1:].norm(dim=1).mean().item(), rel=1e-6)
    if fusion == "gate":
        gate = torch.sigmoid(model.fusion_gate(torch.cat([model.item_embedding.weight, mu], dim=-1)))
        graph_part, noise = (1 - gate) * graph_part, (1 - gate) * noise  # λ held at μ, as documented
        assert stats["gate"] == pytest.approx(gate[1:].mean().item(), rel=1e-6)
    assert stats["graph_norm"] == pytest.approx(graph_part[1:].norm(dim=1).mean().item(), rel=1e-6)
    rms = noise[:, 1:].square().sum(-1).mean(0).sqrt()  # [I-1]: Monte-Carlo RMS of the sampled part
    assert stats["noise_norm"] == pytest.approx(rms.mean().item(), rel=0.03)
    assert stats["noise_ratio"] == pytest.approx((rms.square().sum().sqrt() / table.norm()).item(), rel=0.03)


@pytest.mark.parametrize("extra, keys", [
    ({"vgae_fusion_latent": "mean"}, {"id_norm", "graph_norm", "table_norm"}),
    ({"use_vgae": False, "learn_curvature": True}, {"id_norm", "graph_norm", "table_norm", "curvature"}),
])
def test_graph_telemetry_has_no_noise_when_training_fuses_none(overrides, data, extra, keys):
    model = build_model(HM2Rec, overrides, data[2]._dataset, **extra)
    stats = model.graph_telemetry()
    assert set(stats) == keys
    if "curvature" in stats:
        assert stats["curvature"] == pytest.approx(overrides.get("hyp_curvature", 1.0))


def test_the_trainer_logs_the_graph_each_epoch_even_without_experts(overrides, data):
    from recbole_hymoe.trainer import build_trainer

    config = Config("HM2Rec", "mini", config_dict={**overrides, "moe_num_experts": 0, "epochs": 1})
    model = HM2Rec(config, data[2]._dataset)
    trainer = build_trainer(config, model)
    trainer._train_epoch(data[2], 0)
    assert [record["epoch"] for record in trainer.moe_history] == [0]
    assert trainer.moe_history[0]["layers"] == {} and trainer.moe_history[0]["graph"]["noise_ratio"] > 0
    mamba = build_model(HM2Rec, overrides, data[2]._dataset, use_graph=False, moe_num_experts=0)
    assert not mamba.has_telemetry()


def test_edge_dropout_redraws_the_graph_each_training_pass_and_evaluation_uses_all_of_it(overrides, data):
    plain = build_model(HM2Rec, overrides, data[2]._dataset, vgae_fusion_latent="mean")
    dropped = build_model(HM2Rec, overrides, data[2]._dataset, vgae_fusion_latent="mean", graph_edge_dropout=0.3)
    dropped.load_state_dict(plain.state_dict())
    with torch.no_grad():
        first, second = (dropped.train().graph_forward(with_loss=False).item_latent for _ in range(2))
        assert not torch.allclose(first, second)  # two passes, two draws
        assert torch.equal(plain.train().graph_forward(with_loss=False).item_latent,
                           plain.graph_forward(with_loss=False).item_latent)  # μ fused, no dropout: no draw
        torch.testing.assert_close(dropped.eval().item_table(), plain.eval().item_table())
    losses = dropped.train().calculate_loss(first_batch(data[2]))
    sum(losses).backward()
    assert all(torch.isfinite(term) for term in losses) and dropped.node_embedding.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("graph_weight_decay", [0.0, 0.5])
def test_graph_weight_decay_decays_the_node_embeddings_alone(overrides, data, graph_weight_decay):
    from recbole_hymoe.trainer import build_trainer

    config = Config("HM2Rec", "mini", config_dict={**overrides, "graph_weight_decay": graph_weight_decay,
                                                   "weight_decay": 0.0, "learning_rate": 0.01})
    model = HM2Rec(config, data[2]._dataset)
    optimizer = build_trainer(config, model).optimizer
    groups = optimizer.param_groups
    nodes = model.node_embedding.weight
    if graph_weight_decay == 0:  # RecBole's single group, as before the key existed
        assert len(groups) == 1 and groups[0]["params"] == list(model.parameters())
        return
    assert [group["weight_decay"] for group in groups] == [0.0, graph_weight_decay]
    assert groups[1]["params"] == [nodes]
    assert sorted(map(id, groups[0]["params"] + groups[1]["params"])) == sorted(map(id, model.parameters()))
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer.zero_grad()
    sum(p.sum() for p in model.parameters()).mul(0.0).backward()  # zero loss gradient everywhere
    optimizer.step()
    # Adam's first step on the gradient g = wd * p alone: p - lr * g / (|g| + eps)
    pull = graph_weight_decay * before["node_embedding.weight"]
    torch.testing.assert_close(nodes.detach(), before["node_embedding.weight"] - 0.01 * pull / (pull.abs() + 1e-8))
    for name, p in model.named_parameters():
        if name != "node_embedding.weight":
            assert torch.equal(p.detach(), before[name]), name
