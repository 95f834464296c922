"""User–item graph: normalisation, bipartite negatives, HGCN closed forms, VGAE losses."""

import pytest
import torch

from recbole_hymoe.nn.graph import (
    FERMI_DIRAC_R,
    VGAE,
    BipartiteGraph,
    HyperbolicGCN,
    normalized_adjacency,
    spmm,
)
from recbole_hymoe.nn.lorentz import centroid, exp_o, log_o, minkowski_dot

# 3 users (0 = padding) x 5 items (0 = padding, 4 never seen): R[u, i]
USERS = torch.tensor([1, 1, 2, 2, 2])
ITEMS = torch.tensor([1, 2, 1, 2, 3])


def dense_adjacency(num_users=3, num_items=5):
    a = torch.zeros(num_users + num_items, num_users + num_items, dtype=torch.float64)
    a[USERS, ITEMS + num_users] = 1.0
    a[ITEMS + num_users, USERS] = 1.0
    return a


def test_symmetric_normalisation_matches_the_dense_formula():
    adj = normalized_adjacency(USERS, ITEMS, 3, 5, "sym").to_dense()
    a = dense_adjacency()
    degree = a.sum(1)
    inv_sqrt = torch.where(degree > 0, degree.pow(-0.5), torch.zeros_like(degree))
    assert torch.allclose(adj, inv_sqrt[:, None] * a * inv_sqrt[None, :])
    assert torch.equal(adj, adj.t())
    assert adj[0].abs().sum() == 0 and adj[3].abs().sum() == 0 and adj[7].abs().sum() == 0  # padding, unseen
    # a bipartite graph's normalised adjacency has the eigenvalues ±1
    eigenvalues = torch.linalg.eigvalsh(adj)
    assert eigenvalues.max().item() == pytest.approx(1.0) and eigenvalues.min().item() == pytest.approx(-1.0)


def test_row_self_loop_normalisation_is_hgcf_row_stochastic():
    adj = normalized_adjacency(USERS, ITEMS, 3, 5, "row_self_loop").to_dense()
    a = dense_adjacency() + torch.eye(8, dtype=torch.float64)
    assert torch.allclose(adj, a / a.sum(1, keepdim=True))
    assert torch.allclose(adj.sum(1), torch.ones(8, dtype=torch.float64))
    assert adj[0, 0] == 1.0  # an isolated node keeps itself


def test_graph_deduplicates_interactions_and_knows_its_edges():
    graph = BipartiteGraph(torch.cat([USERS, USERS[:2]]), torch.cat([ITEMS, ITEMS[:2]]), 3, 5)
    assert graph.num_edges == 5 and graph.num_nodes == 8
    assert graph.adjacency.to_dense().max() <= 1.0  # a repeated interaction is still one edge
    assert graph.is_edge(torch.tensor([1, 1, 2, 2]), torch.tensor([2, 3, 3, 4])).tolist() == [True, False, True, False]
    assert "adjacency" not in graph.state_dict()  # data, not weights


@pytest.mark.parametrize("norm", ["sym", "row_self_loop"])
def test_edge_dropout_drops_both_entries_of_an_edge_keeps_self_loops_and_is_unbiased(norm):
    graph = BipartiteGraph(USERS, ITEMS, 3, 5, norm)
    full = graph.adjacency.to_dense()  # [8, 8]
    edge_entry = dense_adjacency() > 0  # the two entries of every training edge
    torch.manual_seed(0)
    draws = []
    for _ in range(4000):
        adj, adj_t = graph.dropped_adjacency(0.25)
        adj, adj_t = adj.to_dense(), adj_t.to_dense()
        assert torch.equal(adj_t, adj.t())  # the stored transpose is the dropped matrix's
        kept = adj != 0
        assert torch.equal(kept & edge_entry, (kept & edge_entry).t())  # an edge goes or stays whole
        assert torch.allclose(adj[kept & edge_entry], full[kept & edge_entry] / 0.75)
        assert torch.equal(adj[~edge_entry], full[~edge_entry])  # self loops (row_self_loop) untouched
        draws.append(adj)
    kept_share = (torch.stack(draws) != 0)[:, edge_entry].double().mean()
    assert kept_share.item() == pytest.approx(0.75, abs=0.01)
    assert torch.allclose(torch.stack(draws).mean(0), full, atol=0.02)  # E[Â'] = Â
    assert torch.equal(graph.dropped_adjacency(0.0)[0].to_dense(), full)


