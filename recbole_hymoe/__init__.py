"""recbole-hymoe: Mixture-of-Experts sequential recommenders as a RecBole 1.2.1 plugin.

Importing the package repairs RecBole 1.2.1 for numpy 2 / pandas 3 / torch >= 2.6
(:mod:`recbole_hymoe.compat`) and registers the plugin models, so that RecBole's own
``Config``, ``run_recbole``, ``load_data_and_model`` and ``get_trainer`` find them by name.
"""

import os

from recbole_hymoe import compat

# RECBOLE_HYMOE_SKIP_REPAIRS=name[,name] leaves repairs out, to show what breaks without them.
compat.apply(skip={n for n in os.environ.get("RECBOLE_HYMOE_SKIP_REPAIRS", "").split(",") if n})

from recbole_hymoe import registry  # noqa: E402  (RecBole must be repaired first)

registry.install_config_hook()

from recbole_hymoe.config import Config  # noqa: E402
from recbole_hymoe.data import ALL_POSITIONS_BUILTINS, RegimeDataset  # noqa: E402
from recbole_hymoe.models import FuXiAlpha, FuxiMME, HM2Rec, HyMoERec, Mamba4Rec  # noqa: E402
from recbole_hymoe.trainer import MoETrainer  # noqa: E402

_MODELS = ((HyMoERec, ()), (Mamba4Rec, ()), (FuXiAlpha, ("FuXi-alpha", "FuXi-α")), (FuxiMME, ("Fuxi-MME",)),
           (HM2Rec, ()))
for _model, _aliases in _MODELS:
    registry.register_model(_model, _model.yaml_file(), trainer=MoETrainer, dataset=RegimeDataset, aliases=_aliases)
# RecBole's SASRec, GRU4Rec, NARM and BERT4Rec read their data through RegimeDataset in both regimes
# (its user windows in all_positions, its timestamp repair in both), also in RecBole's own loader.
for _model in ALL_POSITIONS_BUILTINS:
    registry.register_dataset(_model, RegimeDataset)

from recbole_hymoe.quick_start import load_data_and_model, run  # noqa: E402

__version__ = "0.1.0"
__all__ = ["Config", "FuXiAlpha", "FuxiMME", "HM2Rec", "HyMoERec", "Mamba4Rec", "MoETrainer", "load_data_and_model",
           "run", "__version__"]
