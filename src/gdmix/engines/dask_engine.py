"""The Dask engine: coordinate descent with the data on a ``dask.distributed`` cluster.

The training table stays where it is read, as partitions on the workers. The driver
(this process) keeps the small things: the coordinates' parameters, the validation
table, the metrics. Per coordinate:

- **fixed effect**: each partition's design is built once and kept on its worker;
  every evaluation of the optimiser maps a task over the partitions and adds up their
  sums (the same :func:`gdmix.solvers.lbfgs.minimize_logistic` as in memory). The rows'
  curvatures of an evaluation stay on the workers, for the Hessian products and Hessians
  that follow it.
- **random effect**: rows are shuffled *once* into entity buckets (a stable hash of
  the entity id) and the buckets stay on the workers; each bucket is solved by the
  same compiled solver as the local engine, warm-started from its previous solution.
  With ``l2: auto`` the prior variances are estimated from sums over the buckets
  (:mod:`gdmix.engines.dask_prior`).
  Only 8 bytes per row move per update: the offsets into the buckets and the scores
  back to the partitions they came from (rows carry their partition and position, so
  scores stay aligned with the partitions: no join).

The result is an ordinary :class:`gdmix.model.GDMixModel`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from gdmix.config import DataConfig, GDMixConfig
from gdmix.data.entity_keys import KeyKind, key_kind, kind_of_index
from gdmix.data.features import FeatureIndex
from gdmix.data.io import TableLike, read_table
from gdmix.data.layout import counting_sort
from gdmix.data.parquet_frame import plain_parquet_files
from gdmix.data.roles import extract_roles
from gdmix.effects.base import Coordinate
from gdmix.effects.fixed_linear import FixedLinearEffect
from gdmix.effects.random_effect import RandomEffect
from gdmix.effects.random_table import RandomEffectArrays
from gdmix.engines.buckets import entity_buckets
from gdmix.engines.dask_prior import fit_random_auto
from gdmix.errors import ConfigError, DataError
from gdmix.fsutil import fresh_work_folder
from gdmix.history import finish_record, new_record
from gdmix.hugepages import avoid_compaction_stalls
from gdmix.losses import task_code, task_loss
from gdmix.model import GDMixModel, load_saved_coordinate, make_coordinate
from gdmix.solvers import fixed_kernels as fk
from gdmix.task_metrics import TaskEvaluator
from gdmix.tasks import goodness as metric_goodness

__all__ = ["connect", "fit_dask"]

logger = logging.getLogger("gdmix")


def connect(scheduler: str | None = None, n_workers: int = 2, threads_per_worker: int = 1) -> Any:
    """A ``dask.distributed.Client``: to ``scheduler``, or to a new ``LocalCluster``."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ConfigError(
            "engine 'dask' needs the 'distributed' package: install gdmix[dask]"
        ) from None
    if scheduler:
        return Client(scheduler)
    # Listen on the loopback interface only: a cluster started here serves this process.
    cluster = LocalCluster(
        n_workers=n_workers,
        threads_per_worker=threads_per_worker,
        processes=True,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
    )
    client = Client(cluster)
    # Its workers are this job's processes, as the gdmix command's own is: the same
    # huge-page setting (gdmix.hugepages; the bucket split took 3x the CPU without it).
    client.run(avoid_compaction_stalls)
    return client


# -- tasks (run on the workers) ---------------------------------------------------------


def _load_part(frame: pd.DataFrame, data: DataConfig, where: str) -> dict[str, Any]:
    roles = extract_roles(frame, data, where, need_label=True)
    return {"frame": frame, "y": roles.y, "w": roles.weight, "o": roles.offset}


def _field(part: dict[str, Any], key: str) -> Any:
    return part[key]


def _size(part: dict[str, Any]) -> int:
    return len(part["frame"])


def _build_index(part: dict[str, Any], spec: Any, where: str) -> FeatureIndex:
    return FeatureIndex.build(part["frame"], spec, where)


def _fe_design(
    part: dict[str, Any], features: FeatureIndex, where: str, task: str = "logistic"
) -> dict[str, Any]:
    X = fk.prepare(features.transform(part["frame"], where))
    return {"X": X, "y": part["y"], "w": part["w"], "task": task_code(task)}


