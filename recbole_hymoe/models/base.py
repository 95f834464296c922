"""Shared plumbing of the package's sequential recommenders.

Every plugin model subclasses :class:`PluginSequentialRecommender` and provides ``PARAMS`` (the
keys it reads), ``encode`` (per-position hidden states and the auxiliary loss) and its item
table; strict config reads, the MoE settings (read and checked once, handed to every block),
the encoder's layer loop (:func:`run_layers`), both training regimes (``prefix``: loss at the
last position; ``all_positions``: loss at every real position, see :mod:`recbole_hymoe.data`),
the CE / BPR / sampled-softmax losses, ``predict``, ``full_sort_predict``, the MoE step counter
and expert telemetry live here once.

Glossary: B batch, L ``MAX_ITEM_LIST_LENGTH``, H ``hidden_size``, E experts, K top-k.
"""

from typing import NamedTuple

import torch
from recbole.model.abstract_recommender import SequentialRecommender
from torch import nn

from recbole_hymoe.data import LOSS_START_FIELD
from recbole_hymoe.errors import ConfigError, listing
from recbole_hymoe.models.params import Choice, Integer, Number, Param, param_problems
from recbole_hymoe.nn.losses import next_item_loss, next_item_targets
from recbole_hymoe.nn.moe import BALANCE_LOSSES, ROUTERS, Experts, MoESettings, SparseMoE
from recbole_hymoe.paths import YAML_DIR

LOSS_TYPES = ("CE", "BPR", "SSM")
# Rows encoded together when scoring every item (rows sorted by history length; see full_sort_predict).
EVAL_GROUP_ROWS = 256
# Loss keys every model reads (models prepend their own keys).
LOSS_PARAMS = (
    Param("loss_type", Choice(*LOSS_TYPES)),
    Param("n_negatives", Integer(1)),
    Param("temperature", Number(0.0, min_exclusive=True)),
)
# The keys of every model's MoE layers: an MoE model lists them in its PARAMS and gets them read,
# checked and handed to its blocks as one MoESettings (``self.moe_settings``).
MOE_PARAMS = (
    Param("moe_num_experts", Integer(0)),
    Param("moe_top_k", Integer()),
    Param("moe_router", Choice(*ROUTERS)),
    Param("moe_balance_loss", Choice(*BALANCE_LOSSES)),
    Param("moe_balance_weight", Number(0.0)),
    Param("moe_z_loss_weight", Number(0.0)),
)


def length_groups(lengths, group_rows=None):
    """Rows of a batch in groups of similar history length, longest first, with each group's width.

    Rows are sorted by length (descending) and cut into groups of ``group_rows`` (default
    :data:`EVAL_GROUP_ROWS`); a group's width is its longest history, so a right-padded sequence
    trimmed to it loses only padding. The longest group comes first: each later group's buffers are
    smaller and fit in the memory the earlier ones freed (in ascending order every group needs
    more than any freed block and the C heap grows; a full-sort validation on ML-1M peaked
    ≈ 0.6 GB higher that way).

    Args:
        lengths (LongTensor): [B] history lengths, ≥ 1.
        group_rows (int, optional): rows per group.

    Returns:
        list[tuple[LongTensor, int]]: (row indices [b], width) per group; every row once.
    """
    order = torch.argsort(lengths, descending=True)  # [B]
    return [(rows, int(lengths[rows].max())) for rows in order.split(group_rows or EVAL_GROUP_ROWS)]


def read_moe_settings(values):
    """The MoE settings in checked ``values``; None for a model without the MoE keys or E = 0."""
    if not values.get("moe_num_experts"):
        return None
    return MoESettings(num_experts=values["moe_num_experts"], top_k=values["moe_top_k"],
                       router=values["moe_router"], balance_loss=values["moe_balance_loss"],
                       balance_weight=values["moe_balance_weight"], z_loss_weight=values["moe_z_loss_weight"])


