"""Typed configuration of a gdmix training job.

One schema per setting, one name, one default, checked once. Unknown keys are
rejected everywhere (``extra="forbid"``). The command line reads the same schema
from YAML with :func:`load_config`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from gdmix.config_base import (
    CoordinateBase,
    FeatureConfig,
    L2Value,
    StrictModel,
    sorted_grid,
    validate_penalty,
)
from gdmix.config_deep import DeepFixedEffectConfig, GBDTFixedEffectConfig
from gdmix.data.dated import DateRange, DaysAgo, dated_path, parse_dated_path
from gdmix.errors import ConfigError
from gdmix.tasks import METRICS, Task, default_metric

__all__ = [
    "CoordinateConfig",
    "DaskConfig",
    "DataConfig",
    "FeatureConfig",
    "FixedEffectConfig",
    "GDMixConfig",
    "RandomEffectConfig",
    "StreamingConfig",
    "StrictYAMLLoader",
    "TrainingConfig",
    "coordinate_columns",
    "format_validation_error",
    "load_config",
    "model_output",
    "with_overrides",
]


class FixedEffectConfig(CoordinateBase):
    """A global logistic regression (the fixed effect).

    The optimiser works on the objective divided by the total row weight, in scaled
    variables (each coefficient times its column's scale; columns centred when the
    intercept is free; see :mod:`gdmix.solvers.lbfgs`). It stops at the first of its
    rules that holds, and the training history records which one (``stop``):
    ``tol``, ``objective_tol`` (both count as converged), ``max_iter``, ``no_progress``
    or ``diverged`` (no optimum: separable data with ``l2: 0``, or one label only).

    Attributes
    ----------
    l2 : float or list of float
        L2 penalty ``l2/2 * ||w||^2`` (the intercept is not penalised). A list is a
        search grid (see :class:`TrainingConfig`), fitted strongest penalty first, each
        fit warm-started from the previous one's solution.
    intercept : bool
        Fit an unpenalised intercept.
    solver : {"auto", "newton", "tron", "lbfgs"}
        ``newton``: Newton's method with the full Hessian, for few columns (at most a
        few hundred); ``tron``: trust-region Newton with conjugate gradients on
        Hessian-vector products, for wide designs; ``lbfgs``: L-BFGS (scipy). ``auto``
        takes ``newton`` when the design has at most 256 columns and a full Hessian
        costs at most a few passes over the data, and ``tron`` otherwise.
    max_iter : int
        Iteration limit of the method (Newton steps, or L-BFGS iterations).
    tol : float
        Stop when the largest gradient entry (objective divided by the total weight,
        scaled variables) is at most ``tol``. 0 turns the rule off.
    objective_tol : float
        Stop when a Newton step predicts a relative decrease of the objective of at
        most ``objective_tol``: near the optimum, that is the relative gap to the optimal
        value (``newton`` and ``tron``). For ``lbfgs``: when the last iteration decreased
        the objective (divided by the total weight) by at most ``objective_tol``, relative
        to ``max(|f|, 1)``. 0 turns the rule off.
    l1 : float
        L1 penalty ``l1 * ||w||_1`` (the intercept is not penalised): with ``l2``, the
        elastic net. Some coefficients are then exactly 0. Solved by OWL-QN (L-BFGS
        restricted to orthants, :mod:`gdmix.solvers.owlqn`) whatever ``solver`` says, on
        every engine. Random effects take ``l2`` only.
    locked : bool
        Load the coordinate from ``init_model`` and score it, never train it.
    """

    type: Literal["fixed"] = "fixed"
    l1: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    solver: Literal["auto", "newton", "tron", "lbfgs"] = "auto"
    max_iter: int = Field(default=500, ge=1)
    tol: float = Field(default=1e-10, ge=0, allow_inf_nan=False)
    objective_tol: float = Field(default=1e-12, ge=0, lt=1, allow_inf_nan=False)


class RandomEffectConfig(CoordinateBase):
    """Per-entity L2 logistic regressions keyed by an entity column.

    Attributes
    ----------
    entity : str
        Column holding the entity id (user id, item id...).
    l2 : float, list of float, or "auto"
        Prior precision of every per-entity coefficient. ``auto`` estimates it from the
        data (the inverse of the slopes' prior variance, by maximising the Laplace
        approximation of the marginal likelihood; see
        :mod:`gdmix.effects.prior_estimation`): no validation data or grid needed.
    prior : {"shared", "per_feature"}
        With ``l2: auto``: one prior variance for all slopes, or one per feature.
    intercept : bool
        Fit a per-entity intercept.
    intercept_l2 : float, list of float, "auto", or None
        Prior precision of the per-entity intercept. ``None`` (default) uses ``l2``
        (estimated on its own when ``l2`` is ``auto``):
        a random intercept is a random effect too, and an unpenalised one diverges
        for entities whose labels are all equal. Set 0 to leave it unpenalised. A list
        is searched jointly with ``l2``.
    min_rows : int
        Active-data lower bound: entities with fewer training rows get no model
        (their rows are still scored, with 0 from this coordinate).
    max_rows : int or None
        Active-data upper bound: entities with more rows are down-sampled
        deterministically to ``max_rows`` rows, re-weighted by ``n_rows / max_rows``.
    max_iter, tol : int, float
        Newton iteration limit and gradient tolerance of each per-entity solve.
    seed : int
        Seed of the deterministic down-sampling.
    variance : {"none", "simple", "full"}
        Coefficient variances computed at the solution and saved with the model:
        ``1 / diag(H)`` (simple) or ``diag(H^-1)`` (full), ``H`` the Hessian of the
        entity's objective.
    init_model : str or None
        Model directory to start from. Without ``locked``: a warm start from its
        coefficients (its feature index map is reused); entities absent from the new
        data keep their old model.
    incremental : bool
        With ``init_model``: each entity's prior is its previous model (mean = old
        coefficients, precision = 1 / old variance), so a refresh on new data does not
        forget older data. The previous model must have variances; entities it does not
        know get the usual ``N(0, 1/l2)`` prior.
    warm_start : bool
        With ``init_model`` (not locked): start each entity's solve from its previous
        coefficients (True, the default) or from zero (False: a refit on the new data
        alone). Either way entities absent from the new data keep their previous model.
    mode : {"entity", "cohort"}
        ``entity``: compiled Newton solves over blocks of entities (millions of small
        entities). ``cohort``: few entities with very many rows each (per country...);
        each entity is one L-BFGS over its rows.
    """

    type: Literal["random"] = "random"
    entity: str = Field(min_length=1)
    l2: L2Value | list[L2Value] | Literal["auto"] = 1.0
    intercept_l2: L2Value | list[L2Value] | Literal["auto"] | None = None
    prior: Literal["shared", "per_feature"] = "shared"
    min_rows: int = Field(default=1, ge=1)
    max_rows: int | None = Field(default=None, ge=1)
    max_iter: int = Field(default=50, ge=1)
    tol: float = Field(default=1e-9, gt=0)
    seed: int = 0
    variance: Literal["none", "simple", "full"] = "none"
    incremental: bool = False
    warm_start: bool = True
    mode: Literal["entity", "cohort"] = "entity"

    @model_validator(mode="after")
    def _check_incremental(self) -> RandomEffectConfig:
        if self.incremental and self.init_model is None:
            raise ValueError(
                f"coordinate '{self.name}' is incremental, so it needs 'init_model': the "
                "previous model whose coefficients and variances become the prior"
            )
        if self.incremental and self.variance == "none":
            raise ValueError(
                f"coordinate '{self.name}' is incremental: set 'variance' (simple or full) "
                "so that the refreshed model can serve as the next refresh's prior"
            )
        return self

    @model_validator(mode="after")
    def _check_auto(self) -> RandomEffectConfig:
        auto = self.l2 == "auto" or self.intercept_l2 == "auto"
        if auto and (isinstance(self.l2, list) or isinstance(self.intercept_l2, list)):
            raise ValueError(
                f"coordinate '{self.name}': 'auto' estimates the prior from the data; it does "
                "not combine with a list of values to search"
            )
        if self.prior == "per_feature" and self.l2 != "auto":
            raise ValueError(f"coordinate '{self.name}': 'prior: per_feature' needs 'l2: auto'")
        if auto and self.variance != "full":  # the estimate needs the posterior variances
            object.__setattr__(self, "variance", "full")
        return self

    @field_validator("l2", "intercept_l2", mode="before")
    @classmethod
    def _check_random_l2(cls, value: Any) -> Any:
        return value if value is None or value == "auto" else validate_penalty(value)

    def estimates_prior(self) -> bool:
        """Whether any prior variance is estimated (``auto``)."""
        return self.l2 == "auto" or self.intercept_l2 == "auto"

    def search_grid(self) -> list[dict[str, Any]]:
        """Candidate ``(l2, intercept_l2)`` pairs, strongest penalties first (one entry
        holding ``"auto"`` when the prior is estimated)."""
        if self.estimates_prior():
            icpt = "auto" if self.l2 == "auto" and self.intercept_l2 is None else self.intercept_l2
            return [{"l2": self.l2, "intercept_l2": icpt}]
        icpt = [None] if self.intercept_l2 is None else sorted_grid(self.intercept_l2)
        return [{"l2": a, "intercept_l2": b} for a in sorted_grid(self.l2) for b in icpt]


CoordinateConfig = Annotated[
    FixedEffectConfig | RandomEffectConfig | DeepFixedEffectConfig | GBDTFixedEffectConfig,
    Field(discriminator="type"),
]
COORDINATE_TYPES = ("fixed", "random", "deep", "gbdt")


class DataConfig(StrictModel):
    """Where the data is and which role each column plays.

    Attributes
    ----------
    train, validation, test : str or None
        Parquet (``.parquet``, or a folder of Parquet files) or CSV paths, relative to
        the config file. ``validation`` drives early stopping and the ``l2`` search.
    label : str
        Binary 0/1 response column.
    weight, offset, uid : str or None
        Optional sample weight, fixed offset (outside model's logit) and row id columns.
    date_range, days_ago : DateRange or DaysAgo, optional
        Read only these days of ``train``, a date-partitioned folder holding
        ``daily/yyyy/MM/dd/`` day folders (Photon's layout): calendar days
        (``{start: 2026-11-01, end: 2026-11-07}``) or days before today (``{start: 7,
        end: 1}``), both ends included; give one of the two. ``train`` then becomes the
        day-range path ``ROOT/daily/2026/11/01..2026/11/07`` (see
        :mod:`gdmix.data.dated`), so that a saved model names the days it read.
    validation_date_range, validation_days_ago : DateRange or DaysAgo, optional
        The same for ``validation``.
    """

    train: str | None = None
    validation: str | None = None
    test: str | None = None
    label: str = Field(default="label", min_length=1)
    weight: str | None = Field(default=None, min_length=1)
    offset: str | None = Field(default=None, min_length=1)
    uid: str | None = Field(default=None, min_length=1)
    #: The label's task: set from the top-level ``task`` of the config, not by hand.
    task: Task = "logistic"
    date_range: DateRange | None = None
    days_ago: DaysAgo | None = None
    validation_date_range: DateRange | None = None
    validation_days_ago: DaysAgo | None = None

    @model_validator(mode="after")
    def _check_distinct(self) -> DataConfig:
        roles = {k: getattr(self, k) for k in ("label", "weight", "offset", "uid")}
        named = [(k, v) for k, v in roles.items() if v is not None]
        for i, (k, v) in enumerate(named):
            for k2, v2 in named[i + 1 :]:
                if v == v2:
                    raise ValueError(f"'{k}' and '{k2}' name the same column {v!r}")
        return self

    @model_validator(mode="after")
    def _select_days(self) -> DataConfig:
        for split, (by_date, by_age) in {
            "train": ("date_range", "days_ago"),
            "validation": ("validation_date_range", "validation_days_ago"),
        }.items():
            dates, ago = getattr(self, by_date), getattr(self, by_age)
            chosen = dates or ago
            if chosen is None:
                continue
            if dates is not None and ago is not None:
                raise ValueError(f"'{by_date}' and '{by_age}' both select days: give one")
            path = getattr(self, split)
            if path is None:
                raise ValueError(
                    f"'{by_date if dates is not None else by_age}' selects days of '{split}', "
                    "which is not set: give the folder holding daily/yyyy/MM/dd"
                )
            parsed = parse_dated_path(path)
            if parsed is None:  # a root folder: the days chosen become part of the path
                self.__dict__[split] = dated_path(path, *chosen.days())
            elif dates is not None and (parsed[1], parsed[2]) != dates.days():
                raise ValueError(
                    f"'{split}' already selects the days {parsed[1]}..{parsed[2]}, which differ "
                    f"from '{by_date}' ({dates.start}..{dates.end}): give the root folder"
                )
        return self


class DaskConfig(StrictModel):
    """Settings of the Dask engine.

    Attributes
    ----------
    scheduler : str or None
        Address of a running ``dask.distributed`` scheduler (``tcp://host:8786``).
        ``None`` starts a ``LocalCluster``.
    n_workers, threads_per_worker : int
        Size of that ``LocalCluster``.
    n_buckets : int or None
        Entity buckets per random-effect coordinate (the unit of parallel work); default
        twice the cluster's threads.
    scores_output : str or None
        Folder where the training rows' scores are written as partitioned Parquet.
    """

    scheduler: str | None = None
    n_workers: int = Field(default=2, ge=1)
    threads_per_worker: int = Field(default=1, ge=1)
    n_buckets: int | None = Field(default=None, ge=1)
    scores_output: str | None = None


class StreamingConfig(StrictModel):
    """Settings of the streaming engine (training from Parquet larger than memory).

    Attributes
    ----------
    work_dir : str or None
        Folder for the engine's scratch files (the fixed effects' designs in row order,
        the random effects' bucket files, per-pass coefficients): about the size of the
        training and validation data again. ``None``: a temporary folder, removed when
        the model object is.
    n_buckets : int or None
        Entity buckets per random-effect coordinate; default: from
        ``training.memory_budget_gb``.
    batch_rows : int
        Rows read at a time from the Parquet files.
    feature_dtype : {"float64", "float32"}
        Storage type of a fixed effect's numeric design on disk: ``float32`` halves the
        scratch files and the data read per optimiser step (the sums stay float64).
    """

    work_dir: str | None = None
    n_buckets: int | None = Field(default=None, ge=1)
    batch_rows: int = Field(default=1_000_000, ge=1)
    feature_dtype: Literal["float64", "float32"] = "float64"


class TrainingConfig(StrictModel):
    """Block coordinate descent settings.

    Attributes
    ----------
    n_passes : int
        Maximum number of passes over the coordinates.
    tol : float
        Without validation data, training stops after a pass that changes the training
        objective (log loss plus the coordinates' penalties) by less than this, relative
        to the objective; the history records why it stopped.
    metric : {"auc", "log_loss", "aupr", "rmse", "poisson_deviance"}
        Validation metric for early stopping and the ``l2`` search: one of the task's
        (``auc``, ``log_loss``, ``aupr``, ``rmse`` for logistic; ``rmse`` for linear;
        ``poisson_deviance``, ``rmse`` for Poisson). Default: the task's first.
    early_stopping : bool
        Stop when a whole pass does not improve the validation metric by ``min_delta``;
        the best model seen is the one returned.
    min_delta : float
        Smallest improvement that counts.
    l2_search : {"coordinate", "grid"}
        How lists of ``l2`` values are searched. ``coordinate``: at each coordinate
        update, every candidate is fitted along a warm-started path and the best on
        validation is kept (cost: the sum of the grid sizes). ``grid``: every
        combination is trained in full, warm-started from the previous one (cost: the
        product of the grid sizes).
    train_metrics : {"auto", "always", "never"}
        Training-set AUC and log loss after every coordinate update (each one sorts every
        training row). ``auto``: only on training tables of at most 1,000,000 rows.
        Validation metrics are always computed. The model's final training metrics
        follow the same rule for the AUC (``None`` when skipped); their log loss is
        always computed.
    n_threads : int or None
        Threads for the per-entity solvers; ``None`` uses every core.
    progress : bool
        Show progress bars.
    engine : {"local", "dask", "streaming"}
        ``local``: this process (threads for the per-entity solvers). ``dask``: the same
        solvers on a ``dask.distributed`` cluster (see :class:`DaskConfig`).
        ``streaming``: this process, from Parquet files larger than memory (see
        :class:`StreamingConfig` and docs/config.md for the options it takes). The
        model is the same format and scores with any engine.
    memory_budget_gb : float or None
        Memory the training data may take. With ``engine: local``, training from
        Parquet files whose features would take more than this in memory switches to
        the streaming engine; the streaming engine sizes its buckets by it (default 4).
    dask : DaskConfig
        Cluster settings for ``engine: dask``.
    streaming : StreamingConfig
        Settings of ``engine: streaming``.
    """

    n_passes: int = Field(default=1, ge=1)
    tol: float = Field(default=1e-7, ge=0, allow_inf_nan=False)
    metric: Literal["auc", "log_loss", "aupr", "rmse", "poisson_deviance"] = "auc"
    early_stopping: bool = True
    min_delta: float = Field(default=1e-5, ge=0)
    l2_search: Literal["coordinate", "grid"] = "coordinate"
    train_metrics: Literal["auto", "always", "never"] = "auto"
    n_threads: int | None = Field(default=None, ge=1)
    progress: bool = True
    engine: Literal["local", "dask", "streaming"] = "local"
    memory_budget_gb: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    dask: DaskConfig = Field(default_factory=DaskConfig)
    streaming: StreamingConfig = Field(default_factory=StreamingConfig)


class GDMixConfig(StrictModel):
    """A whole gdmix training job: task, data, coordinates (in update order), training,
    output.

    ``task`` (``logistic``, ``linear`` or ``poisson``, see :mod:`gdmix.tasks`) is the
    model's likelihood; it is copied into ``data`` and every coordinate, and sets the
    default ``training.metric``. Deep and GBDT coordinates are logistic only.
    """

    task: Task = "logistic"
    data: DataConfig = Field(default_factory=DataConfig)
    coordinates: list[CoordinateConfig] = Field(min_length=1)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    output: str | None = None

    @model_validator(mode="after")
    def _spread_task(self) -> GDMixConfig:
        task = self.task
        parts = [("data", self.data), *((f"coordinate '{c.name}'", c) for c in self.coordinates)]
        for where, part in parts:
            if "task" in part.model_fields_set and part.task != task:
                raise ValueError(
                    f"{where} says task {part.task!r} but the config's task is {task!r}: set "
                    "'task' once, at the top level"
                )
        if task != "logistic":
            for c in self.coordinates:
                if c.type not in ("fixed", "random"):
                    raise ValueError(
                        f"coordinate '{c.name}' (type '{c.type}') supports task 'logistic' only; "
                        f"task {task!r} takes fixed and random (linear) coordinates"
                    )
                if c.type == "random" and (c.mode == "cohort" or c.estimates_prior()):
                    raise ValueError(
                        f"coordinate '{c.name}': 'l2: auto' and 'mode: cohort' support task "
                        f"'logistic' only (task {task!r})"
                    )
        tc = self.training
        if "metric" not in tc.model_fields_set:
            tc.__dict__["metric"] = default_metric(task)
        elif tc.metric not in METRICS[task]:
            raise ValueError(
                f"training.metric {tc.metric!r} is not a metric of task {task!r}; choose one "
                f"of {list(METRICS[task])}"
            )
        for _, part in parts:
            part.__dict__["task"] = task
        return self

    @model_validator(mode="before")
    @classmethod
    def _check_types(cls, raw: Any) -> Any:
        coords = raw.get("coordinates") if isinstance(raw, dict) else None
        for i, c in enumerate(coords if isinstance(coords, list) else []):
            if isinstance(c, dict) and c.get("type") not in COORDINATE_TYPES:
                name = c.get("name", "?")
                raise ValueError(
                    f"coordinates[{i}] ('{name}'): 'type' must be one of {COORDINATE_TYPES}. "
                    f"Got {c.get('type')!r} instead"
                )
        return raw

    @model_validator(mode="after")
    def _check_names(self) -> GDMixConfig:
        names = [c.name for c in self.coordinates]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"coordinate names must be unique. Got {dupes} more than once")
        d = self.data
        reserved = {
            "total": "the sum of scores",
            "offset": "the offset column of the scores",
            d.label: "the label column",
        }
        if d.uid is not None:
            reserved[d.uid] = "the uid column of the scores"
        for name in names:
            if name in reserved:
                raise ValueError(
                    f"coordinate name '{name}' is reserved for {reserved[name]}; rename the "
                    "coordinate"
                )
        roles = {d.label: "label", d.offset: "offset"}
        for c in self.coordinates:
            used = c.features.columns()
            for col in used:
                if col in roles:
                    raise ValueError(
                        f"coordinate '{c.name}' uses the {roles[col]} column '{col}' as a "
                        "feature; a model cannot learn from its own " + roles[col]
                    )
            entity = getattr(c, "entity", None)
            if entity is not None and entity in used:
                raise ValueError(
                    f"coordinate '{c.name}' uses its entity column '{entity}' as a feature; "
                    "the per-entity intercept already plays that part"
                )
            dupe_cols = sorted({x for x in used if used.count(x) > 1})
            if dupe_cols:
                raise ValueError(f"coordinate '{c.name}' lists feature column(s) {dupe_cols} twice")
        return self

    def resolve_paths(self, base: str | os.PathLike[str]) -> GDMixConfig:
        """Return a copy whose relative data and output paths are resolved against ``base``."""

        def fix(p: str | None) -> str | None:
            if p is None or "://" in p or os.path.isabs(p):
                return p
            return str(Path(base) / p)

        data = self.data.model_copy(
            update={k: fix(getattr(self.data, k)) for k in ("train", "validation", "test")}
        )
        coords = [c.model_copy(update={"init_model": fix(c.init_model)}) for c in self.coordinates]
        streaming = self.training.streaming
        training = self.training.model_copy(
            update={"streaming": streaming.model_copy(update={"work_dir": fix(streaming.work_dir)})}
        )
        return self.model_copy(
            update={
                "data": data,
                "coordinates": coords,
                "training": training,
                "output": fix(self.output),
            }
        )


def coordinate_columns(config: Any, *, entity: bool = True) -> list[str]:
    """Data columns a coordinate config reads: its entity column (a random effect's;
    unless ``entity`` is False), its feature columns and its text column (deep)."""
    ent = getattr(config, "entity", None) if entity else None
    text = getattr(config, "text", None)
    return [*([ent] if ent else []), *config.features.columns(),
            *([text.column] if text is not None else [])]  # fmt: skip


def format_validation_error(err: ValidationError, where: str = "config") -> str:
    """Turn a pydantic error into lines naming the parameter, the rule and the value."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if not str(p).startswith("function-after"))
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key (not a gdmix setting; check the spelling)"
        value = e.get("input")
        # Our own validators already name the value; model-level checks have no single one.
        quiet = e["type"] in ("missing", "extra_forbidden") or "Got " in msg or not loc
        got = "" if quiet or isinstance(value, dict) else f" Got {value!r} instead."
        lines.append(f"{where}: '{loc}': {msg}.{got}" if loc else f"{where}: {msg}.{got}")
    return "\n".join(lines)


def parse_config(raw: dict[str, Any], where: str = "config") -> GDMixConfig:
    """Validate a plain dictionary into a :class:`GDMixConfig`.

    Raises
    ------
    ConfigError
        With one line per problem when the dictionary is not a valid config.
    """
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping at the top level. Got {type(raw).__name__}")
    try:
        return GDMixConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, where)) from None


def with_overrides(
    config: GDMixConfig,
    *,
    training: dict[str, Any] | None = None,
    dask: dict[str, Any] | None = None,
    where: str = "command line",
) -> GDMixConfig:
    """A copy of ``config`` with ``training`` and ``training.dask`` settings replaced.

    ``None`` values are ignored; the result is validated like a config file.

    Raises
    ------
    ConfigError
        When an override breaks a rule (``n_workers: 0``...).
    """
    raw = config.model_dump()
    raw["training"].update({k: v for k, v in (training or {}).items() if v is not None})
    raw["training"]["dask"].update({k: v for k, v in (dask or {}).items() if v is not None})
    return parse_config(raw, where=where)


def model_output(config: GDMixConfig, output: str | os.PathLike[str] | None) -> Path:
    """The model directory: ``output`` if given, else the config's.

    Raises
    ------
    ConfigError
        When neither names one.
    """
    if output is not None:
        return Path(output)
    if config.output is None:
        raise ConfigError("no model directory: set 'output' in the config or pass --output")
    return Path(config.output)


class StrictYAMLLoader(yaml.SafeLoader):
    """YAML's safe loader with two traps closed.

    - A key given twice in one mapping is an error (instead of the last one winning).
    - Only ``true``/``false`` are booleans (YAML 1.2): ``on``, ``off``, ``yes``, ``no``
      stay strings, so a column named ``off`` is not read as ``False``.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            if key in seen:
                mark = key_node.start_mark
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in one mapping (line "
                    f"{seen[key] + 1} and line {mark.line + 1})", mark,
                )  # fmt: skip
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


StrictYAMLLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
StrictYAMLLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


def load_config(path: str | os.PathLike[str]) -> GDMixConfig:
    """Load a YAML config file; relative paths in it are resolved against its folder.

    Raises
    ------
    ConfigError
        When the file is missing, is not YAML, or is not a valid config.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err.strerror}") from None
    try:
        raw = yaml.load(text, Loader=StrictYAMLLoader)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {' '.join(str(err).split())}") from None
    return parse_config(raw, where=str(path)).resolve_paths(path.parent)
