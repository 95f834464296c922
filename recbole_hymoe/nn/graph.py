"""User–item graph, hyperbolic graph convolution (HGCF style) and a variational graph auto-encoder.

Glossary: U users, I items (RecBole ids, user 0 and item 0 are padding), N = U + I nodes (user u
is node u, item i is node U + i), M training edges, H hidden size, d = H spatial dimensions of
the Lorentz model (points have d + 1 coordinates), S ``vgae_edge_batch``, c curvature.

References:
    Sun et al., "HGCF: Hyperbolic Graph Convolution Networks for Collaborative Filtering",
    WWW 2021 (layer6ai-labs/HGCF: ``utils/data_generator.py``, ``layers/hyp_layers.py``).
    He et al., "LightGCN", SIGIR 2020 (symmetric normalisation; LightGCN averages layers 0…L,
    HGCF's resSumGCN, followed here, sums layers 1…L).
    Kipf & Welling, "Variational Graph Auto-Encoders", NeurIPS 2016 workshop, arXiv 1611.07308
    (PyG's ``VGAE`` for the clamps: log σ ≤ 10, KL averaged over nodes).
    Chami et al., "Hyperbolic Graph Convolutional Neural Networks", NeurIPS 2019 (Fermi-Dirac
    decoder on the squared hyperbolic distance).

NOTE: the layout (HGCF's tangent aggregation, one GCN layer plus μ / log σ heads, decoders,
bipartite negatives) is HM2Rec's reconstruction; see :class:`recbole_hymoe.models.hm2rec.HM2Rec`.
"""

import warnings
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from recbole_hymoe.nn.lorentz import MAX_TANGENT_NORM, centroid, clip_tangent, distance, exp_o, log_o

ADJ_NORMS = ("sym", "row_self_loop")
GRAPH_AGGS = ("tangent", "centroid")
VGAE_DECODERS = ("fermi_dirac", "inner")
MAX_LOGSTD = 10.0
# Initial σ of the VGAE posterior. The usual log σ ≈ 0 puts two latents √(2H) apart on
# average (≈ 11 at H = 64): d² ≫ r, every edge decodes as absent, the reconstruction loss
# starts near 2H and the noise W_g·σε swamps the item table. σ₀ = 0.1 keeps E[d²] = 2Hσ₀² ≈ 1.3
# below r at H = 64, so training starts near the decoder's working range and near Mamba4Rec.
INIT_LOGSTD = -2.302585092994046  # log(0.1)
# Fermi-Dirac decoder p = 1 / (exp((d² - r) / t) + 1): HGCN's link-prediction defaults.
FERMI_DIRAC_R = 2.0
FERMI_DIRAC_T = 1.0
NEGATIVE_ROUNDS = 5


def normalized_adjacency(users, items, num_users, num_items, norm="sym", dtype=torch.float64):
    """Normalised adjacency of the bipartite graph ``A = [[0, R], [Rᵀ, 0]]``, R the U×I edges.

    ``sym``: ``Â = D^-1/2 A D^-1/2`` (LightGCN); ``row_self_loop``: ``Â = (D + I)^-1 (A + I)``
    (HGCF's row normalisation with self loops). Isolated nodes (the padding user and item, unseen
    items) get an all-zero row with ``sym`` and a self loop of weight 1 with ``row_self_loop``.

    Args:
        users (LongTensor): [M] user of each edge, distinct (user, item) pairs.
        items (LongTensor): [M] item of each edge.
        num_users (int): U.
        num_items (int): I.
        norm (str): one of :data:`ADJ_NORMS`.
        dtype (torch.dtype): value dtype.

    Returns:
        Tensor: sparse CSR [N, N] (its products with dense matrices, forward and backward, run
        faster than COO's on CPU: ≈ 1.35× measured at Beauty's 34k nodes).
    """
    if norm not in ADJ_NORMS:
        raise ValueError(f"norm={norm!r} is not one of {ADJ_NORMS}")
    num_nodes = num_users + num_items
    rows = torch.cat([users, items + num_users])  # both directions: [2M]
    cols = torch.cat([items + num_users, users])
    if norm == "row_self_loop":
        loops = torch.arange(num_nodes)
        rows, cols = torch.cat([rows, loops]), torch.cat([cols, loops])
    degree = torch.bincount(rows, minlength=num_nodes).to(dtype)  # [N]
    if norm == "sym":
        inv_sqrt = degree.pow(-0.5).masked_fill(degree == 0, 0.0)
        values = inv_sqrt[rows] * inv_sqrt[cols]
    else:
        values = 1.0 / degree[rows]
    adj = torch.sparse_coo_tensor(torch.stack([rows, cols]), values, (num_nodes, num_nodes), check_invariants=True)
    with warnings.catch_warnings():  # torch flags its CSR layout as beta on every conversion
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return adj.coalesce().to_sparse_csr()


