"""Training a whole model from Parquet larger than memory (``training.engine: streaming``).

One read of the training files (and one of the validation files) lays the data out on
disk for the rest of the job:

- every table's role columns, and each linear fixed effect's encoded design, in chunks
  of consecutive rows (:class:`gdmix.engines.chunks.ChunkStore`);
- for each random effect, its columns hash-partitioned by entity into bucket files
  (:class:`gdmix.engines.buckets.BucketWriter`), each row tagged with its row number.

Coordinate descent then runs as in memory. A fixed effect is solved by the same
optimiser over sums read chunk by chunk; a random effect bucket by bucket, with the
same compiled solver, warm-started from its previous pass. Memory holds one chunk or one
bucket at a time, plus one score per row and coordinate (8 bytes each) and the
validation table's role columns.
"""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds

from gdmix.config import FixedEffectConfig, GDMixConfig, RandomEffectConfig
from gdmix.data.column_kinds import check_column_kinds, column_kinds
from gdmix.data.entity_keys import key_kind
from gdmix.data.features import FeatureIndex
from gdmix.data.roles import extract_roles
from gdmix.effects.fixed_linear import FixedLinearEffect
from gdmix.effects.prior_estimation import fit_with_estimated_prior
from gdmix.effects.random_effect import RandomEffect
from gdmix.effects.random_table import read_coefficients, write_coefficients
from gdmix.engines.buckets import BucketFiles, BucketWriter, n_buckets_for
from gdmix.engines.chunks import ChunkStore, StreamedLogistic
from gdmix.errors import ConfigError, DataError
from gdmix.fsutil import fresh_work_folder
from gdmix.history import finish_record, new_record
from gdmix.model import GDMixModel
from gdmix.solvers.jit_cache import announce_compilation
from gdmix.task_metrics import AUTO_TRAIN_METRICS_MAX_ROWS, TaskEvaluator, loss_sum
from gdmix.tasks import goodness as metric_goodness

__all__ = ["fit_streaming", "needs_streaming"]

logger = logging.getLogger("gdmix")

#: Column holding each row's number in the random effects' bucket files.
ROW = "__gdmix_row"
#: In-memory cost of a stored value while a bucket is solved (the table, its design,
#: the solver's gathered copies), as in :mod:`gdmix.engines.streaming`.
_BYTES_PER_VALUE = 40
DEFAULT_BUDGET_GB = 4.0
#: Buckets whose rows estimate an ``l2: auto`` prior (in memory: about half the budget).
PRIOR_SAMPLE_BUCKETS = 2


def needs_streaming(config: GDMixConfig, train: Any) -> bool:
    """Whether ``engine: local`` should hand this job to the streaming engine: the
    training data are Parquet files whose feature columns would take more than
    ``training.memory_budget_gb`` in memory (8 bytes a value, three copies)."""
    budget = config.training.memory_budget_gb
    if budget is None or isinstance(train, pd.DataFrame) or train is None:
        return False
    try:
        dataset = _dataset(train, "training data")
    except DataError:
        return False
    if not isinstance(dataset, ds.FileSystemDataset) or dataset.format.default_extname != "parquet":
        return False
    n_columns = len({c for cc in config.coordinates for c in cc.features.columns()}) + 3
    estimate = dataset.count_rows() * n_columns * 8 * 3
    return bool(estimate > budget * 2**30)


def _dataset(source: Any, where: str) -> ds.Dataset:
    if isinstance(source, pd.DataFrame):
        raise ConfigError(
            f"the streaming engine reads Parquet files; {where} is a DataFrame (use "
            "engine: local, or write it to Parquet)"
        )
    paths = [str(p) for p in source] if isinstance(source, list | tuple) else str(source)
    try:
        return ds.dataset(paths, format="parquet")
    except (FileNotFoundError, pa.ArrowInvalid, OSError) as err:
        raise DataError(f"{where}: cannot open Parquet data {source}: {err}") from None