def _fe_moments(design: dict[str, Any]) -> tuple[float, np.ndarray, np.ndarray, float]:
    total, xs, xxs = fk.column_moments(design["X"], design["w"])
    return total, xs, xxs, float(design["w"] @ design["y"])


def _fe_hessian_work(design: dict[str, Any]) -> tuple[float, float]:
    return fk.hessian_work(design["X"])


def _fe_value_grad(
    design: dict[str, Any], offset: np.ndarray, w: np.ndarray, b: float, diag: bool, hess: bool
) -> dict[str, Any]:
    X, y, s = design["X"], design["y"], design["w"]
    if hess:
        loss, xg, gsum, d, pieces = fk.value_grad_hessian(
            X, y, s, offset, w, b, task=design["task"]
        )
        return {"sums": (loss, xg, gsum, None), "d": d, "hess": pieces}
    loss, xg, gsum, d, xd = fk.value_grad(X, y, s, offset, w, b, diag=diag, task=design["task"])
    sums = (float(d.sum()), xd[0], xd[1]) if xd is not None else None
    return {"sums": (loss, xg, gsum, sums), "d": d, "hess": None}


def _fe_hess_vec(
    design: dict[str, Any], point: dict[str, Any], v: np.ndarray, vb: float
) -> tuple[np.ndarray, float]:
    return fk.hess_vec(design["X"], point["d"], v, vb)


def _fe_hessian(design: dict[str, Any], point: dict[str, Any]) -> tuple:
    if point["hess"] is not None:  # summed with the gradient
        return point["hess"]
    return fk.hessian(design["X"], point["d"])


class _DaskLogistic:
    """:class:`gdmix.solvers.lbfgs.LogisticSums` over partitions on a cluster: every sum
    is a task per partition, added up here; an evaluation's state is its tasks' futures
    (the rows' curvatures stay on the workers)."""

    def __init__(
        self,
        client: Any,
        designs: list[Any],
        offsets: list[Any],
        n_features: int,
        task: str = "logistic",
    ) -> None:
        self.client, self.designs, self.offsets = client, designs, offsets
        self.task = task
        self.n_features = n_features
        work = client.gather([client.submit(_fe_hessian_work, d) for d in designs])
        self.hessian_cost = sum(h for h, _ in work) / max(sum(g for _, g in work), 1.0)

    def moments(self) -> tuple[float, np.ndarray, np.ndarray, float]:
        parts = self.client.gather([self.client.submit(_fe_moments, d) for d in self.designs])
        return (
            sum(p[0] for p in parts),
            sum(p[1] for p in parts),
            sum(p[2] for p in parts),
            sum(p[3] for p in parts),
        )

    def value_grad(
        self, w: np.ndarray, b: float, *, diag: bool = False, hessian: bool = False
    ) -> tuple:
        client = self.client
        points = [
            client.submit(_fe_value_grad, d, o, w, b, diag, hessian, pure=False)
            for d, o in zip(self.designs, self.offsets, strict=True)
        ]
        parts = client.gather([client.submit(_field, f, "sums") for f in points])
        diag_sums = None
        if diag:
            diag_sums = tuple(sum(p[3][k] for p in parts) for k in range(3))
        return (
            sum(p[0] for p in parts),
            sum(p[1] for p in parts),
            sum(p[2] for p in parts),
            points,
            diag_sums,
        )

    def hess_vec(self, state: list[Any], v: np.ndarray, vb: float) -> tuple[np.ndarray, float]:
        client = self.client
        parts = client.gather(
            [
                client.submit(_fe_hess_vec, d, f, v, vb, pure=False)
                for d, f in zip(self.designs, state, strict=True)
            ]
        )
        return sum(p[0] for p in parts), sum(p[1] for p in parts)

    def hessian(self, state: list[Any]) -> tuple[np.ndarray, np.ndarray, float]:
        client = self.client
        parts = client.gather(
            [
                client.submit(_fe_hessian, d, f, pure=False)
                for d, f in zip(self.designs, state, strict=True)
            ]
        )
        return sum(p[0] for p in parts), sum(p[1] for p in parts), sum(p[2] for p in parts)


def _fe_score(design: dict[str, Any], coef: np.ndarray, intercept: float) -> np.ndarray:
    return np.asarray(design["X"].X @ coef, dtype=np.float64) + intercept


