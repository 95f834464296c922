"""Next-item targets at every position, and the next-item losses (CE, BPR, sampled softmax).

Shapes: N scored rows (user states), H hidden, |I| items (row 0 = padding), C rows per chunk.
"""

import torch
from torch.autograd.function import once_differentiable
from torch.nn import functional as F

# Logits one chunk of chunked_cross_entropy holds at a time: 2**18 = 1 MiB in float32, so a chunk's
# softmax passes run in the core's cache instead of memory. Measured on one thread (fwd + bwd of
# 14,000 positions x 3,706 items, d = 64): 2**17-2**18 took 0.73-0.76 s, 2**20 0.91 s, 2**23
# (32 MiB) 1.10-1.22 s; Beauty-shaped (1,800 x 12,102): 0.41 s against 0.51 s at 2**23.
CE_CHUNK_ELEMENTS = 2**18


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


def _compute_dtype(user, items):
    """The dtype of the logits products: autocast's (bfloat16, float16) when it is on, else the inputs'."""
    device = user.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return torch.promote_types(user.dtype, items.dtype)


def _scaled_logits(user, items, temperature):
    """``user @ itemsᵀ / τ`` [C, |I|], in float32 at least (the softmax sums in float32 whatever
    dtype the product ran in, as ``F.cross_entropy`` does on autocast's float32 list)."""
    logits = user @ items.t()  # [C, H] @ [H, |I|] -> [C, |I|]
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    return logits if temperature == 1.0 else logits / temperature


class _ChunkedCrossEntropy(torch.autograd.Function):
    """Mean softmax cross-entropy of ``user @ itemsᵀ / τ`` computed ``chunk_rows`` rows at a time,
    its gradients formed in the same pass.

    The loss is the graph's last node before a sum, so its gradient is known up to the scalar g
    that backward brings: forward scores each chunk once, takes its softmax p with one
    exponential per logit (its log-sum-exp from the same sums), and sends
    ``G = p - onehot(y)`` [C, |I|] through both products at once, so ``∂u = G e`` [N, H] and
    ``∂e = Σ_chunks Gᵀ u`` [|I|, H] are ready when backward only scales them by ``g / (N τ)``.
    Against recomputing the logits in backward this spares one of four [C, H] × [H, |I|]
    products and one of two exponential passes per chunk (Liger-Kernel's fused linear
    cross-entropy idea, written here for CPU chunks that stay in cache). The products run in the
    compute dtype (autocast's when it is on): ``user`` and ``items`` are cast to it once, G once
    per chunk; softmax sums and ∂e accumulate in float32 at least.
    """

    @staticmethod
    def forward(ctx, user, items, targets, temperature, chunk_rows, need_user, need_items):
        compute = _compute_dtype(user, items)
        accumulate = torch.promote_types(compute, torch.float32)
        grad_user = torch.empty(user.shape, dtype=accumulate, device=user.device) if need_user else None  # [N, H]
        grad_items = torch.zeros(items.shape, dtype=accumulate, device=items.device) if need_items else None
        total = torch.zeros((), dtype=accumulate, device=user.device)
        user_c, items_c = user.to(compute), items.to(compute)  # no-ops unless autocast is on
        with torch.autocast(user.device.type, enabled=False):
            for start in range(0, user.size(0), chunk_rows):
                rows = slice(start, start + chunk_rows)
                chunk, target = user_c[rows], targets[rows]  # [C, H], [C]
                logits = _scaled_logits(chunk, items_c, temperature)  # [C, |I|]
                target_logit = logits.gather(1, target.unsqueeze(1)).squeeze(1)  # [C]
                peak = logits.amax(dim=1, keepdim=True)  # [C, 1]
                probs = logits.sub_(peak).exp_()  # in place: the chunk's one [C, |I|] buffer
                norm = probs.sum(dim=1, keepdim=True)  # [C, 1]
                total += (peak.squeeze(1) + norm.log().squeeze(1) - target_logit).sum()
                if not (need_user or need_items):
                    continue
                grad_logits = probs.div_(norm)
                grad_logits[torch.arange(chunk.size(0), device=chunk.device), target] -= 1
                grad_logits = grad_logits.to(compute)  # a no-op in float32 and float64
                if need_user:
                    grad_user[rows] = grad_logits @ items_c  # [C, |I|] @ [|I|, H] -> [C, H]
                if need_items and grad_logits.dtype == grad_items.dtype:
                    grad_items.addmm_(grad_logits.t(), chunk)  # [|I|, C] @ [C, H]
                elif need_items:
                    grad_items += grad_logits.t() @ chunk  # the product in the compute dtype, summed in float32
        ctx.save_for_backward(grad_user, grad_items)
        ctx.scale = 1.0 / (user.size(0) * temperature)
        ctx.dtypes = (user.dtype, items.dtype)
        return (total / user.size(0)).to(torch.promote_types(user.dtype, items.dtype))

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss):
        grad_user, grad_items = ctx.saved_tensors
        scale = grad_loss * ctx.scale
        return (None if grad_user is None else (grad_user * scale).to(ctx.dtypes[0]),
                None if grad_items is None else (grad_items * scale).to(ctx.dtypes[1]),
                None, None, None, None, None)


