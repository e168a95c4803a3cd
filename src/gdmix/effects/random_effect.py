"""Random effect: one L2 logistic regression per entity, solved in compiled loops."""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numba
import numpy as np
import pandas as pd
import scipy.sparse as sp

from gdmix.config import RandomEffectConfig
from gdmix.data.entity_keys import (
    KeyKind,
    canonical_keys,
    distinct_sorted,
    key_codes,
    kind_of_index,
)
from gdmix.data.entity_keys import key_kind as infer_key_kind
from gdmix.data.features import FeatureIndex
from gdmix.data.layout import (
    EntityLayout,
    counting_sort,
    counting_sort_positions,
    downsample_weights,
    take,
)
from gdmix.data.matrices import FeatureMatrix
from gdmix.data.schema import check_entity_column
from gdmix.effects.base import Coordinate, Validation
from gdmix.effects.random_table import (
    DENSE_MAX_FEATURES,
    RandomEffectArrays,
    coefficient_table,
    read_coefficients,
    write_coefficients,
)
from gdmix.errors import ConfigError, DataError
from gdmix.losses import sigmoid
from gdmix.solvers.lbfgs import fit_logistic_lbfgs
from gdmix.solvers.newton import EntityPrior, score_entities, solve_entities

__all__ = ["RandomEffect", "RandomEffectDesign"]


@dataclass
class RandomEffectDesign:
    """A table encoded for one random-effect coordinate.

    Attributes
    ----------
    X : ndarray or csr_matrix
        Columns of the coordinate's feature shard: a dense block when the shard is
        numeric (a view of the table's memory where possible), in table order; else
        CSR, sorted by entity for a training design (see ``order``).
    codes : ndarray of int64
        Entity code of every row in the model's entity index (-1: unseen).
    layout : EntityLayout or None
        Rows grouped by entity (training tables only).
    perm, starts : ndarray or None
        Layout of the rows used for fitting (after down-sampling).
    weight_multiplier : ndarray or None
        Down-sampling re-weighting of every row (``None``: all 1).
    order : ndarray or None
        CSR training designs are stored sorted by entity, so that each entity's entries
        are contiguous in memory: ``order[i]`` is the table row of design row ``i``.
        ``None``: rows in table order (dense blocks, which the solver reads through
        ``perm`` without a copy of the block).
    """

    X: np.ndarray | sp.csr_matrix
    codes: np.ndarray
    layout: EntityLayout | None = None
    perm: np.ndarray | None = None
    starts: np.ndarray | None = None
    weight_multiplier: np.ndarray | None = None
    order: np.ndarray | None = None
    #: The rows in entity order that ``l2: auto`` reads (built at its first update and
    #: kept with the design: :func:`gdmix.effects.evidence.entity_rows`).
    rows_by_entity: Any = field(default=None, repr=False, compare=False)


