"""Mamba4Rec on the package's selective scan (runs on CPU; CUDA through mamba-ssm when present).

Reference:
    Chengkai Liu, Jianghao Lin, Jianling Wang, Hanzhou Liu, James Caverlee. "Mamba4Rec: Towards
    Efficient Sequential Recommendation with Selective State Space Models." arXiv 2403.03900.
    Official code: chengkai-liu/Mamba4Rec (``mamba4rec.py``, ``config.yaml``), CUDA only.

Glossary: B batch, L ``MAX_ITEM_LIST_LENGTH``, H ``hidden_size``, N ``mamba_d_state``.
"""

from torch import nn
from torch.nn import functional as F

from recbole_hymoe.blocks.mamba import MambaLayer
from recbole_hymoe.models.base import LOSS_PARAMS, PluginSequentialRecommender, recbole_init, run_layers
from recbole_hymoe.models.params import Choice, Integer, Number, Param
from recbole_hymoe.nn.dropout import Dropout
from recbole_hymoe.nn.ffn import ACTIVATIONS
from recbole_hymoe.nn.mamba import MAMBA_INITS, ROPE_TARGETS, MambaMixer
from recbole_hymoe.nn.scan import BACKENDS

# Host keys shared by Mamba4Rec and HyMoERec's mamba backbone.
MAMBA_PARAMS = (
    Param("mamba_d_state", Integer(1)),
    Param("mamba_d_conv", Integer(1)),
    Param("mamba_expand", Integer(1)),
    Param("mamba_init", Choice(*MAMBA_INITS)),
    Param("mamba_scan_backend", Choice(*BACKENDS)),
    Param("rope_target", Choice(*ROPE_TARGETS)),
)


# Mamba4Rec's own keys, shared with HM2Rec (which keeps Mamba4Rec's names for its host).
MAMBA4REC_HOST_PARAMS = (
    Param("hidden_size", Integer(1)),
    Param("n_layers", Integer(1)),
    Param("inner_size", Integer(1)),
    Param("hidden_dropout_prob", Number(0.0, 1.0)),
    Param("hidden_act", Choice(*ACTIVATIONS)),
    Param("layer_norm_eps", Number(0.0, min_exclusive=True)),
    Param("initializer_range", Number(0.0, min_exclusive=True)),
    *MAMBA_PARAMS,
)


def mamba_problems(values):
    """Cross-key problems of the Mamba host settings."""
    problems = []
    if values["rope_target"] == "bc" and values["mamba_d_state"] % 2:
        problems.append(f"rope_target='bc' rotates pairs of the state: mamba_d_state={values['mamba_d_state']} "
                        "must be even")
    if values["rope_target"] == "input" and values["hidden_size"] % 2:
        problems.append(f"rope_target='input' rotates pairs of the input: hidden_size={values['hidden_size']} "
                        "must be even")
    return problems


def build_mamba_encoder(hp, **ffn_kwargs):
    """Mamba4Rec's layer stack from hyperparameters ``hp``; ``ffn_kwargs`` pick and shape each FFN
    (see :class:`~recbole_hymoe.blocks.mamba.MambaLayer`; none: Mamba4Rec's dense FFN)."""
    mixer = {"d_state": hp["mamba_d_state"], "d_conv": hp["mamba_d_conv"], "expand": hp["mamba_expand"],
             "rope_target": hp["rope_target"], "scan_backend": hp["mamba_scan_backend"]}
    ffn = {"inner_size": hp["inner_size"], "hidden_act": hp["hidden_act"], **ffn_kwargs}
    return nn.ModuleList(
        MambaLayer(hp["hidden_size"], hp["hidden_dropout_prob"], hp["layer_norm_eps"],
                   residual=hp["n_layers"] > 1, mixer_kwargs=mixer, **ffn)
        for _ in range(hp["n_layers"])
    )


def init_mamba_host(model, mamba_init, std):
    """Initialise a Mamba host model.

    ``mamba4rec`` reproduces Mamba4Rec's code, which applies RecBole's init (N(0, std²) weights,
    zero biases) to every Linear *including* those inside Mamba, so the Δ bias starts at 0
    (Δ ≈ softplus(0) = 0.69) instead of Mamba's log-uniform Δ. ``mamba`` applies RecBole's init to
    everything else and keeps the Mamba mixer's own initialisation.
    """
    recbole_init(model, std)
    if mamba_init == "mamba":
        for module in model.modules():
            if isinstance(module, MambaMixer):
                module.reset_parameters()


def encode_mamba(model, item_seq, item_seq_len, last_only, item_table=None, **ffn_inputs):
    """Mamba4Rec's forward: ``LN(Dropout(E[item]))`` through the layers; returns EncoderOutput.

    ``item_table`` [n_items, H] replaces ``model.item_embedding`` (a model with a fused table);
    ``ffn_inputs`` go to every FFN (the HyMoE block's ``warmup``).
    """
    items = model.item_embedding(item_seq) if item_table is None else F.embedding(item_seq, item_table, padding_idx=0)
    hidden = model.layer_norm(model.dropout(items))  # [B, L, H]
    return run_layers(model.encoder, hidden, item_seq_len, last_only, mask=item_seq != 0, **ffn_inputs)


class Mamba4Rec(PluginSequentialRecommender):
    """Mamba4Rec: item embedding -> dropout -> LayerNorm -> Mamba layers (Mamba + position-wise FFN).

    NOTE: the official code needs mamba-ssm's CUDA kernels; this one runs the package's selective
    scan (:mod:`recbole_hymoe.nn.scan`), which matches the CUDA kernel's function. Defaults are
    Mamba4Rec's ``config.yaml`` (H 64, 1 layer, dropout 0.2, N 32, conv 4, expand 2, CE) and its
    initialisation quirk (``mamba_init: mamba4rec``, see :func:`init_mamba_host`). The
    ``rope_target`` switch (RoPE inside the SSM) is HM2Rec's addition, off by default.
    """

    PARAMS = (*MAMBA4REC_HOST_PARAMS, *LOSS_PARAMS)

    @classmethod
    def check_values(cls, values):
        return super().check_values(values) + mamba_problems(values)

    def __init__(self, config, dataset):
        super().__init__(config, dataset)

        # read hyperparameters
        hp = self.hparams

        # build modules
        self.item_embedding = nn.Embedding(self.n_items, hp["hidden_size"], padding_idx=0)
        self.dropout = Dropout(hp["hidden_dropout_prob"])
        self.layer_norm = nn.LayerNorm(hp["hidden_size"], eps=hp["layer_norm_eps"])
        self.encoder = build_mamba_encoder(hp)

        # init weights
        init_mamba_host(self, hp["mamba_init"], hp["initializer_range"])

    def encode(self, item_seq, item_seq_len, last_only=False, **inputs):
        return encode_mamba(self, item_seq, item_seq_len, last_only)