class _TransposedBackwardMM(torch.autograd.Function):
    """``adj @ x`` whose backward multiplies by a given ``adjᵀ``.

    torch's own backward of a CSR product re-derives ``adjᵀ`` (a sort and a CSR conversion)
    every call, ≈ 10 % of an HM2Rec training step at Beauty's size; the graph's adjacency never
    changes, so its transpose is built once (for ``sym`` it is the adjacency itself).
    """

    @staticmethod
    def forward(ctx, adj, adj_t, x):
        ctx.adj_t = adj_t
        return torch.sparse.mm(adj, x)

    @staticmethod
    def backward(ctx, grad_out):
        return None, None, torch.sparse.mm(ctx.adj_t, grad_out)


def spmm(adj, x, adj_t=None):
    """``adj @ x`` (sparse [N, N] times dense [N, H], differentiable in ``x``) computed in the
    adjacency's dtype, returned in ``x``'s dtype; ``adj_t`` ([N, N], ``adjᵀ``) speeds up the
    backward. Autocast is off inside: CPU sparse products have no bfloat16 kernel, and the graph's
    sums stay in the adjacency's dtype under ``precision: bf16`` too."""
    with torch.autocast(x.device.type, enabled=False):
        dense = x.to(adj.dtype)
        out = torch.sparse.mm(adj, dense) if adj_t is None else _TransposedBackwardMM.apply(adj, adj_t, dense)
    return out.to(x.dtype)


class EdgeBatch(NamedTuple):
    """Training edges with one negative item each.

    Attributes:
        users (LongTensor): [S] user ids.
        pos_items (LongTensor): [S] item ids the users interacted with (in training).
        neg_items (LongTensor): [S] item ids ≥ 1, drawn uniformly, redrawn while they hit a
            training edge of the same user (at most :data:`NEGATIVE_ROUNDS` times).
    """

    users: torch.Tensor
    pos_items: torch.Tensor
    neg_items: torch.Tensor


