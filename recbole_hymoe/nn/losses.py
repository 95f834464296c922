"""Next-item targets at every position, and the next-item losses (CE, BPR, sampled softmax)."""

import torch
from torch.nn import functional as F


def next_item_targets(item_seq, item_seq_len, last_target):
    """Target of every position of right-padded sequences: the next item, 0 at padding.

    ``targets[b, t] = item_seq[b, t + 1]`` for ``t < len_b - 1`` and ``last_target[b]`` at
    ``t = len_b - 1``.

    Args:
        item_seq (LongTensor): [B, L], 0 = padding, right-padded.
        item_seq_len (LongTensor): [B], ≥ 1.
        last_target (LongTensor): [B], the item that follows the whole sequence.

    Returns:
        LongTensor: [B, L].
    """
    targets = torch.zeros_like(item_seq)
    targets[:, :-1] = item_seq[:, 1:]
    targets[torch.arange(item_seq.size(0), device=item_seq.device), item_seq_len - 1] = last_target
    return targets


def sampled_softmax_loss(user, items, positives, n_negatives, temperature=1.0, negatives=None, generator=None):
    """Softmax cross-entropy over the positive and ``n_negatives`` uniform negatives per row.

    ``loss_n = -log softmax([s(u_n, i⁺_n), s(u_n, i⁻_n1), …] / τ)[0]`` with s the dot product;
    negatives are drawn uniformly from items ``1 … |I|-1`` with replacement, and a negative equal
    to the row's positive is masked out of the softmax. Scores of the negatives are read from the
    full ``[N, |I|]`` logit matrix when that is cheaper than gathering ``[N, R, H]`` negative
    embeddings (``|I| ≤ R · H``); both paths give the same value.

    Args:
        user (FloatTensor): [N, H] user states.
        items (FloatTensor): [|I|, H] item table (row 0 = padding, never sampled).
        positives (LongTensor): [N] positive item ids.
        n_negatives (int): R ≥ 1.
        temperature (float): τ > 0.
        negatives (LongTensor, optional): [N, R] given negatives instead of uniform draws.
        generator (torch.Generator, optional): for reproducible draws.

    Returns:
        FloatTensor: scalar, mean over the N rows.
    """
    num_rows, hidden = user.shape
    num_items = items.size(0)
    if negatives is None:
        negatives = torch.randint(1, num_items, (num_rows, n_negatives), device=user.device, generator=generator)
    pos_score = (user * items[positives]).sum(-1, keepdim=True)  # [N, 1]
    if num_items <= n_negatives * hidden:
        neg_score = (user @ items.t()).gather(1, negatives)  # [N, |I|] -> [N, R]
    else:
        neg_score = torch.einsum("nh,nrh->nr", user, items[negatives])  # [N, R, H] -> [N, R]
    neg_score = neg_score.masked_fill(negatives == positives.unsqueeze(1), float("-inf"))
    logits = torch.cat([pos_score, neg_score], dim=1) / temperature  # [N, 1 + R]
    return F.cross_entropy(logits, torch.zeros(num_rows, dtype=torch.long, device=user.device))


def bpr_loss(pos_score, neg_score):
    """``-mean log(γ + σ(s⁺ - s⁻))`` with γ = 1e-10, RecBole's ``BPRLoss``."""
    return -torch.log(1e-10 + torch.sigmoid(pos_score - neg_score)).mean()


def next_item_loss(user, items, targets, loss_type, n_negatives=None, temperature=1.0, negatives=None):
    """Next-item loss of user states against the item table.

    ``CE``: softmax cross-entropy over every item; ``BPR``: :func:`bpr_loss` against ``negatives``
    or, when None, one uniform negative per row; ``SSM``: :func:`sampled_softmax_loss`. Scores are
    dot products divided by ``temperature``.

    Args:
        user (FloatTensor): [N, H].
        items (FloatTensor): [|I|, H] (row 0 = padding, never sampled).
        targets (LongTensor): [N].
        loss_type (str): ``CE``, ``BPR`` or ``SSM``.
        n_negatives (int, optional): SSM's R.
        temperature (float): τ > 0.
        negatives (LongTensor, optional): [N] BPR negatives.

    Returns:
        FloatTensor: scalar, mean over the N rows.
    """
    if loss_type == "SSM":
        return sampled_softmax_loss(user, items, targets, n_negatives, temperature)
    if loss_type == "BPR":
        if negatives is None:
            negatives = torch.randint(1, items.size(0), targets.shape, device=targets.device)
        pos_score = (user * items[targets]).sum(-1) / temperature  # [N]
        neg_score = (user * items[negatives]).sum(-1) / temperature  # [N]
        return bpr_loss(pos_score, neg_score)
    logits = user @ items.t()  # [N, |I|]
    return F.cross_entropy(logits if temperature == 1.0 else logits / temperature, targets)