def _check_supported(config: GDMixConfig) -> None:
    for cc in config.coordinates:
        if not isinstance(cc, FixedEffectConfig | RandomEffectConfig):
            raise ConfigError(
                f"coordinate '{cc.name}' (type '{cc.type}'): the streaming engine trains "
                "linear fixed and random effects only"
            )
        grid = cc.search_grid()
        if len(grid) > 1:
            raise ConfigError(
                f"coordinate '{cc.name}': the streaming engine takes one l2 value, not a "
                "search grid (choose l2 on a sample in memory)"
            )
        if cc.locked or cc.init_model is not None:
            raise ConfigError(
                f"coordinate '{cc.name}': init_model/locked are not supported by the "
                "streaming engine"
            )
        if isinstance(cc, RandomEffectConfig) and (cc.mode == "cohort" or cc.incremental):
            raise ConfigError(
                f"coordinate '{cc.name}': cohort mode and incremental training are not "
                "supported by the streaming engine"
            )


@dataclass
class _Table:
    """One table laid out on disk: its chunks, its buckets, its per-row scores."""

    name: str
    n_rows: int
    chunks: ChunkStore
    buckets: dict[str, BucketFiles] = field(default_factory=dict)
    scores: dict[str, np.ndarray] = field(default_factory=dict)

    def others(self, name: str, start: int, stop: int) -> np.ndarray:
        """The other coordinates' scores of rows ``start:stop``."""
        out = np.zeros(stop - start)
        for k, s in self.scores.items():
            if k != name:
                out += s[start:stop]
        return out

    def others_at(self, name: str, rows: np.ndarray) -> np.ndarray:
        """The other coordinates' scores of the rows ``rows``."""
        out = np.zeros(len(rows))
        for k, s in self.scores.items():
            if k != name:
                out += s[rows]
        return out

    def total(self, start: int, stop: int) -> np.ndarray:
        """Every coordinate's score of rows ``start:stop``."""
        return self.others("", start, stop)


