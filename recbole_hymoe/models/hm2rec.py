"""HM2Rec: hyperbolic graph convolution + VGAE item latents, Mamba with RoPE, MoE in place of the FFN.

Reference:
    Yuwen Liu, Lianyong Qi, Xingyuan Mao, Weiming Liu, Xuhui Fan, Qiang Ni, Xuyun Zhang, Yang
    Zhang, Yuan Tian, Amin Beheshti. "Hyperbolic-Enhanced Mixture-of-Experts Mamba for Sequential
    Recommendation." AAAI 2026. Only the abstract could be read; no official code exists.

Glossary: B batch, L ``MAX_ITEM_LIST_LENGTH``, H ``hidden_size``, U users, I items (id 0 is
padding), N = U + I graph nodes, E ``moe_num_experts``, K ``moe_top_k``.
"""

from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from recbole_hymoe.blocks.feed_forward import MoEFeedForward
from recbole_hymoe.models.base import LOSS_PARAMS, MOE_PARAMS, PluginSequentialRecommender
from recbole_hymoe.models.mamba4rec import (
    MAMBA4REC_HOST_PARAMS,
    build_mamba_encoder,
    encode_mamba,
    init_mamba_host,
    mamba_problems,
)
from recbole_hymoe.models.params import Boolean, Choice, Integer, Number, Param
from recbole_hymoe.nn.dropout import Dropout
from recbole_hymoe.nn.graph import ADJ_NORMS, GRAPH_AGGS, VGAE, VGAE_DECODERS, BipartiteGraph, HyperbolicGCN

FUSIONS = ("add", "gate", "replace")
# Which VGAE latent a training step fuses into the item table (evaluation always fuses μ).
FUSION_LATENTS = ("sample", "mean")
MANIFOLD_DTYPES = {"float64": torch.float64, "float32": torch.float32}
# HGCF initialises its node embeddings uniformly in (-0.1, 0.1).
GRAPH_INIT_SCALE = 0.1


def training_graph(dataset, norm, dtype):
    """Build the bipartite graph of the training interactions of ``dataset``'s split.

    ``train_interactions`` of :class:`~recbole_hymoe.data.RegimeDataset` (and of each of its
    splits) holds the user and item of every training interaction: none of the leave-one-out
    validation or test targets.

    Raises:
        ValueError: ``dataset`` does not carry ``train_interactions`` (not built by :class:`RegimeDataset`).
    """
    source = getattr(dataset, "train_interactions", None)
    if source is None:
        raise ValueError(
            "HM2Rec builds its graph from the training split: the dataset must carry `train_interactions` "
            "(build it with recbole_hymoe's pipeline, which uses recbole_hymoe.data.RegimeDataset)"
        )
    users, items = (torch.from_numpy(np.asarray(a, dtype=np.int64)) for a in source)
    return BipartiteGraph(users, items, dataset.user_num, dataset.item_num, norm, dtype)


class GraphOutput(NamedTuple):
    """What :meth:`HM2Rec.graph_forward` returns.

    Attributes:
        item_latent (FloatTensor): [I, H] item rows of the graph latent (tangent coordinates).
        recon_loss (FloatTensor): scalar VGAE edge reconstruction loss ``L_rec`` (0 without VGAE
            or when not asked).
        kl_loss (FloatTensor): scalar VGAE KL term ``L_KL`` (0 likewise), not yet weighted by β.
    """

    item_latent: torch.Tensor
    recon_loss: torch.Tensor
    kl_loss: torch.Tensor


