"""FuXi-α and Fuxi-MME (FuXi-α with multiple embedding sets and a Mixture-of-Experts).

References:
    Yufei Ye et al. "FuXi-α: Scaling Recommendation Model with Feature Interaction Enhanced
    Transformer." WWW'25 companion, arXiv 2502.03036. Official code: USTC-StarTeam/FuXi-alpha.
    Qiushi Pan et al. "Revisiting scalable sequential recommendation with Multi-Embedding Approach
    and Mixture-of-Experts." arXiv 2510.25285 ("Fuxi-MME"); no code is public.

Glossary: B batch, L ``MAX_ITEM_LIST_LENGTH``, d ``hidden_size``, M ``n_embedding_sets``,
W = d / M block width, I the width head and SwiGLU sizes derive from (d, or W with
``set_inner_widths: split``), E ``moe_num_experts``, K ``moe_top_k``.
"""

import math

import torch
from torch import nn
from torch.nn import functional as F

from recbole_hymoe.blocks.fuxi import MOE_TARGETS, FuXiBlock
from recbole_hymoe.errors import ConfigError
from recbole_hymoe.models.base import LOSS_PARAMS, MOE_PARAMS, EncoderOutput, PluginSequentialRecommender, run_layers
from recbole_hymoe.models.params import Boolean, Choice, Integer, Nullable, Number, Param
from recbole_hymoe.nn.dropout import Dropout
from recbole_hymoe.nn.moe import Experts, LinearExperts
from recbole_hymoe.nn.relative_bias import next_event_time_deltas, time_buckets

MIN_SET_WIDTH = 16
SET_INNER_WIDTHS = ("host", "split")  # Fuxi-MME: head and SwiGLU widths from d, or from d / M


