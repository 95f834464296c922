"""Pure-PyTorch layers of recbole_hymoe; this package never imports RecBole."""

from recbole_hymoe.nn.attention import MultiHeadAttention, causal_attention_mask
from recbole_hymoe.nn.ffn import ACTIVATIONS, get_activation
from recbole_hymoe.nn.moe import (
    BALANCE_LOSSES,
    ROUTERS,
    ExpertBank,
    Experts,
    ExpertUsage,
    LinearExperts,
    MoEOutput,
    MoESettings,
    RouterOutput,
    SparseMoE,
    TopKRouter,
    entropy_balance_loss,
    router_z_loss,
    switch_balance_loss,
)
from recbole_hymoe.nn.schedules import SCHEDULES, warmup_weight

__all__ = [
    "ACTIVATIONS",
    "BALANCE_LOSSES",
    "ROUTERS",
    "SCHEDULES",
    "ExpertBank",
    "Experts",
    "ExpertUsage",
    "LinearExperts",
    "MoEOutput",
    "MoESettings",
    "MultiHeadAttention",
    "RouterOutput",
    "SparseMoE",
    "TopKRouter",
    "causal_attention_mask",
    "entropy_balance_loss",
    "get_activation",
    "router_z_loss",
    "switch_balance_loss",
    "warmup_weight",
]