def moe_problems(values):
    """Cross-key problems of the MoE keys in ``values`` (none for a model without them)."""
    experts, top_k = values.get("moe_num_experts", 0), values.get("moe_top_k")
    if experts > 0 and not 1 <= top_k <= experts:
        return [f"moe_top_k={top_k} must satisfy 1 <= moe_top_k <= moe_num_experts={experts} "
                "(or set moe_num_experts=0 to switch the MoE layers off)"]
    return []


def recbole_init(model, std):
    """RecBole's SASRec initialisation over ``model``: Linear and Embedding weights N(0, std²),
    Linear biases 0, LayerNorm weight 1 and bias 0; expert banks likewise."""
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.data.normal_(mean=0.0, std=std)
            if isinstance(module, nn.Linear) and module.bias is not None:
                module.bias.data.zero_()
        elif isinstance(module, nn.LayerNorm):
            module.bias.data.zero_()
            module.weight.data.fill_(1.0)
        elif isinstance(module, Experts):
            module.reset_parameters(std=std)


class EncoderOutput(NamedTuple):
    """What ``encode`` returns.

    Attributes:
        hidden (FloatTensor): [B, L, H] per-position states (causal: position t sees ≤ t).
        aux_loss (FloatTensor): scalar, weighted sum of the MoE auxiliary losses of all blocks.
    """

    hidden: torch.Tensor
    aux_loss: torch.Tensor


def run_layers(layers, hidden, item_seq_len, last_only, **inputs):
    """Apply residual ``layers`` in turn: ``hidden, moe_out = layer(hidden, query_index=…, **inputs)``.

    Args:
        layers (Sequence[nn.Module]): layers returning ``(hidden, MoEOutput or None)``.
        hidden (FloatTensor): [B, L, H] input states.
        item_seq_len (LongTensor): [B], number of real items.
        last_only (bool): the last layer computes only each sequence's last real position
            (``query_index = item_seq_len - 1``), all a score needs.
        **inputs: the layers' other arguments (masks, time buckets, w(t), …).

    Returns:
        EncoderOutput: states [B, L, H] (or [B, 1, H] with ``last_only``) and the summed MoE
        auxiliary losses.
    """
    aux_loss = hidden.new_zeros(())
    for i, layer in enumerate(layers):
        query_index = item_seq_len - 1 if last_only and i == len(layers) - 1 else None
        hidden, moe_out = layer(hidden, query_index=query_index, **inputs)
        if moe_out is not None:
            aux_loss = aux_loss + moe_out.aux_loss
    return EncoderOutput(hidden, aux_loss)