class FuXiAlpha(PluginSequentialRecommender):
    """FuXi-α: stacked FuXi blocks (AMS + MFFN) over item and absolute-position embeddings.

    Input ``x⁰ = Dropout(E[item]·√d + P[pos]) ⊙ m``; ``n_layers`` :class:`FuXiBlock`; no final
    norm; the user vector at the last position and the item embeddings are L2-normalised and
    scored by cosine / ``temperature``; default loss: sampled softmax with 128 uniform negatives
    per position, trained over all positions (the official recipe).

    NOTE (our dense, RecBole-hosted reading of the official code):
        - padded tensors instead of fbgemm jagged ones (values at real positions are the same);
          the semantic channel divides by L = ``MAX_ITEM_LIST_LENGTH`` (the official code divides
          by its padded length 211 = 200 + 11);
        - timestamps come from RecBole's ``timestamp_list`` and the target's ``timestamp``
          (seconds); the temporal channel uses next-event differences as the official code;
        - validation split and early stopping on valid NDCG@10 (the official code has none);
          RecBole's Adam optimizer (the official AdamW uses betas (0.9, 0.98), weight decay 0);
        - ``use_time_channel: false`` removes the temporal channel (an ablation, not the paper).
    """

    PARAMS = (
        Param("hidden_size", Integer(1)),
        Param("n_layers", Integer(1)),
        Param("n_heads", Integer(1)),
        Param("qk_head_dim", Nullable(Integer(1))),
        Param("v_head_dim", Nullable(Integer(1))),
        Param("ffn_multiply", Number(0.0, min_exclusive=True)),
        Param("hidden_dropout_prob", Number(0.0, 1.0)),
        Param("ffn_single_stage", Boolean()),
        Param("use_time_channel", Boolean()),
        Param("num_time_buckets", Integer(1)),
        Param("initializer_range", Number(0.0, min_exclusive=True)),
        *LOSS_PARAMS,
    )

    @classmethod
    def n_sets(cls, values):
        """Number of embedding sets M (1 for FuXi-α)."""
        return 1

    @classmethod
    def inner_width(cls, values):
        """Width I that default head widths (I / n_heads) and the SwiGLU width (ffn_multiply · I) scale."""
        return values["hidden_size"]

    @classmethod
    def check_values(cls, values):
        problems = super().check_values(values)
        width = cls.inner_width(values)
        for key in ("qk_head_dim", "v_head_dim"):
            if values[key] is None and width % values["n_heads"]:
                problems.append(f"{key}=~ needs n_heads={values['n_heads']} to divide the width {width}; "
                                f"set {key} explicitly")
        return problems

    def __init__(self, config, dataset):
        super().__init__(config, dataset)

        # read hyperparameters
        hp = self.hparams
        self.hidden_size = hp["hidden_size"]
        self.num_sets = self.n_sets(hp)
        self.width = self.hidden_size // self.num_sets
        self.initializer_range = hp["initializer_range"]
        self.use_time = hp["use_time_channel"]
        self.time_list_field = config["TIME_FIELD"] + config["LIST_SUFFIX"]
        self.time_field = config["TIME_FIELD"]
        if self.use_time and (getattr(dataset, "time_from_file_order", False)
                              or self.time_list_field not in dataset.field2type):
            raise ConfigError(
                f"{type(self).__name__} reads timestamps (use_time_channel=True), but dataset "
                f"{config['dataset']!r} has no {config['TIME_FIELD']!r} column; add one (seconds) or "
                "set use_time_channel=False"
            )
        n_heads = hp["n_heads"]
        inner = self.inner_width(hp)
        qk_dim = hp["qk_head_dim"] or inner // n_heads
        v_dim = hp["v_head_dim"] or inner // n_heads
        ffn_inner = max(1, round(hp["ffn_multiply"] * inner))
        self.num_time_buckets = hp["num_time_buckets"] if self.use_time else 0

        # build modules
        self.item_embedding = nn.Embedding(self.n_items, self.hidden_size, padding_idx=0)
        self.position_embedding = nn.Embedding(self.max_seq_length, self.hidden_size)
        self.input_dropout = Dropout(hp["hidden_dropout_prob"])
        moe = self.moe_settings  # None for FuXi-α, which reads no moe_* key
        self.blocks = nn.ModuleList(
            FuXiBlock(self.width, n_heads, qk_dim, v_dim, ffn_inner, hp["hidden_dropout_prob"],
                      self.max_seq_length, self.num_time_buckets, hp["ffn_single_stage"], moe, hp.get("moe_target"))
            for _ in range(hp["n_layers"])
        )
        self.set_embedding = None
        if moe is not None and hp["moe_router_set_embedding"]:
            self.set_embedding = nn.Embedding(self.num_sets, self.width)

        # init weights (the official FuXi-α reset)
        self._init_weights()

    def _init_weights(self):
        """Item table truncated N(0, σ²); uvqk N(0, σ²); MFFN and expert weights xavier-uniform;
        everything else (positions, routers, set embedding) xavier-normal; biases as PyTorch's."""
        std = self.initializer_range
        nn.init.trunc_normal_(self.item_embedding.weight, std=std, a=-2 * std, b=2 * std)
        nn.init.xavier_normal_(self.position_embedding.weight)
        if self.set_embedding is not None:
            nn.init.xavier_normal_(self.set_embedding.weight)
        for block in self.blocks:
            nn.init.normal_(block.uvqk.weight, std=std)
            for name in ("w_o", "w_1", "w_2", "w_3"):
                layer = getattr(block, name, None)
                if layer is not None:
                    nn.init.xavier_uniform_(layer.weight)
            if block.moe is not None:
                for layer in block.moe.router.modules():  # one Linear, or the MLP router's two
                    if isinstance(layer, nn.Linear):
                        nn.init.xavier_normal_(layer.weight)
                self._init_experts(block.moe.experts, std)

    @staticmethod
    def _init_experts(experts, std):
        if isinstance(experts, Experts):  # SwiGLU experts, as the MFFN they replace
            for weight in (experts.w_in, experts.w_gate, experts.w_out):
                for e in range(experts.num_experts):
                    nn.init.xavier_uniform_(weight.data[e])
        elif isinstance(experts, LinearExperts) and experts.bias is not None:  # W_o experts (with bias)
            bound = 1.0 / math.sqrt(experts.in_features)
            for e in range(experts.num_experts):
                nn.init.xavier_uniform_(experts.weight.data[e])
            nn.init.uniform_(experts.bias, -bound, bound)
        else:  # W_u experts, as the uvqk projection they come from
            nn.init.normal_(experts.weight, std=std)

    def sequence_inputs(self, interaction):
        if not self.use_time:
            return {}
        return {"timestamps": interaction[self.time_list_field], "target_time": interaction[self.time_field]}

    def encode(self, item_seq, item_seq_len, last_only=False, timestamps=None, target_time=None):
        batch, length = item_seq.shape
        sets, width = self.num_sets, self.width
        mask = item_seq != 0  # [B, L]
        items = self.item_embedding(item_seq).view(batch, length, sets, width) * math.sqrt(width)
        positions = self.position_embedding(torch.arange(length, device=item_seq.device)).view(length, sets, width)
        x = self.input_dropout(items + positions) * mask[..., None, None]  # [B, L, M, W]
        x = x.permute(2, 0, 1, 3).reshape(sets * batch, length, width)  # streams into the batch: row = set·B + b
        stream_mask = mask.repeat(sets, 1)  # [M·B, L]
        stream_len = item_seq_len.repeat(sets)
        buckets = None
        if self.use_time:
            deltas = next_event_time_deltas(timestamps, item_seq_len, target_time)  # [B, L, L]
            buckets = time_buckets(deltas, self.num_time_buckets).repeat(sets, 1, 1)  # [M·B, L, L]
        set_embedding = None
        if self.set_embedding is not None:
            set_embedding = self.set_embedding.weight.repeat_interleave(batch, dim=0).unsqueeze(1)  # [M·B, 1, W]
        x, aux_loss = run_layers(self.blocks, x, stream_len, last_only, mask=stream_mask, time_buckets=buckets,
                                 set_embedding=set_embedding)
        out_len = x.size(1)
        x = x.view(sets, batch, out_len, width).permute(1, 2, 0, 3).reshape(batch, out_len, sets * width)
        return EncoderOutput(x, aux_loss)  # the M final states concatenated: [B, L (or 1), d]

    def user_output(self, hidden):
        return F.normalize(hidden, dim=-1, eps=1e-6)

    def item_table(self):
        return F.normalize(self.item_embedding.weight, dim=-1, eps=1e-6)


