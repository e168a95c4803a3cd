"""A trained GDMix model: scoring, evaluation, saving and loading.

Model directory layout (format version 1, see :mod:`gdmix.model_dir`)::

    model_dir/
      manifest.json                    format, version, column roles, coordinates, metrics
      coordinates/<name>/features.json feature index map of the coordinate
      coordinates/<name>/coefficients.parquet

Fixed effects store one row per feature (``feature``, ``coefficient``, intercept
first); random effects one row per entity (``entity_id``, ``n_rows``, ``intercept``,
``indices``, ``values``, and with variances ``intercept_variance``, ``variances``; a
streamed model's table is a folder of Parquet parts). A GBDT coordinate's folder holds
``model.txt`` (LightGBM) and ``gbdt.json``; a deep one its architecture and
``state_dict``. Saving is atomic and never deletes what gdmix did not write; loading
keeps every path inside the folder and imports no code a manifest names unless the
caller trusts it (see :mod:`gdmix.model_dir`).
"""

from __future__ import annotations

import importlib
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import TypeAdapter, ValidationError

from gdmix.config import CoordinateConfig, DataConfig
from gdmix.data.column_kinds import check_column_kinds
from gdmix.data.io import TableLike, read_table
from gdmix.data.matrices import FeatureMatrix, MatrixInput, feature_matrices
from gdmix.data.roles import extract_roles
from gdmix.data.scan import DEFAULT_BATCH_ROWS, ParquetBatches, parquet_batches
from gdmix.effects.base import Coordinate
from gdmix.effects.fixed_linear import FixedLinearEffect
from gdmix.effects.random_effect import RandomEffect
from gdmix.errors import ConfigError, DataError, ModelDirectoryError
from gdmix.losses import inverse_link
from gdmix.model_dir import (
    FORMAT_VERSION,
    coordinate_folder,
    locate_model,
    read_manifest,
    write_manifest_file,
    write_model_directory,
)
from gdmix.task_metrics import TaskEvaluator, task_evaluate
from gdmix.tasks import default_metric

__all__ = [
    "FORMAT_VERSION",
    "GDMixModel",
    "coordinate_class",
    "load_saved_coordinate",
    "make_coordinate",
    "model_path",
    "write_manifest",
    "write_model_directory",
]

logger = logging.getLogger("gdmix")

_COORD_ADAPTER: TypeAdapter[Any] = TypeAdapter(CoordinateConfig)
# Coordinate types whose implementation needs optional dependencies are imported on use.
_LAZY_TYPES = {
    "deep": ("gdmix.deep.fixed_torch", "TorchFixedEffect", "torch"),
    "gbdt": ("gdmix.deep.fixed_gbdt", "GBDTFixedEffect", "lightgbm"),
}
#: Scoring warns when a random effect knows the entities of fewer rows than this share
#: of the share it knew in training.
COVERAGE_WARNING_RATIO = 0.5
#: Settings that change what a saved coordinate computes: a locked or warm-started
#: coordinate's config must agree with the saved one on these.
_SCORING_FIELDS = ("type", "entity", "features", "intercept", "architecture", "text",
                   "hash_buckets")  # fmt: skip


def coordinate_class(kind: str) -> type[Coordinate]:
    """The class implementing coordinate type ``kind`` (fixed, random, deep, gbdt)."""
    if kind == "fixed":
        return FixedLinearEffect
    if kind == "random":
        return RandomEffect
    module_name, class_name, package = _LAZY_TYPES[kind]
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        if err.name != package:
            raise
        raise ConfigError(
            f"coordinate type '{kind}' needs the '{package}' package: install gdmix[deep]"
        ) from None
    return getattr(module, class_name)


def make_coordinate(config: Any) -> Coordinate:
    """Create the (unfitted) coordinate object for a coordinate config."""
    return coordinate_class(config.type)(config)


def _custom_module(config: Any) -> str | None:
    """The importable class a coordinate config names (custom deep architectures)."""
    arch = getattr(config, "architecture", None)
    return arch.module if getattr(arch, "kind", None) == "custom" else None


