"""Random effect: one L2 logistic regression per entity, solved in compiled loops."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numba
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp

from gdmix.config import RandomEffectConfig
from gdmix.data.features import FeatureIndex
from gdmix.data.layout import EntityLayout, downsample_weights, group_rows
from gdmix.data.schema import check_entity_column
from gdmix.effects.base import Coordinate, Validation
from gdmix.solvers.newton import score_entities, solve_entities

__all__ = ["RandomEffect", "RandomEffectDesign"]


@dataclass
class RandomEffectDesign:
    """A table encoded for one random-effect coordinate.

    Attributes
    ----------
    X : csr_matrix
        Rows in table order, columns of the coordinate's feature shard.
    codes : ndarray of int64
        Entity code of every row in the trained model's entity index (-1: unseen).
    layout : EntityLayout or None
        Rows grouped by entity (training tables only).
    perm, starts : ndarray or None
        Layout of the rows used for fitting (after down-sampling).
    weight_multiplier : ndarray or None
        Down-sampling re-weighting of every row (``None``: all 1).
    """

    X: sp.csr_matrix
    codes: np.ndarray
    layout: EntityLayout | None = None
    perm: np.ndarray | None = None
    starts: np.ndarray | None = None
    weight_multiplier: np.ndarray | None = None


class RandomEffect(Coordinate):
    """Per-entity logistic regressions ``r(x) = x . w_e + b_e`` for entity ``e``.

    Parameters
    ----------
    config : RandomEffectConfig
        Entity column, features, ``l2``, intercept, active-data bounds, solver settings.
    """

    kind = "random"
    config: RandomEffectConfig

    def __init__(self, config: RandomEffectConfig) -> None:
        super().__init__(config)
        self.entity_ids = pd.Index([])
        self.coef = np.zeros((0, 0))
        self.intercept = np.zeros(0)
        self.n_rows = np.zeros(0, dtype=np.int64)
        self.active = np.zeros(0, dtype=bool)
        self.n_threads: int | None = None
        self.progress_factory: Any = None

    @property
    def intercept_l2(self) -> float:
        """Prior precision of the intercepts (``l2`` unless set)."""
        c = self.params.get("intercept_l2")
        return self.l2 if c is None else float(c)

    def columns(self) -> list[str]:
        """Data columns this coordinate reads."""
        return [self.config.entity, *self.config.features.columns()]

    def build(self, frame: pd.DataFrame) -> None:
        """Build the feature index map and the entity index from the training table."""
        where = f"coordinate '{self.name}'"
        self.features = FeatureIndex.build(frame, self.config.features, where)
        layout = group_rows(check_entity_column(frame, self.config.entity, where))
        self.entity_ids = layout.entity_ids
        self.n_rows = layout.counts.astype(np.int64)
        self.active = self.n_rows >= self.config.min_rows
        self.coef = np.zeros((layout.n_entities, self.features.n_features))
        self.intercept = np.zeros(layout.n_entities)

    def design(
        self, frame: pd.DataFrame, where: str, *, training: bool = False
    ) -> RandomEffectDesign:
        """Encode ``frame``; a training table also gets its entity layout."""
        assert self.features is not None
        where = f"{where}, coordinate '{self.name}'"
        ids = check_entity_column(frame, self.config.entity, where)
        X = self.features.transform(frame, where)
        if not training:
            codes = self._codes(ids)
            return RandomEffectDesign(X, codes)
        layout = group_rows(ids)
        if not layout.entity_ids.equals(self.entity_ids):
            raise ValueError(f"{where}: the training design must use the table build() saw")
        codes = layout.codes
        perm, starts, mult = layout.perm, layout.starts, None
        if self.config.max_rows is not None and layout.counts.max() > self.config.max_rows:
            perm, starts, mult = downsample_weights(layout, self.config.max_rows, self.config.seed)
        return RandomEffectDesign(X, codes, layout, perm, starts, mult)

    def _codes(self, ids: pd.Series | pd.Index) -> np.ndarray:
        """Entity codes of ``ids`` in the trained entity index (-1 when unseen)."""
        index = self.entity_ids
        values = pd.Index(ids)
        if index.dtype != values.dtype and not (
            pd.api.types.is_integer_dtype(index) and pd.api.types.is_integer_dtype(values)
        ):
            index, values = index.astype(str), values.astype(str)
        return np.asarray(index.get_indexer(values), dtype=np.int64)

    def fit(
        self,
        design: RandomEffectDesign,
        y: np.ndarray,
        weight: np.ndarray,
        offset: np.ndarray,
        *,
        l2: float,
        intercept_l2: float | None = None,
        validation: Validation | None = None,
    ) -> dict[str, Any]:
        """Solve every active entity, warm-started from the current coefficients."""
        assert design.layout is not None, "fit needs a design built with training=True"
        self.params = {"l2": l2, "intercept_l2": intercept_l2}
        # The training table's entity order is the model's (build() saw the same table),
        # so layout segment e belongs to model entity e.
        if design.weight_multiplier is not None:
            weight = weight * design.weight_multiplier
        entities = np.flatnonzero(self.active).astype(np.int64)
        progress = None
        if self.progress_factory is not None:
            progress = self.progress_factory(total=len(entities), desc=f"{self.name} entities")
        previous = numba.get_num_threads()
        if self.n_threads is not None:
            numba.set_num_threads(min(self.n_threads, numba.config.NUMBA_NUM_THREADS))
        try:
            stats = solve_entities(
                design.X,
                design.perm,
                design.starts,
                y,
                np.ascontiguousarray(weight, dtype=np.float64),
                np.ascontiguousarray(offset, dtype=np.float64),
                entities,
                self.coef,
                self.intercept,
                l2=l2,
                intercept_l2=self.intercept_l2,
                fit_intercept=self.config.intercept,
                max_iter=self.config.max_iter,
                tol=self.config.tol,
                progress=progress,
            )
        finally:
            numba.set_num_threads(previous)
            if progress is not None:
                progress.close()
        self.fitted = True
        return {
            "n_entities": stats.n_solved,
            "n_inactive": int((~self.active).sum()),
            "n_converged": stats.n_converged,
            "mean_iter": stats.mean_iter,
            "max_iter": stats.max_iter,
        }

    def score(self, design: RandomEffectDesign) -> np.ndarray:
        """Per-row score; rows of unseen or inactive entities score 0."""
        return score_entities(design.X, design.codes, self.coef, self.intercept)

    def get_state(self) -> dict[str, Any]:
        """Copy of the coefficients."""
        return {
            "coef": self.coef.copy(),
            "intercept": self.intercept.copy(),
            "params": self.params,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore coefficients from :meth:`get_state`."""
        self.coef = state["coef"].copy()
        self.intercept = state["intercept"].copy()
        self.params = dict(state["params"])

    def coefficient_table(self) -> pd.DataFrame:
        """Active entities' coefficients: entity_id, n_rows, intercept, indices, values.

        ``indices`` are positions in the feature index map (``features.json``) and
        ``values`` the matching non-zero coefficients.
        """
        rows = np.flatnonzero(self.active)
        sub = self.coef[rows]
        nz_r, nz_c = np.nonzero(sub)
        splits = np.searchsorted(nz_r, np.arange(1, len(rows)))
        return pd.DataFrame(
            {
                "entity_id": self.entity_ids[rows],
                "n_rows": self.n_rows[rows],
                "intercept": self.intercept[rows],
                "indices": [a.astype(np.int32) for a in np.split(nz_c, splits)],
                "values": np.split(sub[nz_r, nz_c], splits),
            }
        )

    def _save_params(self, folder: Path) -> None:
        frame = self.coefficient_table()
        schema = pa.schema(
            [
                ("entity_id", pa.Table.from_pandas(frame[["entity_id"]]).schema.field(0).type),
                ("n_rows", pa.int64()),
                ("intercept", pa.float64()),
                ("indices", pa.list_(pa.int32())),
                ("values", pa.list_(pa.float64())),
            ]
        )
        table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
        pq.write_table(table, folder / "coefficients.parquet")

    def _load_params(self, folder: Path) -> None:
        assert self.features is not None
        table = pq.read_table(folder / "coefficients.parquet")
        n = table.num_rows
        d = self.features.n_features
        self.entity_ids = pd.Index(table.column("entity_id").to_pandas())
        self.n_rows = table.column("n_rows").to_numpy()
        self.intercept = table.column("intercept").to_numpy().astype(np.float64)
        self.active = np.ones(n, dtype=bool)
        self.coef = np.zeros((n, d))
        idx = table.column("indices").combine_chunks()
        vals = table.column("values").combine_chunks()
        flat_idx = idx.flatten().to_numpy().astype(np.int64)
        if len(flat_idx) and (flat_idx.min() < 0 or flat_idx.max() >= d):
            raise ValueError("coefficient indices out of range of features.json")
        owner = np.repeat(np.arange(n), np.diff(idx.offsets.to_numpy()))
        self.coef[owner, flat_idx] = vals.flatten().to_numpy()
