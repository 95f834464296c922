"""HyMoERec: a hybrid (dense shared + sparse routed) Mixture-of-Experts sequential recommender.

Reference:
    Kunrong Li, Zhu Sun, Kwan Hui Lim. "HyMoERec: Hybrid Mixture-of-Experts for Sequential
    Recommendation." AAAI 2026 (student abstract), arXiv 2511.06388. No official code exists.

Glossary: B batch, L ``MAX_ITEM_LIST_LENGTH``, H ``hidden_size``, E ``moe_num_experts``,
K ``moe_top_k``, t optimizer steps so far.
"""

import re

import torch
from torch import nn

from recbole_hymoe.blocks.hybrid_ffn import FUSIONS
from recbole_hymoe.blocks.transformer import TransformerMoELayer
from recbole_hymoe.models.base import LOSS_PARAMS, MOE_PARAMS, PluginSequentialRecommender, recbole_init, run_layers
from recbole_hymoe.models.mamba4rec import (
    MAMBA_PARAMS,
    build_mamba_encoder,
    encode_mamba,
    init_mamba_host,
    mamba_problems,
)
from recbole_hymoe.models.params import Choice, Integer, Nullable, Number, Param
from recbole_hymoe.nn.attention import causal_attention_mask
from recbole_hymoe.nn.dropout import Dropout
from recbole_hymoe.nn.ffn import ACTIVATIONS
from recbole_hymoe.nn.schedules import SCHEDULES, warmup_weight

BACKBONES = ("transformer", "mamba")

# RecBole SASRec parameter name -> HyMoERec parameter name (MoE parameters have no counterpart).
_SASREC_KEY_MAP = (
    (r"^LayerNorm\.", "layer_norm."),
    (r"^trm_encoder\.layer\.(\d+)\.multi_head_attention\.LayerNorm\.", r"encoder.\1.attention.layer_norm."),
    (r"^trm_encoder\.layer\.(\d+)\.multi_head_attention\.", r"encoder.\1.attention."),
    (r"^trm_encoder\.layer\.(\d+)\.feed_forward\.LayerNorm\.", r"encoder.\1.feed_forward.layer_norm."),
    (r"^trm_encoder\.layer\.(\d+)\.feed_forward\.", r"encoder.\1.feed_forward."),
)


POSITION_ALIGNMENTS = ("start", "end")