class GDMixModel:
    """A generalized (deep) mixed model: ``logit = offset + sum of coordinate scores``.

    Parameters
    ----------
    coordinates : list of Coordinate
        Fitted coordinates, in training order.
    data : DataConfig
        Column roles (label, weight, offset, uid) the model was trained with.
    metrics : dict, optional
        Final metrics, saved in the manifest.
    history : list of dict, optional
        Training history (one record per coordinate update), saved in the manifest.
    column_kinds : dict of str to str, optional
        Kind of every feature column in the training data (see
        :mod:`gdmix.data.column_kinds`); tables scored later must match.
    lineage : dict, optional
        Where the model comes from (parent version, mode, data, metrics before and
        after: see :func:`gdmix.refresh.refresh`), saved in the manifest.
    """

    def __init__(
        self,
        coordinates: list[Coordinate],
        data: DataConfig,
        *,
        metrics: dict[str, Any] | None = None,
        history: list[dict[str, Any]] | None = None,
        column_kinds: dict[str, str] | None = None,
        lineage: dict[str, Any] | None = None,
    ) -> None:
        self.coordinates = list(coordinates)
        self.data = data
        self.metrics = dict(metrics or {})
        self.history = list(history or [])
        self.column_kinds = dict(column_kinds or {})
        self.lineage = dict(lineage or {})
        #: Folder the model was loaded from (None for a model trained in this process).
        self.path: Path | None = None

    def __getitem__(self, name: str) -> Coordinate:
        for c in self.coordinates:
            if c.name == name:
                return c
        raise KeyError(f"no coordinate named '{name}' (have {[c.name for c in self.coordinates]})")

    def __repr__(self) -> str:
        parts = ", ".join(f"{c.name}:{c.kind}" for c in self.coordinates)
        return f"GDMixModel([{parts}])"

    # -- scoring -------------------------------------------------------------
    def input_columns(self) -> list[str]:
        """Columns scoring reads: every coordinate's columns and the offset column."""
        cols = [col for c in self.coordinates for col in c.columns()]
        if self.data.offset is not None:
            cols.append(self.data.offset)
        return list(dict.fromkeys(cols))

    def _read(
        self, data: TableLike, extra: list[str], optional: list[str], where: str
    ) -> pd.DataFrame:
        frame = read_table(
            data, columns=list(dict.fromkeys([*self.input_columns(), *extra])), optional=optional
        )
        self.check_columns(frame, where)
        return frame

    def check_columns(self, frame: pd.DataFrame, where: str) -> None:
        """Raise :class:`DataError` when a feature column's kind (numbers, strings,
        booleans, nested) differs from the training table's."""
        numeric = {col for c in self.coordinates for col in c.config.features.numeric}
        check_column_kinds(self.column_kinds, frame, where, numeric=numeric)

    def _matrices(
        self,
        frame: pd.DataFrame,
        features: dict[str, MatrixInput] | None,
        feature_names: dict[str, list[str]] | None,
        where: str,
    ) -> dict[str, FeatureMatrix]:
        """The feature matrices given for ``frame``, checked (see :mod:`gdmix.data.matrices`)."""
        names = [c.name for c in self.coordinates]
        return feature_matrices(features, feature_names, len(frame), where, coordinates=names)

    def _score_frame(
        self,
        frame: pd.DataFrame,
        where: str,
        *,
        warn: bool = True,
        matrices: dict[str, FeatureMatrix] | None = None,
    ) -> tuple[pd.DataFrame, dict[str, float]]:
        """Scores of one table (or batch) and each random effect's coverage of it.

        Designs go through the coordinates' own encoding (dense blocks read in place
        for numeric shards, CSR otherwise, with the coordinate's feature matrix from
        ``matrices`` when it has one); each design is dropped once scored.
        """
        roles = extract_roles(
            frame, self.data, where, need_label=False, need_weight=False, need_uid=False
        )
        out: dict[str, Any] = {}
        if roles.uid is not None:
            out[self.data.uid] = roles.uid.to_numpy()
        total = roles.offset.copy()
        coverage: dict[str, float] = {}
        matrices = matrices or {}
        for c in self.coordinates:
            given = {"matrix": matrices[c.name]} if c.name in matrices else {}
            design = c.design(frame, where, **given)
            s = c.score(design)
            out[c.name] = s
            total += s
            if isinstance(c, RandomEffect):
                coverage[c.name] = c.coverage(design)
                if warn:
                    _warn_coverage(c, coverage[c.name], where)
            del design
        if self.data.offset is not None:
            out["offset"] = roles.offset
        out["total"] = total
        return pd.DataFrame(out), coverage

    def _score_batches(self, batches: ParquetBatches, where: str) -> pd.DataFrame:
        """Scores of a Parquet table read a batch at a time, assembled in preallocated
        columns; coverage warnings once, over the whole table."""
        columns: dict[str, Any] = {}
        uid_parts: list[pd.Series] = []
        covered: dict[str, float] = {}
        done = 0
        for frame in batches:
            self.check_columns(frame, where)
            part, coverage = self._score_frame(frame, where, warn=False)
            rows = len(part)
            for name in part.columns:
                if name == self.data.uid:
                    uid_parts.append(part[name])
                    continue
                if name not in columns:
                    columns[name] = np.empty(batches.n_rows)
                columns[name][done : done + rows] = part[name].to_numpy()
            for name, share in coverage.items():
                covered[name] = covered.get(name, 0.0) + share * rows
            done += rows
        if done != batches.n_rows:
            raise DataError(f"{batches.path}: read {done} rows, its metadata says {batches.n_rows}")
        for c in self.coordinates:
            if isinstance(c, RandomEffect) and c.name in covered:
                _warn_coverage(c, covered[c.name] / max(done, 1), where)
        out: dict[str, Any] = {}
        if uid_parts:
            out[self.data.uid] = pd.concat(uid_parts, ignore_index=True)
        out.update(columns)
        return pd.DataFrame(out)

    def score(
        self,
        data: TableLike,
        *,
        features: dict[str, MatrixInput] | None = None,
        feature_names: dict[str, list[str]] | None = None,
        where: str = "scoring data",
        batch_rows: int = DEFAULT_BATCH_ROWS,
    ) -> pd.DataFrame:
        """Per-coordinate scores and their total (the logit) for every row.

        Parameters
        ----------
        data : DataFrame, pyarrow Table or path
            Table with the columns the coordinates read and (if configured) the offset
            column. Label, weight and uid columns are not needed; the uid is copied to
            the output when present. A Parquet file or folder is read and scored about
            ``batch_rows`` rows at a time, so it may be larger than memory (only the
            scores are kept), unless feature matrices come with it.
        features : dict of str to matrix, optional
            The feature matrix of every coordinate trained on one (see
            :func:`gdmix.fit`), one row per row of ``data``.
        feature_names : dict of str to list of str, optional
            Their column names, when not a DataFrame's: they must be the names the model
            was trained on (in any order); without names, the columns must be the
            model's in its order.
        where : str
            Name of the table in messages.
        batch_rows : int
            Rows per batch when reading Parquet.

        Returns
        -------
        DataFrame
            The uid column (if configured and present), one column per coordinate,
            ``offset`` when an offset column is configured, and ``total`` = offset +
            every coordinate. Entities unseen in training contribute 0; a warning is
            logged when a random effect knows far fewer of the rows' entities than it
            did in training (ids of another type, another column...).
        """
        uid = [self.data.uid] if self.data.uid is not None else []
        columns = list(dict.fromkeys([*self.input_columns(), *uid]))
        if features is None:
            batches = parquet_batches(data, columns, optional=uid, batch_rows=batch_rows)
            if batches is not None:  # Parquet: a batch in memory at a time
                return self._score_batches(batches, where)
        frame = self._read(data, uid, optional=uid, where=where)
        matrices = self._matrices(frame, features, feature_names, where)
        return self._score_frame(frame, where, matrices=matrices)[0]

    def predict_proba(
        self,
        data: TableLike,
        *,
        features: dict[str, MatrixInput] | None = None,
        feature_names: dict[str, list[str]] | None = None,
    ) -> np.ndarray:
        """Probability of the positive class for every row: ``sigmoid(total)`` (the
        arguments are :meth:`score`'s). Logistic models only (see :meth:`predict`)."""
        if self.task != "logistic":
            raise ValueError(
                f"a {self.task} model predicts means, not probabilities: use model.predict"
            )
        return self.predict(data, features=features, feature_names=feature_names)

    def predict(
        self,
        data: TableLike,
        *,
        features: dict[str, MatrixInput] | None = None,
        feature_names: dict[str, list[str]] | None = None,
    ) -> np.ndarray:
        """The mean the model predicts for every row: a probability (logistic), the
        total itself (linear) or the rate ``exp(total)`` (Poisson). The arguments are
        :meth:`score`'s."""
        scores = self.score(data, features=features, feature_names=feature_names)
        return inverse_link(self.task, scores["total"].to_numpy())

    @property
    def task(self) -> str:
        """The model's task: ``logistic``, ``linear`` or ``poisson``."""
        return self.data.task

    # -- inspection ------------------------------------------------------------
    def summary(self, *, as_dict: bool = False, top: int = 10) -> str | dict[str, Any]:
        """One screen of text (or, with ``as_dict``, a JSON-ready dict) about the model:
        provenance, metrics, every coordinate's size and hyper-parameters, the training
        history pass by pass, the fixed effect's largest coefficients and, per random
        effect, the spread of its intercepts and coefficients and their shrinkage
        (see :mod:`gdmix.summary`)."""
        from gdmix.summary import model_summary, render_summary

        info = model_summary(self, top=top)
        return info if as_dict else render_summary(info)

    def coefficient_table(self, name: str) -> pd.DataFrame:
        """A linear coordinate's coefficients with feature names.

        A fixed effect gives ``feature``, ``coefficient`` (the intercept first). A random
        effect gives one row per entity with a model: ``entity_id``, ``n_rows``,
        ``intercept`` and one column per feature (a wide sparse shard: one row per stored
        coefficient, ``entity_id``, ``feature``, ``coefficient``).

        Raises
        ------
        KeyError
            When the model has no coordinate ``name``.
        TypeError
            When the coordinate is not linear (deep, GBDT).
        """
        coord = self[name]
        if coord.kind == "fixed":
            return coord.coefficient_table()  # type: ignore[attr-defined]
        if coord.kind == "random":
            from gdmix.summary import random_effect_table

            return random_effect_table(coord)
        raise TypeError(f"coordinate '{name}' is a {coord.kind} effect: it has no coefficients")

    def evaluate(
        self,
        data: TableLike,
        *,
        features: dict[str, MatrixInput] | None = None,
        feature_names: dict[str, list[str]] | None = None,
        group_by: list[str] | None = None,
        where: str = "evaluation data",
        k: int = 10,
    ) -> dict[str, float]:
        """The task's metrics and, per random effect, the share of rows whose entity it
        knows (``coverage@name``).

        Logistic models: AUC, log loss, AUPR, RMSE of the probabilities, and per
        ``group_by`` column the per-entity AUC (``auc@col``) and precision at ``k``
        (``precision@k@col``). Linear models: RMSE. Poisson models: mean Poisson
        deviance and RMSE. The task's first metric is also reported after each
        coordinate is added, as ``<metric>_after@<coordinate>``, in training order. The
        weight column is used when the table holds it. ``features`` and
        ``feature_names`` are :meth:`score`'s.
        """
        group_by = list(group_by or [])
        optional = [c for c in (self.data.weight,) if c is not None]
        frame = self._read(
            data, [self.data.label, *optional, *group_by], optional=optional, where=where
        )
        roles = extract_roles(
            frame, self.data, where, need_label=True, need_weight=False, need_uid=False
        )
        assert roles.y is not None
        matrices = self._matrices(frame, features, feature_names, where)
        scores, coverage = self._score_frame(frame, where, matrices=matrices)
        groups = {}
        for col in group_by:
            if col not in frame.columns:
                raise DataError(f"{where}: group-by column '{col}' does not exist")
            groups[col] = frame[col].to_numpy()
        result = task_evaluate(self.task, roles.y, scores["total"].to_numpy(),
                               sample_weight=roles.weight, groups=groups, k=k)  # fmt: skip
        first = default_metric(self.task)
        after = TaskEvaluator(roles.y, roles.weight, self.task, first)
        running = roles.offset.copy()
        for c in self.coordinates:
            running = running + scores[c.name].to_numpy()
            result[f"{first}_after@{c.name}"] = after.evaluate(running)[first]
        for name, share in coverage.items():
            result[f"coverage@{name}"] = share
        return result

    # -- persistence ---------------------------------------------------------
    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write the model directory atomically (see :mod:`gdmix.model_dir`).

        Parameters
        ----------
        path : path
            The model directory: new, empty, or holding a gdmix model and nothing else.
        overwrite : bool
            Also replace a model directory that holds files gdmix did not write.

        Raises
        ------
        OutputError
            When ``path`` is not usable or writing fails; the model previously at
            ``path`` (if any) is then untouched.
        """

        return write_model_directory(path, self.write_into, overwrite=overwrite)

    def write_into(self, folder: Path) -> None:
        """Write the model's files into the empty folder ``folder`` (not atomic: use
        :meth:`save`, or a :class:`gdmix.store.ModelStore`, which call this).

        A coordinate kept frozen from another model (a locked coordinate) is hard-linked
        from that model's folder instead of being written again, where the file system
        allows.
        """
        for c in self.coordinates:
            target = folder / "coordinates" / c.name
            source = getattr(c, "frozen_source", None)
            if source is not None and Path(source).is_dir():
                link_tree(Path(source), target)
            else:
                c.save(target)
        write_manifest(
            folder,
            self.data,
            self.coordinates,
            self.metrics,
            self.history,
            self.column_kinds,
            self.lineage,
        )

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        trust_custom_code: bool = False,
        coordinates: list[str] | None = None,
    ) -> GDMixModel:
        """Read a model directory written by :meth:`save`.

        Parameters
        ----------
        path : path
            The model directory, or a model store (its current version).
        trust_custom_code : bool
            Allow a deep coordinate to import the custom ``torch.nn.Module`` its manifest
            names. Off by default: a model folder from elsewhere must not run code.
        coordinates : list of str, optional
            Load only these coordinates.

        Raises
        ------
        ModelDirectoryError
            When ``path`` is not a gdmix model directory, is incomplete or malformed,
            points outside itself, holds NaN coefficients, or names custom code that is
            not trusted.
        """
        path = model_path(path)
        manifest = read_manifest(path)
        try:
            data = DataConfig.model_validate(manifest["data"])
        except ValidationError as err:
            raise ModelDirectoryError(f"{path}/manifest.json: bad 'data' ({err})") from None
        coords = []
        for entry in manifest["coordinates"]:
            if coordinates is not None and entry["name"] not in coordinates:
                continue
            try:
                config = _COORD_ADAPTER.validate_python(entry["config"])
            except ValidationError as err:
                first = err.errors()[0]
                loc = ".".join(str(p) for p in first["loc"])
                raise ModelDirectoryError(
                    f"{path}/manifest.json: coordinate '{entry['name']}' has a bad config "
                    f"('{loc}': {first['msg']})"
                ) from None
            module = _custom_module(config)
            if module is not None and not trust_custom_code:
                raise ModelDirectoryError(
                    f"{path}: coordinate '{config.name}' runs custom code ({module}); load it "
                    "only if you trust this folder, with trust_custom_code=True "
                    "(--trust-custom-code)"
                )
            folder = coordinate_folder(path, config.name)
            coord = coordinate_class(config.type).load(folder, config, entry["params"])
            coord.restore_stats(entry.get("stats") or {})
            coords.append(coord)
        kinds = manifest.get("columns") or {}
        if not isinstance(kinds, dict) or not all(isinstance(v, str) for v in kinds.values()):
            raise ModelDirectoryError(f"{path}/manifest.json: 'columns' must map names to kinds")
        lineage = manifest.get("lineage") or {}
        if not isinstance(lineage, dict):
            raise ModelDirectoryError(f"{path}/manifest.json: 'lineage' must be an object")
        model = cls(
            coords,
            data,
            metrics=manifest.get("metrics"),
            history=manifest.get("history"),
            column_kinds=kinds,
            lineage=lineage,
        )
        model.path = path
        return model


def model_path(path: str | os.PathLike[str]) -> Path:
    """The real folder of the model at ``path``: a model directory, or a model store's
    current version; symbolic links resolved, so that a ``current`` pointer switched
    while the model is being read changes nothing."""
    from gdmix.store import ModelStore, is_store

    if is_store(path):
        path = ModelStore(path).path("current")
    return locate_model(path).resolve()


def _warn_coverage(coord: RandomEffect, share: float, where: str) -> None:
    trained = coord.train_coverage
    if not trained or share >= COVERAGE_WARNING_RATIO * trained:
        return
    sample = coord.entity_ids[:3].tolist()
    logger.warning(
        "%s: random effect '%s' knows the '%s' of %.1f%% of the rows (%.1f%% in training); "
        "the other rows get 0 from it. Check that the column holds the same ids as in "
        "training (%s ids such as %s)",
        where, coord.name, coord.config.entity, 100 * share, 100 * trained,
        "integer" if coord.key_kind == "int" else "string", sample,
    )  # fmt: skip


def coordinate_entry(coordinate: Coordinate) -> dict[str, Any]:
    """Manifest entry of one coordinate."""
    return {
        "name": coordinate.name,
        "path": f"coordinates/{coordinate.name}",
        "params": coordinate.params,
        "config": coordinate.config.model_dump(mode="json"),
        "stats": coordinate.stats(),
    }


def write_manifest(
    folder: Path,
    data: DataConfig,
    coordinates: list[Coordinate],
    metrics: dict[str, Any],
    history: list[dict[str, Any]],
    column_kinds: dict[str, str] | None = None,
    lineage: dict[str, Any] | None = None,
) -> None:
    """Write ``manifest.json`` of a model directory."""
    write_manifest_file(
        folder,
        {
            "data": data.model_dump(mode="json"),
            "coordinates": [coordinate_entry(c) for c in coordinates],
            "metrics": metrics,
            "history": history,
            "columns": column_kinds or {},
            "lineage": lineage or {},
        },
    )


def link_tree(source: Path, target: Path) -> None:
    """Recreate the folder ``source`` at ``target`` with hard links (copies where the file
    system cannot link, e.g. across devices)."""
    for entry in sorted(source.rglob("*")):
        dest = target / entry.relative_to(source)
        if entry.is_dir():
            dest.mkdir(parents=True, exist_ok=True)
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(entry, dest)
        except OSError:
            shutil.copy2(entry, dest)


def _differences(config: Any, saved: Any) -> list[str]:
    out = []
    for key in _SCORING_FIELDS:
        if not hasattr(config, key) and not hasattr(saved, key):
            continue
        mine = getattr(config, key, None)
        theirs = getattr(saved, key, None)
        dump = lambda v: v.model_dump(mode="json") if hasattr(v, "model_dump") else v  # noqa: E731
        if dump(mine) != dump(theirs):
            out.append(f"'{key}' is {dump(mine)!r} here but {dump(theirs)!r} in the saved model")
    return out


def load_saved_coordinate(config: Any, *, trust_custom_code: bool = False) -> Coordinate:
    """The coordinate of the same name in ``config.init_model`` (locked, or a warm start).

    The config must agree with the saved coordinate's on everything that changes what it
    computes (type, entity column, features, intercept, architecture): a mismatch is an
    error showing both values, never a silent swap. A custom architecture is imported
    only when ``config`` names the same module (the config's author vouches for it) or
    ``trust_custom_code`` is set.

    Raises
    ------
    ConfigError
        When the model lacks the coordinate or the configs disagree.
    """
    path = model_path(config.init_model)
    manifest = read_manifest(path)
    entry = next((e for e in manifest["coordinates"] if e["name"] == config.name), None)
    if entry is None:
        names = [e["name"] for e in manifest["coordinates"]]
        raise ConfigError(
            f"coordinate '{config.name}' loads from {path}, which has no coordinate of that "
            f"name (it has {names})"
        )
    try:
        saved = _COORD_ADAPTER.validate_python(entry["config"])
    except ValidationError as err:
        raise ModelDirectoryError(
            f"{path}/manifest.json: bad config of '{config.name}' ({err})"
        ) from None
    diffs = _differences(config, saved)
    if diffs:
        raise ConfigError(
            f"coordinate '{config.name}' loads from {path}, but its config disagrees with the "
            f"saved one: {'; '.join(diffs)}. Make them equal"
        )
    module = _custom_module(saved)
    trusted = trust_custom_code or (module is not None and module == _custom_module(config))
    model = GDMixModel.load(path, trust_custom_code=trusted, coordinates=[config.name])
    coord = model[config.name]
    assert model.path is not None
    coord.frozen_source = model.path / "coordinates" / config.name
    return coord
