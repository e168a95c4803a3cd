"""The MovieLens-100K example: the GDMix paper's protocol, reference and tuned configs.

Protocol: label = rating > 3; random 80/20 split by row (seeded); validation carved
from the training 80%; the global model on user features (age/100, gender,
occupation one-hot) and movie features (19 genres, release year/2000); a per-user
random effect on the movie features; a per-movie random effect on the user
features. Hyper-parameters are chosen on validation, never on test.
"""

from __future__ import annotations

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
from gdmix.model import GDMixModel
from gdmix.training import Callback, fit

__all__ = ["EXAMPLE_STAGES", "ExampleResult", "example_config", "run_example"]

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
    return parse_config(raw, where="movielens example")


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
    if tables is None:
        tables = split_movielens(load_movielens_100k(data_dir), seed=seed)
    train, validation, test = tables
    config = example_config(tuned, n_threads=n_threads)
    start = time.perf_counter()
    model = fit(config, train, validation, callbacks=callbacks)
    seconds = time.perf_counter() - start
    metrics = model.evaluate(test)
    auc = [metrics[f"auc_after@{name}"] for name, _ in EXAMPLE_STAGES]
    return ExampleResult(auc, model, seconds)