class HyMoERec(PluginSequentialRecommender):
    """SASRec with every position-wise FFN replaced by a HyMoE block.

    Per layer: ``h = LN(x + Dropout(MHA(x)))``, then
    ``out = LN(h + Dropout(y_dense(h) + α · Σ_{k∈TopK(h)} g_k(h) f_k(h)))``, ``α = σ(a) · w(t)``;
    loss ``L = L_rec + λ_lb Σ_blocks (Σ_e ḡ_e log ḡ_e + log E)`` (+ optional z-loss).

    NOTE (decisions where the paper is silent, each a config key):
        - the host: ``backbone: transformer`` is RecBole's SASRec layout, ``backbone: mamba`` is
          Mamba4Rec's (on the package's selective scan); the paper does not name its host (its
          baselines hint at Mamba4Rec);
        - one learnable α logit per block, initialised at ``moe_alpha_init`` (σ(0) = 0.5);
        - ``w(t)`` = ``moe_warmup_schedule`` over ``moe_warmup_steps`` optimizer steps, kept in
          the ``moe_step`` buffer so checkpoints carry it;
        - the dense branch and every expert are ``H -> moe_inner_size -> H`` MLPs with the
          host's activation; dropout, residual and LayerNorm are the host FFN's;
        - ḡ averages the full softmax over real tokens; the paper's ``Σ ḡ log ḡ`` is logged
          shifted by ``log E`` (same gradient), summed over blocks;
        - ``moe_fusion: convex``, ``moe_router: mlp``, ``moe_balance_loss: switch`` and the
          z-loss are ablations, not the paper's method;
        - ``position_alignment`` (transformer host): ``start`` numbers positions from each
          sequence's first item (RecBole's SASRec, which pads on the right); ``end`` gives the
          last real item position L − 1, as SASRec's and S3Rec's own code does by padding on the
          left, so the newest item always reads the same position embedding.
        With ``moe_num_experts: 0`` the model is RecBole's SASRec (see :meth:`load_sasrec_weights`)
        or, with ``backbone: mamba``, the package's Mamba4Rec (same parameter names).
    """

    PARAMS = (
        Param("backbone", Choice(*BACKBONES)),
        Param("hidden_size", Integer(1)),
        Param("n_layers", Integer(1)),
        Param("n_heads", Integer(1)),
        Param("inner_size", Integer(1)),
        Param("hidden_dropout_prob", Number(0.0, 1.0)),
        Param("attn_dropout_prob", Number(0.0, 1.0)),
        Param("hidden_act", Choice(*ACTIVATIONS)),
        Param("layer_norm_eps", Number(0.0, min_exclusive=True)),
        Param("initializer_range", Number(0.0, min_exclusive=True)),
        Param("position_alignment", Choice(*POSITION_ALIGNMENTS)),
        *MOE_PARAMS,
        Param("moe_inner_size", Nullable(Integer(1))),
        Param("moe_fusion", Choice(*FUSIONS)),
        Param("moe_alpha_init", Number()),
        Param("moe_warmup_steps", Integer(0)),
        Param("moe_warmup_schedule", Choice(*SCHEDULES)),
        *MAMBA_PARAMS,
        *LOSS_PARAMS,
    )

    @classmethod
    def check_values(cls, values):
        problems = super().check_values(values)
        if values["backbone"] == "mamba":
            problems += mamba_problems(values)
        elif values["hidden_size"] % values["n_heads"]:
            problems.append(
                f"hidden_size={values['hidden_size']} must be divisible by n_heads={values['n_heads']}"
            )
        return problems

    def __init__(self, config, dataset):
        super().__init__(config, dataset)

        # read hyperparameters
        hp = self.hparams
        self.hidden_size = hp["hidden_size"]
        self.initializer_range = hp["initializer_range"]
        self.warmup_steps = hp["moe_warmup_steps"]
        self.warmup_schedule = hp["moe_warmup_schedule"]

        # build modules (every host layer's FFN is a HyMoE block)
        hymoe = {"moe": self.moe_settings, "expert_inner_size": hp["moe_inner_size"], "fusion": hp["moe_fusion"],
                 "alpha_init": hp["moe_alpha_init"]}
        self.backbone = hp["backbone"]
        self.position_alignment = hp["position_alignment"]
        self.item_embedding = nn.Embedding(self.n_items, self.hidden_size, padding_idx=0)
        self.layer_norm = nn.LayerNorm(self.hidden_size, eps=hp["layer_norm_eps"])
        self.dropout = Dropout(hp["hidden_dropout_prob"])
        if self.backbone == "mamba":
            self.encoder = build_mamba_encoder(hp, **hymoe)
        else:
            self.position_embedding = nn.Embedding(self.max_seq_length, self.hidden_size)
            self.encoder = nn.ModuleList(
                TransformerMoELayer(
                    n_heads=hp["n_heads"],
                    hidden_size=self.hidden_size,
                    hidden_dropout_prob=hp["hidden_dropout_prob"],
                    attn_dropout_prob=hp["attn_dropout_prob"],
                    layer_norm_eps=hp["layer_norm_eps"],
                    inner_size=hp["inner_size"],
                    hidden_act=hp["hidden_act"],
                    **hymoe,
                )
                for _ in range(hp["n_layers"])
            )

        # init weights
        if self.backbone == "mamba":
            init_mamba_host(self, hp["mamba_init"], self.initializer_range)
        else:
            recbole_init(self, self.initializer_range)

    def moe_warmup(self):
        """Return w(t) for the current step (a scalar tensor)."""
        return warmup_weight(self.moe_step, self.warmup_steps, self.warmup_schedule)

    def moe_alphas(self):
        warmup = self.moe_warmup()
        return {
            f"encoder.{i}.feed_forward.moe": float(layer.feed_forward.alpha(warmup).detach())
            for i, layer in enumerate(self.encoder)
            if layer.feed_forward.moe is not None
        }

    def encode(self, item_seq, item_seq_len, last_only=False, **inputs):
        if self.backbone == "mamba":
            return encode_mamba(self, item_seq, item_seq_len, last_only, warmup=self.moe_warmup())
        positions = torch.arange(item_seq.size(1), device=item_seq.device)  # [L]
        if self.position_alignment == "end":  # last real item at L_max - 1; padding clamped (masked anyway)
            shift = self.max_seq_length - item_seq_len  # [B]
            positions = (positions + shift.unsqueeze(1)).clamp(max=self.max_seq_length - 1)  # [B, L]
        hidden = self.item_embedding(item_seq) + self.position_embedding(positions)  # [B, L, H]
        hidden = self.dropout(self.layer_norm(hidden))
        return run_layers(self.encoder, hidden, item_seq_len, last_only, attn_mask=causal_attention_mask(item_seq),
                          mask=item_seq != 0, warmup=self.moe_warmup())

    def load_sasrec_weights(self, sasrec_state_dict):
        """Copy a RecBole SASRec ``state_dict`` into the shared (non-MoE) parameters.

        Args:
            sasrec_state_dict (dict): ``SASRec.state_dict()`` with the same sizes.

        Raises:
            KeyError: a SASRec parameter has no counterpart, or a shared parameter of this
                model received no value.
        """
        mapped = {}
        for key, value in sasrec_state_dict.items():
            new_key = key
            for pattern, replacement in _SASREC_KEY_MAP:
                new_key, hits = re.subn(pattern, replacement, new_key)
                if hits:
                    break
            mapped[new_key] = value
        own = self.state_dict()
        unknown = sorted(set(mapped) - set(own))
        if unknown:
            raise KeyError(f"SASRec parameters without a HyMoERec counterpart: {unknown}")
        missing = sorted(k for k in own if k not in mapped and ".moe." not in k
                         and not k.endswith("alpha_logit") and k != "moe_step")
        if missing:
            raise KeyError(f"HyMoERec parameters not provided by the SASRec state dict: {missing}")
        self.load_state_dict(mapped, strict=False)
