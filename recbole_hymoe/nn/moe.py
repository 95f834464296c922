"""The one Mixture-of-Experts layer of the package: top-K router, experts, balance and z losses.

Every model of the package (HyMoERec's sparse branch, Fuxi-MME's MoE-FFN, HM2Rec's MoE-FFN)
uses :class:`SparseMoE`. It is dropless (no capacity limit, no token dropping: recommendation
batches are small enough) and padding tokens are never routed, never counted in statistics and
never enter a loss.

Glossary: B batch, L sequence length, H hidden size, I expert inner size, E experts,
K experts per token, N real (non-padding) tokens.

References:
    Shazeer et al., "Outrageously Large Neural Networks: The Sparsely-Gated Mixture-of-Experts
    Layer", ICLR 2017 (top-K gating).
    Fedus et al., "Switch Transformers", JMLR 2022, eq. (4)-(6) (balance loss).
    Zoph et al., "ST-MoE", arXiv 2202.08906, eq. (5) (router z-loss).
    Li, Sun, Lim, "HyMoERec", AAAI 2026 student abstract, arXiv 2511.06388 (entropy balance loss).
"""

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from recbole_hymoe.nn.dropout import dropout
from recbole_hymoe.nn.ffn import get_activation

ROUTERS = ("linear", "mlp")
BALANCE_LOSSES = ("entropy", "switch")


class RouterOutput(NamedTuple):
    """Routing decision for N tokens.

    Attributes:
        logits (FloatTensor): [N, E], float32.
        probs (FloatTensor): [N, E], float32 softmax over all E experts.
        topk_weight (FloatTensor): [N, K], gates of the kept experts, renormalised to sum to 1.
        topk_idx (LongTensor): [N, K], kept experts, distinct per row, by decreasing probability.
    """

    logits: torch.Tensor
    probs: torch.Tensor
    topk_weight: torch.Tensor
    topk_idx: torch.Tensor


class MoEOutput(NamedTuple):
    """What :class:`SparseMoE` returns.

    Attributes:
        hidden (FloatTensor): same shape as the input; zero at padding positions.
        aux_loss (FloatTensor): scalar, ``balance_weight * balance_loss + z_loss_weight * z_loss``.
        balance_loss (FloatTensor): scalar, unweighted (for logs).
        z_loss (FloatTensor): scalar, unweighted (for logs).
        router (RouterOutput): the routing of the N real tokens (row order = mask order).
    """

    hidden: torch.Tensor
    aux_loss: torch.Tensor
    balance_loss: torch.Tensor
    z_loss: torch.Tensor
    router: RouterOutput

    @property
    def expert_load(self):
        """LongTensor [E]: token-slots sent to each expert, summing to N * K (counted when read)."""
        return torch.bincount(self.router.topk_idx.reshape(-1), minlength=self.router.probs.shape[-1])


def _select(values, mask):
    """Keep the rows of ``values`` [..., X] where ``mask`` [...] is True -> [N, X]."""
    values = values.reshape(-1, values.shape[-1])
    if mask is None:
        return values
    return values[mask.reshape(-1)]


def entropy_balance_loss(probs, mask=None):
    """HyMoERec's balance loss in its non-negative form (paper: ``L_lb = Σ_e ḡ_e log ḡ_e``).

    ``Σ_e ḡ_e log ḡ_e + log E = KL(ḡ ‖ uniform)`` with ḡ [E] the full-softmax routing
    probability averaged over real tokens. Adding ``log E`` changes no gradient and makes the
    logged value 0 at uniform usage.

    Args:
        probs (FloatTensor): [..., E] router softmax.
        mask (BoolTensor, optional): [...], True for real tokens.

    Returns:
        FloatTensor: scalar; 0 when there is no real token.
    """
    probs = _select(probs, mask)
    num_experts = probs.shape[-1]
    if probs.shape[0] == 0:
        return probs.new_zeros(())
    mean_prob = probs.mean(0)  # [E]
    return (mean_prob * torch.log(mean_prob.clamp_min(1e-12))).sum() + math.log(num_experts)