def _offsets(base: np.ndarray, skip: int, *scores: np.ndarray) -> np.ndarray:
    """``offset`` plus every score array but ``scores[skip]``, in the local engine's order
    of sums."""
    total = base.copy()
    for k, s in enumerate(scores):
        if k != skip:
            total += s
    return total


def _split_part(
    part: dict[str, Any], no: int, entity: str, columns: list[str], n_buckets: int
) -> list[pd.DataFrame]:
    """The partition's rows by entity bucket (in their order within each bucket): one
    gather of the rows sorted by bucket, cut into slices (not one boolean mask per
    bucket over the whole partition)."""
    frame = part["frame"]
    buckets = entity_buckets(frame[entity].to_numpy(), n_buckets)
    order, starts = counting_sort(buckets, n_buckets)
    keep = frame[list(dict.fromkeys([entity, *columns]))].take(order)
    keep.reset_index(drop=True, inplace=True)
    keep["_part"] = no
    keep["_pos"] = order
    keep["_y"], keep["_w"] = part["y"][order], part["w"][order]
    return [keep.iloc[starts[b] : starts[b + 1]] for b in range(n_buckets)]


def _gather_bucket(b: int, *splits: list[pd.DataFrame]) -> pd.DataFrame:
    return pd.concat([s[b] for s in splits], ignore_index=True)


def _bucket_offsets(bucket: pd.DataFrame, *offsets: np.ndarray) -> np.ndarray:
    out = np.empty(len(bucket))
    part, pos = bucket["_part"].to_numpy(), bucket["_pos"].to_numpy()
    for p, off in enumerate(offsets):
        rows = part == p
        out[rows] = off[pos[rows]]
    return out


def _base_subset(base: RandomEffect, rows: np.ndarray) -> RandomEffect:
    """The entities ``rows`` of a loaded random effect, as a coordinate of their own."""
    sub = RandomEffect(base.config)
    sub.features, sub.key_kind, sub.params = base.features, base.key_kind, dict(base.params)
    sub.entity_ids = base.entity_ids[rows]
    sub.coef, sub.intercept, sub.n_rows = base.coef[rows], base.intercept[rows], base.n_rows[rows]
    if base.variance is not None and base.intercept_variance is not None:
        sub.variance = base.variance[rows]
        sub.intercept_variance = base.intercept_variance[rows]
    aged = len(base.entity_age) == len(base.entity_ids)
    sub.entity_age = base.entity_age[rows] if aged else np.zeros(len(rows), dtype=np.int64)
    sub.has_model = np.ones(len(rows), dtype=bool)
    sub.trainable = np.zeros(len(rows), dtype=bool)
    sub.fitted = True
    return sub


def _key_kind(part: dict[str, Any], entity: str, where: str) -> str:
    return key_kind(part["frame"][entity], where)


def _solve_bucket(
    bucket: pd.DataFrame,
    offsets: np.ndarray,
    config: Any,
    features: FeatureIndex,
    kind: KeyKind,
    params: dict[str, Any],
    previous: dict[str, Any] | None,
    base: RandomEffect | None = None,
) -> dict[str, Any]:
    coord = RandomEffect(config)
    if len(bucket) == 0:  # no new rows: the previous model's entities as they were
        if base is not None:
            return {"arrays": base.arrays(), "state": None, "scores": np.zeros(0), "stats": {}}
        coord.features = features
        return {"arrays": coord.arrays(), "state": None, "scores": np.zeros(0), "stats": {}}
    coord.build(bucket, base=base, features=features, key_kind=kind)
    if previous is not None:
        coord.set_state(previous)
    design = coord.design(bucket, "bucket", training=True)
    stats = coord.fit(design, bucket["_y"].to_numpy(), bucket["_w"].to_numpy(), offsets, **params)
    return {
        "arrays": coord.arrays(),
        "state": coord.get_state(),
        "scores": coord.score(design),
        "part": bucket["_part"].to_numpy(),
        "pos": bucket["_pos"].to_numpy(),
        "stats": stats,
    }


def _bucket_scores(result: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if "part" not in result:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0)
    return result["part"], result["pos"], result["scores"]


