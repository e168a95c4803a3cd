"""Tests of gdmix.data.movielens on the real MovieLens-100K files (never copied into the repo)."""

from __future__ import annotations

import io
import os
import shutil
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gdmix.data import movielens as ml
from gdmix.errors import DataError

FILES = ["u.data", "u.item", "u.user"]


def _data_root() -> Path:
    env = os.environ.get("GDMIX_DATA_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="module")
def source_dir() -> Path:
    root = _data_root()
    for folder in (root, root / "ml-100k"):
        if all((folder / name).is_file() for name in FILES):
            return folder
    pytest.fail(f"MovieLens-100K files not found under {root}; set GDMIX_DATA_DIR")


@pytest.fixture(scope="module")
def ratings(source_dir: Path) -> pd.DataFrame:
    return ml.load_movielens_100k(source_dir, download=False)


@pytest.fixture
def no_sources(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Unset GDMIX_DATA_DIR and point the cache at an empty folder, which is returned."""
    cache = tmp_path / "cache"
    monkeypatch.delenv("GDMIX_DATA_DIR", raising=False)
    monkeypatch.setenv("GDMIX_CACHE_DIR", str(cache))
    return cache


def test_constants() -> None:
    assert len(ml.GENRE_COLUMNS) == 19
    assert ml.GENRE_COLUMNS[:2] == ["genre_unknown", "genre_action"]
    for name in ["genre_children_s", "genre_film_noir", "genre_sci_fi"]:
        assert name in ml.GENRE_COLUMNS
    assert ml.GENRE_COLUMNS[-1] == "genre_western"
    assert ml.MOVIE_NUMERIC == [*ml.GENRE_COLUMNS, "year"]
    assert ml.USER_NUMERIC == ["age", "gender_m"]
    assert ml.USER_CATEGORICAL == ["occupation"]
    assert ml.ML100K_ZIP_SHA256 is None
    assert set(ml.ML100K_FILE_SHA256) == set(FILES)


def test_load(ratings: pd.DataFrame) -> None:
    df = ratings
    assert len(df) == 100_000
    assert df["user_id"].nunique() == 943
    assert df["movie_id"].nunique() == 1682
    for col in ["user_id", "movie_id", "rating", "timestamp", "label"]:
        assert df[col].dtype == np.int64
    assert df["label"].mean() == pytest.approx(0.55375)
    assert (df["label"] == (df["rating"] > 3)).all()
    assert [c for c in df.columns if c.startswith("genre_")] == ml.GENRE_COLUMNS
    features = ml.USER_NUMERIC + ml.MOVIE_NUMERIC
    assert (df[features].dtypes == np.float64).all()
    assert not df[[*features, "occupation", "title"]].isna().any().any()
    assert df["age"].between(0, 1, inclusive="neither").all()
    assert set(np.unique(df[[*ml.GENRE_COLUMNS, "gender_m"]])) == {0.0, 1.0}
    assert df["occupation"].nunique() == 21
    assert df["year"].between(1900 / 2000, 1999 / 2000).all()
    titles = df.drop_duplicates("movie_id").set_index("movie_id")["title"]
    assert titles[1] == "Toy Story (1995)"
    assert titles[543] == "Misérables, Les (1995)"


def test_split(ratings: pd.DataFrame) -> None:
    train, val, test = ml.split_movielens(ratings, seed=0)
    assert (len(train), len(val), len(test)) == (72_000, 8_000, 20_000)
    uids = np.concatenate([part["uid"].to_numpy() for part in (train, val, test)])
    assert len(np.unique(uids)) == 100_000
    for part in (train, val, test):
        assert part["uid"].dtype == np.int64
        assert isinstance(part.index, pd.RangeIndex) and part.index.start == 0
        # uid is the original row number
        pd.testing.assert_frame_equal(
            part.drop(columns="uid"),
            ratings.iloc[part["uid"].to_numpy()].reset_index(drop=True),
        )
    again = ml.split_movielens(ratings, seed=0)
    for a, b in zip((train, val, test), again, strict=True):
        pd.testing.assert_frame_equal(a, b)
    other = ml.split_movielens(ratings, seed=1)
    assert not np.array_equal(other[2]["uid"], test["uid"])
    assert "uid" not in ratings.columns


def test_write_parquet(source_dir: Path, ratings: pd.DataFrame, tmp_path: Path) -> None:
    paths = ml.write_movielens_parquet(tmp_path / "out", data_dir=source_dir, download=False)
    assert set(paths) == {"train", "validation", "test"}
    expected = ml.split_movielens(ratings, seed=0)
    for name, frame in zip(("train", "validation", "test"), expected, strict=True):
        assert paths[name] == tmp_path / "out" / f"{name}.parquet"
        back = pd.read_parquet(paths[name])
        pd.testing.assert_frame_equal(back, frame, check_dtype=False)
        assert list(back.columns) == list(frame.columns)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "test.parquet",
        "train.parquet",
        "validation.parquet",
    ]


def test_find_via_env_and_parent(
    source_dir: Path, no_sources: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert ml.find_movielens_100k(source_dir, download=False) == source_dir
    monkeypatch.setenv("GDMIX_DATA_DIR", str(source_dir))
    assert ml.find_movielens_100k(download=False) == source_dir


def test_find_missing_raises(no_sources: Path) -> None:
    with pytest.raises(DataError, match="GDMIX_DATA_DIR") as info:
        ml.find_movielens_100k(download=False)
    assert str(no_sources / "ml-100k") in str(info.value)


def test_corrupted_copy_fails_checksum(source_dir: Path, tmp_path: Path, no_sources: Path) -> None:
    copy = tmp_path / "ml-100k"
    copy.mkdir()
    for name in FILES:
        shutil.copyfile(source_dir / name, copy / name)
    assert ml.find_movielens_100k(tmp_path, download=False) == copy
    with open(copy / "u.user", "ab") as fh:
        fh.write(b"x")
    with pytest.raises(DataError, match=r"u\.user"):
        ml.find_movielens_100k(tmp_path, download=False)


class _FakeResponse(io.BytesIO):
    def __init__(self, payload: bytes) -> None:
        super().__init__(payload)
        self.headers = {"Content-Length": str(len(payload))}


def _zip_bytes(source_dir: Path, *, corrupt: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in FILES:
            data = (source_dir / name).read_bytes()
            archive.writestr(f"ml-100k/{name}", data + (b"x" if name == corrupt else b""))
        archive.writestr("ml-100k/README", b"not needed")
    return buffer.getvalue()


def _serve(monkeypatch: pytest.MonkeyPatch, payload: bytes) -> list[str]:
    calls: list[str] = []

    def fake_urlopen(url: str, *args: object, **kwargs: object) -> _FakeResponse:
        calls.append(url)
        return _FakeResponse(payload)

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    return calls


def test_download(
    source_dir: Path,
    no_sources: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    calls = _serve(monkeypatch, _zip_bytes(source_dir))
    folder = ml.find_movielens_100k(download=True)
    assert calls == [ml.ML100K_URL]
    assert folder == no_sources / "ml-100k"
    assert sorted(p.name for p in folder.iterdir()) == FILES
    for name in FILES:
        assert (folder / name).read_bytes() == (source_dir / name).read_bytes()
    assert sorted(p.name for p in no_sources.iterdir()) == ["ml-100k"]  # zip removed
    assert "Downloading" in capsys.readouterr().err
    # found in the cache the second time, without downloading
    assert ml.find_movielens_100k(download=True) == folder
    assert len(calls) == 1


def test_download_corrupted_zip(
    source_dir: Path, no_sources: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _serve(monkeypatch, _zip_bytes(source_dir, corrupt="u.item"))
    with pytest.raises(DataError, match=r"u\.item"):
        ml.find_movielens_100k(download=True, progress=False)
    folder = no_sources / "ml-100k"
    assert not (folder / "u.item").exists()
    assert not (no_sources / "ml-100k.zip").exists()


def test_download_failure(no_sources: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(url: str, *args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DataError, match=r"download .* failed.*GDMIX_DATA_DIR"):
        ml.find_movielens_100k(download=True, progress=False)
    assert not any(no_sources.iterdir())