def switch_balance_loss(probs, topk_idx, mask=None):
    """Switch-Transformer balance loss ``E · Σ_e f_e · P_e`` (Fedus et al. eq. 4-6).

    ``f_e`` is the fraction of the N·K token-slots dispatched to expert e (divided by K, so
    ``Σ f = 1`` for every K), ``P_e`` the mean router probability. Perfect balance gives 1,
    total collapse gives E.

    Args:
        probs (FloatTensor): [..., E] router softmax.
        topk_idx (LongTensor): [..., K] selected experts.
        mask (BoolTensor, optional): [...], True for real tokens.

    Returns:
        FloatTensor: scalar; 0 when there is no real token.
    """
    probs = _select(probs, mask)
    topk_idx = _select(topk_idx, mask)
    num_tokens, num_experts = probs.shape
    if num_tokens == 0:
        return probs.new_zeros(())
    slots = torch.bincount(topk_idx.reshape(-1), minlength=num_experts).to(probs.dtype)
    fraction = slots / topk_idx.numel()  # [E]
    return num_experts * (fraction * probs.mean(0)).sum()


def router_z_loss(logits, mask=None):
    """Router z-loss ``mean_n (logsumexp_e logits[n, e])²`` (ST-MoE eq. 5): keeps logits small.

    Args:
        logits (FloatTensor): [..., E].
        mask (BoolTensor, optional): [...], True for real tokens.

    Returns:
        FloatTensor: scalar; 0 when there is no real token.
    """
    logits = _select(logits, mask)
    if logits.shape[0] == 0:
        return logits.new_zeros(())
    return torch.logsumexp(logits, dim=-1).pow(2).mean()


BALANCE_LOSS_FUNCTIONS = {
    "entropy": lambda router: entropy_balance_loss(router.probs),
    "switch": lambda router: switch_balance_loss(router.probs, router.topk_idx),
}


class TopKRouter(nn.Module):
    """Score E experts per token and keep the top K, gates renormalised over the K kept.

    Softmax over all E logits renormalised to the top K equals a softmax over the K kept
    logits. NOTE: with K = 1 the kept gate is always exactly 1, so the task loss gives the
    router no gradient; only the balance / z losses train it (Switch keeps the raw top-1
    probability for that reason; HyMoERec's renormalised gates do not).

    Args:
        hidden_size (int): H.
        num_experts (int): E ≥ 1.
        top_k (int): K, 1 ≤ K ≤ E.
        router (str): ``linear`` = one ``Linear(H, E)``; ``mlp`` = ``Linear(H, H)``-GELU-``Linear(H, E)``.
    """

    def __init__(self, hidden_size, num_experts, top_k, router="linear"):
        super().__init__()
        if not 1 <= top_k <= num_experts:
            raise ValueError(f"top_k={top_k} must satisfy 1 <= top_k <= num_experts={num_experts}")
        if router not in ROUTERS:
            raise ValueError(f"router={router!r} is not one of {ROUTERS}")
        self.num_experts = num_experts
        self.top_k = top_k
        if router == "linear":
            self.proj = nn.Linear(hidden_size, num_experts)
        else:
            self.proj = nn.Sequential(
                nn.Linear(hidden_size, hidden_size), nn.GELU(), nn.Linear(hidden_size, num_experts)
            )

    def forward(self, x):
        """Route tokens.

        Args:
            x (FloatTensor): [N, H].

        Returns:
            RouterOutput: float32 routing of the N tokens.
        """
        logits = self.proj(x).float()  # routing in float32 whatever the compute dtype
        probs = torch.softmax(logits, dim=-1)
        topk_prob, topk_idx = probs.topk(self.top_k, dim=-1)
        if self.top_k == 1:  # p / p: exactly 1, without float noise posing as a gradient
            topk_weight = torch.ones_like(topk_prob)
        else:
            topk_weight = topk_prob / topk_prob.sum(dim=-1, keepdim=True)
        return RouterOutput(logits, probs, topk_weight, topk_idx)