class PluginSequentialRecommender(SequentialRecommender):
    """Base class: strict hyperparameters, MoE settings, CE/BPR losses, scoring, step counter, telemetry.

    Subclasses set ``PARAMS`` (with :data:`MOE_PARAMS` when they have MoE layers) and implement
    :meth:`encode`; they may extend :meth:`check_values` with cross-key checks and override
    :meth:`item_table`.
    """

    PARAMS = LOSS_PARAMS
    # Names of the terms :meth:`calculate_loss` returns, in order (RecBole logs them as
    # train_loss1, train_loss2, ...; suite reports plot them over epochs).
    LOSS_TERMS = ("recommendation", "MoE balance")

    @classmethod
    def yaml_file(cls):
        """Return the path of the model's default YAML."""
        return YAML_DIR / "model" / f"{cls.__name__}.yaml"

    @classmethod
    def read_config(cls, config):
        """Read every hyperparameter the model uses; return the checked values and the problems.

        Cross-key problems (:meth:`check_values`) are looked for only when every key is valid.
        """
        values, problems = param_problems(config, cls.PARAMS, cls.yaml_file())
        return values, problems or cls.check_values(values)

    @classmethod
    def check_config(cls, config):
        """Read and check every hyperparameter the model uses (called before data is loaded).

        Returns:
            dict: key -> checked value.

        Raises:
            ConfigError: naming each bad key, its value and what is allowed.
        """
        values, problems = cls.read_config(config)
        if problems:
            raise ConfigError(listing(f"{cls.__name__}: invalid configuration", problems))
        return values

    @classmethod
    def check_values(cls, values):
        """Return a list of cross-key problems (empty when the combination is valid)."""
        return moe_problems(values)

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.hparams = self.check_config(config)
        self.moe_settings = read_moe_settings(self.hparams)  # None: no MoE layer
        self.loss_type = self.hparams["loss_type"]
        self.n_negatives = self.hparams["n_negatives"]
        self.temperature = self.hparams["temperature"]
        self.train_regime = config["train_regime"]
        # Optimizer steps taken so far; advanced by training-mode calculate_loss only and saved
        # with every checkpoint, so a warm-up schedule survives save -> load -> resume.
        self.register_buffer("moe_step", torch.zeros((), dtype=torch.long))

    # ----------------------------------------------------------------------------- encoding
    def encode(self, item_seq, item_seq_len, last_only=False, **inputs):
        """Encode sequences.

        Args:
            item_seq (LongTensor): [B, L], 0 = padding, right-padded.
            item_seq_len (LongTensor): [B], number of real items.
            last_only (bool): only the state at position ``item_seq_len - 1`` is needed; a model
                may then return hidden [B, 1, H] holding just that state (and skip work).
            **inputs: the model's extra inputs, see :meth:`sequence_inputs`.

        Returns:
            EncoderOutput: hidden [B, L, H] (or [B, 1, H], see ``last_only``) and the aux loss.
        """
        raise NotImplementedError

    def sequence_inputs(self, interaction):
        """Return the extra inputs of :meth:`encode` taken from ``interaction`` (none by default).

        Tensors shaped like the item sequence ([B, L]) are trimmed with it.
        """
        return {}

    def encoder_inputs(self, interaction):
        """Return the arguments of :meth:`encode` for ``interaction``: ``(item_seq, item_seq_len, inputs)``.

        Padding columns beyond the longest sequence are dropped: causal models never read positions
        after a sequence's end, so the trim changes no value.
        """
        item_seq_len = interaction[self.ITEM_SEQ_LEN]
        item_seq = interaction[self.ITEM_SEQ]
        width = int(item_seq_len.max())
        inputs = {
            name: value[:, :width] if value.shape[:2] == item_seq.shape else value
            for name, value in self.sequence_inputs(interaction).items()
        }
        return item_seq[:, :width], item_seq_len, inputs

    def user_output(self, hidden):
        """Map encoder states [..., H] to the user vectors that are scored (identity by default)."""
        return hidden

    def last_state(self, interaction):
        """Encode and return the user vector at each sequence's last real position, and the aux loss.

        Returns:
            tuple: FloatTensor [B, H] and the auxiliary loss (scalar).
        """
        item_seq, item_seq_len, inputs = self.encoder_inputs(interaction)
        return self._encode_last(item_seq, item_seq_len, inputs)

    def forward(self, item_seq, item_seq_len, **inputs):
        """Return the user vector at the last real position, [B, H] (RecBole's contract)."""
        return self._encode_last(item_seq, item_seq_len, inputs)[0]

    def _encode_last(self, item_seq, item_seq_len, inputs):
        encoded = self.encode(item_seq, item_seq_len, last_only=True, **inputs)
        hidden = encoded.hidden
        last = hidden[:, 0] if hidden.size(1) == 1 else self.gather_indexes(hidden, item_seq_len - 1)
        return self.user_output(last), encoded.aux_loss

    def item_table(self):
        """Return the item representations scored against user states, [n_items, H]."""
        return self.item_embedding.weight

    # ----------------------------------------------------------------------------- training
    def rec_loss(self, user, targets, negatives=None):
        """Recommendation loss of user states ``user`` [N, H] for target items ``targets`` [N].

        :func:`~recbole_hymoe.nn.losses.next_item_loss` over :meth:`item_table` with the model's
        ``loss_type``, ``n_negatives`` and ``temperature``; BPR's ``negatives`` [N] are RecBole's
        sampler's in the prefix regime (they avoid the user's own items), else uniform draws.
        """
        return next_item_loss(user, self.item_table(), targets, self.loss_type, self.n_negatives,
                              self.temperature, negatives)

    def _scaled(self, scores):
        """Divide scores by the temperature (skipped at 1: a full pass over [N, n_items])."""
        return scores if self.temperature == 1.0 else scores / self.temperature

    def calculate_loss(self, interaction):
        """Return ``(rec_loss, aux_loss)``; RecBole sums them for backward and logs each.

        ``prefix``: the loss at each sequence's last position for the interaction's target.
        ``all_positions``: the loss at every real position for the next item (the interaction's
        target after the last one), averaged over real positions.
        """
        last_target = interaction[self.POS_ITEM_ID]
        if self.train_regime == "all_positions":
            item_seq, item_seq_len, inputs = self.encoder_inputs(interaction)
            encoded = self.encode(item_seq, item_seq_len, **inputs)
            targets = next_item_targets(item_seq, item_seq_len, last_target)  # [B, L]
            real = item_seq != 0  # [B, L]
            if LOSS_START_FIELD in interaction:  # overlapping windows: only their new targets
                positions = torch.arange(item_seq.size(1), device=item_seq.device)
                real = real & (positions >= interaction[LOSS_START_FIELD].unsqueeze(1))
            rec_loss = self.rec_loss(self.user_output(encoded.hidden[real]), targets[real])  # [N, H], [N]
            aux_loss = encoded.aux_loss
        else:
            negatives = interaction[self.NEG_ITEM_ID] if self.NEG_ITEM_ID in interaction else None
            user, aux_loss = self.last_state(interaction)  # [B, H]
            rec_loss = self.rec_loss(user, last_target, negatives)
        if self.training:
            self.moe_step += 1
        return rec_loss, aux_loss

    # ----------------------------------------------------------------------------- scoring
    def predict(self, interaction):
        """Score the interaction's item for each user, [B]."""
        seq_output = self.last_state(interaction)[0]
        items = self.item_table()[interaction[self.ITEM_ID]]  # [B, H]
        return self._scaled((seq_output * items).sum(-1))

    def full_sort_predict(self, interaction):
        """Score every item for each user, [B, n_items].

        Rows are encoded in groups of similar history length (:func:`length_groups`, each group
        trimmed to its longest history): each row's state is the computation it gets in the whole
        batch, but short histories no longer pay for the batch's longest one (Beauty: 9 items on
        average, 50 at most).
        """
        item_seq, item_seq_len, inputs = self.encoder_inputs(interaction)
        user = None
        for rows, width in length_groups(item_seq_len):
            part = {name: value[rows][:, :width] if value.shape[:2] == item_seq.shape else value[rows]
                    for name, value in inputs.items()}
            states = self._encode_last(item_seq[rows, :width], item_seq_len[rows], part)[0]  # [b, H]
            if user is None:
                user = states.new_empty(item_seq.size(0), states.size(1))  # [B, H]
            user[rows] = states
        return self._scaled(user @ self.item_table().t())

    # ----------------------------------------------------------------------------- telemetry
    def moe_layers(self):
        """Return ``[(name, SparseMoE)]`` for every MoE layer of the model."""
        return [(name, m) for name, m in self.named_modules() if isinstance(m, SparseMoE)]

    def optimizer_param_groups(self):
        """The parameters the trainer's optimizer updates: all of them, in one group with the
        config's ``weight_decay`` (RecBole's default). A model that decays some parameters at a
        rate of its own returns torch parameter groups instead."""
        return self.parameters()

    def has_telemetry(self):
        """Whether the trainer logs :meth:`moe_telemetry` after each epoch (here: the model has MoE layers)."""
        return bool(self.moe_layers())

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