class FuxiMME(FuXiAlpha):
    """Fuxi-MME: FuXi-α whose item table is split into M embedding sets sharing one FuXi stack,
    with a sparsely-gated MoE in place of some block parameters.

    Each item's d-wide embedding is M independent sets of width d/M (same total size); the M
    streams go through the same blocks (folded into the batch, positional and temporal biases
    shared); the M final states are concatenated back to d and scored like FuXi-α.

    NOTE (reconstruction — the paper states only "M lower-dimensional embedding tables through a
    shared decoder" and "an MoE layer replacing relevant parameters of the Fuxi block"):
        - the MoE placement ``moe_target`` (``ffn``: the SwiGLU stage, experts are SwiGLU MLPs;
          ``w_o``; ``w_u``), E = 4, K = 2, the linear router on the replaced sub-layer's normalised
          input, the set embedding added to the router input (``moe_router_set_embedding``), the
          Switch balance loss (λ = 0.01) and the concatenation merge are our design;
        - the d-wide absolute position table is split into M chunks like the item table;
        - ``set_inner_widths: host`` (default): only the residual stream is d/M wide; each stream's
          attention heads (d_qk = d_v = d / n_heads) and SwiGLU or expert inner width
          (``ffn_multiply`` · d) keep FuXi-α's sizes at the same d (a dense block at d = 50,
          M = 2 holds 15.3k parameters, FuXi-α's 30.3k, ``split`` — every width divided by M —
          7.8k). The paper fixes neither; FuXi-α's official config sets d_qk = d_v apart from d.
          Chosen on Beauty (``results/bench/fuxi-mme-ablation-beauty``, seed 2020): ``split``
          stopped at best epoch 30 and tested 2.1 % below FuXi-α, ``host`` trained to epoch 96
          and tested level with it (−0.2 %);
        - the package's one MoE layer is used (renormalised top-K gates, dropless dispatch).
        ``n_embedding_sets: 1`` with ``moe_num_experts: 0`` is exactly FuXi-α.
    """

    PARAMS = FuXiAlpha.PARAMS + (
        Param("n_embedding_sets", Integer(1)),
        Param("moe_target", Choice(*MOE_TARGETS)),
        *MOE_PARAMS,
        Param("moe_router_set_embedding", Boolean()),
        Param("set_inner_widths", Choice(*SET_INNER_WIDTHS)),
    )

    @classmethod
    def n_sets(cls, values):
        return values["n_embedding_sets"]

    @classmethod
    def inner_width(cls, values):
        if values["set_inner_widths"] == "split":
            return values["hidden_size"] // values["n_embedding_sets"]
        return values["hidden_size"]

    @classmethod
    def check_values(cls, values):
        d, sets = values["hidden_size"], values["n_embedding_sets"]
        if d % sets:
            return [f"n_embedding_sets={sets} must divide hidden_size={d}"]
        if d // sets < MIN_SET_WIDTH:
            return [f"n_embedding_sets={sets} leaves sets of width hidden_size/n_embedding_sets={d // sets} "
                    f"< {MIN_SET_WIDTH}; use fewer sets or a larger hidden_size"]
        problems = super().check_values(values)
        if values["moe_num_experts"] > 0 and values["moe_target"] == "ffn" and values["ffn_single_stage"]:
            problems.append("moe_target='ffn' replaces the SwiGLU stage, which ffn_single_stage=True removes")
        return problems