class ExpertBank(nn.Module):
    """E experts with a shared dispatch; subclasses define :meth:`expert_forward`.

    Attributes:
        num_experts (int): E.
        in_features (int): input width.
        out_features (int): output width.
    """

    def expert_forward(self, e, x):
        """Apply expert ``e`` to ``x`` [n, in_features] -> [n, out_features]."""
        raise NotImplementedError

    def forward(self, x, topk_idx, topk_weight):
        """Dropless dispatch: each expert runs once, on exactly the tokens that selected it.

        Args:
            x (FloatTensor): [N, in_features].
            topk_idx (LongTensor): [N, K].
            topk_weight (FloatTensor): [N, K].

        Returns:
            FloatTensor: [N, out_features], ``Σ_k topk_weight[n, k] · f_{topk_idx[n, k]}(x[n])``.
        """
        top_k = topk_idx.shape[1]
        flat_idx = topk_idx.reshape(-1)  # [N·K]
        order = torch.argsort(flat_idx, stable=True)  # token-slots grouped by expert
        token = order // top_k  # [N·K] token of each slot
        counts = torch.bincount(flat_idx, minlength=self.num_experts).tolist()
        x_sorted = x.index_select(0, token)  # [N·K, in]
        outputs = [
            self.expert_forward(e, chunk)
            for e, chunk in enumerate(x_sorted.split(counts))
            if chunk.shape[0] > 0
        ]
        y = torch.cat(outputs) if outputs else x_sorted.new_zeros(0, self.out_features)
        y = y * topk_weight.reshape(-1)[order].unsqueeze(1).to(y.dtype)
        # under autocast x and y can differ (float32 input, bfloat16 experts): sum in the wider dtype
        out = y.new_zeros(x.shape[0], self.out_features, dtype=torch.promote_types(x.dtype, y.dtype))
        return out.index_add_(0, token, y.to(out.dtype))  # [N, out]

    def reference_forward(self, x, topk_idx, topk_weight):
        """Token-by-token loop with the same semantics as :meth:`forward` (the test oracle)."""
        rows = []
        for n in range(x.shape[0]):
            row = x.new_zeros(self.out_features)
            for k in range(topk_idx.shape[1]):
                e = int(topk_idx[n, k])
                row = row + topk_weight[n, k] * self.expert_forward(e, x[n : n + 1])[0]
            rows.append(row)
        return torch.stack(rows) if rows else x.new_zeros(0, self.out_features)


class Experts(ExpertBank):
    """E independent two-layer MLPs ``H -> I -> H``, weights stacked for dispatch.

    Plain experts compute ``W_out · Dropout(act(W_in x + b_in)) + b_out`` (the host FFN's inner
    MLP); gated experts compute ``W_out · Dropout(act(W_gate x) ⊙ W_in x)`` (SwiGLU when act =
    swish).

    Args:
        num_experts (int): E.
        hidden_size (int): H.
        inner_size (int): I.
        activation (str): one of :data:`recbole_hymoe.nn.ffn.ACTIVATIONS`.
        gated (bool): gated (GLU-style) experts.
        bias (bool): learn biases.
        dropout_prob (float): dropout on the inner activation (0 = none).
    """

    def __init__(self, num_experts, hidden_size, inner_size, activation="gelu", gated=False, bias=True,
                 dropout_prob=0.0):
        super().__init__()
        self.num_experts = num_experts
        self.in_features = self.out_features = hidden_size
        self.act = get_activation(activation)
        self.dropout_prob = dropout_prob
        self.w_in = nn.Parameter(torch.empty(num_experts, hidden_size, inner_size))
        self.w_gate = nn.Parameter(torch.empty(num_experts, hidden_size, inner_size)) if gated else None
        self.w_out = nn.Parameter(torch.empty(num_experts, inner_size, hidden_size))
        self.b_in = nn.Parameter(torch.empty(num_experts, inner_size)) if bias else None
        self.b_out = nn.Parameter(torch.empty(num_experts, hidden_size)) if bias else None
        self.reset_parameters()

    def reset_parameters(self, std=0.02):
        """Weights ~ N(0, std²) (RecBole's Linear init), biases 0."""
        for weight in (self.w_in, self.w_gate, self.w_out):
            if weight is not None:
                nn.init.normal_(weight, mean=0.0, std=std)
        for bias in (self.b_in, self.b_out):
            if bias is not None:
                nn.init.zeros_(bias)

    def expert_forward(self, e, x):
        h = x @ self.w_in[e]
        if self.b_in is not None:
            h = h + self.b_in[e]
        h = self.act(x @ self.w_gate[e]) * h if self.w_gate is not None else self.act(h)
        out = dropout(h, self.dropout_prob, self.training) @ self.w_out[e]
        if self.b_out is not None:
            out = out + self.b_out[e]
        return out