def test_sampled_negatives_are_items_of_the_same_user_and_never_its_edges():
    users = torch.arange(1, 41).repeat_interleave(5)
    items = torch.randint(1, 30, (200,))
    graph = BipartiteGraph(users, items, 41, 30)
    batch = graph.sample_edges(2000)
    assert graph.is_edge(batch.users, batch.pos_items).all()
    assert ((batch.neg_items >= 1) & (batch.neg_items < 30)).all()  # item ids, never padding or a user
    assert not graph.is_edge(batch.users, batch.neg_items).any()
    assert batch.users.shape == batch.neg_items.shape == (2000,)


def test_tangent_aggregation_is_lightgcn_followed_by_exp_o():
    adj = normalized_adjacency(USERS, ITEMS, 3, 5)
    emb = 0.1 * torch.randn(8, 4, dtype=torch.float64)
    tangent = HyperbolicGCN(3, "tangent")(adj, emb, 1.0)
    a = adj.to_dense()
    expected = a @ emb + a @ a @ emb + a @ a @ a @ emb
    assert torch.allclose(tangent, expected, atol=1e-12)
    # tangent aggregation does not depend on the curvature: log_o(exp_o(u)) = u for every c
    assert torch.allclose(HyperbolicGCN(3, "tangent")(adj, emb, 3.0), tangent, atol=1e-12)


def test_tangent_aggregation_runs_in_the_embeddings_dtype():
    # no manifold map is evaluated, so float32 embeddings on a float32 adjacency stay float32 and
    # agree with the float64 computation to float32 rounding
    emb = torch.randn(8, 4, dtype=torch.float64) * 3.0
    gcn = HyperbolicGCN(3, "tangent", max_tangent_norm=2.5)
    exact = gcn(normalized_adjacency(USERS, ITEMS, 3, 5), emb, 1.0)
    single = gcn(normalized_adjacency(USERS, ITEMS, 3, 5, dtype=torch.float32), emb.float(), 1.0)
    assert single.dtype == torch.float32
    assert torch.allclose(single.double(), exact, rtol=1e-6, atol=1e-6)
    assert not torch.equal(single.double(), exact)  # really computed in float32


def hgcf_reference(adj, emb, c, layers, aggregation, max_norm):
    """HGCF's propagation written with every exp_o / log_o it computes."""
    x = exp_o(emb, c, max_norm)
    t = log_o(x, c)
    total = torch.zeros_like(t)
    for _ in range(layers):
        if aggregation == "tangent":
            t = adj @ t
        else:
            x = centroid(adj @ x, c)
            t = log_o(x, c)
        total = total + t
    return log_o(exp_o(total, c, max_norm), c)


@pytest.mark.parametrize("aggregation", ["tangent", "centroid"])
@pytest.mark.parametrize("c", [0.5, 2.0])
def test_propagation_equals_hgcf_maps_including_the_clip(aggregation, c):
    adj = normalized_adjacency(USERS, ITEMS, 3, 5, "row_self_loop")
    emb = (torch.randn(8, 4, dtype=torch.float64)
           * torch.tensor([0.1, 1.0, 3.0, 6.0, 0.5, 2.0, 4.0, 0.2]).double()[:, None])
    got = HyperbolicGCN(2, aggregation, max_tangent_norm=2.5)(adj, emb, c)
    expected = hgcf_reference(adj.to_dense(), emb, c, 2, aggregation, 2.5)
    assert torch.allclose(got, expected, atol=1e-9)
    assert got.norm(dim=-1).max().item() <= 2.5 + 1e-12  # clipped rows exist and stay at the limit
    assert emb.norm(dim=-1).max().item() > 2.5