class RandomEffect(Coordinate):
    """Per-entity logistic regressions ``r(x) = x . w_e + b_e`` for entity ``e``.

    Parameters
    ----------
    config : RandomEffectConfig
        Entity column, features, ``l2``, intercept, active-data bounds, variances,
        warm start / incremental training, solver settings.
    """

    kind = "random"
    config: RandomEffectConfig

    def __init__(self, config: RandomEffectConfig) -> None:
        super().__init__(config)
        self.entity_ids = pd.Index([])
        self.coef = np.zeros((0, 0))
        self.intercept = np.zeros(0)
        self.n_rows = np.zeros(0, dtype=np.int64)
        self.has_model = np.zeros(0, dtype=bool)
        self.trainable = np.zeros(0, dtype=bool)
        self.variance: np.ndarray | None = None
        self.intercept_variance: np.ndarray | None = None
        self._prior_base: RandomEffectArrays | None = None
        self._from_base = np.zeros(0, dtype=bool)
        self.n_threads: int | None = None
        self.progress_factory: Any = None
        #: Key type of the entity ids (see :mod:`gdmix.data.entity_keys`).
        self.key_kind: KeyKind = "int"
        #: Share of training rows whose entity has a model (scoring compares against it).
        self.train_coverage: float | None = None
        #: Refreshes since each entity last had rows (see :func:`gdmix.refresh.refresh`).
        self.entity_age = np.zeros(0, dtype=np.int64)
        #: The entity codes of the table :meth:`build` last saw, and for a dense shard its
        #: rows grouped by entity (``counting_sort``), for the design of that table.
        self._table_codes: tuple[Any, np.ndarray, tuple[np.ndarray, np.ndarray] | None] | None
        self._table_codes = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_table_codes"] = None  # a weak reference to a table: not for copies
        return state

    @property
    def l2(self) -> float:
        """Prior precision of the slopes (their mean, with one per feature)."""
        return float(np.mean(self.params["l2"]))

    def l2_vector(self) -> np.ndarray:
        """Prior precision of every slope, shape ``(d,)`` (estimated per feature, or the
        one ``l2`` repeated)."""
        return np.broadcast_to(np.asarray(self.params["l2"], dtype=np.float64),
                               (self.coef.shape[1],)).copy()  # fmt: skip

    @property
    def intercept_l2(self) -> float:
        """Prior precision of the intercepts (``l2`` unless set)."""
        c = self.params.get("intercept_l2")
        return self.l2 if c is None else float(c)

    @property
    def active(self) -> np.ndarray:
        """Entities that have a model (the others score 0)."""
        return self.has_model

    def columns(self) -> list[str]:
        """Data columns this coordinate reads."""
        return [self.config.entity, *self.config.features.columns()]

    # -- data ---------------------------------------------------------------
    def build(
        self,
        frame: pd.DataFrame,
        base: RandomEffect | None = None,
        *,
        features: FeatureIndex | None = None,
        key_kind: KeyKind | None = None,
        matrix: FeatureMatrix | None = None,
    ) -> None:
        """Build the feature and entity index maps from the training table.

        With ``base`` (a previous model's coordinate), its feature index map is reused,
        its entities are kept (those absent from ``frame`` keep their old model) and its
        coefficients are the warm start (and, if incremental, the prior). ``features``
        is an index map built elsewhere (from all the data, when ``frame`` is one bucket),
        ``key_kind`` the entity key type decided there. ``matrix`` is the coordinate's
        feature matrix beside the table, when it has one.
        """
        where = f"coordinate '{self.name}'"
        ids = check_entity_column(frame, self.config.entity, where)
        if base is not None:
            self.key_kind = base.key_kind
        else:
            self.key_kind = key_kind if key_kind is not None else infer_key_kind(ids, where)
        keys, ok = canonical_keys(ids, self.key_kind)
        if not ok.all():
            i = int(np.flatnonzero(~ok)[0])
            raise DataError(
                f"{where}: entity column '{self.config.entity}' holds {ids.iloc[i]!r} (row {i}), "
                f"but the ids of {self.config.init_model} are integers"
            )
        new_ids = distinct_sorted(keys)
        if base is None:
            self.features = features or FeatureIndex.build(
                frame, self.config.features, where, matrix=matrix
            )
            self.entity_ids = new_ids
        else:
            self.features = base.features
            self.entity_ids = base.entity_ids.union(new_ids).sort_values()
        assert self.features is not None
        n, d = len(self.entity_ids), self.features.n_features
        sparse = d > DENSE_MAX_FEATURES
        if sparse and (self.config.incremental or self.config.mode == "cohort"):
            raise ConfigError(
                f"coordinate '{self.name}' has {d} features: incremental training and cohort "
                f"mode need at most {DENSE_MAX_FEATURES} (dense coefficient storage)"
            )
        codes = self._key_codes(keys, ok)
        layout = None
        if self.features.dense:  # the grouping its training design needs, counts with it
            layout = counting_sort(codes, n)
            counts = np.diff(layout[1])
        else:
            counts = np.bincount(codes, minlength=n)
        # The training design of this table, built next, takes these (once).
        self._table_codes = (weakref.ref(frame), codes, layout)
        self.coef = sp.csr_matrix((n, d)) if sparse else np.zeros((n, d))
        self.intercept = np.zeros(n)
        self.n_rows = counts.astype(np.int64)
        self.trainable = counts >= self.config.min_rows
        self._from_base = np.zeros(n, dtype=bool)
        if self.config.variance != "none":
            self.variance = sp.csr_matrix((n, d)) if sparse else np.zeros((n, d))
            self.intercept_variance = np.zeros(n)
        if base is not None:
            pos = self._codes(base.entity_ids)
            self._from_base[pos] = True
            self.coef = _place_rows(self.coef, pos, base.coef)
            self.intercept[pos] = base.intercept
            self.n_rows[pos] += base.n_rows
            if self.variance is not None and base.variance is not None:
                self.variance = _place_rows(self.variance, pos, base.variance)
                self.intercept_variance[pos] = base.intercept_variance
            self.base_params = dict(base.params)
            if self.config.incremental:
                if base.variance is None or base.intercept_variance is None:
                    raise ConfigError(
                        f"coordinate '{self.name}' is incremental but {self.config.init_model} "
                        "has no variances: train the previous model with 'variance'"
                    )
                self._prior_base = RandomEffectArrays(
                    base.entity_ids, base.n_rows, base.intercept, base.coef,
                    base.intercept_variance, base.variance,
                )  # fmt: skip
        self.has_model = self.trainable | self._from_base
        self.entity_age = np.zeros(n, dtype=np.int64)
        if base is not None:
            self.entity_age[pos] = base.entity_age
            if not self.config.warm_start:  # refit from zero; absent entities keep theirs
                restart = np.flatnonzero(self.trainable & self._from_base)
                self.coef = _zero_rows(self.coef, restart)
                self.intercept[restart] = 0.0

    def design(
        self,
        frame: pd.DataFrame,
        where: str,
        *,
        training: bool = False,
        matrix: FeatureMatrix | None = None,
    ) -> RandomEffectDesign:
        """Encode ``frame`` (and ``matrix``, its rows' feature matrix, when the coordinate
        has one); a training table also gets its entity layout.

        The features of a numeric shard are a dense block read in place from the table
        (no copy when its columns are one float64 block) and stay in table order: the
        solver reaches each entity's rows through the layout, one counting sort of the
        entity codes. Other shards are CSR; a CSR training design is stored sorted by
        entity (each entity's entries contiguous), its rows gathered once.
        """
        assert self.features is not None
        where = f"{where}, coordinate '{self.name}'"
        ids = check_entity_column(frame, self.config.entity, where)
        kept, self._table_codes = self._table_codes, None
        if kept is None or kept[0]() is not frame:
            kept = (None, self._codes(ids), None)
        codes, grouped = kept[1], kept[2]
        if not training:
            return RandomEffectDesign(self.features.encode(frame, where, matrix=matrix), codes)
        if (codes < 0).any():
            raise ValueError(f"{where}: the training design must use the table build() saw")
        n_entities = len(self.entity_ids)
        if self.features.dense:
            order, starts = grouped if grouped is not None else counting_sort(codes, n_entities)
        else:
            order, starts, positions = counting_sort_positions(codes, n_entities)
        layout = EntityLayout(self.entity_ids, codes, order, starts)
        sample = self.config.max_rows is not None and layout.counts.max() > self.config.max_rows
        if self.features.dense:
            X = self.features.encode(frame, where, matrix=matrix)
            perm, mult = order, None
            if sample:
                perm, starts, mult = downsample_weights(layout, self.config.max_rows,
                                                        self.config.seed)  # fmt: skip
            return RandomEffectDesign(X, codes, layout, perm, starts, mult)
        X = self.features.encode(frame, where, order=order, matrix=matrix)
        n = len(order)
        perm, mult = np.arange(n, dtype=np.int64), None
        if sample:
            kept, starts, mult = downsample_weights(layout, self.config.max_rows, self.config.seed)
            perm, mult = positions[kept], mult[order]
        sorted_codes = np.repeat(np.arange(n_entities, dtype=np.int64), layout.counts)
        return RandomEffectDesign(X, sorted_codes, layout, perm, starts, mult, order)

    def _codes(self, ids: pd.Series | pd.Index) -> np.ndarray:
        """Entity codes of ``ids`` in the model's entity index (-1 when unseen).

        Ids are first turned into the coordinate's canonical keys, so that ``42``,
        ``42.0`` and ``"42"`` are the same entity.
        """
        return self._key_codes(*canonical_keys(ids, self.key_kind))

    def _key_codes(self, keys: np.ndarray, ok: np.ndarray) -> np.ndarray:
        """Entity codes of canonical keys (-1 when unseen or ``ok`` is False)."""
        codes = key_codes(self.entity_ids, keys)
        codes[~ok] = -1
        return codes

    def coverage(self, design: RandomEffectDesign) -> float:
        """Share of the design's rows whose entity has a model (the others score 0)."""
        codes = design.codes
        if len(codes) == 0:
            return 0.0
        layout = design.layout
        if layout is not None and layout.n_entities == len(self.has_model):
            # a training table: its rows per entity are counted, no pass over the rows
            return float(layout.counts[self.has_model].sum()) / len(codes)
        known = codes >= 0
        known[known] = self.has_model[codes[known]]
        return float(known.mean())

    # -- fitting ------------------------------------------------------------
    def _prior(self, l2: float | np.ndarray, intercept_l2: float) -> EntityPrior | None:
        """Incremental training: the previous model as each known entity's prior."""
        base = self._prior_base
        if base is None:
            return None
        assert base.variance is not None and base.intercept_variance is not None
        n, d = self.coef.shape
        pos = self._codes(base.entity_ids)
        prior = EntityPrior(np.zeros((n, d)), np.full((n, d), l2), np.zeros(n),
                            np.full(n, intercept_l2))  # fmt: skip
        prior.mean[pos] = base.coef
        prior.precision[pos] = 1.0 / base.variance
        prior.intercept_mean[pos] = base.intercept
        prior.intercept_precision[pos] = 1.0 / base.intercept_variance
        return prior

    def fit(
        self,
        design: RandomEffectDesign,
        y: np.ndarray,
        weight: np.ndarray,
        offset: np.ndarray,
        *,
        l2: float | np.ndarray,
        intercept_l2: float | None = None,
        validation: Validation | None = None,
    ) -> dict[str, Any]:
        """Solve every trainable entity, warm-started from the current coefficients.

        ``l2`` is one prior precision for every slope, or one per feature (an array).
        """
        assert design.perm is not None and design.starts is not None, "needs a training design"
        per_feature = np.ndim(l2) == 1
        if per_feature:
            l2 = [float(v) for v in np.asarray(l2, dtype=np.float64)]
        self.params = {"l2": l2, "intercept_l2": intercept_l2}
        if design.order is not None:
            y, weight, offset = take(design.order, y, weight, offset)
        if design.weight_multiplier is not None:
            weight = weight * design.weight_multiplier
        weight = np.ascontiguousarray(weight, dtype=np.float64)
        offset = np.ascontiguousarray(offset, dtype=np.float64)
        entities = np.flatnonzero(self.trainable).astype(np.int64)
        prior = self._prior(self.l2_vector(), self.intercept_l2)
        if prior is None and per_feature:
            n, d = self.coef.shape
            prior = EntityPrior(np.zeros((n, d)), np.broadcast_to(self.l2_vector(), (n, d)).copy(),
                                np.zeros(n), np.full(n, self.intercept_l2))  # fmt: skip
        progress = None
        if self.progress_factory is not None:
            progress = self.progress_factory(total=len(entities), desc=f"{self.name} entities")
        previous = numba.get_num_threads()
        if self.n_threads is not None:
            numba.set_num_threads(min(self.n_threads, numba.config.NUMBA_NUM_THREADS))
        try:
            if self.config.mode == "cohort":
                stats = self._fit_cohorts(design, y, weight, offset, entities, prior, progress)
            else:
                variances = None
                skip = getattr(self, "skip_variance", False)  # a search that needs modes only
                if not skip and self.variance is not None and self.intercept_variance is not None:
                    variances = (self.variance, self.intercept_variance)
                result = solve_entities(
                    design.X, design.perm, design.starts, y, weight, offset, entities,
                    self.coef, self.intercept, l2=self.l2, intercept_l2=self.intercept_l2,
                    fit_intercept=self.config.intercept, prior=prior,
                    variance="none" if variances is None else self.config.variance,
                    variances=variances,
                    max_iter=self.config.max_iter, tol=self.config.tol, progress=progress,
                    task=self.config.task,
                )  # fmt: skip
                if result.coef is not None:  # sparse storage: new matrices
                    self.coef, self.variance = result.coef, result.variance
                stats = {"n_converged": result.n_converged, "mean_iter": result.mean_iter,
                         "max_iter": result.max_iter}  # fmt: skip
        finally:
            numba.set_num_threads(previous)
            if progress is not None:
                progress.close()
        self.fitted = True
        self.train_coverage = self.coverage(design)
        return {"n_entities": len(entities), "n_inactive": int((~self.has_model).sum()), **stats}

    def _fit_cohorts(
        self,
        design: RandomEffectDesign,
        y: np.ndarray,
        weight: np.ndarray,
        offset: np.ndarray,
        entities: np.ndarray,
        prior: EntityPrior | None,
        progress: Any,
    ) -> dict[str, Any]:
        """Cohort mode: one full L-BFGS over each entity's rows (few, large entities)."""
        assert design.perm is not None and design.starts is not None
        d = self.coef.shape[1]
        iters, n_ok = [], 0
        for e in entities:
            rows = design.perm[design.starts[e] : design.starts[e + 1]]
            Xe = design.X[rows]
            mean = prior.mean[e] if prior is not None else None
            prec = prior.precision[e] if prior is not None else np.full(d, self.l2)
            b_prec = prior.intercept_precision[e] if prior is not None else self.intercept_l2
            b_mean = prior.intercept_mean[e] if prior is not None else 0.0
            res = fit_logistic_lbfgs(
                Xe, y[rows], l2=self.l2, sample_weight=weight[rows], offset=offset[rows],
                fit_intercept=self.config.intercept, coef0=self.coef[e],
                intercept0=self.intercept[e], intercept_l2=b_prec, prior_mean=mean,
                prior_precision=prec, intercept_prior_mean=b_mean,
            )  # fmt: skip
            self.coef[e], self.intercept[e] = res.coef, res.intercept
            iters.append(res.n_iter)
            n_ok += res.converged
            if self.variance is not None and self.intercept_variance is not None:
                z = np.asarray(Xe @ res.coef) + res.intercept + offset[rows]
                p = sigmoid(z)
                h = weight[rows] * p * (1 - p)
                var, var_b = _variances(Xe, h, prec, b_prec, self.config.intercept,
                                        self.config.variance)  # fmt: skip
                self.variance[e], self.intercept_variance[e] = var, var_b
            if progress is not None:
                progress.update(1)
        return {"n_converged": n_ok, "mean_iter": float(np.mean(iters)) if iters else 0.0,
                "max_iter": int(max(iters, default=0))}  # fmt: skip

    def score(self, design: RandomEffectDesign) -> np.ndarray:
        """Per-row score (table order); rows of unseen entities, or entities without a
        model, score 0."""
        return score_entities(design.X, design.codes, self.coef, self.intercept,
                              rows=design.order)  # fmt: skip

    def penalty(self) -> float:
        """Sum over entities of the Gaussian prior's negative log density (up to a
        constant): ``l2/2 ||w_e||^2 + intercept_l2/2 b_e^2``, or around the previous model
        for incremental training."""
        if not self.fitted:
            return 0.0
        prior = self._prior(self.l2_vector(), self.intercept_l2)
        b = self.intercept[self.has_model]
        if prior is None and np.ndim(self.params["l2"]) == 1:  # per-feature precisions
            dense = self.coef.toarray() if sp.issparse(self.coef) else self.coef
            w_term = float((self.l2_vector() * dense[self.has_model] ** 2).sum())
            b_term = self.intercept_l2 * float((b**2).sum()) if self.config.intercept else 0.0
            return 0.5 * (w_term + b_term)
        if prior is None:
            # Sums of squares without temporaries (1M x 10 coefficients: 160 MB of fresh
            # arrays otherwise): every entity usually has a model, so no selection either.
            everyone = bool(self.has_model.all())
            coef = self.coef if everyone else self.coef[self.has_model]
            if sp.issparse(coef):
                sq = float(coef.multiply(coef).sum())
            else:
                flat = np.ascontiguousarray(coef).reshape(-1)
                sq = float(np.dot(flat, flat))
            b_term = self.intercept_l2 * float(np.dot(b, b)) if self.config.intercept else 0.0
            return 0.5 * (self.l2 * sq + b_term)
        keep = self.has_model
        dense = self.coef.toarray() if sp.issparse(self.coef) else self.coef
        w_term = float((prior.precision[keep] * (dense[keep] - prior.mean[keep]) ** 2).sum())
        b_term = float(
            (prior.intercept_precision[keep] * (b - prior.intercept_mean[keep]) ** 2).sum()
        )
        return 0.5 * (w_term + (b_term if self.config.intercept else 0.0))

    def stats(self) -> dict[str, Any]:
        """The entity key type and the share of training rows whose entity has a model."""
        return {"entity_key": self.key_kind, "train_coverage": self.train_coverage}

    def restore_stats(self, stats: dict[str, Any]) -> None:
        """Take back the training coverage (the key type comes from the table)."""
        value = stats.get("train_coverage")
        self.train_coverage = float(value) if isinstance(value, int | float) else None

    # -- state and persistence ------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        """Copy of the fitted parameters."""
        state = {"coef": self.coef.copy(), "intercept": self.intercept.copy(),
                 "params": dict(self.params)}  # fmt: skip
        if self.variance is not None and self.intercept_variance is not None:
            state["variance"] = self.variance.copy()
            state["intercept_variance"] = self.intercept_variance.copy()
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore parameters from :meth:`get_state`."""
        self.coef = state["coef"].copy()
        self.intercept = state["intercept"].copy()
        self.params = dict(state["params"])
        if "variance" in state:
            self.variance = state["variance"].copy()
            self.intercept_variance = state["intercept_variance"].copy()

    def arrays(self) -> RandomEffectArrays:
        """Parameters of the entities that have a model."""
        keep = np.flatnonzero(self.has_model)
        var = self.variance[keep] if self.variance is not None else None
        ivar = self.intercept_variance[keep] if self.intercept_variance is not None else None
        aged = len(self.entity_age) == len(self.entity_ids)
        age = self.entity_age[keep] if aged else None
        return RandomEffectArrays(self.entity_ids[keep], self.n_rows[keep],
                                  self.intercept[keep], self.coef[keep], ivar, var,
                                  age=age)  # fmt: skip

    def coefficient_table(self) -> pd.DataFrame:
        """Entities with a model as a DataFrame (the Parquet table's columns)."""
        table = coefficient_table(self.arrays(), default_variance=self._default_variance())
        return table.to_pandas()

    def _default_variance(self) -> float | None:
        if self.variance is None:
            return None
        if np.ndim(self.params["l2"]) == 1:  # one prior per feature: every variance stored
            return float("nan")
        return 1.0 / self.l2 if self.l2 > 0 else np.inf

    def _save_params(self, folder: Path) -> None:
        write_coefficients(self.arrays(), folder / "coefficients.parquet",
                           default_variance=self._default_variance())  # fmt: skip

    def _load_params(self, folder: Path) -> None:
        assert self.features is not None
        default = 1.0 / self.l2 if self.l2 > 0 else np.inf
        arrays = read_coefficients(folder / "coefficients.parquet", self.features.n_features,
                                   default_variance=default)  # fmt: skip
        if not arrays.entity_ids.is_unique:
            dupes = arrays.entity_ids[arrays.entity_ids.duplicated()][:3].tolist()
            raise ValueError(f"entity ids appear more than once in the table: {dupes}")
        ids = arrays.entity_ids
        if pd.api.types.is_float_dtype(ids.dtype):  # written before keys were canonical
            ids = pd.Index(canonical_keys(ids, "int")[0])
        self.entity_ids = ids
        self.key_kind = kind_of_index(ids)
        self.n_rows = arrays.n_rows
        self.intercept = arrays.intercept
        self.coef = arrays.coef
        self.variance = arrays.variance
        self.intercept_variance = arrays.intercept_variance
        self.has_model = np.ones(len(self.entity_ids), dtype=bool)
        self.trainable = np.zeros(len(self.entity_ids), dtype=bool)
        n = len(self.entity_ids)
        self.entity_age = arrays.age if arrays.age is not None else np.zeros(n, dtype=np.int64)


def _zero_rows(matrix: np.ndarray | sp.csr_matrix, rows: np.ndarray) -> np.ndarray | sp.csr_matrix:
    """``matrix`` with ``rows`` set to 0 (dense in place, CSR as a new matrix)."""
    if not sp.issparse(matrix):
        matrix[rows] = 0.0
        return matrix
    keep = np.ones(matrix.shape[0])
    keep[rows] = 0.0
    out = (sp.diags(keep) @ matrix).tocsr()
    out.eliminate_zeros()
    return out


def _place_rows(
    target: np.ndarray | sp.csr_matrix, pos: np.ndarray, rows: np.ndarray | sp.csr_matrix
) -> np.ndarray | sp.csr_matrix:
    """``target`` with ``rows[i]`` placed at row ``pos[i]`` (dense or CSR)."""
    if not sp.issparse(target):
        target[pos] = rows.toarray() if sp.issparse(rows) else rows
        return target
    place = sp.csr_matrix((np.ones(len(pos)), (pos, np.arange(len(pos)))),
                          shape=(target.shape[0], len(pos)))  # fmt: skip
    out = (place @ sp.csr_matrix(rows)).tocsr()
    out.sort_indices()
    return out


def _variances(
    X: sp.csr_matrix | np.ndarray,
    h: np.ndarray,
    prec: np.ndarray,
    b_prec: float,
    fit_b: bool,
    mode: str,
) -> tuple[np.ndarray, float]:
    """Variances from the Hessian ``X^T diag(h) X + diag(prec)`` (with intercept column)."""
    X = X if sp.issparse(X) else sp.csr_matrix(X)
    Xb = sp.hstack([X, np.ones((X.shape[0], 1))]).tocsr() if fit_b else X
    pen = np.append(prec, b_prec) if fit_b else prec
    if mode == "simple":
        diag = np.asarray(Xb.multiply(Xb).T @ h).ravel() + pen
        var = 1.0 / diag
    else:
        H = np.asarray((Xb.T @ Xb.multiply(h[:, None])).todense()) + np.diag(pen)
        var = np.diag(np.linalg.inv(H)).copy()
    d = X.shape[1]
    return var[:d], float(var[d]) if fit_b else 0.0
