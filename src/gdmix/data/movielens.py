"""MovieLens-100K (GroupLens ``ml-100k``): find or download, verify, load, split, write.

Its terms forbid redistribution, so gdmix never ships the files; they are found locally or
downloaded from GroupLens into a cache folder.
"""

from __future__ import annotations

import csv
import hashlib
import http.client
import os
import pathlib
import re
import sys
import tempfile
import urllib.request
import zipfile

import numpy as np
import pandas as pd

from gdmix.errors import ConfigError, DataError

__all__ = [
    "GENRE_COLUMNS",
    "ML100K_FILE_SHA256",
    "ML100K_URL",
    "ML100K_ZIP_SHA256",
    "MOVIE_NUMERIC",
    "USER_CATEGORICAL",
    "USER_NUMERIC",
    "find_movielens_100k",
    "load_movielens_100k",
    "split_movielens",
    "write_movielens_parquet",
]

ML100K_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
# No checksum of the zip itself is recorded: the download is verified through the
# per-file checksums below, after extraction.
ML100K_ZIP_SHA256: str | None = None
ML100K_FILE_SHA256: dict[str, str] = {
    "u.data": "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490",
    "u.item": "553841ebc7de3a0fd0d6b62a204ea30c1e651aacfb2814c7a6584ac52f2c5701",
    "u.user": "f120e114da2e8cf314fd28f99417c94ae9ddf1cb6db8ce0e4b5995d40e90e62c",
}

_FOLDER = "ml-100k"
_GENRES = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
    "Romance", "Sci-Fi", "Thriller", "War", "Western",
]  # fmt: skip
GENRE_COLUMNS: list[str] = ["genre_" + re.sub(r"[^0-9a-z]", "_", g.lower()) for g in _GENRES]
USER_NUMERIC: list[str] = ["age", "gender_m"]
USER_CATEGORICAL: list[str] = ["occupation"]
MOVIE_NUMERIC: list[str] = [*GENRE_COLUMNS, "year"]


