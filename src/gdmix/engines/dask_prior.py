"""``l2: auto`` on the Dask engine: a random effect's prior variances estimated bucket by
bucket on the workers.

Every statistic the estimation steps need is a sum over entities
(:class:`gdmix.effects.evidence.LaplaceSums`), so each evaluation maps one task over the
entity buckets (each entity's Newton steps to its mode at the precisions asked for, and
its Laplace terms) and adds up the buckets' sums here; the steps are those of the local
engine (:func:`gdmix.effects.evidence.maximise_evidence`), so both engines reach the same
estimate. A bucket's design is built once per update and stays on its worker; only the
modes (as futures) and a few numbers per evaluation move.

With other random effects, their per-row derivative ``rho`` (see
:mod:`gdmix.effects.prior_estimation`) is computed by their own buckets at the current
scores, sent back to the partitions and on to this coordinate's buckets, as scores are.
"""

from __future__ import annotations

import copy
import functools
import operator
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from gdmix.effects.evidence import (
    LaplaceSums,
    PriorSetup,
    design_rows,
    entity_rows,
    entity_sums,
    estimate_for,
    kept_prior,
    make_estimate,
    precisions,
    prior_setup,
    settle,
    subset_mask,
)
from gdmix.effects.random_effect import RandomEffect
from gdmix.errors import ConfigError
from gdmix.solvers.laplace import laplace_terms

__all__ = ["fit_random_auto"]


# -- tasks (run on the workers) ---------------------------------------------------------


def _bucket_coordinate(
    bucket: pd.DataFrame, config: Any, features: Any, kind: Any, state: Any, base: Any
) -> RandomEffect:
    coord = RandomEffect(config)
    coord.build(bucket, base=base, features=features, key_kind=kind)
    if state is not None:
        coord.set_state(state)
    return coord


def _prepare(
    bucket: pd.DataFrame,
    offsets: np.ndarray,
    rho: np.ndarray | None,
    config: Any,
    features: Any,
    kind: Any,
    state: Any,
    base: Any,
) -> dict[str, Any]:
    """A bucket's coordinate and design at the start of an update (kept on the worker)."""
    if len(bucket) == 0:
        return {"empty": True, "base": base, "config": config, "features": features}
    coord = _bucket_coordinate(bucket, config, features, kind, state, base)
    design = coord.design(bucket, "bucket", training=True)
    y, w, o = design_rows(design, bucket["_y"].to_numpy(), bucket["_w"].to_numpy(), offsets)
    if rho is not None and design.order is not None:
        rho = rho[design.order]
    rows = entity_rows(design)
    y, w, o, rho = rows.gather(y, w, o, rho)
    entities = np.flatnonzero(coord.trainable).astype(np.int64)
    return {"empty": False, "coord": coord, "design": design, "rows": rows, "y": y, "w": w,
            "o": o, "rho": rho, "entities": entities,
            "subset": entities[subset_mask(coord.entity_ids[entities])],
            "part": bucket["_part"].to_numpy(), "pos": bucket["_pos"].to_numpy()}  # fmt: skip


def _count(prep: dict[str, Any]) -> int:
    return 0 if prep["empty"] else len(prep["entities"])


def _evaluate(prep: dict[str, Any], previous: dict[str, Any] | None, precision: np.ndarray,
              comp: np.ndarray, subset: bool) -> dict[str, Any]:  # fmt: skip
    """One evaluation of a bucket: its entities' (or the quarter's, with ``subset``)
    modes at ``precision`` (from the previous evaluation's) and their summed statistics."""
    ncomp = len(precision)
    if prep["empty"]:
        zero = np.zeros(ncomp)
        sums = LaplaceSums(0.0, 0.0, 0.0, 0.0, zero, zero, zero, np.zeros((ncomp, ncomp)))
        return {"sums": sums}
    coord, rows = prep["coord"], prep["rows"]
    src = previous if previous is not None else {"coef": coord.coef, "intercept": coord.intercept}
    coef, intercept = src["coef"].copy(), src["intercept"].copy()
    sums, terms = entity_sums(
        rows.arrays, rows.perm, rows.starts, prep["y"], prep["w"], prep["o"],
        prep["subset"] if subset else prep["entities"], coef, intercept, comp, precision,
        fit_intercept=bool(coord.config.intercept), rho=prep["rho"],
        max_newton=coord.config.max_iter, tol=coord.config.tol,
    )  # fmt: skip
    return {"sums": sums, "coef": coef, "intercept": intercept, "variance": terms.variance,
            "rows": rows.scatter(terms.row_terms), "logdet": float(terms.logdet.sum())}  # fmt: skip


def _sums(result: dict[str, Any]) -> LaplaceSums:
    return result["sums"]