class _StreamingJob:
    """The state of one streaming training job."""

    def __init__(self, config: GDMixConfig, work: Path, callbacks: list[Callable]) -> None:
        self.config, self.work, self.callbacks = config, work, callbacks
        tc = config.training
        self.budget = tc.memory_budget_gb or DEFAULT_BUDGET_GB
        self.sc = tc.streaming
        self.dtype = np.float32 if self.sc.feature_dtype == "float32" else np.float64
        self.fixed: dict[str, FixedLinearEffect] = {}
        self.random: dict[str, RandomEffectConfig] = {}
        self.indexes: dict[str, FeatureIndex] = {}
        self.key_kinds: dict[str, Any] = {}
        self.n_buckets: dict[str, int] = {}
        self.params: dict[str, dict[str, Any]] = {}
        for cc in config.coordinates:
            self.params[cc.name] = dict(cc.search_grid()[0])
            if isinstance(cc, FixedEffectConfig):
                fe = FixedLinearEffect(cc)
                fe.n_threads = tc.n_threads
                self.fixed[cc.name] = fe
            else:
                self.random[cc.name] = cc
        self.history: list[dict[str, Any]] = []
        self.train: _Table | None = None
        self.validation: _Table | None = None
        self.column_kinds: dict[str, str] = {}
        #: Per random effect and pass: the folder of its coefficient parts.
        self.parts: dict[tuple[str, int], Path] = {}
        self.penalties: dict[str, float] = {}
        #: Per random effect and pass, the hyper-parameters used (estimated for l2: auto).
        self.used_params: dict[tuple[str, int], dict[str, Any]] = {}
        #: The last prior estimate of each l2: auto coordinate (the next pass's start).
        self.estimates: dict[str, dict[str, Any]] = {}
        self.coverage: dict[str, float] = {}
        self.seconds: dict[str, float] = {"layout": 0.0, "solve": 0.0, "score": 0.0}

    # -- layout -------------------------------------------------------------
    def _roles(self) -> list[str]:
        d = self.config.data
        return [c for c in (d.label, d.weight, d.offset) if c is not None]

    def _feature_columns(self) -> list[str]:
        cols = [c for cc in self.config.coordinates for c in cc.features.columns()]
        return list(dict.fromkeys(cols))

    def _build_indexes(self, dataset: ds.Dataset) -> None:
        """Index maps of every coordinate: numeric shards from the config; shards with
        categorical, bag, text or hashed columns from one read of those columns."""
        pending: dict[str, Any] = {}
        for cc in self.config.coordinates:
            spec = cc.features
            if spec.categorical or spec.bags or spec.text or spec.hashed:
                pending[cc.name] = spec
            else:
                self.indexes[cc.name] = FeatureIndex(numeric=list(spec.numeric))
        if not pending:
            return
        cols = list(dict.fromkeys(c for spec in pending.values() for c in spec.columns()))
        found: dict[str, FeatureIndex] = {}
        for batch in dataset.to_batches(columns=cols, batch_size=self.sc.batch_rows):
            frame = batch.to_pandas()
            for name, spec in pending.items():
                part = FeatureIndex.build(frame, spec, f"training data, coordinate '{name}'")
                found[name] = found[name].union(part) if name in found else part
        self.indexes.update(found)

    def layout(self, source: Any, name: str, *, training: bool) -> _Table:
        """Read ``source`` once: chunks of roles and fixed-effect designs, and bucket
        files for the random effects."""
        where = name
        dataset = _dataset(source, where)
        cols = list(
            dict.fromkeys(
                [
                    *self._roles(),
                    *self._feature_columns(),
                    *(cc.entity for cc in self.random.values()),
                ]
            )
        )
        missing = [c for c in cols if c not in dataset.schema.names]
        optional = {self.config.data.weight, self.config.data.offset}
        missing = [c for c in missing if c not in optional]
        if missing:
            raise DataError(f"{where}: missing column(s) {missing} (in {source})")
        cols = [c for c in cols if c in dataset.schema.names]
        n_rows = dataset.count_rows()
        if training:
            self._build_indexes(dataset)
            for rname, cc in self.random.items():
                values = len(cc.features.columns()) + len(self._roles()) + 2
                self.n_buckets[rname] = self.sc.n_buckets or n_buckets_for(
                    n_rows, values * _BYTES_PER_VALUE, self.budget * 2**30
                )
        folder = fresh_work_folder(self.work / name.replace(" ", "_"))
        (folder / "chunks").mkdir()
        table = _Table(name, n_rows, ChunkStore(folder / "chunks"))
        writers = {
            rname: BucketWriter(
                folder / f"buckets-{rname}",
                cc.entity,
                self.n_buckets[rname],
                where=f"{where}, coordinate '{rname}'",
            )
            for rname, cc in self.random.items()
        }
        fixed_cols = list(
            dict.fromkeys(
                [*self._roles(), *(c for fe in self.fixed.values() for c in fe.columns())]
            )
        )
        fixed_cols = [c for c in fixed_cols if c in cols]
        start = 0
        try:
            for batch in dataset.to_batches(columns=cols, batch_size=self.sc.batch_rows):
                if not batch.num_rows:
                    continue
                frame = pa.Table.from_batches([batch]).select(fixed_cols).to_pandas()
                if training and start == 0:
                    kinds_frame = pa.Table.from_batches([batch.slice(0, 1000)]).to_pandas()
                    self.column_kinds = column_kinds(kinds_frame, self._feature_columns())
                    for rname, cc in self.random.items():
                        self.key_kinds[rname] = key_kind(
                            kinds_frame[cc.entity], f"{where}, coordinate '{rname}'"
                        )
                elif not training and start == 0:
                    numeric = {c for cc in self.config.coordinates for c in cc.features.numeric}
                    check_column_kinds(
                        self.column_kinds, batch.slice(0, 1000).to_pandas(), where, numeric=numeric
                    )
                rows_where = f"{where} (rows {start}-{start + batch.num_rows - 1})"
                roles = extract_roles(
                    frame, self.config.data, rows_where, need_label=True, need_uid=False
                )
                designs = {
                    fname: self.indexes[fname].encode(frame, rows_where, dtype=self.dtype)
                    for fname in self.fixed
                }
                table.chunks.append(roles.y, roles.weight, roles.offset, designs)
                rows = pa.array(np.arange(start, start + batch.num_rows, dtype=np.int64))
                for rname, cc in self.random.items():
                    keep = list(dict.fromkeys([cc.entity, *cc.features.columns(), *self._roles()]))
                    keep = [c for c in keep if c in cols]
                    part = pa.Table.from_batches([batch]).select(keep).append_column(ROW, rows)
                    writers[rname].write(part)
                start += batch.num_rows
        finally:
            for w in writers.values():
                w.close()
        table.chunks.save_index()
        table.buckets = {rname: w.files for rname, w in writers.items()}
        table.scores = {cc.name: np.zeros(n_rows) for cc in self.config.coordinates}
        return table

    # -- coordinate updates -------------------------------------------------
    def _fit_fixed(self, fe: FixedLinearEffect, pass_no: int) -> dict[str, Any]:
        t = self.train
        assert t is not None
        if not fe.fitted and fe.features is None:
            fe.features = self.indexes[fe.name]
            fe.coef = np.zeros(fe.features.n_features)
        params = self.params[fe.name]
        data = StreamedLogistic(
            t.chunks, fe.name, lambda a, b: t.others(fe.name, a, b), self.config.task
        )
        diag = fe.fit_sums(data, l2=params["l2"])
        diag["n_reads"] = data.n_reads
        self.penalties[fe.name] = fe.penalty()
        start = time.perf_counter()
        for table in self._tables():
            scores = table.scores[fe.name]  # replaced in place, chunk by chunk
            for c in table.chunks.chunks((fe.name,), roles=False):
                scores[c.start : c.stop] = fe.score(c.designs[fe.name])
        self.seconds["score"] += time.perf_counter() - start
        return diag

    def _fit_random(self, name: str, pass_no: int) -> dict[str, Any]:
        t = self.train
        assert t is not None
        cc = self.random[name]
        params = self.params[name]
        prior = None
        if "auto" in params.values():  # estimated on a sample of buckets, then fixed
            params, prior = self._estimate_prior(name)
        self.used_params[(name, pass_no)] = params
        parts = self.work / "coefficients" / name / f"pass-{pass_no}"
        parts.mkdir(parents=True)
        self.parts[(name, pass_no)] = parts
        previous = self.parts.get((name, pass_no - 1))
        totals = {
            "n_entities": 0,
            "n_inactive": 0,
            "n_converged": 0,
            "iterations": 0.0,
            "max_iter": 0,
        }
        penalty, covered = 0.0, 0.0
        # Buckets hold disjoint rows and read only the other coordinates' scores, so
        # the coordinate's own scores are replaced in place (no second n-row array).
        new_scores = t.scores[name]
        new_scores[:] = 0.0
        val = self.validation
        new_val = val.scores[name] if val is not None else None
        if new_val is not None:
            new_val[:] = 0.0
        for b in t.buckets[name].non_empty():
            where = f"training data, coordinate '{name}', bucket {b}"
            frame = t.buckets[name].read(b)
            rows = frame[ROW].to_numpy()
            roles = extract_roles(frame, self.config.data, where, need_label=True, need_uid=False)
            coord = RandomEffect(cc)
            coord.n_threads = self.config.training.n_threads
            coord.build(frame, features=self.indexes[name], key_kind=self.key_kinds[name])
            part = f"part-{b:05d}.parquet"
            if previous is not None and (previous / part).exists():
                _warm_start(coord, previous / part)
            design = coord.design(frame, where, training=True)
            offset = roles.offset + t.others_at(name, rows)
            assert roles.y is not None
            diag = coord.fit(design, roles.y, roles.weight, offset, **params)
            new_scores[rows] = coord.score(design)
            write_coefficients(
                coord.arrays(), parts / part, default_variance=coord._default_variance()
            )
            totals["n_entities"] += diag["n_entities"]
            totals["n_inactive"] += diag["n_inactive"]
            totals["n_converged"] += diag.get("n_converged", 0)
            totals["iterations"] += diag.get("mean_iter", 0.0) * diag["n_entities"]
            totals["max_iter"] = max(totals["max_iter"], diag.get("max_iter", 0))
            penalty += coord.penalty()
            covered += (coord.train_coverage or 0.0) * len(rows)
            if val is not None and val.buckets[name].rows[b] > 0:
                vframe = val.buckets[name].read(b)
                vdesign = coord.design(vframe, f"validation data, coordinate '{name}'")
                assert new_val is not None
                new_val[vframe[ROW].to_numpy()] = coord.score(vdesign)
            del frame, design
        self.penalties[name] = penalty
        self.coverage[name] = covered / max(t.n_rows, 1)
        n = max(totals["n_entities"], 1)
        iterations = totals.pop("iterations")
        out = {**totals, "mean_iter": iterations / n, "n_buckets": self.n_buckets[name]}
        if prior is not None:
            out["prior"] = prior
        return out

    def _estimate_prior(self, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """``l2: auto`` on the streaming engine: the prior variances estimated in memory on
        the rows of the first :data:`PRIOR_SAMPLE_BUCKETS` buckets (entities land in buckets
        by a hash of their id, so these are a random sample of the entities), by the local
        engine's estimator at the current offsets; every bucket is then solved with the
        estimate. The other random effects' curvature terms are left out of the sample's
        approximation. Each pass estimates again, starting from the previous estimate."""
        t = self.train
        assert t is not None
        cc = self.random[name]
        buckets = t.buckets[name].non_empty()[:PRIOR_SAMPLE_BUCKETS]
        where = f"training data, coordinate '{name}', prior sample"
        frame = pd.concat([t.buckets[name].read(b) for b in buckets], ignore_index=True)
        rows = frame[ROW].to_numpy()
        roles = extract_roles(frame, self.config.data, where, need_label=True, need_uid=False)
        coord = RandomEffect(cc)
        coord.n_threads = self.config.training.n_threads
        coord.build(frame, features=self.indexes[name], key_kind=self.key_kinds[name])
        if name in self.estimates:
            coord.estimated_params = dict(self.estimates[name])
        design = coord.design(frame, where, training=True)
        assert roles.y is not None
        offset = roles.offset + t.others_at(name, rows)
        diag = fit_with_estimated_prior(coord, design, roles.y, roles.weight, offset,
                                        self.params[name])  # fmt: skip
        estimate = dict(coord.params)
        self.estimates[name] = estimate
        prior = dict(diag.get("prior") or {})
        prior["sample"] = {"buckets": len(buckets), "of": len(t.buckets[name].non_empty()),
                           "entities": int(coord.trainable.sum()), "rows": len(frame)}  # fmt: skip
        logger.info("  %s: prior estimated on %d of %d buckets (%d entities): %s", name,
                    len(buckets), prior["sample"]["of"], prior["sample"]["entities"],
                    estimate)  # fmt: skip
        return estimate, prior

    def _tables(self) -> list[_Table]:
        assert self.train is not None
        return [self.train] + ([self.validation] if self.validation is not None else [])

    # -- metrics ------------------------------------------------------------
    def _validation_metrics(self) -> dict[str, float] | None:
        v = self.validation
        if v is None:
            return None
        if not hasattr(self, "_val_eval"):
            y, w, o = v.chunks.roles()
            tc = self.config
            self._val_eval = TaskEvaluator(y, w, tc.task, tc.training.metric)
            self._val_offset = o
        return self._val_eval.evaluate(self._val_offset + v.total(0, v.n_rows))

    def _train_pass(self) -> tuple[float, float]:
        """``(weighted log loss sum, total weight)`` of the training table, chunk by chunk."""
        t = self.train
        assert t is not None
        loss, weight = 0.0, 0.0
        for c in t.chunks.chunks():
            assert c.y is not None
            z = c.offset + t.total(c.start, c.stop)
            loss += loss_sum(self.config.task, c.y, z, c.weight)
            weight += float(c.weight.sum())
        return loss, weight

    def _train_metrics(self) -> dict[str, float | None]:
        task = self.config.task
        t = self.train
        assert t is not None
        setting = self.config.training.train_metrics
        small = t.n_rows <= AUTO_TRAIN_METRICS_MAX_ROWS
        if setting == "always" or (setting == "auto" and small):
            y, w, o = t.chunks.roles()
            return TaskEvaluator(y, w, task).evaluate(o + t.total(0, t.n_rows))
        loss, weight = self._train_pass()
        if task != "logistic":
            return {"mean_loss": loss / max(weight, 1e-300)}
        return {"auc": None, "log_loss": loss / max(weight, 1e-300)}

    # -- the passes ---------------------------------------------------------
    def run(self) -> GDMixModel:
        tc = self.config.training
        metric = tc.metric
        best_goodness, best_pass = -math.inf, 0
        best_fixed: dict[str, tuple[np.ndarray, float]] = {}
        objective = math.inf
        stopped: dict[str, Any] = {"reason": "n_passes", "pass": tc.n_passes}
        announce_compilation()
        pass_no = 0
        for pass_no in range(1, tc.n_passes + 1):
            for cc in self.config.coordinates:
                start = time.perf_counter()
                if cc.name in self.fixed:
                    diag = self._fit_fixed(self.fixed[cc.name], pass_no)
                else:
                    diag = self._fit_random(cc.name, pass_no)
                seconds = time.perf_counter() - start
                self.seconds["solve"] += seconds
                used = self.used_params.get((cc.name, pass_no), self.params[cc.name])
                record = new_record(pass_no, _Named(cc.name, _kind(cc)), used)
                # after the pass's last update, m is the end-of-pass metrics used below
                m = self._validation_metrics()
                if m is not None:
                    record.update({f"validation_{k}": v for k, v in m.items()})
                record.update(seconds=seconds, **diag)
                finish_record(record)
                self.history.append(record)
                for cb in self.callbacks:
                    cb(record)
            if m is None:
                loss, _ = self._train_pass()
                previous, objective = objective, loss + sum(self.penalties.values())
                best_pass = pass_no
                change = abs(previous - objective) / max(abs(objective), 1e-300)
                self.history[-1]["objective_change"] = None if math.isinf(change) else change
                if pass_no < tc.n_passes and change < tc.tol:
                    stopped = {"reason": "tol", "pass": pass_no, "objective_change": change}
                    break
                continue
            goodness = metric_goodness(m, metric)
            if goodness > best_goodness + tc.min_delta:
                best_goodness, best_pass = goodness, pass_no
                best_fixed = {n: (fe.coef.copy(), fe.intercept) for n, fe in self.fixed.items()}
            elif tc.early_stopping:
                logger.info("pass %d did not improve validation %s; stopping", pass_no, metric)
                stopped = {"reason": "early_stopping", "pass": pass_no}
                break
        for n, (coef, intercept) in best_fixed.items():
            fe = self.fixed[n]
            fe.coef, fe.intercept = coef, intercept
        return self._model(best_pass, stopped)

    def _model(self, best_pass: int, stopped: dict[str, Any]) -> GDMixModel:
        metrics: dict[str, Any] = {"train": self._train_metrics()}
        val = self._validation_metrics()
        for table in self._tables():  # the per-row scores are not needed any more
            table.scores = {}
        coords: list[Any] = []
        for cc in self.config.coordinates:
            if cc.name in self.fixed:
                coords.append(self.fixed[cc.name])
                continue
            folder = self.work / "model" / cc.name
            folder.mkdir(parents=True)
            (folder / "features.json").write_text(_json(self.indexes[cc.name].to_dict()))
            shutil.move(str(self.parts[(cc.name, best_pass)]), folder / "coefficients.parquet")
            used = self.used_params.get((cc.name, best_pass), self.params[cc.name])
            coord = RandomEffect.load(folder, cc, used)
            coord.train_coverage = self.coverage.get(cc.name)
            coords.append(coord)
        if val is not None:
            metrics["validation"] = val
            metrics["best_pass"] = best_pass
        metrics["params"] = {c.name: c.params for c in coords}
        metrics["stopped"] = stopped
        assert self.train is not None
        metrics["streaming"] = {
            "n_rows": self.train.n_rows,
            "n_buckets": dict(self.n_buckets),
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
        }
        return GDMixModel(
            coords,
            self.config.data,
            metrics=metrics,
            history=self.history,
            column_kinds=self.column_kinds,
        )


@dataclass
class _Named:
    """What :func:`gdmix.history.new_record` reads of a coordinate."""

    name: str
    kind: str


def _kind(cc: Any) -> str:
    return "fixed" if isinstance(cc, FixedEffectConfig) else "random"


def _json(value: Any) -> str:
    import json

    return json.dumps(value)


def _warm_start(coord: RandomEffect, part: Path) -> None:
    """Start from the coefficients a previous pass wrote for this bucket."""
    assert coord.features is not None
    arrays = read_coefficients(
        part, coord.features.n_features, default_variance=coord._default_variance()
    )
    codes = coord._codes(pd.Index(arrays.entity_ids))
    ok = codes >= 0
    coord.intercept[codes[ok]] = arrays.intercept[ok]
    if isinstance(coord.coef, np.ndarray) and isinstance(arrays.coef, np.ndarray):
        coord.coef[codes[ok]] = arrays.coef[ok]


def fit_streaming(
    config: GDMixConfig,
    train: Any = None,
    validation: Any = None,
    *,
    callbacks: list[Callable] | None = None,
) -> GDMixModel:
    """Train a model from Parquet files larger than memory.

    Parameters
    ----------
    config : GDMixConfig
        The job; ``training.streaming`` holds the engine's settings. Coordinates must be
        linear fixed effects and random effects with one ``l2`` value each (no search
        grid, ``l2: auto``, ``init_model``/``locked``, cohort or incremental mode).
    train, validation : path or list of paths, optional
        Parquet files or folders; default to ``config.data.train`` and
        ``config.data.validation``. Validation drives early stopping as in memory.
    callbacks : list of callables, optional
        Called with every history record.

    Returns
    -------
    GDMixModel
        The model after the best pass (on validation) or the last pass; its
        ``metrics["streaming"]`` gives the layout and step times. Training-set AUC is
        computed only when ``training.train_metrics`` asks for it (``auto``: tables of
        at most 1,000,000 rows); the training log loss always.

    Raises
    ------
    ConfigError
        When the config asks for what the engine does not support.
    DataError
        On bad data, before any solve.
    """
    _check_supported(config)
    if train is None:
        if config.data.train is None:
            raise ConfigError("no training data: pass 'train' or set 'data.train' in the config")
        train = config.data.train
    if validation is None:
        validation = config.data.validation
    work_dir = config.training.streaming.work_dir
    temporary = work_dir is None
    work = Path(tempfile.mkdtemp(prefix="gdmix-streaming-")) if temporary else Path(work_dir)
    try:
        work = fresh_work_folder(work)
        job = _StreamingJob(config, work, list(callbacks or []))
        start = time.perf_counter()
        job.train = job.layout(train, "training data", training=True)
        if validation is not None:
            job.validation = job.layout(validation, "validation data", training=False)
        job.seconds["layout"] = time.perf_counter() - start
        logger.info(
            "streaming: laid out %d training rows (%s) in %.1fs",
            job.train.n_rows,
            ", ".join(f"{k}: {v} buckets" for k, v in job.n_buckets.items()) or "no buckets",
            job.seconds["layout"],
        )
        model = job.run()
    finally:
        if temporary:
            shutil.rmtree(work, ignore_errors=True)
    if not temporary:  # the scratch files are not needed once the model is in memory
        for child in work.iterdir():
            if child.is_dir():
                shutil.rmtree(child, ignore_errors=True)
    model.lineage = {
        "mode": "train",
        "engine": "streaming",
        "data": {"train": {"rows": job.train.n_rows, "path": str(train)}},
        "generation": 0,
        "seconds": time.perf_counter() - start,
    }
    if job.validation is not None:
        model.lineage["data"]["validation"] = {
            "rows": job.validation.n_rows,
            "path": str(validation),
        }
    return model