class BipartiteGraph(nn.Module):
    """The training user–item graph: normalised adjacency and edge list, as buffers.

    The buffers are not persistent: they are data, rebuilt from the training split whenever the
    model is built, so checkpoints stay small and carry no interactions.

    Args:
        users (LongTensor): [M'] user of each training interaction (duplicates allowed).
        items (LongTensor): [M'] item of each training interaction.
        num_users (int): U.
        num_items (int): I.
        norm (str): one of :data:`ADJ_NORMS`.
        dtype (torch.dtype): dtype of the adjacency values.
    """

    def __init__(self, users, items, num_users, num_items, norm="sym", dtype=torch.float64):
        super().__init__()
        self.num_users = num_users
        self.num_items = num_items
        self.symmetric = norm == "sym"
        keys = torch.unique(users.long() * num_items + items.long())  # sorted distinct pairs: [M]
        users, items = keys // num_items, keys % num_items
        adjacency = normalized_adjacency(users, items, num_users, num_items, norm, dtype)
        self.register_buffer("adjacency", adjacency, persistent=False)
        if not self.symmetric:
            self.register_buffer("_adjacency_t", adjacency.t().to_sparse_csr(), persistent=False)
        self.register_buffer("edge_users", users, persistent=False)
        self.register_buffer("edge_items", items, persistent=False)
        self.register_buffer("edge_keys", keys, persistent=False)
        # the training edge behind each stored entry of Â (and of Âᵀ), for edge dropout
        self.register_buffer("adjacency_edges", self.entry_edges(adjacency), persistent=False)
        if not self.symmetric:
            self.register_buffer("_adjacency_t_edges", self.entry_edges(self._adjacency_t), persistent=False)

    @property
    def adjacency_t(self):
        """``Âᵀ``, sparse CSR [N, N]: the adjacency itself when normalised ``sym``."""
        return self.adjacency if self.symmetric else self._adjacency_t

    def entry_edges(self, adj):
        """Index into the edge list of the training edge behind each stored entry of ``adj``.

        Args:
            adj (Tensor): sparse CSR [N, N] over this graph's nodes (Â or Âᵀ).

        Returns:
            LongTensor: [nnz] edge index in 0 … M-1 (an entry and its mirror share one), M for a
            self loop.
        """
        crow, cols = adj.crow_indices(), adj.col_indices()
        rows = torch.repeat_interleave(torch.arange(adj.size(0), device=cols.device), crow.diff())  # [nnz]
        user_row = rows < self.num_users
        users = torch.where(user_row, rows, cols)
        items = torch.where(user_row, cols, rows) - self.num_users
        edges = torch.searchsorted(self.edge_keys, users * self.num_items + items)
        return torch.where(rows == cols, self.num_edges, edges)

    def dropped_adjacency(self, p):
        """``(Â', Â'ᵀ)``: Â with each training edge dropped with probability ``p`` (both of its
        entries, so a symmetric Â stays symmetric) and the kept entries scaled by ``1 / (1 - p)``;
        self loops stay as they are.

        LightGCN's edge dropout (``__dropout_x`` in its official code: kept values divided by the
        keep probability, no renormalisation), drawn per undirected edge instead of per entry so
        that Â'ᵀ needs no transpose. Evaluation uses Â.

        Args:
            p (float): drop probability in [0, 1).

        Returns:
            tuple: sparse CSR [N, N] Â' and Â'ᵀ (the same tensor under ``sym``).
        """
        kept = (torch.rand(self.num_edges, device=self.edge_keys.device) >= p).to(self.adjacency.dtype) / (1.0 - p)
        scale = torch.cat([kept, kept.new_ones(1)])  # [M + 1]: the last entry for self loops

        def drop(adj, entry_edges):
            values = adj.values() * scale[entry_edges]
            # the indices are a valid CSR layout already: skip the check (and its warning)
            return torch.sparse_csr_tensor(adj.crow_indices(), adj.col_indices(), values, adj.shape,
                                           check_invariants=False)

        with warnings.catch_warnings():  # torch flags its CSR layout as beta on every construction
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            adjacency = drop(self.adjacency, self.adjacency_edges)
            if self.symmetric:
                return adjacency, adjacency
            return adjacency, drop(self._adjacency_t, self._adjacency_t_edges)

    @property
    def num_nodes(self):
        """N = U + I."""
        return self.num_users + self.num_items

    @property
    def num_edges(self):
        """M, distinct training (user, item) pairs."""
        return self.edge_keys.numel()

    def is_edge(self, users, items):
        """Return whether each (user, item) pair is a training edge, BoolTensor like ``users``."""
        keys = users * self.num_items + items
        pos = torch.searchsorted(self.edge_keys, keys).clamp(max=self.num_edges - 1)
        return self.edge_keys[pos] == keys

    def negative_items(self, users):
        """Draw one item per user uniformly from 1 … I-1, redrawing hits on the user's own edges.

        Bipartite-correct: a negative is always an (item, same user) pair, never a user-user
        or item-item pair (which a generic node-pair sampler such as PyG's would draw).
        """
        items = torch.randint(1, self.num_items, users.shape, device=users.device)
        for _ in range(NEGATIVE_ROUNDS):
            hit = self.is_edge(users, items)
            if not bool(hit.any()):
                break
            items = torch.where(hit, torch.randint_like(items, 1, self.num_items), items)
        return items

    def sample_edges(self, batch_size):
        """Sample ``batch_size`` training edges uniformly (with replacement) and one negative each.

        Returns:
            EdgeBatch: [S] users, positive and negative items (item ids, not node ids).
        """
        pick = torch.randint(0, self.num_edges, (batch_size,), device=self.edge_keys.device)
        users = self.edge_users[pick]
        return EdgeBatch(users, self.edge_items[pick], self.negative_items(users))


