"""The MovieLens-100K example: the GDMix paper's protocol, reference and tuned configs.

Protocol: label = rating > 3; random 80/20 split by row (seeded); validation carved
from the training 80%; the global model on user features (age/100, gender,
occupation one-hot) and movie features (19 genres, release year/2000); a per-user
random effect on the movie features; a per-movie random effect on the user
features. Hyper-parameters are chosen on validation, never on test.

The deep variants (:func:`deep_example_config`, :func:`run_deep_example`) replace the
global logistic regression by a PyTorch fixed effect: ``text_cnn``, the paper's model (a
text CNN over the movie title added to the linear logit over the user and movie
features), or ``dlrm``, gdmix's best configuration (a factorization-style DLRM with
user_id and movie_id embeddings and pairwise dot interactions).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any

import pandas as pd

from gdmix.config import GDMixConfig, parse_config
from gdmix.data.movielens import (
    MOVIE_NUMERIC,
    USER_CATEGORICAL,
    USER_NUMERIC,
    load_movielens_100k,
    split_movielens,
)
from gdmix.errors import ConfigError
from gdmix.model import GDMixModel
from gdmix.training import Callback, fit

__all__ = [
    "DEEP_EXAMPLES",
    "EXAMPLE_STAGES",
    "ExampleResult",
    "auto_example_config",
    "deep_example_config",
    "example_config",
    "run_auto_example",
    "run_deep_example",
    "run_example",
]

#: Coordinates of the example, in update order, with the table's row labels.
EXAMPLE_STAGES = [
    ("global", "FE"),
    ("per_user", "FE+per-user"),
    ("per_movie", "FE+per-user+per-movie"),
]

_REFERENCE = {"global": 1.0, "per_user": 1.0, "per_movie": 1.0}
_TUNED_GRID: dict[str, dict[str, Any]] = {
    "global": {"l2": [0.1, 1.0, 10.0]},
    "per_user": {"l2": [1.0, 3.0, 10.0, 30.0, 100.0], "intercept_l2": [0.3, 1.0, 3.0]},
    "per_movie": {"l2": [1.0, 3.0, 10.0, 30.0, 100.0], "intercept_l2": [0.3, 1.0, 3.0]},
}


def example_config(
    tuned: bool, *, n_threads: int | None = None, progress: bool = False
) -> GDMixConfig:
    """Config of the example.

    Parameters
    ----------
    tuned : bool
        ``False``: the paper's reference configuration (``l2 = 1`` everywhere, one
        pass). ``True``: gdmix's tuned configuration (``l2`` and ``intercept_l2``
        searched on validation, up to 4 passes with early stopping).
    n_threads : int, optional
        Threads for the per-entity solvers.
    progress : bool
        Show progress bars.
    """
    return parse_config(_example_raw(tuned, n_threads, progress), where="movielens example")


def _example_raw(tuned: bool, n_threads: int | None, progress: bool) -> dict[str, Any]:
    user = {"numeric": USER_NUMERIC, "categorical": USER_CATEGORICAL}
    movie = {"numeric": MOVIE_NUMERIC}
    coords: list[dict[str, Any]] = [
        {"name": "global", "type": "fixed", "features": {
            "numeric": USER_NUMERIC + MOVIE_NUMERIC, "categorical": USER_CATEGORICAL}},
        {"name": "per_user", "type": "random", "entity": "user_id", "features": movie},
        {"name": "per_movie", "type": "random", "entity": "movie_id", "features": user},
    ]  # fmt: skip
    for c in coords:
        c.update(_TUNED_GRID[c["name"]] if tuned else {"l2": _REFERENCE[c["name"]]})
    raw = {
        "data": {"label": "label", "uid": "uid"},
        "coordinates": coords,
        "training": {"n_passes": 4 if tuned else 1, "n_threads": n_threads, "progress": progress},
    }
    return raw


@dataclass
class ExampleResult:
    """Test AUCs after each stage, the model and the training time."""

    auc: list[float]
    model: GDMixModel
    seconds: float


def run_example(
    tuned: bool,
    *,
    seed: int = 0,
    data_dir: str | None = None,
    n_threads: int | None = None,
    callbacks: list[Callback] | None = None,
    tables: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame] | None = None,
) -> ExampleResult:
    """Train the example and return test AUC after FE, +per-user, +per-movie.

    ``tables`` (train, validation, test) skips loading and splitting the data.
    """
    config = example_config(tuned, n_threads=n_threads)
    return _train_and_test(config, tables, seed, data_dir, callbacks)


def auto_example_config(*, n_threads: int | None = None, progress: bool = False) -> GDMixConfig:
    """The example with both random effects' priors estimated from the data (``l2:
    auto``) instead of searched: the fixed effect keeps ``l2 = 1``, up to 4 passes with
    early stopping on validation."""
    raw = _example_raw(False, n_threads, progress)
    for c in raw["coordinates"]:
        if c["type"] == "random":
            c.update(l2="auto")
    raw["training"]["n_passes"] = 4
    return parse_config(raw, where="movielens example (auto)")


def run_auto_example(
    *,
    seed: int = 0,
    data_dir: str | None = None,
    n_threads: int | None = None,
    callbacks: list[Callback] | None = None,
    tables: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame] | None = None,
) -> ExampleResult:
    """:func:`run_example` with :func:`auto_example_config`."""
    config = auto_example_config(n_threads=n_threads)
    return _train_and_test(config, tables, seed, data_dir, callbacks)


def _train_and_test(
    config: GDMixConfig,
    tables: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame] | None,
    seed: int,
    data_dir: str | None,
    callbacks: list[Callback] | None,
) -> ExampleResult:
    """Train ``config`` on the split and report test AUC after each coordinate."""
    if tables is None:
        tables = split_movielens(load_movielens_100k(data_dir), seed=seed)
    train, validation, test = tables
    start = time.perf_counter()
    model = fit(config, train, validation, callbacks=callbacks)
    seconds = time.perf_counter() - start
    metrics = model.evaluate(test)
    auc = [metrics[f"auc_after@{name}"] for name, _ in EXAMPLE_STAGES]
    return ExampleResult(auc, model, seconds)


#: Deep fixed effects of the example (chosen on validation; see ``benchmarks/movielens.py``).
DEEP_EXAMPLES: dict[str, dict[str, Any]] = {
    # The paper's model: title CNN (64-d word embeddings, 50 filters of width 3, max-pool,
    # dense) + linear logit over the user and movie features.
    "text_cnn": {
        "features": {"numeric": USER_NUMERIC + MOVIE_NUMERIC, "categorical": USER_CATEGORICAL},
        "text": {"column": "title", "max_length": 16},
        "architecture": {"kind": "text_cnn", "embedding_dim": 64, "filters": 50, "width": 3},
        "l2": 1e-3,
        "batch_size": 128,
        "learning_rate": 1e-3,
        "max_epochs": 20,
        "patience": 2,
    },
    # Factorization-style DLRM: user_id / movie_id / occupation embeddings and a bottom MLP
    # over the numeric features, pairwise dot products, top MLP.
    "dlrm": {
        "features": {
            "numeric": USER_NUMERIC + MOVIE_NUMERIC,
            "categorical": [*USER_CATEGORICAL, "user_id", "movie_id"],
        },
        "architecture": {"kind": "dlrm", "bottom": [64, 16], "top": [64, 32], "embedding_dim": 16},
        "l2": 1e-3,
        "batch_size": 128,
        "learning_rate": 1e-3,
        "max_epochs": 20,
        "patience": 2,
    },
}


def deep_example_config(
    kind: str = "text_cnn",
    *,
    n_passes: int = 3,
    max_epochs: int | None = None,
    device: str = "auto",
    n_threads: int | None = None,
    progress: bool = False,
) -> GDMixConfig:
    """Config of the example with a deep fixed effect and the tuned random effects.

    Parameters
    ----------
    kind : {"text_cnn", "dlrm"}
        The deep fixed effect (see :data:`DEEP_EXAMPLES`).
    n_passes : int
        Coordinate descent passes (early stopping on validation).
    max_epochs : int, optional
        Override the fixed effect's epoch limit (for quick runs).
    device : {"auto", "cpu", "cuda"}
        Where the fixed effect trains.
    n_threads, progress
        As in :func:`example_config`.
    """
    if kind not in DEEP_EXAMPLES:
        raise ConfigError(f"deep example must be one of {sorted(DEEP_EXAMPLES)}. Got {kind!r}")
    fe: dict[str, Any] = {"name": "global", "type": "deep", "device": device}
    fe.update(copy.deepcopy(DEEP_EXAMPLES[kind]))
    if max_epochs is not None:
        fe["max_epochs"] = max_epochs
    raw = _example_raw(True, n_threads, progress)
    raw["coordinates"][0] = fe
    raw["training"]["n_passes"] = n_passes
    return parse_config(raw, where=f"movielens deep example '{kind}'")


def run_deep_example(
    kind: str = "text_cnn",
    *,
    seed: int = 0,
    data_dir: str | None = None,
    tables: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame] | None = None,
    callbacks: list[Callback] | None = None,
    **settings: Any,
) -> ExampleResult:
    """Train the deep example and return test AUC after FE, +per-user, +per-movie.

    ``settings`` go to :func:`deep_example_config`; ``tables`` (train, validation, test)
    skips loading and splitting the data.
    """
    config = deep_example_config(kind, **settings)
    return _train_and_test(config, tables, seed, data_dir, callbacks)
