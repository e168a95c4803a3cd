"""gdmix: generalized deep mixed models for recommendation and CTR prediction.

A GDMix model predicts ``logit = offset + f(x) + sum_i r_i(x_i)``: a global fixed
effect ``f`` plus per-entity random effects ``r_i``, trained by block coordinate
descent.
"""

from gdmix import report
from gdmix._version import __version__
from gdmix.config import (
    DataConfig,
    FeatureConfig,
    FixedEffectConfig,
    GDMixConfig,
    RandomEffectConfig,
    TrainingConfig,
    load_config,
)
from gdmix.errors import ConfigError, DataError, GDMixError, ModelDirectoryError, OutputError
from gdmix.metrics import grouped_auc, log_loss, roc_auc
from gdmix.model import GDMixModel
from gdmix.refit import RefitPlan, refit, refit_plan
from gdmix.refresh import RefreshResult, refresh
from gdmix.store import ModelStore
from gdmix.training import fit

__all__ = [
    "ConfigError",
    "DataConfig",
    "DataError",
    "FeatureConfig",
    "FixedEffectConfig",
    "GDMixConfig",
    "GDMixError",
    "GDMixModel",
    "ModelDirectoryError",
    "ModelStore",
    "OutputError",
    "RandomEffectConfig",
    "RefitPlan",
    "RefreshResult",
    "TrainingConfig",
    "__version__",
    "fit",
    "grouped_auc",
    "load_config",
    "log_loss",
    "refit",
    "refit_plan",
    "refresh",
    "report",
    "roc_auc",
]