def _part_scores(no: int, n: int, *bucket_scores: tuple) -> np.ndarray:
    out = np.zeros(n)
    for part, pos, scores in bucket_scores:
        rows = part == no
        out[pos[rows]] = scores[rows]
    return out


def _re_score(part: dict[str, Any], coord: Coordinate, where: str) -> np.ndarray:
    return coord.score(coord.design(part["frame"], where))


def _loss_sum(part: dict[str, Any], total: np.ndarray, task: str) -> tuple[float, float]:
    return float(part["w"] @ task_loss(task, part["y"], total)), float(part["w"].sum())


def _write_scores(
    part: dict[str, Any], uid: str | None, columns: dict[str, np.ndarray], path: str
) -> int:
    out = pd.DataFrame(columns)
    if uid is not None:
        out.insert(0, uid, part["frame"][uid].to_numpy())
    out.to_parquet(path, index=False)
    return len(out)


# -- the driver ----------------------------------------------------------------------


class _DaskTrainer:
    def __init__(
        self,
        config: GDMixConfig,
        client: Any,
        train: Any,
        validation: pd.DataFrame | None,
        callbacks: list[Callable],
        trust_custom_code: bool = False,
    ) -> None:
        self.config, self.client, self.callbacks = config, client, callbacks
        tc = config.training
        for cc in config.coordinates:
            if cc.type not in ("fixed", "random"):
                raise ConfigError(
                    f"coordinate '{cc.name}': engine 'dask' trains fixed and random "
                    f"coordinates; '{cc.type}' scales with torch.distributed"
                )
            if len(cc.search_grid()) > 1:
                raise ConfigError(
                    f"coordinate '{cc.name}': engine 'dask' takes one l2 value; "
                    "search l2 with the local engine on a sample"
                )
        self.parts, self.sizes = self._load(train)
        self.base_offsets = [client.submit(_field, p, "o") for p in self.parts]
        self.n_buckets = tc.dask.n_buckets or 2 * max(1, sum(client.nthreads().values()))
        self.coords: list[Coordinate] = []
        self.bases: dict[str, list[Any]] = {}
        self.locked: set[str] = set()
        self.designs: dict[str, Any] = {}
        self.scores: dict[str, list[Any]] = {}
        self.bucket_results: dict[str, list[Any]] = {}
        #: The params of a warm start's previous model (``l2: auto`` keeps them when
        #: incremental, as the local engine does).
        self.base_params: dict[str, dict[str, Any]] = {}
        for cc in config.coordinates:
            if cc.locked:
                coord = load_saved_coordinate(cc, trust_custom_code=trust_custom_code)
                self.locked.add(cc.name)
            elif cc.init_model is not None:  # a warm start (and, if incremental, the prior)
                base = load_saved_coordinate(cc, trust_custom_code=trust_custom_code)
                coord = make_coordinate(cc)
                coord.features = base.features
                if isinstance(coord, FixedLinearEffect):
                    assert isinstance(base, FixedLinearEffect)
                    coord.coef, coord.intercept = base.coef.copy(), base.intercept
                else:
                    assert isinstance(coord, RandomEffect) and isinstance(base, RandomEffect)
                    coord.key_kind = base.key_kind
                    self.bases[cc.name] = self._split_base(base)
                    self.base_params[cc.name] = dict(base.params)
            else:
                coord = make_coordinate(cc)
                indexes = client.gather(
                    [
                        client.submit(_build_index, p, cc.features, f"coordinate '{cc.name}'")
                        for p in self.parts
                    ]
                )
                index = indexes[0]
                for other in indexes[1:]:
                    index = index.union(other)
                coord.features = index
                if isinstance(coord, RandomEffect):
                    where = f"training data, coordinate '{cc.name}'"
                    kinds = client.gather(
                        [client.submit(_key_kind, p, cc.entity, where) for p in self.parts]
                    )
                    coord.key_kind = "str" if "str" in kinds else "int"
                if isinstance(coord, FixedLinearEffect):
                    coord.coef, coord.intercept = np.zeros(index.n_features), 0.0
            self.coords.append(coord)
            self._prepare(coord)
        self.validation = None
        if validation is not None:
            roles = extract_roles(validation, config.data, "validation data", need_label=True)
            self.validation = (roles, validation)
            self.val_designs: dict[str, Any] = {}
        self.history: list[dict[str, Any]] = []
        self.best_pass = 0

    def _load(self, train: Any) -> tuple[list[Any], list[int]]:
        """The training partitions, kept on the workers, and their row counts."""
        client, data = self.client, self.config.data
        if isinstance(train, pd.DataFrame):
            n = max(1, sum(client.nthreads().values()))
            chunks = np.array_split(np.arange(len(train)), n)
            frames = [train.iloc[c].reset_index(drop=True) for c in chunks if len(c)]
            futures = client.scatter(frames)
        elif (files := plain_parquet_files(train)) is not None:
            # Local files: each worker reads whole files with gdmix's one-copy reader
            # (dask's read_parquet took 4x the CPU on 20M rows).
            futures = [client.submit(read_table, str(f), pure=False) for f in files]
        else:
            import dask.dataframe as dd

            try:
                ddf = dd.read_parquet(train)
            except (FileNotFoundError, OSError, ValueError) as err:
                raise DataError(f"cannot read training data {train}: {err}") from None
            futures = client.compute(ddf.to_delayed())
        if not futures:
            raise DataError("training data: the table is empty (0 rows)")
        parts = [
            client.submit(_load_part, f, data, f"training data, partition {i}")
            for i, f in enumerate(futures)
        ]
        # Gathering the sizes raises the first partition's DataError, if any; the parts
        # themselves stay on the workers (gathering them moved the whole table to the
        # driver, 24 s of a 45 s job on 20M rows).
        return parts, client.gather([client.submit(_size, p) for p in parts])

    def _prepare(self, coord: Coordinate) -> None:
        client, name = self.client, coord.name
        if isinstance(coord, FixedLinearEffect):
            self.designs[name] = [
                client.submit(_fe_design, p, coord.features, "training data", self.config.task)
                for p in self.parts
            ]
        elif name not in self.locked:
            assert isinstance(coord, RandomEffect)
            cols = coord.config.features.columns()
            splits = [
                client.submit(_split_part, p, i, coord.config.entity, cols, self.n_buckets)
                for i, p in enumerate(self.parts)
            ]
            self.designs[name] = [
                client.submit(_gather_bucket, b, *splits) for b in range(self.n_buckets)
            ]
            self.bucket_results[name] = [None] * self.n_buckets
        if coord.fitted:
            self.scores[name] = self._score_parts(coord)
        else:
            self.scores[name] = [client.submit(np.zeros, n) for n in self.sizes]

    def _score_parts(self, coord: Coordinate) -> list[Any]:
        client = self.client
        if isinstance(coord, FixedLinearEffect) and coord.name in self.designs:
            return [
                client.submit(_fe_score, d, coord.coef, coord.intercept)
                for d in self.designs[coord.name]
            ]
        shared = client.scatter(coord, broadcast=True)
        return [client.submit(_re_score, p, shared, "training data") for p in self.parts]

    def _offsets(self, skip: str | None) -> list[Any]:
        names = [c.name for c in self.coords]
        k = names.index(skip) if skip is not None else -1
        return [
            self.client.submit(
                _offsets, self.base_offsets[i], k, *[self.scores[n][i] for n in names]
            )
            for i in range(len(self.parts))
        ]

    def _fit_fixed(self, coord: FixedLinearEffect, offsets: list[Any]) -> dict[str, Any]:
        data = _DaskLogistic(
            self.client, self.designs[coord.name], offsets, len(coord.coef), self.config.task
        )
        diag = coord.fit_sums(data, l2=coord.l2)
        self.scores[coord.name] = self._score_parts(coord)
        return diag

    def _split_base(self, base: RandomEffect) -> list[Any]:
        """The previous model's entities of every bucket, scattered to the workers."""
        buckets = entity_buckets(base.entity_ids.to_numpy(), self.n_buckets)
        parts = [_base_subset(base, np.flatnonzero(buckets == b)) for b in range(self.n_buckets)]
        return self.client.scatter(parts)

    def _fit_random(self, coord: RandomEffect, offsets: list[Any]) -> dict[str, Any]:
        client, name = self.client, coord.name
        results = []
        bases = self.bases.get(name, [None] * self.n_buckets)
        for b, bucket in enumerate(self.designs[name]):
            off = client.submit(_bucket_offsets, bucket, *offsets)
            prev = self.bucket_results[name][b]
            state = client.submit(_field, prev, "state") if prev is not None else None
            results.append(
                client.submit(
                    _solve_bucket,
                    bucket,
                    off,
                    coord.config,
                    coord.features,
                    coord.key_kind,
                    coord.params,
                    state,
                    bases[b],
                )
            )
        self.bucket_results[name] = results
        scores = [client.submit(_bucket_scores, r) for r in results]
        self.scores[name] = [
            client.submit(_part_scores, i, n, *scores) for i, n in enumerate(self.sizes)
        ]
        arrays = client.gather([client.submit(_field, r, "arrays") for r in results])
        stats = client.gather([client.submit(_field, r, "stats") for r in results])
        self._collect(coord, arrays)
        coord.train_coverage = float(coord.n_rows.sum()) / max(1, sum(self.sizes))
        n_ok = sum(s.get("n_converged", 0) for s in stats)
        n_trained = sum(s.get("n_entities", 0) for s in stats)
        return {"n_entities": n_trained, "n_converged": n_ok}

    @staticmethod
    def _collect(coord: RandomEffect, arrays: list[RandomEffectArrays]) -> None:
        """The buckets' entities as one coordinate, in the local engine's (sorted) order."""
        ids = pd.Index(np.concatenate([a.entity_ids.to_numpy() for a in arrays]))
        order = np.argsort(ids.to_numpy(), kind="stable")

        def cat(key: str) -> Any:
            parts = [getattr(a, key) for a in arrays]
            if sp.issparse(parts[0]):
                return sp.vstack(parts, format="csr")[order]
            return np.concatenate(parts)[order]

        coord.entity_ids = ids[order]
        coord.coef, coord.intercept, coord.n_rows = cat("coef"), cat("intercept"), cat("n_rows")
        if arrays[0].variance is not None:
            coord.variance, coord.intercept_variance = cat("variance"), cat("intercept_variance")
        if all(a.age is not None for a in arrays):
            coord.entity_age = cat("age")
        coord.has_model = np.ones(len(ids), dtype=bool)
        coord.trainable = np.zeros(len(ids), dtype=bool)
        coord.fitted = True
        coord.key_kind = kind_of_index(coord.entity_ids) if len(ids) else coord.key_kind

    def _metrics(self) -> dict[str, float]:
        record: dict[str, float] = {}
        totals = self._offsets(None)
        task = self.config.task
        sums = self.client.gather(
            [
                self.client.submit(_loss_sum, p, t, task)
                for p, t in zip(self.parts, totals, strict=True)
            ]
        )
        mean_loss = sum(s[0] for s in sums) / sum(s[1] for s in sums)
        record["train_log_loss" if task == "logistic" else "train_mean_loss"] = mean_loss
        if self.validation is not None:
            roles, frame = self.validation
            total = roles.offset.copy()
            for c in self.coords:
                total += c.score(c.design(frame, "validation data"))
            m = TaskEvaluator(roles.y, roles.weight, task, self.config.training.metric)
            record.update({f"validation_{k}": v for k, v in m.evaluate(total).items()})
        return record

    def run(self) -> GDMixModel:
        tc = self.config.training
        best, best_state = -np.inf, None
        for pass_no in range(1, tc.n_passes + 1):
            for coord in self.coords:
                if coord.name in self.locked:
                    continue
                coord.params = dict(coord.config.search_grid()[0])
                start = time.perf_counter()
                offsets = self._offsets(coord.name)
                if isinstance(coord, FixedLinearEffect):
                    diag = self._fit_fixed(coord, offsets)
                elif "auto" in coord.params.values():  # the prior is estimated
                    assert isinstance(coord, RandomEffect)
                    diag = fit_random_auto(self, coord, offsets)
                else:
                    assert isinstance(coord, RandomEffect)
                    diag = self._fit_random(coord, offsets)
                record = new_record(pass_no, coord, coord.params)
                record.update(self._metrics(), seconds=time.perf_counter() - start, **diag)
                if "n_entities" in diag:
                    record["converged"] = diag.get("n_converged") == diag["n_entities"]
                finish_record(record)
                self.history.append(record)
                for cb in self.callbacks:
                    cb(record)
            if self.validation is None:
                continue
            last = self.history[-1]
            goodness = metric_goodness({tc.metric: last[f"validation_{tc.metric}"]}, tc.metric)
            if goodness > best + tc.min_delta:
                best, self.best_pass = goodness, pass_no
                best_state = (
                    {c.name: c.get_state() for c in self.coords if c.name not in self.locked},
                    {k: list(v) for k, v in self.scores.items()},
                )
            elif tc.early_stopping:
                logger.info("pass %d did not improve validation %s; stopping", pass_no, tc.metric)
                break
        if best_state is not None:
            for c in self.coords:
                if c.name in best_state[0]:
                    c.set_state(best_state[0][c.name])
            self.scores = best_state[1]
        final = self._metrics()
        train_key = "log_loss" if self.config.task == "logistic" else "mean_loss"
        metrics: dict[str, Any] = {"train": {train_key: final[f"train_{train_key}"]}}
        if self.validation is not None:
            metrics["validation"] = {
                k.removeprefix("validation_"): v
                for k, v in final.items()
                if k.startswith("validation_")
            }
            metrics["best_pass"] = self.best_pass
        metrics["params"] = {c.name: c.params for c in self.coords}
        metrics["engine"] = "dask"
        self._write_scores()
        return GDMixModel(self.coords, self.config.data, metrics=metrics, history=self.history)

    def _write_scores(self) -> None:
        out = self.config.training.dask.scores_output
        if out is None:
            return
        folder = fresh_work_folder(out)  # never writes over files gdmix did not make
        names = [c.name for c in self.coords]
        totals = self._offsets(None)
        tasks = []
        for i, p in enumerate(self.parts):
            cols = {n: self.scores[n][i] for n in names}
            cols["total"] = totals[i]
            tasks.append(
                self.client.submit(
                    _write_columns,
                    p,
                    self.config.data.uid,
                    names,
                    str(folder / f"part-{i:05d}.parquet"),
                    *[cols[n] for n in [*names, "total"]],
                )
            )
        self.client.gather(tasks)


