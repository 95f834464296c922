"""Activations shared by the package's feed-forward layers, named as in RecBole's configs."""

import torch
from torch.nn import functional as F

ACTIVATIONS = {
    "gelu": F.gelu,  # erf form, as RecBole's FeedForward.gelu
    "relu": F.relu,
    "swish": F.silu,
    "silu": F.silu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
}


def get_activation(name):
    """Return the activation function called ``name`` (RecBole's ``hidden_act`` values + ``silu``).

    Raises:
        ValueError: ``name`` is not one of :data:`ACTIVATIONS`.
    """
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"activation {name!r} is not one of {sorted(ACTIVATIONS)}") from None
