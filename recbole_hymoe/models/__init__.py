"""RecBole models of the package (each registered by name when ``recbole_hymoe`` is imported)."""

from recbole_hymoe.models.base import EncoderOutput, PluginSequentialRecommender
from recbole_hymoe.models.fuxi import FuXiAlpha, FuxiMME
from recbole_hymoe.models.hm2rec import HM2Rec
from recbole_hymoe.models.hymoerec import HyMoERec
from recbole_hymoe.models.mamba4rec import Mamba4Rec

__all__ = ["EncoderOutput", "FuXiAlpha", "FuxiMME", "HM2Rec", "HyMoERec", "Mamba4Rec", "PluginSequentialRecommender"]