class HyperbolicGCN(nn.Module):
    """HGCF-style graph convolution on the Lorentz model (no weights, no non-linearity).

    ``X⁰ = exp_o(E)``. ``tangent`` (HGCF's resSumGCN): ``T⁰ = log_o(X⁰)``, ``T^{l+1} = Â T^l``;
    ``centroid``: ``X^{l+1} = centroid(Â X^l)`` on the manifold, ``T^l = log_o(X^l)``. Output
    ``X = exp_o(Σ_{l=1..L} T^l)``, returned as its tangent coordinates ``log_o(X)`` (what the
    VGAE reads). With tangent aggregation and Euclidean parameters this is a LightGCN-style
    propagation (sum of layers 1…L, not LightGCN's mean of 0…L) followed by one exp_o: curvature
    enters through ``centroid`` or a distance-based loss (the VGAE's Fermi-Dirac decoder).

    Args:
        num_layers (int): L ≥ 1 propagations.
        aggregation (str): one of :data:`GRAPH_AGGS`.
        max_tangent_norm (float): tangent-norm clip of every exp_o.
        dtype (torch.dtype): dtype of the manifold maths (``centroid`` aggregation; ``tangent``
            evaluates no manifold map).
    """

    def __init__(self, num_layers, aggregation="tangent", max_tangent_norm=MAX_TANGENT_NORM, dtype=torch.float64):
        super().__init__()
        if aggregation not in GRAPH_AGGS:
            raise ValueError(f"aggregation={aggregation!r} is not one of {GRAPH_AGGS}")
        if num_layers < 1:
            raise ValueError(f"num_layers={num_layers} must be >= 1")
        self.num_layers = num_layers
        self.aggregation = aggregation
        self.max_tangent_norm = max_tangent_norm
        self.dtype = dtype

    def forward(self, adj, embeddings, c, adj_t=None):
        """Propagate node embeddings.

        Args:
            adj (Tensor): sparse [N, N] normalised adjacency.
            embeddings (FloatTensor): [N, d] node parameters (tangent coordinates at o).
            c (float or FloatTensor): curvature.
            adj_t (Tensor): optional sparse [N, N] ``adjᵀ`` (a faster backward).

        Returns:
            FloatTensor: [N, d] tangent coordinates at o of the output points (the points are
            ``exp_o`` of them), in ``embeddings``' dtype with ``tangent`` aggregation and in
            ``dtype`` with ``centroid``.
        """
        # log_o(exp_o(u)) = clip(u) for every c: the round trips HGCF's code computes around the
        # tangent-space steps are written as the clip they equal (the maps cost ≈ 25 % of an
        # HM2Rec step at Beauty's size; they agree to float64 rounding, see the tests). What is
        # left of the tangent aggregation is Euclidean (clips and sums of products with Â, i.e.
        # LightGCN), so it runs in the embeddings' dtype: no manifold map is evaluated.
        if self.aggregation == "tangent":
            t = clip_tangent(embeddings, self.max_tangent_norm)  # log_o(X⁰): [N, d]
            total = 0.0
            for _ in range(self.num_layers):
                t = spmm(adj, t, adj_t)
                total = total + t
            return clip_tangent(total, self.max_tangent_norm)  # log_o(exp_o(Σ T^l))
        x = exp_o(embeddings.to(self.dtype), c, self.max_tangent_norm)  # [N, d+1]
        total = 0.0
        for _ in range(self.num_layers):
            x = centroid(spmm(adj, x, adj_t), c)
            total = total + log_o(x, c)
        return clip_tangent(total, self.max_tangent_norm)


class VGAEOutput(NamedTuple):
    """What :meth:`VGAE.forward` returns.

    Attributes:
        z (FloatTensor): [N, H] latent (μ + σ·ε in training, μ in eval).
        mu (FloatTensor): [N, H].
        logstd (FloatTensor): [N, H], clamped ≤ :data:`MAX_LOGSTD`.
    """

    z: torch.Tensor
    mu: torch.Tensor
    logstd: torch.Tensor


