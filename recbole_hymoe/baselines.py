"""RecBole's own SASRec, GRU4Rec, NARM and BERT4Rec trained in the ``all_positions`` regime.

RecBole trains its sequential models on prefix rows: every prefix of every training sequence is a
sample with its loss at the last position (≈ 1 M samples of up to 200 items per ML-1M epoch).
SASRec's original code, BERT4Rec's, RecTools, RePlay and gSASRec feed each user's sequence once
and put the loss at every position (BERT4Rec: its cloze task over the whole sequence). This module
gives RecBole's classes that regime without changing them: the model is RecBole's (same modules,
``state_dict``, ``predict`` and ``full_sort_predict``), only the training loss of a batch is
computed here, from the model's own sub-modules, and :class:`~recbole_hymoe.trainer.MoETrainer`
hands it to RecBole's ``Trainer`` loop in place of ``model.calculate_loss``. The batches are the
user windows of :class:`~recbole_hymoe.data.RegimeDataset`, as for the package's models.

Glossary: B batch, L window width (≤ ``MAX_ITEM_LIST_LENGTH``), H model width, N supervised
positions of a batch, V items (row 0 = padding).
"""

import torch
from torch.utils.checkpoint import checkpoint

from recbole_hymoe.data import LOSS_START_FIELD
from recbole_hymoe.nn.losses import chunked_cross_entropy, next_item_loss, next_item_targets

# NARM's causal attention holds a [B, T, L, H] tensor per chunk of T query positions; chunks are
# recomputed in the backward pass (activation checkpointing) so memory stays O(chunk), not O(L²).
NARM_CHUNK_ELEMENTS = 2**26
# Query positions per chunk of NARM's all-position attention: small enough that rows which end
# early drop out of the later chunks (see narm_states), large enough to keep the products batched.
NARM_QUERY_CHUNK = 8


def trimmed_window(model, interaction):
    """Item windows without padding columns beyond the longest sequence (causal: no value changes).

    Returns:
        tuple: item_seq [B, L'] (0 = padding, right-padded), item_seq_len [B], and the supervised
        positions ``real`` [B, L'] (real items; with overlapping windows only the new targets).
    """
    item_seq_len = interaction[model.ITEM_SEQ_LEN]
    item_seq = interaction[model.ITEM_SEQ][:, : int(item_seq_len.max())]
    real = item_seq != 0
    if LOSS_START_FIELD in interaction:  # overlapping windows supervise only their new targets
        positions = torch.arange(item_seq.size(1), device=item_seq.device)
        real = real & (positions >= interaction[LOSS_START_FIELD].unsqueeze(1))
    return item_seq, item_seq_len, real


def sasrec_states(model, item_seq):
    """States of RecBole's ``SASRec`` at every position, [B, L, H].

    Mirrors ``SASRec.forward`` without its final ``gather_indexes``: position t attends to
    positions ≤ t (``get_attention_mask``), so state t is ``forward`` on the prefix ending at t.
    """
    positions = torch.arange(item_seq.size(1), device=item_seq.device).unsqueeze(0).expand_as(item_seq)
    hidden = model.item_embedding(item_seq) + model.position_embedding(positions)  # [B, L, H]
    hidden = model.dropout(model.LayerNorm(hidden))
    return model.trm_encoder(hidden, model.get_attention_mask(item_seq), output_all_encoded_layers=True)[-1]


def gru4rec_states(model, item_seq):
    """States of RecBole's ``GRU4Rec`` at every position, [B, L, E] (``GRU4Rec.forward`` without
    its final ``gather_indexes``; a GRU is causal)."""
    gru_output, _ = model.gru_layers(model.emb_dropout(model.item_embedding(item_seq)))  # [B, L, hidden]
    return model.dense(gru_output)


