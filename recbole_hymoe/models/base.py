"""Shared plumbing of the package's sequential recommenders.

Every plugin model subclasses :class:`MoESequentialRecommender` and provides ``PARAMS`` (the
keys it reads), ``encode`` (per-position hidden states and the auxiliary loss) and its item
table; strict config reads, losses, ``predict``, ``full_sort_predict``, the MoE step counter and
expert telemetry live here once.

Glossary: B batch, L ``MAX_ITEM_LIST_LENGTH``, H ``hidden_size``, E experts, K top-k.
"""

from typing import NamedTuple

import torch
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.model.loss import BPRLoss
from torch import nn

from recbole_hymoe.errors import ConfigError
from recbole_hymoe.models.params import read_params
from recbole_hymoe.nn.moe import SparseMoE
from recbole_hymoe.registry import YAML_DIR

LOSS_TYPES = ("CE", "BPR")


class EncoderOutput(NamedTuple):
    """What ``encode`` returns.

    Attributes:
        hidden (FloatTensor): [B, L, H] per-position states (causal: position t sees ≤ t).
        aux_loss (FloatTensor): scalar, weighted sum of the MoE auxiliary losses of all blocks.
    """

    hidden: torch.Tensor
    aux_loss: torch.Tensor


class MoESequentialRecommender(SequentialRecommender):
    """Base class: strict hyperparameters, CE/BPR losses, scoring, step counter, telemetry.

    Subclasses set ``PARAMS`` and implement :meth:`encode`; they may extend
    :meth:`check_values` with cross-key checks and override :meth:`item_table`.
    """

    PARAMS = ()

    @classmethod
    def yaml_file(cls):
        """Return the path of the model's default YAML."""
        return YAML_DIR / "model" / f"{cls.__name__}.yaml"

    @classmethod
    def check_config(cls, config):
        """Read and check every hyperparameter the model uses (called before data is loaded).

        Returns:
            dict: key -> checked value.

        Raises:
            ConfigError: naming each bad key, its value and what is allowed.
        """
        values = read_params(config, cls.PARAMS, cls.__name__, cls.yaml_file())
        problems = cls.check_values(values)
        if problems:
            raise ConfigError(f"{cls.__name__}: invalid configuration:\n  " + "\n  ".join(problems))
        return values

    @classmethod
    def check_values(cls, values):
        """Return a list of cross-key problems (empty when the combination is valid)."""
        return []

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.hparams = self.check_config(config)
        self.loss_type = self.hparams["loss_type"]
        self.bpr_loss = BPRLoss() if self.loss_type == "BPR" else None
        # Optimizer steps taken so far; advanced by training-mode calculate_loss only and saved
        # with every checkpoint, so a warm-up schedule survives save -> load -> resume.
        self.register_buffer("moe_step", torch.zeros((), dtype=torch.long))

    # ----------------------------------------------------------------------------- encoding
    def encode(self, item_seq, item_seq_len):
        """Encode sequences.

        Args:
            item_seq (LongTensor): [B, L], 0 = padding, right-padded.
            item_seq_len (LongTensor): [B], number of real items.

        Returns:
            EncoderOutput: hidden [B, L, H] and the auxiliary loss.
        """
        raise NotImplementedError

    def forward(self, item_seq, item_seq_len):
        """Return the user state at the last real position, [B, H]."""
        return self.gather_indexes(self.encode(item_seq, item_seq_len).hidden, item_seq_len - 1)

    def item_table(self):
        """Return the item representations scored against user states, [n_items, H]."""
        return self.item_embedding.weight

    # ----------------------------------------------------------------------------- training
    def rec_loss(self, seq_output, interaction):
        """Recommendation loss of user states ``seq_output`` [B, H] for the batch's targets."""
        pos_items = interaction[self.POS_ITEM_ID]
        if self.loss_type == "BPR":
            table = self.item_table()
            neg_items = interaction[self.NEG_ITEM_ID]
            pos_score = (seq_output * table[pos_items]).sum(-1)  # [B]
            neg_score = (seq_output * table[neg_items]).sum(-1)  # [B]
            return self.bpr_loss(pos_score, neg_score)
        logits = seq_output @ self.item_table().t()  # [B, n_items]
        return nn.functional.cross_entropy(logits, pos_items)

    def calculate_loss(self, interaction):
        """Return ``(rec_loss, aux_loss)``; RecBole sums them for backward and logs each."""
        item_seq = interaction[self.ITEM_SEQ]
        item_seq_len = interaction[self.ITEM_SEQ_LEN]
        encoded = self.encode(item_seq, item_seq_len)
        seq_output = self.gather_indexes(encoded.hidden, item_seq_len - 1)
        rec_loss = self.rec_loss(seq_output, interaction)
        if self.training:
            self.moe_step += 1
        return rec_loss, encoded.aux_loss

    # ----------------------------------------------------------------------------- scoring
    def predict(self, interaction):
        """Score the interaction's item for each user, [B]."""
        seq_output = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])
        items = self.item_table()[interaction[self.ITEM_ID]]  # [B, H]
        return (seq_output * items).sum(-1)

    def full_sort_predict(self, interaction):
        """Score every item for each user, [B, n_items]."""
        seq_output = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])
        return seq_output @ self.item_table().t()

    # ----------------------------------------------------------------------------- telemetry
    def moe_layers(self):
        """Return ``[(name, SparseMoE)]`` for every MoE layer of the model."""
        return [(name, m) for name, m in self.named_modules() if isinstance(m, SparseMoE)]

    def moe_alphas(self):
        """Return ``{moe layer name: α}`` for models that scale their MoE branch (else empty)."""
        return {}

    def moe_warmup(self):
        """Return the current warm-up weight w(t) (1 for models without warm-up)."""
        return 1.0

    def reset_moe_usage(self):
        """Forget routing statistics (the trainer calls this at the start of each epoch)."""
        for _, layer in self.moe_layers():
            layer.usage.reset()

    def moe_telemetry(self):
        """Return routing statistics since the last reset, per MoE layer.

        Returns:
            dict: ``step``, ``warmup`` and ``layers``: name -> ``alpha`` (if any) plus
            :meth:`~recbole_hymoe.nn.moe.ExpertUsage.summary`.
        """
        alphas = self.moe_alphas()
        layers = {}
        for name, layer in self.moe_layers():
            stats = layer.usage.summary()
            if name in alphas:
                stats = {"alpha": alphas[name], **stats}
            layers[name] = stats
        return {"step": int(self.moe_step), "warmup": float(self.moe_warmup()), "layers": layers}