class VGAE(nn.Module):
    """Variational graph auto-encoder on tangent coordinates, with a hyperbolic decoder.

    Encoder: ``H₁ = ReLU(Â (H W₀ + 1b₀ᵀ))``, ``μ = H₁ W_μ + b_μ``, ``log σ = min(H₁ W_σ + b_σ, 10)``;
    ``z = μ + σ ⊙ ε`` in training, μ in eval; σ starts at 0.1 (:data:`INIT_LOGSTD`). Unlike
    Kipf & Welling's (bias-free, μ and log σ heads propagating with Â again), b₀ reaches node i
    scaled by (Â1)ᵢ and the heads are linear. Decoder ``fermi_dirac``:
    ``p(u, i) = 1 / (exp((d_L(exp_o z_u, exp_o z_i)² - r) / t) + 1)``; ``inner``: ``p = σ(z_u · z_i)``.
    Loss: ``L_rec = -mean log p(pos) - mean log(1 - p(neg))`` (through log-sigmoid of the logits,
    exact without PyG's 1e-15), ``L_KL = -½ mean_nodes Σ_dims (1 + 2 log σ - μ² - σ²)``.

    Args:
        hidden_size (int): H.
        decoder (str): one of :data:`VGAE_DECODERS`.
        max_tangent_norm (float): clip of exp_o in the decoder.
        dtype (torch.dtype): dtype of the decoder's manifold maths.
        r (float): Fermi-Dirac radius.
        t (float): Fermi-Dirac temperature.
    """

    def __init__(self, hidden_size, decoder="fermi_dirac", max_tangent_norm=MAX_TANGENT_NORM, dtype=torch.float64,
                 r=FERMI_DIRAC_R, t=FERMI_DIRAC_T):
        super().__init__()
        if decoder not in VGAE_DECODERS:
            raise ValueError(f"decoder={decoder!r} is not one of {VGAE_DECODERS}")
        self.decoder = decoder
        self.max_tangent_norm = max_tangent_norm
        self.dtype = dtype
        self.r, self.t = r, t
        self.gcn = nn.Linear(hidden_size, hidden_size)
        self.mu = nn.Linear(hidden_size, hidden_size)
        self.logstd = nn.Linear(hidden_size, hidden_size)
        self.reset_parameters()

    def reset_parameters(self):
        """Glorot-uniform weights (Kipf & Welling's), biases 0, the log σ bias at :data:`INIT_LOGSTD`.

        Not RecBole's N(0, 0.02²): it makes μ ≈ 1e-2, where the Fermi-Dirac gradient (∝ z_u - z_i)
        all but vanishes and the decoder cannot start separating edges.
        """
        for layer in (self.gcn, self.mu, self.logstd):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
        nn.init.constant_(self.logstd.bias, INIT_LOGSTD)

    def encode(self, adj, h, adj_t=None):
        """Return μ and log σ, [N, H] each, of node features ``h`` [N, H] (``adj_t`` as in :func:`spmm`)."""
        hidden = F.relu(spmm(adj, self.gcn(h), adj_t))
        return self.mu(hidden), self.logstd(hidden).clamp(max=MAX_LOGSTD)

    def forward(self, adj, h, adj_t=None):
        """Encode and sample (reparameterisation in training mode only).

        Args:
            adj (Tensor): sparse [N, N].
            h (FloatTensor): [N, H] tangent coordinates of the HGCN output.
            adj_t (Tensor): optional sparse [N, N] ``adjᵀ`` (a faster backward).

        Returns:
            VGAEOutput.
        """
        mu, logstd = self.encode(adj, h, adj_t)
        z = mu + torch.randn_like(mu) * logstd.exp() if self.training else mu
        return VGAEOutput(z, mu, logstd)

    @staticmethod
    def kl_loss(mu, logstd):
        """Mean over nodes of KL(N(μ, σ²) ‖ N(0, I)) = ``-½ Σ_dims (1 + 2 log σ - μ² - σ²)`` (0 at the prior).

        Args:
            mu (FloatTensor): [N, H].
            logstd (FloatTensor): [N, H].
        """
        # the same sum as ½ Σ (μ² + σ² - 2 log σ - 1) with σ² = exp(2 log σ): fewer passes over [N, H]
        return 0.5 * (mu.square() + (2 * logstd).exp() - 2 * logstd - 1).sum(-1).mean()

    def edge_logits(self, z_users, z_items, c):
        """Logits of edge probabilities, ``log(p / (1 - p))``, [..., S].

        Args:
            z_users (FloatTensor): [S, H] latents of the users.
            z_items (FloatTensor): [..., S, H] latents of the items (e.g. [2, S, H]: each user's
                positive and negative item, its point mapped once for both).
            c (float or FloatTensor): curvature.
        """
        if self.decoder == "inner":
            return (z_users * z_items).sum(-1)
        x_u = exp_o(z_users.to(self.dtype), c, self.max_tangent_norm)  # [S, d+1]
        x_i = exp_o(z_items.to(self.dtype), c, self.max_tangent_norm)
        sq_dist = distance(x_u, x_i, c).pow(2)
        return (-(sq_dist - self.r) / self.t).to(z_users.dtype)

    def recon_loss(self, z_users, z_pos, z_neg, c):
        """Binary cross-entropy of positive edges and their negatives, each averaged.

        Args:
            z_users (FloatTensor): [S, H].
            z_pos (FloatTensor): [S, H] latents of the positive items.
            z_neg (FloatTensor): [S, H] latents of the negative items.
            c (float or FloatTensor): curvature.

        Returns:
            FloatTensor: scalar.
        """
        pos, neg = self.edge_logits(z_users, torch.stack([z_pos, z_neg]), c)  # [S] each
        return -F.logsigmoid(pos).mean() - F.logsigmoid(-neg).mean()