def _finish(prep: dict[str, Any], result: dict[str, Any], precision: np.ndarray,
            setup: PriorSetup) -> dict[str, Any]:  # fmt: skip
    """The bucket's coordinate at the last evaluation, as ``_solve_bucket`` returns it."""
    if prep["empty"]:
        base = prep["base"]
        if base is not None:
            return {"arrays": base.arrays(), "state": None, "scores": np.zeros(0), "stats": {}}
        coord = RandomEffect(prep["config"])
        coord.features = prep["features"]
        return {"arrays": coord.arrays(), "state": None, "scores": np.zeros(0), "stats": {}}
    coord = copy.copy(prep["coord"])  # the prepared one stays as it was
    coord.coef, coord.intercept = result["coef"], result["intercept"]
    if coord.variance is not None:
        coord.variance = coord.variance.copy()
        coord.intercept_variance = coord.intercept_variance.copy()
    settle(coord, precision, setup, result["variance"], prep["entities"])
    design = prep["design"]
    coord.train_coverage = coord.coverage(design)
    rows = result["rows"]
    if design.order is not None:  # back to the bucket's row order
        rows = np.zeros(len(prep["part"]))
        rows[design.order] = result["rows"]
    return {"arrays": coord.arrays(), "state": coord.get_state(), "scores": coord.score(design),
            "part": prep["part"], "pos": prep["pos"], "stats": {},
            "rows": rows, "logdet": result["logdet"]}  # fmt: skip


def _row_terms(bucket: pd.DataFrame, offsets: np.ndarray, config: Any, features: Any,
               kind: Any, previous: dict | None, base: Any) -> dict[str, Any]:  # fmt: skip
    """Another random effect's ``-1/2 h'_i q_i`` of every row of one of its buckets (at
    its current modes) and its ``sum log det H``: those of its last evaluation when its
    prior was estimated (as the local engine does), else computed now."""
    if previous is not None and "rows" in previous:
        return {"part": previous["part"], "pos": previous["pos"], "scores": previous["rows"],
                "logdet": previous["logdet"]}  # fmt: skip
    state = previous.get("state") if previous is not None else None
    if len(bucket) == 0 or state is None:
        empty = np.zeros(0, dtype=np.int64)
        return {"part": empty, "pos": empty, "scores": np.zeros(0), "logdet": 0.0}
    coord = _bucket_coordinate(bucket, config, features, kind, state, base)
    design = coord.design(bucket, "bucket", training=True)
    y, w, o = design_rows(design, bucket["_y"].to_numpy(), bucket["_w"].to_numpy(), offsets)
    prec, prec_b = precisions(coord)
    entities = np.flatnonzero(coord.trainable).astype(np.int64)
    layout = entity_rows(design)
    y, w, o = layout.gather(y, w, o)
    terms = laplace_terms(
        layout.arrays, layout.perm, layout.starts, y, w, o, entities, coord.coef,
        coord.intercept, prec, prec_b, fit_intercept=bool(coord.config.intercept),
    )  # fmt: skip
    rows = layout.scatter(terms.row_terms)
    if design.order is not None:  # back to the bucket's row order
        rows, design_order = np.zeros(len(bucket)), rows
        rows[design.order] = design_order
    return {"part": bucket["_part"].to_numpy(), "pos": bucket["_pos"].to_numpy(),
            "scores": rows, "logdet": float(terms.logdet.sum())}  # fmt: skip


def _logdet(result: dict[str, Any]) -> float:
    return result["logdet"]


def _add(*arrays: np.ndarray) -> np.ndarray:
    return functools.reduce(operator.add, arrays)


# -- the driver ----------------------------------------------------------------------


def _others_rho(trainer: Any, coord: RandomEffect) -> tuple[list[Any] | None, float]:
    """The other random effects' ``rho`` per partition (futures) and their share of the
    approximation (``-1/2 sum log det H``), as the local engine's ``others_terms``."""
    from gdmix.engines.dask_engine import _bucket_offsets, _bucket_scores, _part_scores

    client = trainer.client
    others = [
        c for c in trainer.coords
        if c is not coord and isinstance(c, RandomEffect) and c.fitted
        and c.name not in trainer.locked and not sp.issparse(c.coef)
        and all(r is not None for r in trainer.bucket_results.get(c.name, [None]))
    ]  # fmt: skip
    if not others:
        return None, 0.0
    per_part: list[list[Any]] = [[] for _ in trainer.sizes]
    value = 0.0
    for other in others:
        offsets = trainer._offsets(other.name)
        bases = trainer.bases.get(other.name, [None] * trainer.n_buckets)
        results = []
        for b, bucket in enumerate(trainer.designs[other.name]):
            off = client.submit(_bucket_offsets, bucket, *offsets)
            previous = trainer.bucket_results[other.name][b]
            results.append(client.submit(_row_terms, bucket, off, other.config, other.features,
                                         other.key_kind, previous, bases[b]))  # fmt: skip
        triples = [client.submit(_bucket_scores, r) for r in results]
        for i, n in enumerate(trainer.sizes):
            per_part[i].append(client.submit(_part_scores, i, n, *triples))
        value -= 0.5 * sum(client.gather([client.submit(_logdet, r) for r in results]))
    return [client.submit(_add, *parts) for parts in per_part], value


