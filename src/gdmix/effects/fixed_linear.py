"""Fixed effect: one global L2 logistic regression.

Solved by :func:`gdmix.solvers.lbfgs.minimize_logistic` (Newton, trust-region Newton-CG
or L-BFGS, see :class:`gdmix.config.FixedEffectConfig`) over compiled, multi-threaded
passes on the design (``training.n_threads`` threads).
"""

from __future__ import annotations

import logging
import weakref
from pathlib import Path
from typing import Any

import numba
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp

from gdmix.config import FixedEffectConfig
from gdmix.data.features import FeatureIndex
from gdmix.data.matrices import FeatureMatrix
from gdmix.effects.base import Coordinate, Validation
from gdmix.solvers import fixed_kernels as fk
from gdmix.solvers.lbfgs import (
    InMemoryLogistic,
    LogisticResult,
    LogisticSums,
    minimize_logistic,
)

__all__ = ["FixedLinearEffect", "fit_diagnostics"]

logger = logging.getLogger("gdmix")

_INTERCEPT = "(intercept)"


class FixedLinearEffect(Coordinate):
    """Global logistic regression ``f(x) = x . w + b``.

    Parameters
    ----------
    config : FixedEffectConfig
        Its features, ``l2``, intercept and solver settings.
    """

    kind = "fixed"
    config: FixedEffectConfig

    def __init__(self, config: FixedEffectConfig) -> None:
        super().__init__(config)
        self.coef = np.zeros(0)
        self.intercept = 0.0
        #: Threads of the compiled passes (``training.n_threads``; None: numba's default).
        self.n_threads: int | None = None
        #: The last solution found for each ``l2`` (warm starts of an ``l2`` search).
        self._solutions: dict[float, tuple[np.ndarray, float]] = {}
        #: The training design (a weak reference) and its transpose, kept across fits
        #: while the design lives.
        self._prepared: dict[str, Any] = {}

    def build(
        self,
        frame: pd.DataFrame,
        base: FixedLinearEffect | None = None,
        *,
        matrix: FeatureMatrix | None = None,
    ) -> None:
        """Build the feature index map from the training table (and ``matrix``, the
        coordinate's feature matrix beside the table, when given).

        With ``base`` (the same coordinate of a previous model) its index map is reused and
        its coefficients are the warm start.
        """
        if base is not None:
            self.features, self.coef, self.intercept = (
                base.features,
                base.coef.copy(),
                base.intercept,
            )
            return
        self.features = FeatureIndex.build(
            frame, self.config.features, f"coordinate '{self.name}'", matrix=matrix
        )
        self.coef = np.zeros(self.features.n_features)
        self.intercept = 0.0

    def columns(self) -> list[str]:
        """Data columns this coordinate reads."""
        return self.config.features.columns()

    def design(
        self,
        frame: pd.DataFrame,
        where: str,
        *,
        training: bool = False,
        matrix: FeatureMatrix | None = None,
    ) -> np.ndarray | sp.csr_matrix:
        """Design of ``frame`` over the coordinate's feature index map: the table's own
        dense block for a shard of numeric columns only (no copy where the columns are
        one float block), a CSR matrix otherwise (with ``matrix``'s columns last)."""
        assert self.features is not None
        return self.features.encode(frame, f"{where}, coordinate '{self.name}'", matrix=matrix)

    def fit(
        self,
        design: sp.csr_matrix,
        y: np.ndarray,
        weight: np.ndarray,
        offset: np.ndarray,
        *,
        l2: float,
        validation: Validation | None = None,
    ) -> dict[str, Any]:
        """Fit, warm-started (see :meth:`start_point`)."""
        data = InMemoryLogistic(self._prepare(design), y, weight, offset, self.config.task)
        return self.fit_sums(data, l2=l2)

    def fit_sums(self, data: LogisticSums, *, l2: float) -> dict[str, Any]:
        """Fit to data known through its sums (in memory, on a cluster, or streamed from
        disk), warm-started (see :meth:`start_point`); returns the history fields."""
        coef0, intercept0 = self.start_point(l2)
        previous = numba.get_num_threads()
        if self.n_threads is not None:
            numba.set_num_threads(min(self.n_threads, numba.config.NUMBA_NUM_THREADS))
        try:
            res = minimize_logistic(
                data,
                l2=l2,
                fit_intercept=self.config.intercept,
                coef0=coef0,
                intercept0=intercept0,
                max_iter=self.config.max_iter,
                tol=self.config.tol,
                objective_tol=self.config.objective_tol,
                solver=self.config.solver,
                l1=self.config.l1,
            )
        finally:
            numba.set_num_threads(previous)
        self.set_solution(l2, res.coef, res.intercept)
        return fit_diagnostics(self.name, res, l2)

    def _prepare(self, design: Any) -> fk.Design:
        """The design ready for the compiled sums; a CSR design's transpose is built once
        and kept as long as the design itself lives (no copy outlives training)."""
        cache = self._prepared
        ref = cache.get("design")
        if ref is not None and ref() is design:
            return fk.Design(design, transpose=cache["transpose"])
        prepared = fk.prepare(design)
        cache.clear()
        if prepared.X is design and prepared.Xt is not None:
            try:
                cache["design"] = weakref.ref(design, lambda _ref, c=cache: c.clear())
                cache["transpose"] = prepared.Xt
            except TypeError:  # an object without weak references: nothing kept
                cache.clear()
        return prepared

    def start_point(self, l2: float) -> tuple[np.ndarray, float]:
        """Where a fit with penalty ``l2`` starts: the last solution found for that
        ``l2`` (an earlier pass of a search), else the current coefficients (the previous
        candidate's solution along the search path, strongest penalty first)."""
        return self._solutions.get(float(l2), (self.coef, self.intercept))

    def set_solution(self, l2: float, coef: np.ndarray, intercept: float) -> None:
        """Take ``(coef, intercept)`` as the fit for ``l2``, and remember it."""
        self.coef, self.intercept, self.params = coef, float(intercept), {"l2": l2}
        self.fitted = True
        self._solutions[float(l2)] = (coef.copy(), float(intercept))

    def score(self, design: sp.csr_matrix) -> np.ndarray:
        """Per-row logit contribution ``x . w + b``."""
        return np.asarray(design @ self.coef, dtype=np.float64) + self.intercept

    def penalty(self) -> float:
        """``l2/2 * ||w||^2`` (the intercept is not penalised)."""
        return 0.5 * self.l2 * float(self.coef @ self.coef) if self.fitted else 0.0

    def get_state(self) -> dict[str, Any]:
        """Copy of the coefficients."""
        return {"coef": self.coef.copy(), "intercept": self.intercept, "params": self.params}

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore coefficients from :meth:`get_state`."""
        self.coef = state["coef"].copy()
        self.intercept = state["intercept"]
        self.params = dict(state["params"])

    def coefficient_table(self) -> pd.DataFrame:
        """Coefficients as a table: ``feature``, ``coefficient`` (intercept first)."""
        assert self.features is not None
        names = self.features.feature_names()
        return pd.DataFrame(
            {"feature": [_INTERCEPT, *names], "coefficient": [self.intercept, *self.coef]}
        )

    def _save_params(self, folder: Path) -> None:
        table = pa.Table.from_pandas(self.coefficient_table(), preserve_index=False)
        pq.write_table(table, folder / "coefficients.parquet")

    def _load_params(self, folder: Path) -> None:
        assert self.features is not None
        table = pq.read_table(folder / "coefficients.parquet").to_pandas()
        if list(table["feature"].iloc[1:]) != self.features.feature_names():
            raise ValueError("coefficient rows do not match features.json")
        values = table["coefficient"].to_numpy(dtype=np.float64)
        if not np.isfinite(values).all():
            raise ValueError("coefficients hold NaN or infinite values")
        self.intercept = float(values[0])
        self.coef = values[1:].copy()


def fit_diagnostics(name: str, res: LogisticResult, l2: float) -> dict[str, Any]:
    """The training-history fields of a fixed-effect fit; warns when its coefficients run
    off (no optimum exists)."""
    diag: dict[str, Any] = {
        "n_iter": res.n_iter,
        "converged": res.converged,
        "objective": res.objective,
        "stop": res.stop,
        "solver": res.solver,
    }
    if res.stop == "diverged":
        diag["diverged"] = True
        logger.warning(
            "coordinate '%s': its coefficients are running off (%s); raise l2 (now %s)",
            name, res.message, l2,
        )  # fmt: skip
    return diag
