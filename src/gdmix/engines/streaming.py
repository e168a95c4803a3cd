"""Out-of-core training of a random-effect coordinate: stream buckets from disk.

For data larger than memory. One pass hash-partitions the rows by entity into bucket
files (building the feature index map on the way); then each bucket is read, its
entities solved with the same compiled solver as in memory, its rows scored, and its
scores and coefficients written out before the next bucket is read. Memory is bounded
by the largest bucket, and the number of buckets follows from a memory budget.

The result is an ordinary model directory (its coefficient table is a folder of
Parquet parts, one per bucket) and a folder of per-row scores keyed by ``uid``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from gdmix.config import DataConfig, RandomEffectConfig
from gdmix.data.features import FeatureIndex
from gdmix.data.roles import extract_roles
from gdmix.effects.random_effect import RandomEffect
from gdmix.effects.random_table import write_coefficients
from gdmix.engines.buckets import _dataset, n_buckets_for, partition_by_entity
from gdmix.errors import ConfigError
from gdmix.fsutil import fresh_work_folder
from gdmix.model import write_manifest, write_model_directory
from gdmix.model_dir import check_model_target

__all__ = ["StreamingResult", "fit_random_effect_streaming"]

logger = logging.getLogger("gdmix")

# In-memory cost of a row while its bucket is solved, per stored value: the DataFrame,
# the CSR design (value + column index), the solver's gathered copies.
_BYTES_PER_VALUE = 40


@dataclass
class StreamingResult:
    """What :func:`fit_random_effect_streaming` produced."""

    model_dir: Path
    scores_dir: Path
    n_rows: int
    n_entities: int
    n_buckets: int
    seconds_partition: float
    seconds_solve: float


def fit_random_effect_streaming(
    source: str | os.PathLike[str] | list[str],
    config: RandomEffectConfig,
    data: DataConfig,
    output: str | os.PathLike[str],
    *,
    work_dir: str | os.PathLike[str],
    memory_budget_gb: float = 4.0,
    n_buckets: int | None = None,
    batch_rows: int = 1_000_000,
    progress: bool = True,
    overwrite: bool = False,
) -> StreamingResult:
    """Train one random-effect coordinate on Parquet data larger than memory.

    Parameters
    ----------
    source : path or list of paths
        Parquet file(s) or folder(s) with the entity, feature, label and (optional)
        weight, offset and uid columns. The offset holds the other coordinates' scores.
    config : RandomEffectConfig
        The coordinate (one ``l2`` value; warm start and incremental training are for
        the in-memory engine).
    data : DataConfig
        Column roles. ``uid`` is required: scores are written keyed by it.
    output : path
        Model directory to write (atomically).
    work_dir : path
        Folder for the bucket files (``work_dir/buckets``) and the scores
        (``work_dir/scores``). Those two are gdmix's scratch folders: emptied when an
        earlier run made them, refused when they hold anything else.
    memory_budget_gb : float
        Memory the solve may use; sets the number of buckets unless ``n_buckets`` is given.
    n_buckets : int, optional
        Number of buckets (overrides the budget).
    batch_rows : int
        Rows read at a time while partitioning.
    progress : bool
        Show progress bars.
    overwrite : bool
        Also replace a model directory at ``output`` that holds files gdmix did not write.

    Returns
    -------
    StreamingResult
    """
    grid = config.search_grid()
    if len(grid) > 1:
        raise ConfigError(f"coordinate '{config.name}': streaming takes one l2 value, not a grid")
    if "auto" in grid[0].values():
        raise ConfigError(
            f"coordinate '{config.name}': 'l2: auto' runs in memory; give streaming the "
            "estimate of an in-memory run on a sample"
        )
    if config.init_model is not None or config.locked:
        raise ConfigError(
            f"coordinate '{config.name}': init_model/locked are not supported when streaming"
        )
    if data.uid is None:
        raise ConfigError("streaming needs 'data.uid': scores are written keyed by it")
    roles = [c for c in (data.label, data.weight, data.offset, data.uid) if c is not None]
    columns = list(dict.fromkeys([*config.features.columns(), *roles]))
    dataset = _dataset(source)
    n_rows = dataset.count_rows()
    values_per_row = len(config.features.columns()) + len(roles) + 1
    if n_buckets is None:
        n_buckets = n_buckets_for(
            n_rows, values_per_row * _BYTES_PER_VALUE, memory_budget_gb * 2**30
        )
    check_model_target(output, overwrite=overwrite)  # before hours of partitioning
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)

    # Pass 1: partition by entity; the feature index map is the union over batches.
    index: list[FeatureIndex] = []

    def collect(frame: pd.DataFrame) -> None:
        part = FeatureIndex.build(frame, config.features, f"{source}")
        index[:] = [index[0].union(part) if index else part]

    start = time.perf_counter()
    bar = tqdm(total=n_rows, desc="partition", unit="row", disable=None if progress else True)
    buckets = partition_by_entity(source, config.entity, columns, work / "buckets", n_buckets,
                                  batch_rows=batch_rows, on_batch=collect,
                                  progress=bar.update)  # fmt: skip
    bar.close()
    seconds_partition = time.perf_counter() - start
    features = index[0]
    logger.info("partitioned %d rows into %d buckets in %.1fs", n_rows, n_buckets,
                seconds_partition)  # fmt: skip

    # Pass 2: solve and score bucket by bucket.
    start = time.perf_counter()
    scores_dir = fresh_work_folder(work / "scores")
    n_entities = 0
    params = dict(grid[0])
    coord = RandomEffect(config)

    def write(tmp: Path) -> None:
        nonlocal n_entities, coord
        folder = tmp / "coordinates" / config.name
        parts = folder / "coefficients.parquet"
        parts.mkdir(parents=True)
        bar = tqdm(total=len(buckets.non_empty()), desc="solve", unit="bucket",
                   disable=None if progress else True)  # fmt: skip
        for b in buckets.non_empty():
            frame = buckets.read(b)
            where = f"bucket {b}"
            r = extract_roles(frame, data, where, need_label=True)
            coord = RandomEffect(config)
            coord.build(frame, features=features)
            design = coord.design(frame, where, training=True)
            coord.fit(design, r.y, r.weight, r.offset, **params)
            scores = coord.score(design)
            pq.write_table(
                pa.table({data.uid: frame[data.uid].to_numpy(), config.name: scores}),
                scores_dir / f"part-{b:05d}.parquet",
            )
            write_coefficients(coord.arrays(), parts / f"part-{b:05d}.parquet",
                               default_variance=coord._default_variance())  # fmt: skip
            n_entities += int(coord.has_model.sum())
            bar.update(1)
            del frame, design, scores
        bar.close()
        (folder / "features.json").write_text(json.dumps(features.to_dict()))
        coord.features = features
        coord.params = params
        metrics = {"streaming": {"n_rows": n_rows, "n_buckets": n_buckets}}
        write_manifest(tmp, data, [coord], metrics, [])

    model_dir = write_model_directory(output, write, overwrite=overwrite)
    seconds_solve = time.perf_counter() - start
    return StreamingResult(model_dir, scores_dir, n_rows, n_entities, n_buckets,
                           seconds_partition, seconds_solve)  # fmt: skip