def chunked_cross_entropy(user, items, targets, temperature=1.0, chunk_rows=None):
    """Softmax cross-entropy over every item without the [N, |I|] logits in memory at once.

    ``loss = mean_n( logsumexp_v(u_n · e_v / τ) - u_n · e_{y_n} / τ )``, the value and gradients
    of ``F.cross_entropy(user @ items.t() / τ, targets)`` to rounding. That plain form keeps the
    [N, |I|] log-softmax for backward and allocates its gradient too: with N ≈ 25,600 positions
    and |I| = 3,707 on ML-1M these take 0.76 GB, and the softmax passes over them are bound by
    memory bandwidth, not arithmetic. Here each chunk of rows is scored, reduced to its
    log-sum-exp [C] and, when a gradient will be asked for, turned at once into
    ``G = ∂loss/∂logits = (softmax - onehot(y)) / (N τ)``, giving ``∂u = G e`` and
    ``∂e = Σ_chunks Gᵀ u`` before the chunk is dropped (:class:`_ChunkedCrossEntropy`). A batch
    that fits in one chunk takes the plain form: its logits are small.

    Args:
        user (FloatTensor): [N, H] user states.
        items (FloatTensor): [|I|, H] item table.
        targets (LongTensor): [N] target item ids in ``0 … |I|-1`` (no ignore index).
        temperature (float): τ > 0.
        chunk_rows (int, optional): rows C per chunk; by default the most whose logits fit in
            :data:`CE_CHUNK_ELEMENTS`.

    Returns:
        FloatTensor: scalar, mean over the N rows (NaN for N = 0, as ``F.cross_entropy``).
    """
    if chunk_rows is None:
        chunk_rows = max(1, CE_CHUNK_ELEMENTS // items.size(0))
    if user.size(0) <= chunk_rows:
        logits = user @ items.t()  # [N, |I|]
        return F.cross_entropy(logits if temperature == 1.0 else logits / temperature, targets)
    grad = torch.is_grad_enabled()
    return _ChunkedCrossEntropy.apply(user, items, targets, temperature, chunk_rows,
                                      grad and user.requires_grad, grad and items.requires_grad)


def bpr_loss(pos_score, neg_score):
    """``-mean log(γ + σ(s⁺ - s⁻))`` with γ = 1e-10, RecBole's ``BPRLoss``."""
    return -torch.log(1e-10 + torch.sigmoid(pos_score - neg_score)).mean()


def next_item_loss(user, items, targets, loss_type, n_negatives=None, temperature=1.0, negatives=None):
    """Next-item loss of user states against the item table.

    ``CE``: softmax cross-entropy over every item, :func:`chunked_cross_entropy`; ``BPR``:
    :func:`bpr_loss` against ``negatives`` or, when None, one uniform negative per row; ``SSM``:
    :func:`sampled_softmax_loss`. Scores are dot products divided by ``temperature``.

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
    return chunked_cross_entropy(user, items, targets, temperature)
