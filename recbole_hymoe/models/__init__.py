"""RecBole models of the package (each registered by name when ``recbole_hymoe`` is imported)."""

from recbole_hymoe.models.base import EncoderOutput, MoESequentialRecommender
from recbole_hymoe.models.fuxi import FuXiAlpha, FuxiMME
from recbole_hymoe.models.hymoerec import HyMoERec

__all__ = ["EncoderOutput", "FuXiAlpha", "FuxiMME", "HyMoERec", "MoESequentialRecommender"]