class LinearExperts(ExpertBank):
    """E independent linear maps ``in -> out`` (an MoE in place of one projection matrix).

    Args:
        num_experts (int): E.
        in_features (int): input width.
        out_features (int): output width.
        bias (bool): learn biases.
    """

    def __init__(self, num_experts, in_features, out_features, bias=True):
        super().__init__()
        self.num_experts = num_experts
        self.in_features = in_features
        self.out_features = out_features
        self.weight = nn.Parameter(torch.empty(num_experts, in_features, out_features))
        self.bias = nn.Parameter(torch.empty(num_experts, out_features)) if bias else None
        self.reset_parameters()

    def reset_parameters(self, std=0.02):
        """Weights ~ N(0, std²), biases 0."""
        nn.init.normal_(self.weight, mean=0.0, std=std)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def expert_forward(self, e, x):
        out = x @ self.weight[e]
        return out + self.bias[e] if self.bias is not None else out


class ExpertUsage:
    """Running routing statistics of one MoE layer (real tokens only), read by the telemetry.

    Attributes:
        tokens (LongTensor): scalar, real tokens routed since the last reset.
        load (FloatTensor): [E], token-slots per expert.
        prob_sum (FloatTensor): [E], summed full-softmax router probabilities.
    """

    def __init__(self, num_experts, top_k):
        self.num_experts = num_experts
        self.top_k = top_k
        self.reset()

    def reset(self):
        """Forget everything seen so far."""
        self.tokens = torch.zeros((), dtype=torch.long)
        self.load = torch.zeros(self.num_experts, dtype=torch.float64)
        self.prob_sum = torch.zeros(self.num_experts, dtype=torch.float64)

    @torch.no_grad()
    def update(self, router):
        """Add one batch's routing (kept on the router's device until read)."""
        device = router.probs.device
        if self.load.device != device:
            self.tokens, self.load, self.prob_sum = (
                t.to(device) for t in (self.tokens, self.load, self.prob_sum)
            )
        self.tokens += router.probs.shape[0]
        self.load += torch.bincount(router.topk_idx.reshape(-1), minlength=self.num_experts)
        self.prob_sum += router.probs.sum(0).double()

    def summary(self):
        """Return token share, mean gate and usage entropy as plain Python numbers.

        Returns:
            dict: ``tokens``; ``token_share`` [E] (fraction of token-slots, sums to 1);
            ``mean_gate`` [E] (mean full-softmax probability ḡ); ``usage_entropy`` (nats, of
            the token share; log E is perfectly balanced); ``max_share``.
        """
        tokens = int(self.tokens)
        if tokens == 0:
            share = [0.0] * self.num_experts
            mean_gate = [0.0] * self.num_experts
            entropy = 0.0
        else:
            share_t = self.load / self.load.sum()
            share = share_t.tolist()
            mean_gate = (self.prob_sum / tokens).tolist()
            entropy = float(-(share_t * torch.log(share_t.clamp_min(1e-12))).sum())
        return {
            "tokens": tokens,
            "token_share": share,
            "mean_gate": mean_gate,
            "usage_entropy": entropy,
            "max_share": max(share) if share else 0.0,
        }