def _write_columns(
    part: dict[str, Any], uid: str | None, names: list[str], path: str, *arrays: np.ndarray
) -> int:
    return _write_scores(part, uid, dict(zip([*names, "total"], arrays, strict=True)), path)


def fit_dask(
    config: GDMixConfig,
    train: TableLike | list[str] | None = None,
    validation: TableLike | None = None,
    *,
    client: Any = None,
    callbacks: list[Callable[[dict[str, Any]], None]] | None = None,
    trust_custom_code: bool = False,
) -> GDMixModel:
    """Train by block coordinate descent on a Dask cluster.

    Parameters
    ----------
    config : GDMixConfig
        As for :func:`gdmix.fit`; ``training.dask`` says which cluster (a scheduler
        address, or a ``LocalCluster`` of ``n_workers``). One ``l2`` per coordinate.
    train : path, list of paths or DataFrame, optional
        Parquet file(s)/folder(s) (paths or URLs dask can read) or a DataFrame (split
        across the workers); default ``config.data.train``.
    validation : DataFrame or path, optional
        Read on the driver; drives early stopping. Default ``config.data.validation``.
    client : distributed.Client, optional
        Use this client instead of connecting as the config says.
    callbacks : list of callables
        Called with one record per coordinate update.
    trust_custom_code : bool
        As for :func:`gdmix.fit`.

    Returns
    -------
    GDMixModel
        The same model format as the local engine's.
    """
    train = train if train is not None else config.data.train
    if train is None:
        raise ConfigError("no training data: pass 'train' or set 'data.train' in the config")
    if isinstance(train, str | Path) and not isinstance(train, pd.DataFrame):
        train = str(train)
    val_source = validation if validation is not None else config.data.validation
    val = read_table(val_source) if val_source is not None else None
    own = client is None
    if own:
        d = config.training.dask
        client = connect(d.scheduler, d.n_workers, d.threads_per_worker)
    try:
        trainer = _DaskTrainer(config, client, train, val, list(callbacks or []), trust_custom_code)
        return trainer.run()
    finally:
        if own:
            cluster = getattr(client, "cluster", None)
            client.close()
            if cluster is not None:
                cluster.close()
