"""RecBole's Trainer plus per-epoch expert telemetry, the all-positions loss of RecBole's built-ins,
and bfloat16 training (``precision``)."""

import numpy as np
import torch
from recbole.evaluator import Collector
from recbole.trainer import Trainer
from recbole.utils import get_trainer, set_color

from recbole_hymoe import registry
from recbole_hymoe.allocator import release_free_memory
from recbole_hymoe.baselines import all_positions_loss
from recbole_hymoe.collector import TopKCollector
from recbole_hymoe.data import ALL_POSITIONS_BUILTINS
from recbole_hymoe.models.base import length_groups

COLLAPSE_SHARE = 0.8
# RecBole models whose full_sort_predict reads only the right-padded item sequence and its length,
# with padding masked out of every real position's output: a batch trimmed to its longest history
# scores as the whole batch (tested). Value: the slots after the last item the model writes into
# (BERT4Rec's reconstruct_test_data puts its mask token there), kept within L.
LENGTH_GROUPED_BUILTINS = {"SASRec": 0, "GRU4Rec": 0, "NARM": 0, "BERT4Rec": 1}
# precision -> the dtype a training batch's forward pass is autocast to (None: float32 throughout)
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}


def in_precision(loss_func, device, precision):
    """``loss_func`` whose forward pass runs under ``torch.autocast(device, bfloat16)`` for ``bf16``.

    Autocast casts matrix products (linear layers, attention, the logits) to bfloat16 and keeps
    reductions, normalisation and the softmax in float32; the weights, their gradients and Adam's
    state stay float32 (no loss scaling: bfloat16 has float32's exponent range). RecBole's own
    ``enable_amp`` autocasts to the device's default dtype, float16 on CUDA, which needs a loss
    scaler and underflows on large item tables; this names the dtype on every device.
    """
    dtype = PRECISIONS[precision]
    if dtype is None:
        return loss_func

    def autocast_loss(interaction):
        with torch.autocast(device.type, dtype=dtype):
            return loss_func(interaction)

    return autocast_loss


