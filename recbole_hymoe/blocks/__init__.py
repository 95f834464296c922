"""Residual layers of each backbone, composed from :mod:`recbole_hymoe.nn`."""

from recbole_hymoe.blocks.feed_forward import MoEFeedForward, TokenFeedForward
from recbole_hymoe.blocks.fuxi import FuXiBlock
from recbole_hymoe.blocks.hybrid_ffn import FUSIONS, HybridFeedForward
from recbole_hymoe.blocks.mamba import MambaLayer
from recbole_hymoe.blocks.transformer import TransformerMoELayer

__all__ = ["FUSIONS", "FuXiBlock", "HybridFeedForward", "MambaLayer", "MoEFeedForward", "TokenFeedForward",
           "TransformerMoELayer"]