@pytest.mark.parametrize("norm", ["sym", "row_self_loop"])
def test_graph_products_with_the_stored_transpose_match_torch_gradients(norm):
    graph = BipartiteGraph(USERS, ITEMS, 3, 5, norm)
    assert torch.equal(graph.adjacency_t.to_dense(), graph.adjacency.to_dense().t())
    x = torch.randn(8, 4, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(8, 4, dtype=torch.float64)
    (spmm(graph.adjacency, x, graph.adjacency_t) * weights).sum().backward()
    fast = x.grad.clone()
    x.grad = None
    (torch.sparse.mm(graph.adjacency, x) * weights).sum().backward()
    assert torch.allclose(fast, x.grad, atol=1e-12)
    assert torch.allclose(fast, graph.adjacency.to_dense().t() @ weights, atol=1e-12)


def test_centroid_aggregation_stays_on_the_sheet_and_depends_on_the_curvature():
    adj = normalized_adjacency(USERS, ITEMS, 3, 5)
    emb = torch.randn(8, 4, dtype=torch.float64)
    gcn = HyperbolicGCN(2, "centroid")
    tangent = gcn(adj, emb, 1.0)
    points = exp_o(tangent, 1.0)
    assert torch.allclose(minkowski_dot(points, points), torch.full((8,), -1.0, dtype=torch.float64), rtol=1e-9)
    assert not torch.allclose(gcn(adj, emb, 2.0), tangent, atol=1e-3)


def test_vgae_kl_is_zero_at_the_prior_and_half_the_squared_mean_off_it():
    zeros = torch.zeros(7, 5)
    assert VGAE.kl_loss(zeros, zeros).item() == 0.0
    assert VGAE.kl_loss(torch.ones(7, 5), zeros).item() == pytest.approx(0.5 * 5)
    # σ = e: per dim ½(σ² - 1 - 2 log σ)
    assert VGAE.kl_loss(zeros, torch.ones(7, 5)).item() == pytest.approx(0.5 * 5 * (torch.e**2 - 3), rel=1e-6)


def test_vgae_logstd_is_clamped_and_sampling_happens_in_training_only():
    vgae = VGAE(4)
    adj = normalized_adjacency(USERS, ITEMS, 3, 5, dtype=torch.float32)
    with torch.no_grad():
        vgae.logstd.bias.fill_(50.0)
    h = torch.randn(8, 4)
    out = vgae.eval()(adj, h)
    assert out.logstd.max().item() <= 10.0 and torch.equal(out.z, out.mu)
    assert not torch.equal(vgae.train()(adj, h).z, out.mu)


@pytest.mark.parametrize("c", [0.5, 1.0, 2.0])
def test_fermi_dirac_logits_follow_the_closed_form(c):
    vgae = VGAE(3, "fermi_dirac")
    v = torch.nn.functional.normalize(torch.randn(3), dim=0)
    a, b = torch.tensor([[0.0], [0.4], [2.0]]), torch.tensor([[0.0], [1.9], [-1.0]])
    logits = vgae.edge_logits(a * v, b * v, c)  # points on one geodesic: d = |a - b|
    assert torch.allclose(logits, FERMI_DIRAC_R - (a - b).squeeze(1).pow(2), atol=1e-5)
    assert torch.allclose(VGAE(3, "inner").edge_logits(a * v, b * v, c), (a * b).squeeze(1))


@pytest.mark.parametrize("decoder", ["fermi_dirac", "inner"])
@pytest.mark.parametrize("aggregation", ["tangent", "centroid"])
def test_reconstruction_loss_falls_on_a_toy_graph(decoder, aggregation):
    # two communities: users 1-10 buy items 1-10, users 11-20 buy items 11-20
    users = torch.arange(1, 21).repeat_interleave(6)
    items = torch.where(users <= 10, torch.randint(1, 11, (120,)), torch.randint(11, 21, (120,)))
    graph = BipartiteGraph(users, items, 21, 21)
    embedding = torch.nn.Parameter(0.1 * torch.randn(graph.num_nodes, 8))
    gcn, vgae = HyperbolicGCN(2, aggregation), VGAE(8, decoder)
    edges = graph.sample_edges(512)

    def loss():
        tangent = gcn(graph.adjacency, embedding, 1.0).float()
        z = vgae(graph.adjacency, tangent).z
        return vgae.recon_loss(z[edges.users], z[21 + edges.pos_items], z[21 + edges.neg_items], 1.0)

    vgae.eval()
    with torch.no_grad():
        before = loss().item()
    vgae.train()
    optimizer = torch.optim.Adam([embedding, *vgae.parameters()], lr=1e-2)
    for _ in range(20):
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()
    vgae.eval()
    with torch.no_grad():
        after = loss().item()
    assert after < 0.8 * before