class SparseMoE(nn.Module):
    """Top-K routed mixture of E experts over the real tokens of a padded batch.

    ``y(x) = Σ_{k ∈ TopK(x)} g_k(x) · f_k(x)`` with renormalised gates g (HyMoERec eq. for
    ``y_MoE``; Shazeer et al. 2017). Padding positions get 0 and are never routed.

    Args:
        experts (ExpertBank): the E experts (e.g. :class:`Experts`, :class:`LinearExperts`).
        top_k (int): K, 1 ≤ K ≤ E.
        router (str): router kind, see :class:`TopKRouter`.
        router_size (int, optional): width of the router input (default: the experts' input).
        balance_loss (str): ``entropy`` (HyMoERec) or ``switch``.
        balance_weight (float): λ of the balance loss in ``aux_loss``.
        z_loss_weight (float): weight of the router z-loss in ``aux_loss``.
    """

    def __init__(self, experts, top_k, router="linear", router_size=None, balance_loss="entropy",
                 balance_weight=0.01, z_loss_weight=0.0):
        super().__init__()
        if balance_loss not in BALANCE_LOSSES:
            raise ValueError(f"balance_loss={balance_loss!r} is not one of {BALANCE_LOSSES}")
        self.num_experts = experts.num_experts
        self.top_k = top_k
        self.balance_loss = balance_loss
        self.balance_weight = balance_weight
        self.z_loss_weight = z_loss_weight
        self.router = TopKRouter(router_size or experts.in_features, experts.num_experts, top_k, router)
        self.experts = experts
        self.usage = ExpertUsage(experts.num_experts, top_k)

    def forward(self, hidden, mask=None, router_input=None):
        """Mix experts per real token.

        Args:
            hidden (FloatTensor): [..., in], e.g. [B, L, H] or [N, H].
            mask (BoolTensor, optional): hidden.shape[:-1], True for real tokens; None = all real.
            router_input (FloatTensor, optional): [..., router_size]; what the router sees when it
                differs from the experts' input (e.g. with a set embedding added).

        Returns:
            MoEOutput: ``hidden`` is [..., out] (zero at padding positions).
        """
        lead = hidden.shape[:-1]
        flat = hidden.reshape(-1, hidden.shape[-1])  # [..., in] -> [B·L, in]
        token_idx = None if mask is None else mask.reshape(-1).nonzero(as_tuple=True)[0]
        x = flat if token_idx is None else flat.index_select(0, token_idx)  # [N, in]
        route_from = x
        if router_input is not None:
            route_from = router_input.reshape(-1, router_input.shape[-1])
            route_from = route_from if token_idx is None else route_from.index_select(0, token_idx)
        router = self.router(route_from)
        y = self.experts(x, router.topk_idx, router.topk_weight)  # [N, out]
        if token_idx is not None:
            y = y.new_zeros(flat.shape[0], y.shape[1]).index_copy(0, token_idx, y)  # padding rows stay 0
        balance = BALANCE_LOSS_FUNCTIONS[self.balance_loss](router)
        z_loss = router_z_loss(router.logits)
        aux = self.balance_weight * balance + self.z_loss_weight * z_loss
        self.usage.update(router)
        return MoEOutput(y.reshape(*lead, y.shape[-1]), aux, balance, z_loss, router)


@dataclass(frozen=True)
class MoESettings:
    """What every MoE layer of a model shares, built and checked once and handed to each block.

    As Mixtral's blocks share one config: a model reads the ``moe_*`` keys into one of these,
    and every block builds its :class:`SparseMoE` with :meth:`layer` (experts and router input
    are the block's own).

    Attributes:
        num_experts (int): E ≥ 1.
        top_k (int): K, 1 ≤ K ≤ E.
        router (str): router kind, see :class:`TopKRouter`.
        balance_loss (str): ``entropy`` (HyMoERec) or ``switch``.
        balance_weight (float): λ of the balance loss in ``aux_loss``.
        z_loss_weight (float): weight of the router z-loss in ``aux_loss``.
    """

    num_experts: int
    top_k: int
    router: str = "linear"
    balance_loss: str = "entropy"
    balance_weight: float = 0.01
    z_loss_weight: float = 0.0

    def layer(self, experts, router_size=None):
        """Return a :class:`SparseMoE` over ``experts`` (an :class:`ExpertBank` of E experts).

        Args:
            experts (ExpertBank): the block's experts.
            router_size (int, optional): width of the router input (default: the experts' input).

        Raises:
            ValueError: ``experts`` does not hold E experts.
        """
        if experts.num_experts != self.num_experts:
            raise ValueError(f"expected {self.num_experts} experts, got {experts.num_experts}")
        return SparseMoE(experts, self.top_k, router=self.router, router_size=router_size,
                         balance_loss=self.balance_loss, balance_weight=self.balance_weight,
                         z_loss_weight=self.z_loss_weight)