def narm_states(model, item_seq):
    """States of RecBole's ``NARM`` at every real position, [B, L, E], each from items 1 … t only.

    ``NARM.forward`` on a prefix of length t+1 uses the GRU states h_1 … h_t: the global encoder
    c_g = h_t and the local encoder c_l = Σ_{s≤t} α_ts h_s with α_ts = v^T σ(A_1 h_s + A_2 h_t)
    (Li et al., CIKM 2017, Eq. 5–8), then ``b([c_l; c_g])``. Here every t is computed at once, with
    the causal mask s ≤ t in place of NARM's padding mask. The additive attention costs B·L²·H
    sigmoids, so it runs in chunks of :data:`NARM_QUERY_CHUNK` query positions t (fewer when
    memory demands, :data:`NARM_CHUNK_ELEMENTS`) and, per chunk, only
    over the rows still real there (rows sorted by length) and the keys s up to the chunk's
    last t: on Beauty's windows (9 items on average of 50) most of the B·L² pairs are padding.
    Padding positions get c_l = 0; only real positions are read (the loss gathers them).
    """
    gru_out, _ = model.gru(model.emb_dropout(model.item_embedding(item_seq)))  # [B, L, hidden]
    q1 = model.a_1(gru_out)  # [B, L, hidden], keys s
    q2 = model.a_2(gru_out)  # [B, L, hidden], queries t
    batch, length = item_seq.shape
    causal = torch.ones(length, length, dtype=torch.bool, device=item_seq.device).tril()  # [t, s]
    chunk = max(1, min(NARM_QUERY_CHUNK, NARM_CHUNK_ELEMENTS // max(1, batch * length * q1.size(-1))))
    # recompute each chunk's attention in backward only when all of it would not fit the budget
    checkpointed = batch * length * length * q1.size(-1) > NARM_CHUNK_ELEMENTS
    lengths = (item_seq != 0).sum(1)  # [B]; windows are right-padded
    order = torch.argsort(lengths, descending=True)  # [B]
    sorted_lengths = lengths[order].tolist()

    def local(q2_chunk, q1_keys, out_keys, mask_chunk):
        # [b, T, 1, hidden] + [b, 1, S, hidden] -> alpha [b, T, S]
        alpha = model.v_t(torch.sigmoid(q2_chunk.unsqueeze(2) + q1_keys.unsqueeze(1))).squeeze(-1)
        alpha = alpha * mask_chunk  # NARM multiplies σ(·) by its mask; v_t has no bias, so masking α is the same
        return alpha @ out_keys  # [b, T, S] @ [b, S, hidden] -> [b, T, hidden]

    pieces = []
    for start in range(0, length, chunk):
        stop = min(start + chunk, length)
        active = sum(1 for n in sorted_lengths if n > start)  # rows with a real position in [start, stop)
        piece = gru_out.new_zeros(batch, stop - start, gru_out.size(-1))  # [B, T, hidden]
        if active:
            rows = order[:active]
            args = (q2[rows, start:stop], q1[rows, :stop], gru_out[rows, :stop],
                    causal[start:stop, :stop].to(q1.dtype))
            if torch.is_grad_enabled() and checkpointed:
                piece[rows] = checkpoint(local, *args, use_reentrant=False)
            else:
                piece[rows] = local(*args)
        pieces.append(piece)
    c_local = torch.cat(pieces, dim=1)  # [B, L, hidden]
    c_t = model.ct_dropout(torch.cat([c_local, gru_out], dim=-1))  # [B, L, 2 hidden]
    return model.b(c_t)


STATE_FUNCTIONS = {"SASRec": sasrec_states, "GRU4Rec": gru4rec_states, "NARM": narm_states}


def next_item_all_positions_loss(model, interaction, loss_type):
    """Next-item loss at every supervised position of a batch of user windows (SASRec, GRU4Rec, NARM).

    CE over all items as RecBole's ``calculate_loss`` computes it at the last position; BPR with one
    uniform negative per position (RecBole's BPR draws one per sample).
    """
    item_seq, item_seq_len, real = trimmed_window(model, interaction)
    states = STATE_FUNCTIONS[type(model).__name__](model, item_seq)  # [B, L, H]
    targets = next_item_targets(item_seq, item_seq_len, interaction[model.POS_ITEM_ID])  # [B, L]
    return next_item_loss(states[real], model.item_embedding.weight, targets[real], loss_type)  # [N, H], [N]


def cloze_windows(item_seq, item_seq_len, targets, real, max_len):
    """The items a BERT4Rec window holds, and which of them its cloze task may mask.

    A window row carries the items before its last target; for the cloze task the target joins
    the sequence (BERT4Rec trains on the whole sequence). A full window (``max_len`` items) drops
    its first item to make room, as BERT4Rec's own truncation to the latest L items does; that
    item is the last target of the window before it.

    Args:
        item_seq (LongTensor): [B, L'] window items, right-padded.
        item_seq_len (LongTensor): [B].
        targets (LongTensor): [B, L'] next item at every position (:func:`next_item_targets`).
        real (BoolTensor): [B, L'] supervised target positions.
        max_len (int): the model's number of positions.

    Returns:
        tuple: sequences [B, W] (W = min(L' + 1, max_len)) and maskable positions [B, W].
    """
    # The window's first item is maskable only where no earlier window supervised it: the
    # user's first window (not full) when all of its targets are new.
    first = (item_seq_len < max_len) & real[:, 0]
    sequence = torch.cat([item_seq[:, :1], targets], dim=1)  # [B, L' + 1]
    maskable = torch.cat([first.unsqueeze(1), real], dim=1)  # [B, L' + 1]
    width = min(sequence.size(1), max_len)
    shift = (item_seq_len >= max_len).long().unsqueeze(1)  # full windows drop their first item
    index = torch.arange(width, device=item_seq.device).unsqueeze(0) + shift  # [B, W]
    return sequence.gather(1, index), maskable.gather(1, index)


def bert4rec_all_positions_loss(model, interaction, loss_type, ft_ratio, generator=None):
    """BERT4Rec's cloze loss over each user window once (RecBole's objective, vectorised).

    As RecBole's ``MaskItemSequence`` transform and ``BERT4Rec.calculate_loss``: each real item is
    replaced by the mask token with probability ``mask_ratio`` and predicted at its position from
    both sides; with probability ``ft_ratio`` a batch instead masks only each sequence's last item
    (fine-tuning for next-item prediction, RecBole's ``_append_mask_last``). CE: softmax over all
    items plus ``output_bias``; BPR: one uniform negative per masked position. Differences from
    RecBole, by design: masks are drawn in torch for the whole batch (RecBole loops over items in
    Python), every masked position is supervised (RecBole keeps at most ``mask_ratio · L`` per
    sequence and drops a masked first position), negatives are uniform (RecBole's avoid the
    sequence's items), and a fine-tuning batch masks each window's last item, the same targets
    every epoch, where RecBole's masks each prefix row's, every item once per epoch; the package's
    ``Config`` therefore sets ``ft_ratio`` to 0 in this regime unless the user sets it.
    """
    item_seq, item_seq_len, real = trimmed_window(model, interaction)
    targets = next_item_targets(item_seq, item_seq_len, interaction[model.POS_ITEM_ID])
    sequence, maskable = cloze_windows(item_seq, item_seq_len, targets, real, model.max_seq_length)  # [B, W]
    device = sequence.device
    if torch.rand((), device=device, generator=generator) < ft_ratio:
        last = (sequence != 0).sum(1) - 1  # [B]
        masked = torch.zeros_like(maskable)
        masked[torch.arange(len(last), device=device), last] = True
        masked &= maskable
    else:
        masked = maskable & (torch.rand(sequence.shape, device=device, generator=generator) < model.mask_ratio)
    if not masked.any():  # nothing to predict in this batch (short windows): a zero loss with a graph
        return model.output_bias.sum() * 0.0
    states = model.forward(sequence.masked_fill(masked, model.mask_token))[masked]  # [B, W, H] -> [N, H]
    positives = sequence[masked]  # [N]
    table = model.item_embedding.weight[: model.n_items]  # the mask token's row is not an item
    if loss_type == "BPR":
        negatives = torch.randint(1, model.n_items, positives.shape, device=device, generator=generator)
        pos_score = (states * table[positives]).sum(-1) + model.output_bias[positives]
        neg_score = (states * table[negatives]).sum(-1) + model.output_bias[negatives]
        return -torch.log(1e-14 + torch.sigmoid(pos_score - neg_score)).mean()
    # the output bias as one more hidden column, [N, H+1] · [V, H+1]ᵀ = states · tableᵀ + bias, so
    # the cloze CE is the chunked softmax that never holds the [N, V] logits at once
    states = torch.cat([states, states.new_ones(states.size(0), 1)], dim=1)  # [N, H+1]
    table = torch.cat([table, model.output_bias.unsqueeze(1)], dim=1)  # [V, H+1]
    return chunked_cross_entropy(states, table, positives)


def all_positions_loss(model, config):
    """Return the all-positions training loss ``f(interaction) -> loss`` of a built-in model."""
    loss_type = config["loss_type"]
    if type(model).__name__ == "BERT4Rec":
        ft_ratio = config["ft_ratio"] or 0.0
        return lambda interaction: bert4rec_all_positions_loss(model, interaction, loss_type, ft_ratio)
    return lambda interaction: next_item_all_positions_loss(model, interaction, loss_type)