def _sha256(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _holds_files(folder: pathlib.Path) -> bool:
    return all((folder / name).is_file() for name in ML100K_FILE_SHA256)


def _verify(folder: pathlib.Path, *, delete_bad: bool = False) -> None:
    """Raise DataError when a file of ``folder`` does not match its recorded sha256."""
    bad = []
    for name, expected in ML100K_FILE_SHA256.items():
        path = folder / name
        actual = _sha256(path)
        if actual != expected:
            bad.append(f"{path} (sha256 {actual}, expected {expected})")
            if delete_bad:
                path.unlink(missing_ok=True)
    if bad:
        raise DataError(
            "MovieLens-100K files fail their checksum, so they are not the original "
            "GroupLens files: " + "; ".join(bad)
        )


def _cache_dir() -> pathlib.Path:
    env = os.environ.get("GDMIX_CACHE_DIR")
    return pathlib.Path(env).expanduser() if env else pathlib.Path.home() / ".cache" / "gdmix"


def _download(url: str, dest: pathlib.Path, *, progress: bool) -> None:
    """Stream ``url`` into a temporary file next to ``dest``, then rename it to ``dest``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".", suffix=".part")
    tmp = pathlib.Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            headers = getattr(response, "headers", None)
            length = headers.get("Content-Length") if headers is not None else None
            total = int(length) if length and str(length).isdigit() else None
            done = 0
            while chunk := response.read(1 << 16):
                out.write(chunk)
                done += len(chunk)
                if progress:
                    of = f" / {total / 1e6:.1f}" if total else ""
                    print(f"\rDownloading {url}: {done / 1e6:.1f}{of} MB", end="", file=sys.stderr)
        if progress:
            print(file=sys.stderr)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _extract(zip_path: pathlib.Path, folder: pathlib.Path) -> None:
    """Extract the needed ml-100k files of ``zip_path`` into ``folder`` and verify them."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with zipfile.ZipFile(zip_path) as archive:
            names = archive.namelist()
            for name in ML100K_FILE_SHA256:
                wanted = f"{_FOLDER}/{name}"
                if wanted not in names:
                    raise DataError(f"{zip_path} has no member {wanted!r}")
                tmp = folder / (name + ".part")
                try:
                    with archive.open(wanted) as src, open(tmp, "wb") as dst:
                        while chunk := src.read(1 << 20):
                            dst.write(chunk)
                    os.replace(tmp, folder / name)
                finally:
                    tmp.unlink(missing_ok=True)
    except zipfile.BadZipFile as exc:
        raise DataError(f"{zip_path} is not a valid zip file: {exc}") from exc
    _verify(folder, delete_bad=True)


def find_movielens_100k(
    data_dir: str | os.PathLike | None = None, *, download: bool = True, progress: bool = True
) -> pathlib.Path:
    """Return the folder that holds the MovieLens-100K ``u.data``, ``u.item`` and ``u.user``.

    Parameters
    ----------
    data_dir : str or os.PathLike, optional
        The ``ml-100k`` folder itself or its parent. Looked at first.
    download : bool, default True
        Download :data:`ML100K_URL` into the cache folder when no local copy is found.
    progress : bool, default True
        Print a progress line to stderr while downloading.

    Returns
    -------
    pathlib.Path
        The folder holding the three files, verified against :data:`ML100K_FILE_SHA256`.

    Raises
    ------
    gdmix.errors.DataError
        When the files are not found (and not downloaded), the download fails, or a file
        fails its checksum.

    Notes
    -----
    The search order is ``data_dir``, the environment variable ``GDMIX_DATA_DIR`` (same
    rule as ``data_dir``), then ``ml-100k`` under the cache folder ``$GDMIX_CACHE_DIR``
    (default ``~/.cache/gdmix``). A download goes to ``ml-100k.zip`` in that cache folder
    (a zip already there is used instead) and is deleted once its files are extracted.
    """
    candidates: list[pathlib.Path] = []
    for base in (data_dir, os.environ.get("GDMIX_DATA_DIR") or None):
        if base is not None:
            base = pathlib.Path(base).expanduser()
            candidates += [base, base / _FOLDER]
    cache = _cache_dir() / _FOLDER
    candidates.append(cache)
    for folder in candidates:
        if _holds_files(folder):
            _verify(folder)
            return folder
    looked = ", ".join(str(c) for c in candidates)
    how = (
        f"Download {ML100K_URL}, unzip it and set GDMIX_DATA_DIR to the ml-100k folder "
        "(or its parent), or pass data_dir."
    )
    if not download:
        raise DataError(f"MovieLens-100K files not found; looked in: {looked}. {how}")
    zip_path = cache.parent / "ml-100k.zip"
    if not zip_path.is_file():
        try:
            _download(ML100K_URL, zip_path, progress=progress)
        except (OSError, http.client.HTTPException) as exc:  # URLError is an OSError
            raise DataError(
                f"MovieLens-100K files not found (looked in: {looked}) and the download of "
                f"{ML100K_URL} failed: {exc}. {how}"
            ) from exc
    try:
        _extract(zip_path, cache)
    except OSError as exc:
        raise DataError(f"Could not extract {zip_path} into {cache}: {exc}") from exc
    finally:
        zip_path.unlink(missing_ok=True)
    return cache


def load_movielens_100k(
    data_dir: str | os.PathLike | None = None, *, download: bool = True
) -> pd.DataFrame:
    """Load MovieLens-100K as one row per rating, joined with user and movie features.

    Parameters
    ----------
    data_dir, download
        Passed to :func:`find_movielens_100k`.

    Returns
    -------
    pandas.DataFrame
        100000 rows in ``u.data`` order with columns ``user_id``, ``movie_id``, ``rating``,
        ``timestamp``, ``label`` (int64, 1 when rating > 3), ``title``, ``age`` (age / 100),
        ``gender_m`` (1.0 for M), ``occupation`` (str), the 19 :data:`GENRE_COLUMNS`
        (float64 0/1) and ``year`` (release year / 2000; the movie without a release date
        gets the median year of the others).
    """
    folder = find_movielens_100k(data_dir, download=download)
    ratings = pd.read_csv(
        folder / "u.data",
        sep="\t",
        header=None,
        names=["user_id", "movie_id", "rating", "timestamp"],
        dtype="int64",
    )
    ratings["label"] = (ratings["rating"] > 3).astype("int64")

    text = {"sep": "|", "header": None, "quoting": csv.QUOTE_NONE, "keep_default_na": False}
    users = pd.read_csv(
        folder / "u.user",
        names=["user_id", "age_years", "gender", "occupation", "zip"],
        dtype={"user_id": "int64", "age_years": "int64", "gender": str, "occupation": str},
        encoding="latin-1",
        **text,
    )
    users["age"] = users["age_years"].astype("float64") / 100.0
    users["gender_m"] = (users["gender"] == "M").astype("float64")
    users = users[["user_id", *USER_NUMERIC, *USER_CATEGORICAL]]

    movies = pd.read_csv(
        folder / "u.item",
        names=["movie_id", "title", "release", "video_release", "url", *GENRE_COLUMNS],
        dtype=str,
        encoding="latin-1",
        **text,
    )
    movies["movie_id"] = movies["movie_id"].astype("int64")
    released = movies["release"] != ""
    dates = pd.to_datetime(movies.loc[released, "release"], format="%d-%b-%Y")
    years = pd.Series(np.nan, index=movies.index)
    years[released] = dates.dt.year.astype("float64")
    movies["year"] = years.fillna(years[released].median()) / 2000.0
    movies[GENRE_COLUMNS] = movies[GENRE_COLUMNS].astype("float64")
    movies = movies[["movie_id", "title", *MOVIE_NUMERIC]]

    df = ratings.merge(users, on="user_id", how="left", validate="many_to_one")
    df = df.merge(movies, on="movie_id", how="left", validate="many_to_one")
    if df[["title", *USER_NUMERIC, *MOVIE_NUMERIC]].isna().to_numpy().any():
        raise DataError(f"{folder}: some ratings refer to unknown users or movies")
    columns = ["user_id", "movie_id", "rating", "timestamp", "label", "title"]
    return df[columns + USER_NUMERIC + USER_CATEGORICAL + MOVIE_NUMERIC]


def split_movielens(
    df: pd.DataFrame,
    *,
    seed: int = 0,
    test_fraction: float = 0.2,
    validation_fraction: float = 0.1,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Split rows at random into train, validation and test sets.

    Parameters
    ----------
    df : pandas.DataFrame
        Rows to split, for example from :func:`load_movielens_100k`.
    seed : int, default 0
        Seed of the :class:`numpy.random.Generator` drawing the split.
    test_fraction : float, default 0.2
        Share of all rows that goes to the test set.
    validation_fraction : float, default 0.1
        Share of the remaining (non-test) rows that goes to the validation set.

    Returns
    -------
    tuple of pandas.DataFrame
        ``(train, validation, test)``, each with a fresh RangeIndex, rows in their original
        order, and a first column ``uid`` (int64) holding the row number in ``df`` (an
        existing ``uid`` column is replaced).
    """
    for name, value in (
        ("test_fraction", test_fraction),
        ("validation_fraction", validation_fraction),
    ):
        if not 0.0 <= value < 1.0:
            raise ConfigError(f"{name} must be in [0, 1), got {value}")
    data = df.drop(columns="uid", errors="ignore").reset_index(drop=True)
    data.insert(0, "uid", np.arange(len(data), dtype="int64"))
    order = np.random.default_rng(seed).permutation(len(data))
    n_test = round(len(data) * test_fraction)
    test_rows, train_full = order[:n_test], order[n_test:]
    n_val = round(len(train_full) * validation_fraction)
    val_rows, train_rows = train_full[:n_val], train_full[n_val:]
    train, validation, test = (
        data.iloc[np.sort(rows)].reset_index(drop=True)
        for rows in (train_rows, val_rows, test_rows)
    )
    return train, validation, test


def write_movielens_parquet(
    out_dir: str | os.PathLike,
    *,
    data_dir: str | os.PathLike | None = None,
    seed: int = 0,
    download: bool = True,
    overwrite: bool = False,
) -> dict[str, pathlib.Path]:
    """Load, split and write MovieLens-100K as ``train/validation/test.parquet``.

    Parameters
    ----------
    out_dir : str or os.PathLike
        Folder to write into; created when missing.
    data_dir, download
        Passed to :func:`find_movielens_100k`.
    seed : int, default 0
        Passed to :func:`split_movielens`.
    overwrite : bool, default False
        Replace files of those names that already exist (else they are an error, found
        before anything is read).

    Returns
    -------
    dict of str to pathlib.Path
        ``{"train": ..., "validation": ..., "test": ...}``, the paths written.
    """
    from gdmix.data.io import check_output_file, write_table

    out = pathlib.Path(out_dir)
    names = ("train", "validation", "test")
    for name in names:
        check_output_file(out / f"{name}.parquet", overwrite=overwrite)
    splits = split_movielens(load_movielens_100k(data_dir, download=download), seed=seed)
    paths: dict[str, pathlib.Path] = {}
    for name, frame in zip(names, splits, strict=True):
        paths[name] = write_table(frame, out / f"{name}.parquet", overwrite=overwrite)
    return paths