def fit_random_auto(trainer: Any, coord: RandomEffect, offsets: list[Any]) -> dict[str, Any]:
    """Update a random effect whose ``l2`` and/or ``intercept_l2`` is ``"auto"`` on the
    cluster: estimate its variances and leave it (and its buckets) fitted at the estimate.

    Parameters
    ----------
    trainer : _DaskTrainer
        The Dask engine's driver (its client, buckets and scores).
    coord : RandomEffect
        The coordinate, with ``params`` holding ``"auto"``.
    offsets : list of futures
        Every partition's offsets (the other coordinates' scores).

    Returns
    -------
    dict
        Diagnostics for the history, with ``prior`` as the local engine records it.
    """
    from gdmix.engines.dask_engine import _bucket_offsets, _bucket_scores, _field, _part_scores

    client, name = trainer.client, coord.name
    base_params = trainer.base_params.get(name)
    if coord.config.incremental and base_params:  # keep the previous model's estimate
        coord.params = {"l2": base_params["l2"], "intercept_l2": base_params.get("intercept_l2")}
        diag = trainer._fit_random(coord, offsets)
        diag["prior"] = kept_prior(base_params)
        coord.estimated_params = dict(coord.params)
        return diag
    assert coord.features is not None
    if coord.features.n_features > _dense_max():
        raise ConfigError(
            f"coordinate '{name}': 'l2: auto' needs a dense shard (at most {_dense_max()} "
            "features); search l2 on validation data for wide shards"
        )
    if coord.coef.shape[1] != coord.features.n_features:  # not fitted yet: only the width
        coord.coef = np.zeros((0, coord.features.n_features))
    setup = prior_setup(coord, coord.params)
    if not setup.components:
        coord.params = {"l2": setup.fixed["l2"], "intercept_l2": setup.fixed["intercept_l2"]}
        return trainer._fit_random(coord, offsets)
    rho_parts, other_value = _others_rho(trainer, coord)
    bases = trainer.bases.get(name, [None] * trainer.n_buckets)
    preps = []
    for b, bucket in enumerate(trainer.designs[name]):
        off = client.submit(_bucket_offsets, bucket, *offsets)
        rho = client.submit(_bucket_offsets, bucket, *rho_parts) if rho_parts else None
        prev = trainer.bucket_results[name][b]
        state = client.submit(_field, prev, "state") if prev is not None else None
        preps.append(client.submit(_prepare, bucket, off, rho, coord.config, coord.features,
                                   coord.key_kind, state, bases[b]))  # fmt: skip
    last: list[Any] = [None] * len(preps)

    def evaluate(precision: np.ndarray, subset: bool) -> LaplaceSums:
        futures = [
            client.submit(_evaluate, p, r, precision, setup.comp, subset, pure=False)
            for p, r in zip(preps, last, strict=True)
        ]
        sums = client.gather([client.submit(_sums, f) for f in futures])
        last[:] = futures
        return functools.reduce(operator.add, sums)

    n_entities = sum(client.gather([client.submit(_count, p) for p in preps]))
    best, first = estimate_for(coord, evaluate, setup, n_entities, other_value)
    results = [
        client.submit(_finish, p, r, best.precision, setup)
        for p, r in zip(preps, last, strict=True)
    ]
    trainer.bucket_results[name] = results
    scores = [client.submit(_bucket_scores, r) for r in results]
    trainer.scores[name] = [
        client.submit(_part_scores, i, n, *scores) for i, n in enumerate(trainer.sizes)
    ]
    trainer._collect(coord, client.gather([client.submit(_field, r, "arrays") for r in results]))
    coord.train_coverage = float(coord.n_rows.sum()) / max(1, sum(trainer.sizes))
    settle(coord, best.precision, setup, None, np.zeros(0, dtype=np.int64))
    coord.estimated_params = dict(coord.params)
    estimate = make_estimate(name, setup, best, 0, first)
    diag = dict(estimate.diagnostics)
    diag["prior"] = estimate.to_dict()
    return diag


def _dense_max() -> int:
    from gdmix.effects.random_table import DENSE_MAX_FEATURES

    return DENSE_MAX_FEATURES