class MoETrainer(Trainer):
    """RecBole ``Trainer`` that logs routing statistics after each training epoch.

    Per MoE layer it logs α (and the model's w(t)), each expert's token share and mean gate
    and the usage entropy, to RecBole's log and to tensorboard (``MoE/<layer>/…``), and warns
    when one expert takes more than 80 % of the real tokens (expert collapse, the failure the
    HyMoERec paper's balance loss is there to prevent). A model's other per-epoch telemetry
    (HM2Rec's ``graph``: how much of the item table the graph carries) is logged beside it
    (``Graph/…``). ``moe_history`` keeps one record per epoch for the run folder.


    It also trains RecBole's built-in SASRec, GRU4Rec, NARM and BERT4Rec in the ``all_positions``
    regime: their batch loss is then :func:`recbole_hymoe.baselines.all_positions_loss` instead of
    the model's own ``calculate_loss`` (``batch_loss``), and trains any sequential model in
    bfloat16 (``precision: bf16``, :func:`in_precision`; evaluation stays float32, so rankings
    are scored at full precision), and evaluates RecBole's SASRec, GRU4Rec, NARM and BERT4Rec in
    groups of similar history length (:meth:`_full_sort_batch_eval`); everything else is RecBole's loop. After
    each training epoch the C heap's free memory goes back to the OS
    (:func:`~recbole_hymoe.allocator.release_free_memory`).
    """

    def __init__(self, config, model):
        super().__init__(config, model)
        self.moe_history = []
        builtin_all_positions = (config["train_regime"] == "all_positions"
                                 and not registry.is_plugin_model(config["model"]))
        loss = all_positions_loss(model, config) if builtin_all_positions else model.calculate_loss
        self.batch_loss = in_precision(loss, self.device, config["precision"])
        self.length_grouped_slots = LENGTH_GROUPED_BUILTINS.get(config["model"])  # None: RecBole's loop

    def _build_optimizer(self, **kwargs):
        """RecBole's optimizer over the model's own parameter groups (``optimizer_param_groups``:
        HM2Rec decays its graph nodes at ``graph_weight_decay``) unless ``params`` is given."""
        if "params" not in kwargs and hasattr(self.model, "optimizer_param_groups"):
            kwargs["params"] = self.model.optimizer_param_groups()
        return super()._build_optimizer(**kwargs)

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        has_telemetry = hasattr(self.model, "has_telemetry") and self.model.has_telemetry()
        if has_telemetry:
            self.model.reset_moe_usage()
        losses = super()._train_epoch(train_data, epoch_idx, loss_func or self.batch_loss, show_progress)
        release_free_memory()  # keeps resident memory flat over epochs (recbole_hymoe.allocator)
        if has_telemetry:
            self._log_moe_telemetry(epoch_idx, self.model.moe_telemetry())
        return losses

    def _full_sort_batch_eval(self, batched_data):
        """RecBole's full-sort scoring of a batch; for :data:`LENGTH_GROUPED_BUILTINS` the model's
        own ``full_sort_predict`` runs on groups of rows trimmed to their longest history
        (:func:`~recbole_hymoe.models.base.length_groups`), as the plugin models score: RecBole's
        SASRec otherwise runs every row at the full width L (Beauty: 9 items on average of 50)."""
        if self.length_grouped_slots is None:
            return super()._full_sort_batch_eval(batched_data)
        interaction, history_index, positive_u, positive_i = batched_data
        interaction = interaction.to(self.device)
        item_seq, lengths = interaction[self.model.ITEM_SEQ], interaction[self.model.ITEM_SEQ_LEN]
        scores = None
        for rows, width in length_groups(lengths):
            part = interaction[rows]
            width = min(width + self.length_grouped_slots, item_seq.size(1))
            part[self.model.ITEM_SEQ] = item_seq[rows, :width]  # [b, width]: only padding dropped
            group_scores = self.model.full_sort_predict(part)  # [b, n_items]
            if scores is None:
                scores = group_scores.new_empty(len(lengths), group_scores.size(1))  # [B, n_items]
            scores[rows] = group_scores
        # from here as RecBole's Trainer._full_sort_batch_eval
        scores[:, 0] = -np.inf
        if history_index is not None:
            scores[history_index] = -np.inf
        return interaction, scores, positive_u, positive_i

    def _log_moe_telemetry(self, epoch_idx, telemetry):
        self.moe_history.append({"epoch": epoch_idx, **telemetry})
        self.tensorboard.add_scalar("MoE/warmup", telemetry["warmup"], epoch_idx)
        lines = [f"step {telemetry['step']}, w(t) {telemetry['warmup']:.3f}"]
        for name, stats in telemetry["layers"].items():
            shares = " ".join(f"{s:.3f}" for s in stats["token_share"])
            gates = " ".join(f"{g:.3f}" for g in stats["mean_gate"])
            alpha = f"alpha {stats['alpha']:.4f}, " if "alpha" in stats else ""
            lines.append(
                f"{name}: {alpha}token share [{shares}], mean gate [{gates}], "
                f"usage entropy {stats['usage_entropy']:.4f}"
            )
            for key in ("alpha", "usage_entropy", "max_share"):
                if key in stats:
                    self.tensorboard.add_scalar(f"MoE/{name}/{key}", stats[key], epoch_idx)
            for e, (share, gate) in enumerate(zip(stats["token_share"], stats["mean_gate"])):
                self.tensorboard.add_scalar(f"MoE/{name}/token_share_{e}", share, epoch_idx)
                self.tensorboard.add_scalar(f"MoE/{name}/mean_gate_{e}", gate, epoch_idx)
            if stats["max_share"] > COLLAPSE_SHARE:
                expert = stats["token_share"].index(stats["max_share"])
                self.logger.warning(
                    f"epoch {epoch_idx}: {name}: expert {expert} takes {stats['max_share']:.1%} of "
                    f"real tokens (> {COLLAPSE_SHARE:.0%}); the experts are collapsing — consider "
                    "a larger moe_balance_weight"
                )
        for key, value in telemetry.get("graph", {}).items():
            self.tensorboard.add_scalar(f"Graph/{key}", value, epoch_idx)
        if "graph" in telemetry:
            lines.append("graph: " + ", ".join(f"{key} {value:.4f}" for key, value in telemetry["graph"].items()))
        self.logger.info(set_color(f"epoch {epoch_idx} telemetry", "green") + ": " + "; ".join(lines))


def build_trainer(config, model):
    """The trainer of ``model``: RecBole's lookup (the plugin models get :class:`MoETrainer`), or
    :class:`MoETrainer` for RecBole's SASRec, GRU4Rec, NARM and BERT4Rec (either regime) and any
    built-in model trained in ``bf16``; every trainer collects its top-k evaluation resource with
    :class:`~recbole_hymoe.collector.TopKCollector`."""
    builtin = not registry.is_plugin_model(config["model"])
    if builtin and (config["model"] in ALL_POSITIONS_BUILTINS or config["precision"] != "fp32"):
        trainer = MoETrainer(config, model)
    else:
        trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    if type(getattr(trainer, "eval_collector", None)) is Collector:  # RecBole's own, not a model's special one
        trainer.eval_collector = TopKCollector(config)
    return trainer
