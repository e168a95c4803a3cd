"""Fixed effect: a LightGBM binary model trained with the other coordinates' scores as
``init_score``.

The coordinate's score is the booster's raw output (the sum of its trees), so that
``logit = offset + f_gbdt(x) + random effects`` as for every other fixed effect.

Design
------
Columns are laid out as: the numeric columns as they are, then one column per
categorical column holding the integer code of its level (LightGBM native categorical
feature), then one column per ``(name, term)`` key of each feature bag. Levels and keys
come from a :class:`~gdmix.data.features.FeatureIndex` built on the training table (saved
as ``features.json``), so the encoding is the one every gdmix coordinate uses: a level or
a bag key not seen in training is missing (NaN for a categorical code, absent for a bag
key) at scoring time. Without bags the design is a dense float64 array; with bags it is a
CSR matrix (explicit NaN entries mark missing categorical codes).

Coordinate descent
------------------
Each :meth:`GBDTFixedEffect.fit` trains a new booster from scratch with the current
offset as ``init_score``: the trees of an earlier pass were grown against another offset,
so continuing them would not fit the current objective, and retraining is cheap next to
the per-entity solves. The seed is fixed, so one offset always gives one model. When the
offset is identically zero no ``init_score`` is passed, and LightGBM starts from the
label average exactly as a plain ``lightgbm.train`` does (LightGBM skips that step
whenever an ``init_score`` is given). With validation data, the validation offset is the
validation set's ``init_score`` and training stops after ``early_stopping_rounds``
rounds without improvement; the trees after the best round are dropped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
import scipy.sparse as sp

from gdmix.config_deep import GBDTFixedEffectConfig
from gdmix.data.features import FeatureIndex
from gdmix.effects.base import Coordinate, Validation
from gdmix.errors import ConfigError

__all__ = ["GBDTDesign", "GBDTFixedEffect"]

_FORMAT = "gdmix-gbdt"
_MODEL_FILE = "model.txt"
_META_FILE = "gbdt.json"
# Parameters gdmix sets itself; ``params`` may not change the objective.
_OBJECTIVE_KEYS = ("objective", "objective_type", "app", "application", "loss")
_THREAD_KEYS = ("num_threads", "num_thread", "nthread", "nthreads", "n_jobs")

GBDTDesign = np.ndarray | sp.csr_matrix


class GBDTFixedEffect(Coordinate):
    """Global LightGBM model ``f(x)`` (binary objective, raw logit output).

    Parameters
    ----------
    config : GBDTFixedEffectConfig
        Features, ``l2`` (LightGBM ``lambda_l2``), boosting settings and extra LightGBM
        ``params`` (passed through, after gdmix's own settings, so they win).

    Attributes
    ----------
    booster : lightgbm.Booster or None
        The fitted model (only the trees up to the best validation round).
    n_threads : int or None
        LightGBM threads when ``params`` does not set them; the trainer sets it from
        ``training.n_threads``. ``None`` lets LightGBM choose (OpenMP default).
    """

    kind = "gbdt"
    config: GBDTFixedEffectConfig

    def __init__(self, config: GBDTFixedEffectConfig) -> None:
        super().__init__(config)
        self.booster: lgb.Booster | None = None
        self.model_string = ""
        self.n_threads: int | None = None
        self.progress_factory: Any = None  # set by the trainer; unused (LightGBM logs nothing)
        for key in _OBJECTIVE_KEYS:
            if key in config.params and config.params[key] != "binary":
                raise ConfigError(
                    f"coordinate '{self.name}': 'params.{key}' of a gbdt coordinate must be "
                    f"'binary' (gdmix fits a logistic model). Got {config.params[key]!r} instead"
                )

    # -- data ---------------------------------------------------------------
    def build(self, frame: pd.DataFrame) -> None:
        """Build the index maps (categorical levels, bag keys) from the training table."""
        spec = self.config.features
        if not spec.columns():
            raise ConfigError(
                f"coordinate '{self.name}': a gbdt coordinate needs at least one feature "
                "('features.numeric', 'features.categorical' or 'features.bags')"
            )
        self.features = FeatureIndex.build(frame, spec, f"coordinate '{self.name}'")
        self.booster, self.model_string, self.fitted = None, "", False

    def columns(self) -> list[str]:
        """Data columns this coordinate reads."""
        return self.config.features.columns()

    @property
    def n_columns(self) -> int:
        """Width of the design: numeric + categorical + bag-key columns."""
        assert self.features is not None
        f = self.features
        return len(f.numeric) + len(f.categorical) + sum(len(v) for v in f.bags.values())

    def categorical_columns(self) -> list[int]:
        """Design positions of the categorical codes (LightGBM ``categorical_feature``)."""
        assert self.features is not None
        start = len(self.features.numeric)
        return list(range(start, start + len(self.features.categorical)))

    def feature_names(self) -> list[str]:
        """Readable name of every design column (bag keys as ``col[name,term]``)."""
        assert self.features is not None
        f = self.features
        bag_names = FeatureIndex(bags=f.bags).feature_names()
        return [*f.numeric, *f.categorical, *bag_names]

    def design(self, frame: pd.DataFrame, where: str, *, training: bool = False) -> GBDTDesign:
        """Encode ``frame``: dense float64 array, or CSR when the coordinate has bags.

        Numeric columns are checked (numeric dtype, no NaN/inf) exactly as for the other
        coordinates; unseen categorical levels and nulls become NaN (missing).
        """
        assert self.features is not None
        f = self.features
        onehot = f.transform(frame, f"{where}, coordinate '{self.name}'")
        n, n_num = onehot.shape[0], len(f.numeric)
        dense = np.empty((n, n_num + len(f.categorical)), dtype=np.float64)
        dense[:, :n_num] = onehot[:, :n_num].toarray()
        start = n_num
        for j, levels in enumerate(f.categorical.values()):
            block = onehot[:, start : start + len(levels)].tocsr()
            codes = np.full(n, np.nan)
            rows = np.repeat(np.arange(n), np.diff(block.indptr))
            codes[rows] = block.indices  # at most one level per row
            dense[:, n_num + j] = codes
            start += len(levels)
        if not f.bags:
            return dense
        bags = onehot[:, start:]
        return sp.hstack([sp.csr_matrix(dense), bags], format="csr", dtype=np.float64)

    # -- model --------------------------------------------------------------
    def lightgbm_params(self, l2: float) -> dict[str, Any]:
        """The LightGBM parameters of one fit (``l2`` is ``lambda_l2``)."""
        c = self.config
        params: dict[str, Any] = {
            "objective": "binary",
            "learning_rate": c.learning_rate,
            "num_leaves": c.num_leaves,
            "min_data_in_leaf": c.min_data_in_leaf,
            "lambda_l2": float(l2),
            "seed": c.seed,
            "deterministic": True,
            "force_col_wise": True,
            "verbosity": -1,
        }
        if self.n_threads is not None and not any(k in c.params for k in _THREAD_KEYS):
            params["num_threads"] = self.n_threads
        params.update(c.params)
        return params

    def _dataset(
        self,
        design: GBDTDesign,
        y: np.ndarray,
        weight: np.ndarray,
        init_score: np.ndarray | None,
        params: dict[str, Any],
        reference: lgb.Dataset | None = None,
    ) -> lgb.Dataset:
        return lgb.Dataset(
            design,
            label=np.asarray(y, dtype=np.float64),
            weight=np.asarray(weight, dtype=np.float64),
            init_score=init_score,
            categorical_feature=self.categorical_columns(),
            params=params,
            reference=reference,
            free_raw_data=True,
        )

    def fit(
        self,
        design: GBDTDesign,
        y: np.ndarray,
        weight: np.ndarray,
        offset: np.ndarray,
        *,
        l2: float,
        validation: Validation | None = None,
    ) -> dict[str, Any]:
        """Train a booster from scratch with ``offset`` as ``init_score``.

        With ``validation``, its offset is the validation ``init_score`` and training
        stops early (``early_stopping_rounds``) on the first LightGBM metric
        (``binary_logloss`` unless ``params`` sets ``metric``).

        Returns ``n_trees`` (trees kept) and, with validation, ``n_rounds`` (rounds run)
        and ``lightgbm_<metric>`` (the validation metric at the kept round).
        """
        params = self.lightgbm_params(l2)
        offset = np.asarray(offset, dtype=np.float64)
        # An all-zero init_score would switch off LightGBM's start from the label average.
        init = offset if np.any(offset != 0.0) else None
        train_set = self._dataset(design, y, weight, init, params)
        valid_sets: list[lgb.Dataset] = []
        callbacks: list[Any] = []
        evals: dict[str, Any] = {}
        if validation is not None:
            v_offset = np.asarray(validation.offset, dtype=np.float64)
            valid = self._dataset(
                validation.design, validation.y, validation.weight, v_offset, params, train_set
            )
            valid_sets = [valid]
            callbacks = [
                lgb.early_stopping(
                    self.config.early_stopping_rounds, first_metric_only=True, verbose=False
                ),
                lgb.record_evaluation(evals),
            ]
        booster = lgb.train(
            params,
            train_set,
            num_boost_round=self.config.n_estimators,
            valid_sets=valid_sets,
            valid_names=["validation"] if valid_sets else None,
            callbacks=callbacks,
        )
        # lgb.train returns the booster cut at its best iteration when it stopped early.
        best = booster.best_iteration if validation is not None else 0
        keep = best if best > 0 else booster.current_iteration()
        self._set_model(booster.model_to_string(num_iteration=keep))
        self.params = {"l2": float(l2)}
        self.fitted = True
        diag: dict[str, Any] = {"n_trees": keep}
        if evals:
            name, values = next(iter(evals["validation"].items()))
            diag["n_rounds"] = len(values)
            # LightGBM's validation metric at the kept round (not "validation_<metric>":
            # the trainer's own history record already has those keys).
            diag[f"lightgbm_{name}"] = float(values[keep - 1])
        return diag

    def _set_model(self, model_string: str) -> None:
        self.model_string = model_string
        self.booster = lgb.Booster(model_str=model_string)

    def score(self, design: GBDTDesign) -> np.ndarray:
        """Per-row logit contribution: the booster's raw score (no init score in it)."""
        n = design.shape[0]
        if self.booster is None or n == 0:
            return np.zeros(n)
        kwargs = {}
        if self.n_threads is not None and not any(k in self.config.params for k in _THREAD_KEYS):
            kwargs["num_threads"] = self.n_threads
        out = self.booster.predict(design, raw_score=True, **kwargs)
        return np.asarray(out, dtype=np.float64)

    def get_state(self) -> dict[str, Any]:
        """The model (as a LightGBM model string) and its parameters."""
        return {"model": self.model_string, "params": dict(self.params)}

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore the model from :meth:`get_state`."""
        if state["model"]:
            self._set_model(state["model"])
        else:
            self.booster, self.model_string = None, ""
        self.params = dict(state["params"])

    def feature_importance(self, importance_type: str = "gain") -> pd.DataFrame:
        """Importance of every design column: ``feature``, ``importance`` (``gain`` or
        ``split``), largest first."""
        assert self.booster is not None
        values = self.booster.feature_importance(importance_type=importance_type)
        table = pd.DataFrame({"feature": self.feature_names(), "importance": values})
        return table.sort_values("importance", ascending=False, kind="stable", ignore_index=True)

    # -- persistence --------------------------------------------------------
    def _save_params(self, folder: Path) -> None:
        if self.booster is None:
            raise ValueError(f"coordinate '{self.name}' is not fitted; nothing to save")
        (folder / _MODEL_FILE).write_text(self.model_string)
        meta = {
            "format": _FORMAT,
            "lightgbm_version": lgb.__version__,
            "n_columns": self.n_columns,
            "categorical_columns": self.categorical_columns(),
            "n_trees": self.booster.num_trees(),
        }
        (folder / _META_FILE).write_text(json.dumps(meta, indent=2))

    def _load_params(self, folder: Path) -> None:
        meta = json.loads((folder / _META_FILE).read_text())
        if meta.get("format") != _FORMAT:
            raise ValueError(f"{_META_FILE} is not a gdmix gbdt description")
        if meta["n_columns"] != self.n_columns:
            raise ValueError(
                f"{_META_FILE} describes {meta['n_columns']} columns but features.json "
                f"{self.n_columns}"
            )
        try:
            self._set_model((folder / _MODEL_FILE).read_text())
        except lgb.basic.LightGBMError as err:
            raise ValueError(f"{_MODEL_FILE} is not a LightGBM model: {err}") from None
        assert self.booster is not None
        if self.booster.num_feature() != self.n_columns:
            raise ValueError(
                f"{_MODEL_FILE} has {self.booster.num_feature()} features but features.json "
                f"{self.n_columns}"
            )