class HM2Rec(PluginSequentialRecommender):
    """HM2Rec: graph-enhanced item table -> Mamba (RoPE on B/C) -> MoE-FFN, CE over the item table.

    Graph: the training user–item graph ``Â`` (``adj_norm``), node embeddings on the Lorentz model
    of curvature -c, ``graph_layers`` HGCF propagations (``graph_agg``), then a VGAE (one GCN
    layer, μ / log σ heads, Fermi-Dirac decoder on the hyperbolic distance) whose item latents
    ``g_i`` are fused into the ID table: ``ẽ_i = E_id[i] + W_g g_i`` (``fusion``), ``ẽ_0 = 0``.
    Sequence: Mamba4Rec's layout, ``LN(Dropout(ẽ[seq]))`` -> per layer
    ``LN(Dropout(Mamba(x)) [+ x])`` -> ``LN(h + Dropout(MoE(h)))``.
    Loss: ``L = CE(user · ẽᵀ) + λ_g (L_rec + β L_KL) + λ_bal L_bal``, returned as the tuple
    ``(CE, λ_g·L_rec, λ_g·β·L_KL, MoE aux)`` so RecBole logs (and the run records) each term.

    NOTE (reconstruction: the abstract names the five parts, nothing else is known): the
    Lorentz model with fixed c = 1; the graph from the training split only; HGCF's tangent
    aggregation with symmetric normalisation and a sum
    over 3 layers; the VGAE encoder, its Fermi-Dirac decoder (r = 2, t = 1), one uniform negative
    item (not a training item of the user) per sampled edge, β = 1e-3 and λ_g = 0.1; the additive
    fusion with W_g and its use as both input and output table; RoPE on Mamba's B and C with A
    tied in rotated pairs; 4 top-2 experts shaped like Mamba4Rec's FFN with a Switch balance loss
    (λ = 0.01) and no dense branch. Every choice is a config key with its alternatives
    (``graph_agg: centroid``, ``vgae_decoder: inner``, ``fusion: gate | replace``,
    ``vgae_fusion_latent: mean``, ``graph_edge_dropout`` > 0 (LightGCN's regulariser) and
    ``graph_weight_decay`` > 0 (HGCF's: weight decay on the node embeddings), both off since the
    abstract names no regulariser, ``rope_target: input | none``, ``use_graph``, ``use_vgae``,
    ``moe_num_experts: 0``). The
    VGAE's KL is the Euclidean one in the tangent space at the origin (a wrapped normal's log-det
    term is left out). Initialisation: graph nodes U(±0.1) (HGCF), VGAE layers Glorot with
    σ₀ = 0.1 (see :data:`~recbole_hymoe.nn.graph.INIT_LOGSTD`), everything else Mamba4Rec's. With
    tangent aggregation the item latents do not depend on c; c acts through the decoder's
    distances (and, with ``graph_agg: centroid``, the aggregation itself). With
    ``use_graph: false, moe_num_experts: 0, rope_target: none`` the model is the package's
    Mamba4Rec (same parameter names).

    NOTE (``vgae_fusion_latent``): the spec fuses the VGAE's sample z = μ + σ·ε into the table in
    training (``sample``, the default) and μ in evaluation; Kipf & Welling's own code uses z only
    in the edge decoder and μ downstream (``mean``). At initialisation the sampled noise ‖W_g σε‖
    is ≈ 80 % of the ID rows' norm and ≈ 9× the graph signal ‖W_g μ‖ (Beauty), so ``sample``
    trains under heavy noise on every item's logit that evaluation never sees — early on: σ
    shrinks in training, to 4 % of the table's norm at the best epoch of a Beauty run
    (:meth:`graph_telemetry`); the Beauty ablation (``yaml/bench/hm2rec-ablation-beauty.yaml``)
    decides the default.
    """

    LOSS_TERMS = ("recommendation", "graph reconstruction λ_g·L_rec", "graph KL λ_g·β·L_KL", "MoE balance")
    PARAMS = (
        *MAMBA4REC_HOST_PARAMS,
        *MOE_PARAMS,
        Param("use_graph", Boolean()),
        Param("hyp_curvature", Number(0.0, min_exclusive=True)),
        Param("learn_curvature", Boolean()),
        Param("graph_layers", Integer(1)),
        Param("adj_norm", Choice(*ADJ_NORMS)),
        Param("graph_edge_dropout", Number(0.0, 1.0, max_exclusive=True)),
        Param("graph_weight_decay", Number(0.0)),
        Param("graph_agg", Choice(*GRAPH_AGGS)),
        Param("use_vgae", Boolean()),
        Param("vgae_decoder", Choice(*VGAE_DECODERS)),
        Param("vgae_kl_weight", Number(0.0)),
        Param("vgae_edge_batch", Integer(1)),
        Param("graph_loss_weight", Number(0.0)),
        Param("fusion", Choice(*FUSIONS)),
        Param("vgae_fusion_latent", Choice(*FUSION_LATENTS)),
        Param("max_tangent_norm", Number(0.0, min_exclusive=True)),
        Param("manifold_dtype", Choice(*MANIFOLD_DTYPES)),
        *LOSS_PARAMS,
    )

    @classmethod
    def check_values(cls, values):
        problems = super().check_values(values) + mamba_problems(values)
        if values["fusion"] == "replace" and not values["use_graph"]:
            problems.append("fusion='replace' makes the graph latents the item table: it needs use_graph=True")
        return problems

    def __init__(self, config, dataset):
        super().__init__(config, dataset)

        # read hyperparameters
        hp = self.hparams
        hidden = hp["hidden_size"]
        self.use_graph = hp["use_graph"]
        self.use_vgae = hp["use_vgae"]
        self.fusion = hp["fusion"]
        self.fuse_mean = hp["vgae_fusion_latent"] == "mean"
        self.graph_loss_weight = hp["graph_loss_weight"]
        self.vgae_kl_weight = hp["vgae_kl_weight"]
        self.vgae_edge_batch = hp["vgae_edge_batch"]
        self.graph_edge_dropout = hp["graph_edge_dropout"]
        self.graph_weight_decay = hp["graph_weight_decay"]
        self.fixed_curvature = hp["hyp_curvature"]
        manifold_dtype = MANIFOLD_DTYPES[hp["manifold_dtype"]]
        # Fused item table of the current training step (shared by input lookup and scoring) and
        # of the current evaluation (cleared by train()/eval()).
        self._step_table = None
        self._eval_table = None

        # build modules
        if not (self.use_graph and self.fusion == "replace"):
            self.item_embedding = nn.Embedding(self.n_items, hidden, padding_idx=0)
        self.dropout = Dropout(hp["hidden_dropout_prob"])
        self.layer_norm = nn.LayerNorm(hidden, eps=hp["layer_norm_eps"])
        # Mamba4Rec's layers whose FFNs are MoEs without a dense branch (with E = 0: Mamba4Rec's FFN)
        moe_ffn = {} if self.moe_settings is None else {"feed_forward": MoEFeedForward, "moe": self.moe_settings}
        self.encoder = build_mamba_encoder(hp, **moe_ffn)
        if self.use_graph:
            # Â's products are Euclidean (tangent aggregation, the VGAE's GCN layer): float32,
            # unless the centroid aggregation multiplies hyperboloid points by Â.
            adj_dtype = manifold_dtype if hp["graph_agg"] == "centroid" else torch.float32
            self.graph = training_graph(dataset, hp["adj_norm"], adj_dtype)
            self.node_embedding = nn.Embedding(self.graph.num_nodes, hidden)
            self.hgcn = HyperbolicGCN(hp["graph_layers"], hp["graph_agg"], hp["max_tangent_norm"], manifold_dtype)
            self.vgae = None
            if self.use_vgae:
                self.vgae = VGAE(hidden, hp["vgae_decoder"], hp["max_tangent_norm"], manifold_dtype)
            self.log_curvature = None
            if hp["learn_curvature"]:
                self.log_curvature = nn.Parameter(torch.tensor(float(np.log(self.fixed_curvature))))
            if self.fusion != "replace":
                self.graph_proj = nn.Linear(hidden, hidden, bias=False)  # W_g
            if self.fusion == "gate":
                self.fusion_gate = nn.Linear(2 * hidden, hidden)
            self.register_buffer("item_mask", (torch.arange(self.n_items) > 0).float().unsqueeze(1), persistent=False)

        # init weights
        init_mamba_host(self, hp["mamba_init"], hp["initializer_range"])  # W_g: N(0, 0.02²), small
        if self.use_graph:
            nn.init.uniform_(self.node_embedding.weight, -GRAPH_INIT_SCALE, GRAPH_INIT_SCALE)
            if self.vgae is not None:
                self.vgae.reset_parameters()  # Glorot, σ₀ = 0.1 (RecBole's init stalls the decoder)

    def optimizer_param_groups(self):
        """With ``graph_weight_decay`` > 0, the graph's node embeddings form a parameter group of
        their own decayed at that rate (HGCF decays its node embeddings; it has no other
        parameters), everything else keeps the config's ``weight_decay``. The decay follows the
        configured ``learner``: Adam's (RecBole's default) is an L2 term added to the gradient, as
        in HGCF's Riemannian SGD; AdamW's is decoupled."""
        if not (self.use_graph and self.graph_weight_decay > 0):
            return super().optimizer_param_groups()
        nodes = self.node_embedding.weight
        others = [p for p in self.parameters() if p is not nodes]
        return [{"params": others}, {"params": [nodes], "weight_decay": self.graph_weight_decay}]

    # ----------------------------------------------------------------------------- graph
    def curvature(self):
        """Return c (a tensor when learned, parameterised as exp(log c) to stay positive)."""
        return self.fixed_curvature if self.log_curvature is None else self.log_curvature.exp()

    def propagate(self, adj, adj_t, c):
        """HGCN over the node embeddings with adjacency ``adj`` (``adj_t`` its transpose): [N, H]
        tangent coordinates in the embeddings' dtype."""
        weight = self.node_embedding.weight  # [N, H]
        return self.hgcn(adj, weight, c, adj_t).to(weight.dtype)

    def graph_forward(self, with_loss):
        """Run HGCN (and VGAE) over the whole training graph (in training, with ``graph_edge_dropout``
        of its edges dropped, one draw per call, shared by the HGCN and the VGAE's GCN layer).

        Args:
            with_loss (bool): also sample ``vgae_edge_batch`` edges and compute the VGAE loss.

        Returns:
            GraphOutput: item latents [I, H] and the VGAE's loss terms (not weighted by λ_g or β).
        """
        c = self.curvature()
        if self.training and self.graph_edge_dropout > 0:
            adj, adj_t = self.graph.dropped_adjacency(self.graph_edge_dropout)
        else:
            adj, adj_t = self.graph.adjacency, self.graph.adjacency_t
        latent = self.propagate(adj, adj_t, c)  # [N, H] tangent coordinates
        recon = kl = latent.new_zeros(())
        if self.vgae is not None:
            vgae = self.vgae(adj, latent, adj_t)
            z = vgae.z  # [N, H]: μ + σ·ε in training, μ in evaluation
            if with_loss:
                edges = self.graph.sample_edges(self.vgae_edge_batch)
                offset = self.graph.num_users  # item i is node U + i
                nodes = torch.cat([edges.users, offset + edges.pos_items, offset + edges.neg_items])  # [3S]
                recon = self.vgae.recon_loss(*z[nodes].chunk(3), c)  # one gather: one scatter back
                kl = VGAE.kl_loss(vgae.mu, vgae.logstd)
            latent = vgae.mu if self.fuse_mean else z
        return GraphOutput(latent[self.graph.num_users:], recon, kl)

    def fuse(self, item_latent):
        """Fuse graph item latents [I, H] into the item table [I, H]; the padding row is 0.

        ``add``: ``E_id + W_g g``; ``gate``: ``λ ⊙ E_id + (1 - λ) ⊙ W_g g`` with
        ``λ = σ(W_λ [E_id; g] + b)``; ``replace``: ``g``.
        """
        if self.fusion == "replace":
            table = item_latent
        else:
            ids = self.item_embedding.weight
            projected = self.graph_proj(item_latent)
            if self.fusion == "add":
                table = ids + projected
            else:
                gate = torch.sigmoid(self.fusion_gate(torch.cat([ids, item_latent], dim=-1)))
                table = gate * ids + (1.0 - gate) * projected
        return table * self.item_mask

    def item_table(self):
        """Return the item table ẽ [I, H] used for input lookup and scoring.

        Without the graph it is the ID table (as in Mamba4Rec). In a training step it is the one
        :meth:`calculate_loss` computed; in evaluation (eval mode, no grad) it is computed once and
        cached until :meth:`train` or :meth:`eval` is called or weights are loaded.
        """
        if not self.use_graph:
            return self.item_embedding.weight
        if self._step_table is not None:
            return self._step_table
        if self._eval_table is not None and not self.training and not torch.is_grad_enabled():
            return self._eval_table
        table = self.fuse(self.graph_forward(with_loss=False).item_latent)
        if not self.training and not torch.is_grad_enabled():
            self._eval_table = table
        return table

    # ----------------------------------------------------------------------------- telemetry
    def has_telemetry(self):
        """MoE layers or the graph: either gives the trainer something to log each epoch."""
        return super().has_telemetry() or self.use_graph

    def moe_telemetry(self):
        """The experts' telemetry plus ``graph`` (:meth:`graph_telemetry`) when the graph is on."""
        telemetry = super().moe_telemetry()
        if self.use_graph:
            telemetry["graph"] = self.graph_telemetry()
        return telemetry

    @torch.no_grad()
    def graph_telemetry(self):
        """How much of the fused item table ẽ the graph carries, as means over the real items.

        ``id_norm`` ‖E_id[i]‖ and ``graph_norm`` the graph term's norm (``add``: ‖W_g μ_i‖,
        ``gate``: ‖(1 - λ_i) ⊙ W_g μ_i‖, ``replace``: ‖μ_i‖), the part evaluation fuses;
        ``table_norm`` ‖ẽ_i‖; with ``vgae_fusion_latent: sample`` the sampled part a training
        step adds on top, as its root mean square ``noise_norm`` = sqrt(Σ_k s_k² Σ_j W_kj² σ_ij²)
        (exact, no draw, so the random streams are untouched; ``gate`` takes λ at μ) and
        ``noise_ratio``, the whole table's: RMS ‖noise‖_F / ‖ẽ‖_F (rows of items the training graph
        never saw may be 0); ``gate`` the mean λ; ``curvature`` c when learned.
        Without the VGAE, μ is the HGCN output.
        """
        c = self.curvature()
        adj, adj_t = self.graph.adjacency, self.graph.adjacency_t
        latent = self.propagate(adj, adj_t, c)  # [N, H]
        variance = None  # [N, H]: σ² of the sampled latent, when training fuses the sample
        if self.vgae is not None:
            latent, logstd = self.vgae.encode(adj, latent, adj_t)
            if not self.fuse_mean:
                variance = (2 * logstd).exp()
        item_latent = latent[self.graph.num_users:]  # [I, H], row 0 the padding item
        table = self.fuse(item_latent)[1:]  # [I-1, H]
        stats = {}
        if self.fusion == "replace":
            graph_part, scale = item_latent, None
        else:
            ids = self.item_embedding.weight
            stats["id_norm"] = ids[1:].norm(dim=1).mean()
            graph_part = self.graph_proj(item_latent)  # [I, H]
            scale = None
            if self.fusion == "gate":
                gate = torch.sigmoid(self.fusion_gate(torch.cat([ids, item_latent], dim=-1)))  # [I, H]
                stats["gate"] = gate[1:].mean()
                scale = 1.0 - gate
                graph_part = scale * graph_part
        stats["graph_norm"] = graph_part[1:].norm(dim=1).mean()
        stats["table_norm"] = table.norm(dim=1).mean()
        if variance is not None:
            variance = variance[self.graph.num_users:]  # [I, H] per latent dimension j
            if self.fusion != "replace":
                variance = variance @ self.graph_proj.weight.square().t()  # [I, H] per table dimension k
            if scale is not None:
                variance = variance * scale.square()
            noise = variance[1:].sum(dim=1).sqrt()  # [I-1]
            stats["noise_norm"] = noise.mean()
            stats["noise_ratio"] = noise.square().sum().sqrt() / table.norm()
        if self.log_curvature is not None:
            stats["curvature"] = c
        return {key: float(value) for key, value in stats.items()}

    def train(self, mode=True):
        """Set the mode and drop the evaluation cache (weights change in training)."""
        self._eval_table = None
        return super().train(mode)

    def load_state_dict(self, state_dict, strict=True, assign=False):
        """Load weights and drop the evaluation cache."""
        self._eval_table = None
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    # ----------------------------------------------------------------------------- encoding
    def encode(self, item_seq, item_seq_len, last_only=False, **inputs):
        """Mamba4Rec's forward (:func:`~recbole_hymoe.models.mamba4rec.encode_mamba`) on the fused table."""
        return encode_mamba(self, item_seq, item_seq_len, last_only, item_table=self.item_table())

    # ----------------------------------------------------------------------------- training
    def calculate_loss(self, interaction):
        """Return ``(rec_loss, λ_g·L_rec, λ_g·β·L_KL, moe_aux_loss)``; RecBole sums them and logs each.

        One graph pass per step: the fused table is computed once and shared by the input lookup
        and the scoring (the VGAE samples z, so two passes would see different tables).
        """
        if not self.use_graph:
            rec_loss, aux_loss = super().calculate_loss(interaction)
            zero = rec_loss.new_zeros(())
            return rec_loss, zero, zero, aux_loss
        graph = self.graph_forward(with_loss=True)
        self._step_table = self.fuse(graph.item_latent)
        try:
            rec_loss, aux_loss = super().calculate_loss(interaction)
        finally:
            self._step_table = None
        weight = self.graph_loss_weight
        return rec_loss, weight * graph.recon_loss, weight * self.vgae_kl_weight * graph.kl_loss, aux_loss
