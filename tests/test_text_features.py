"""Raw columns for linear coordinates: ``features.text`` and ``features.hashed``.

Independent references: scikit-learn's ``TfidfVectorizer`` / ``CountVectorizer`` (the
same vocabulary, the same values to 1e-12) and ``FeatureHasher`` / ``murmurhash3_32``
(the same columns and values), and, for whole models, the same model trained on a bag
column holding exactly the vectorizers' output (gdmix has encoded bags since its first
version), to 1e-10.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sklearn.feature_extraction import FeatureHasher
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
from sklearn.utils import murmurhash3_32 as sk_murmur

import gdmix
from gdmix.config import FeatureConfig, parse_config
from gdmix.data.features import FeatureIndex
from gdmix.data.hashing import murmurhash3_32
from gdmix.errors import ConfigError, DataError

WORDS = ["alpha", "beta", "Gamma", "delta", "eps", "zeta", "eta", "theta", "iota", "kappa",
         "lambda", "mu", "a", "naïve", "café", "x1", "x_2", "LOUD", "rho", "sigma"]  # fmt: skip
GOOD = {"alpha", "beta", "gamma", "theta"}


def _texts(n: int, seed: int) -> list[str | None]:
    rng = np.random.default_rng(seed)
    out: list[str | None] = []
    for i in range(n):
        words = rng.choice(WORDS, rng.integers(0, 10))
        punct = rng.choice([" ", ", ", "! ", ". "], len(words))
        out.append("".join(w + p for w, p in zip(words, punct, strict=True)))
        if i % 37 == 5:
            out[-1] = None
    return out


def _plain(texts: list[str | None]) -> list[str]:
    return ["" if not isinstance(t, str) else t for t in texts]


@pytest.fixture(scope="module")
def corpus() -> pd.DataFrame:
    return pd.DataFrame({"t": _texts(400, 0)})


# -- the design matrix against scikit-learn -----------------------------------------------

TFIDF_SETTINGS = [
    {},
    {"ngram_range": (1, 2)},
    {"ngram_range": (2, 3), "min_df": 3, "sublinear_tf": True},
    {"min_df": 0.05, "max_df": 0.5},
    {"max_df": 90, "lowercase": False},
    {"token_pattern": r"(?u)\b(\w+)\b", "ngram_range": (1, 2)},
]


@pytest.mark.parametrize("settings", TFIDF_SETTINGS)
def test_tfidf_equals_scikit_learn(corpus, settings):
    spec = FeatureConfig(text=[{"column": "t", **settings}])
    index = FeatureIndex.build(corpus, spec, "train")
    ref = TfidfVectorizer(**settings).fit(_plain(corpus["t"].tolist()))
    assert index.text["t"].terms == ref.get_feature_names_out().tolist()
    np.testing.assert_allclose(index.text["t"].idf, ref.idf_, rtol=0, atol=1e-12)
    X = index.transform(corpus, "train")
    R = ref.transform(_plain(corpus["t"].tolist()))
    assert X.shape == R.shape
    assert abs(X - R).max() <= 1e-12
    # scoring texts with words never seen in training: ignored, as scikit-learn does
    test = pd.DataFrame({"t": [*_texts(50, 1), "omega psi Alpha", "", None, "unseen words only"]})
    Xt = index.transform(test, "test")
    Rt = ref.transform(_plain(test["t"].tolist()))
    assert abs(Xt - Rt).max() <= 1e-12
    assert Xt[-1].nnz == 0 and Xt[-2].nnz == 0


@pytest.mark.parametrize(
    "settings",
    [{}, {"ngram_range": (1, 3), "min_df": 2}, {"ngram_range": (2, 2), "min_df": 0.02}],
)
def test_counts_equal_count_vectorizer(corpus, settings):
    spec = FeatureConfig(text=[{"column": "t", "tfidf": False, **settings}])
    index = FeatureIndex.build(corpus, spec, "train")
    ref = CountVectorizer(**settings).fit(_plain(corpus["t"].tolist()))
    assert index.text["t"].terms == ref.get_feature_names_out().tolist()
    X = index.transform(corpus, "train")
    assert X.dtype == np.float64
    assert abs(X - ref.transform(_plain(corpus["t"].tolist()))).max() == 0


def test_max_features_keeps_the_most_frequent_terms(corpus):
    texts = _plain(corpus["t"].tolist())
    full = CountVectorizer(ngram_range=(1, 2)).fit(texts)
    totals = np.sort(np.asarray(full.transform(texts).sum(axis=0)).ravel())[::-1]
    # a cut where no two terms tie, so that the kept set is defined by counts alone
    limit = next(k for k in range(30, len(totals)) if totals[k - 1] > totals[k])
    spec = FeatureConfig(text=[{"column": "t", "ngram_range": (1, 2), "max_features": limit}])
    index = FeatureIndex.build(corpus, spec, "train")
    ref = TfidfVectorizer(ngram_range=(1, 2), max_features=limit).fit(texts)
    assert index.text["t"].terms == ref.get_feature_names_out().tolist()
    assert abs(index.transform(corpus, "train") - ref.transform(texts)).max() <= 1e-12


def test_parts_add_up_to_the_whole(corpus):
    """Vocabularies counted on batches and joined (the streaming and dask engines) equal
    the vocabulary of the whole table: same terms after pruning, same idf."""
    spec = FeatureConfig(
        text=[{"column": "t", "ngram_range": (1, 2), "min_df": 3, "max_features": 60}],
        hashed=[{"columns": "t", "n_buckets": 8}],
    )
    whole = FeatureIndex.build(corpus, spec, "train")
    parts = [FeatureIndex.build(corpus.iloc[a:b], spec, "part")
             for a, b in [(0, 70), (70, 71), (71, 300), (300, 400)]]  # fmt: skip
    joined = parts[0]
    for p in parts[1:]:
        joined = joined.union(p)
    assert joined == whole
    assert abs(joined.transform(corpus, "x") - whole.transform(corpus, "x")).max() == 0


def test_text_column_of_numbers_is_refused():
    spec = FeatureConfig(text=["t"])
    with pytest.raises(DataError, match="text column 't' must hold strings"):
        FeatureIndex.build(pd.DataFrame({"t": ["a b", 3]}), spec, "train")
    with pytest.raises(DataError, match="no term"):
        _ = FeatureIndex.build(pd.DataFrame({"t": ["a", "", None]}), spec, "train").n_features


# -- hashing --------------------------------------------------------------------------------


def test_murmurhash_equals_scikit_learn():
    rng = np.random.default_rng(0)
    alphabet = [*string.printable, "é", "ß", "語", "😀"]
    strings = ["", "a", "ab", "abc", "abcd", "abcde", "c=3"] + [
        "".join(rng.choice(alphabet, rng.integers(0, 30))) for _ in range(3000)
    ]
    for seed in (0, 7, 2**32 - 1):
        got = murmurhash3_32(strings, seed=seed)
        want = np.array([sk_murmur(s, seed=seed) for s in strings])
        np.testing.assert_array_equal(got, want)


def _hash_frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ints = rng.integers(0, 5000, n)
    floats = pd.Series(rng.integers(0, 40, n).astype(float))
    floats[rng.random(n) < 0.1] = np.nan  # nulls give no feature; 3.0 hashes as "3"
    strs = pd.Series(rng.choice([f"ad{k}" for k in range(3000)], n), dtype=object)
    strs[rng.random(n) < 0.1] = None
    return pd.DataFrame({"i": ints, "f": floats, "s": strs})


def _hasher_rows(frame: pd.DataFrame, columns: list[str]) -> list[dict[str, str]]:
    rows = []
    for rec in frame[columns].to_dict("records"):
        row = {}
        for c, v in rec.items():
            if pd.isna(v):
                continue
            row[c] = str(int(v)) if isinstance(v, float) else str(v)
        rows.append(row)
    return rows


@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("n_buckets", [1, 16, 2**20])
def test_hashed_equals_feature_hasher(signed, n_buckets):
    frame = _hash_frame(2000, 0)
    spec = FeatureConfig(
        hashed=[
            {"columns": ["i", "s"], "n_buckets": n_buckets, "signed": signed},  # shared block
            {"columns": "f", "n_buckets": n_buckets, "signed": signed},
        ]
    )
    index = FeatureIndex.build(frame, spec, "train")
    X = index.transform(frame, "train")
    assert X.shape == (2000, 2 * n_buckets) and index.n_features == 2 * n_buckets
    ref = [FeatureHasher(n_buckets, input_type="dict", alternate_sign=signed)
           .transform(_hasher_rows(frame, cols)) for cols in (["i", "s"], ["f"])]  # fmt: skip
    R = sp.hstack(ref, format="csr")
    R.eliminate_zeros()
    assert abs(X - R).max() == 0 if X.nnz else R.nnz == 0
    assert X.nnz == R.nnz  # cancelled collisions leave no explicit zero
    names = index.feature_names()
    assert names[0] == "i+s#0" and names[n_buckets] == "f#0" and names[-1] == f"f#{n_buckets - 1}"
    # values never seen in training hash like any other
    test = _hash_frame(300, 1)
    Rt = sp.hstack([FeatureHasher(n_buckets, input_type="dict", alternate_sign=signed)
                    .transform(_hasher_rows(test, cols)) for cols in (["i", "s"], ["f"])],
                   format="csr")  # fmt: skip
    assert abs(index.transform(test, "test") - Rt).max() == 0


# -- models -----------------------------------------------------------------------------------


def _model_frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    texts = _texts(n, seed + 10)
    user = rng.integers(0, 30, n)
    ad = rng.choice([f"ad{k}" for k in range(500)], n)
    x1 = rng.normal(size=n)
    good = np.array([sum(w.strip(",.!").lower() in GOOD for w in (t or "").split())
                     for t in texts])  # fmt: skip
    logit = 0.5 * x1 + 0.6 * good - 1.0 + 0.4 * (user % 3 - 1) + 0.3 * (np.char.str_len(ad) % 2)
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    return pd.DataFrame({"uid": np.arange(n), "user": user, "ad": ad, "x1": x1, "t": texts,
                         "label": y})  # fmt: skip


GLOBAL_TEXT = {"column": "t", "ngram_range": (1, 2), "min_df": 2}
USER_TEXT = {"column": "t", "tfidf": False, "ngram_range": (1, 2)}
AD_HASH = {"columns": "ad", "n_buckets": 64, "signed": True}


def _raw(kind: str) -> dict:
    if kind == "raw":
        g = {"numeric": ["x1"], "text": [GLOBAL_TEXT], "hashed": [AD_HASH]}
        u = {"text": [USER_TEXT]}
    else:
        g = {"numeric": ["x1"], "bags": ["g_text", "g_hash"]}
        u = {"bags": ["u_text"]}
    return {
        "data": {"uid": "uid"},
        "coordinates": [
            {"name": "g", "type": "fixed", "l2": 1.0, "features": g},
            {"name": "u", "type": "random", "entity": "user", "l2": 3.0, "features": u,
             "tol": 1e-12},
        ],
        "training": {"n_passes": 2, "progress": False, "tol": 0.0},
    }  # fmt: skip


def _bag(X: sp.csr_matrix, names: list[str]) -> list[list[dict]]:
    X = sp.csr_matrix(X)
    X.sort_indices()
    return [[{"name": names[j], "term": "", "value": float(v)}
             for j, v in zip(X.indices[X.indptr[i]:X.indptr[i + 1]],
                             X.data[X.indptr[i]:X.indptr[i + 1]], strict=True)]
            for i in range(X.shape[0])]  # fmt: skip


def _with_bags(frame: pd.DataFrame, train: pd.DataFrame) -> pd.DataFrame:
    """The reference columns: the vectorizers fitted on ``train``, applied to ``frame``."""
    texts = _plain(train["t"].tolist())
    g = TfidfVectorizer(ngram_range=(1, 2), min_df=2).fit(texts)
    u = CountVectorizer(ngram_range=(1, 2)).fit(texts)
    h = FeatureHasher(64, input_type="dict")
    own = _plain(frame["t"].tolist())
    return frame.assign(
        g_text=_bag(g.transform(own), g.get_feature_names_out().tolist()),
        u_text=_bag(u.transform(own), u.get_feature_names_out().tolist()),
        g_hash=_bag(h.transform([{"ad": a} for a in frame["ad"]]),
                    [f"{j:03d}" for j in range(64)]),
    )  # fmt: skip


@pytest.fixture(scope="module")
def frames() -> dict[str, pd.DataFrame]:
    return {"train": _model_frame(1500, 0), "test": _model_frame(300, 1)}


@pytest.fixture(scope="module")
def raw_model(frames) -> gdmix.GDMixModel:
    return gdmix.fit(parse_config(_raw("raw")), frames["train"])


def _by_name(names: list[str], values: np.ndarray) -> dict[str, float]:
    """Coefficients keyed alike in both models: ``text/<term>``, ``hash/<bucket>``."""
    out = {}
    for name, v in zip(names, values, strict=True):
        if name.startswith(("t[", "g_text[")):
            key = "text/" + name.split("[", 1)[1].removesuffix("]").removesuffix(",")
        elif name.startswith("ad#"):
            key = f"hash/{int(name[3:])}"
        elif name.startswith("g_hash["):
            key = f"hash/{int(name[7:].removesuffix(',]'))}"
        else:
            key = name
        out[key] = float(v)
    return out


def test_model_equals_the_model_on_vectorizer_bags(frames, raw_model):
    train = frames["train"]
    ref = gdmix.fit(parse_config(_raw("bags")), _with_bags(train, train))
    assert raw_model["u"].features.n_features > 256  # the wide-shard path
    assert sp.issparse(raw_model["u"].coef)
    a = raw_model.coefficient_table("g")
    b = ref.coefficient_table("g")
    ca, cb = _by_name(a["feature"].tolist(), a["coefficient"]), _by_name(
        b["feature"].tolist(), b["coefficient"])  # fmt: skip
    assert ca.keys() == cb.keys()
    for k in ca:
        assert abs(ca[k] - cb[k]) <= 1e-10, k
    ua = raw_model["u"].coef.toarray()
    ub = ref["u"].coef.toarray()
    np.testing.assert_allclose(ua, ub, rtol=0, atol=1e-10)  # same column order
    np.testing.assert_allclose(raw_model["u"].intercept, ref["u"].intercept, rtol=0, atol=1e-10)
    test = frames["test"]
    sa = raw_model.score(test)
    sb = ref.score(_with_bags(test, train))
    np.testing.assert_allclose(sa["total"], sb["total"], rtol=0, atol=1e-10)


def test_save_load_round_trip(frames, raw_model, tmp_path):
    path = tmp_path / "model"
    raw_model.save(path)
    saved = json.loads((path / "coordinates" / "g" / "features.json").read_text())
    assert saved["text"][0]["terms"] == raw_model["g"].features.text["t"].terms
    assert saved["hashed"] == [{"columns": ["ad"], "n_buckets": 64, "signed": True}]
    loaded = gdmix.GDMixModel.load(path)
    for name in ("g", "u"):
        assert loaded[name].features == raw_model[name].features
    test = frames["test"].copy()
    test.loc[0, "t"] = "completely unseen vocabulary here"
    test.loc[1, "ad"] = "never-seen-ad"
    np.testing.assert_array_equal(loaded.score(test)["total"], raw_model.score(test)["total"])


def test_served_scores_equal_batch_scores(frames, raw_model, tmp_path):
    from gdmix.serving import load_serving_model

    path = tmp_path / "model"
    raw_model.save(path)
    served = load_serving_model(path)
    test = frames["test"].iloc[:80].copy()
    test.loc[0, "t"] = "Alpha ALPHA beta, unseen!"
    test.loc[1, "ad"] = "never-seen-ad"
    test.loc[2, "user"] = 999
    rows = [{"uid": int(r.uid), "user": int(r.user), "ad": r.ad, "x1": float(r.x1),
             "t": r.t if isinstance(r.t, str) else None}
            for r in test.itertuples()]  # fmt: skip
    result = served.score_rows(rows)
    batch = raw_model.score(test)
    for name in ("g", "u"):
        np.testing.assert_allclose(result.scores[name], batch[name], rtol=0, atol=1e-12)
    np.testing.assert_allclose(result.total, batch["total"], rtol=0, atol=1e-12)
    assert set(served.inputs.texts) == {"t"} and "ad" in served.inputs.categorical


def test_streaming_engine_equals_local(frames, raw_model, tmp_path):
    train = tmp_path / "train.parquet"
    frames["train"].to_parquet(train)
    raw = _raw("raw")
    raw["training"] = {**raw["training"], "engine": "streaming",
                       "streaming": {"batch_rows": 400, "n_buckets": 3,
                                     "work_dir": str(tmp_path / "work")}}  # fmt: skip
    streamed = gdmix.fit(parse_config(raw), train)
    local = gdmix.fit(parse_config(_raw("raw")), train)
    for name in ("g", "u"):
        assert streamed[name].features == local[name].features
    np.testing.assert_allclose(streamed["g"].coef, local["g"].coef, rtol=0, atol=1e-6)
    s_streamed, s_local = streamed.score(frames["test"]), local.score(frames["test"])
    np.testing.assert_allclose(s_streamed["total"], s_local["total"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(s_local["total"], raw_model.score(frames["test"])["total"],
                               rtol=0, atol=1e-12)  # fmt: skip


def test_csv_text_column_trains(frames, raw_model, tmp_path: Path):
    """A CSV file cannot hold a bag column, but it holds text and hashed columns."""
    path = tmp_path / "train.csv"
    frames["train"].to_csv(path, index=False)
    model = gdmix.fit(parse_config(_raw("raw")), path)
    np.testing.assert_allclose(model["g"].coef, raw_model["g"].coef, rtol=0, atol=1e-10)


# -- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("features", "message"),
    [
        ({"text": [{"column": "t", "ngram_range": [2, 1]}]}, "1 <= min_n <= max_n"),
        ({"text": [{"column": "t", "token_pattern": "(a)(b)"}]}, "at most one capturing group"),
        ({"text": [{"column": "t", "min_df": 1.5}]}, "min_df"),
        ({"hashed": [{"columns": "c", "n_buckets": 0}]}, "n_buckets"),
        ({"hashed": [{"columns": []}]}, "n_buckets"),
    ],
)
def test_bad_settings_name_the_key(features, message):
    raw = {"coordinates": [{"name": "g", "type": "fixed", "features": features}]}
    with pytest.raises(ConfigError, match=message):
        parse_config(raw)


def test_deep_coordinates_refuse_raw_features():
    raw = {"coordinates": [{"name": "g", "type": "gbdt", "features": {"text": ["t"]}}]}
    with pytest.raises(ConfigError, match="linear coordinates"):
        parse_config(raw)


def test_a_column_used_twice_is_refused():
    feats = {"categorical": ["ad"], "hashed": [{"columns": "ad", "n_buckets": 4}]}
    raw = {"coordinates": [{"name": "g", "type": "fixed", "features": feats}]}
    with pytest.raises(ConfigError, match="twice"):
        parse_config(raw)


def test_a_table_without_any_text_scores(frames, raw_model):
    """Null texts and hashed values are no features: a scoring table whose text or hashed
    column holds only nulls (read from a CSV file, a column of floats) scores like one of
    empty texts."""
    test = frames["test"].iloc[:50].copy()
    empty = raw_model.score(test.assign(t="", ad=None))
    nulls = raw_model.score(test.assign(t=np.nan, ad=np.nan))
    np.testing.assert_array_equal(nulls["total"], empty["total"])
    g = raw_model["g"]
    expected = g.intercept + g.coef[0] * test["x1"].to_numpy()  # x1 is the only feature left
    np.testing.assert_allclose(empty["g"], expected, rtol=0, atol=1e-12)


def test_dask_engine_equals_local(frames, raw_model, dask_client):
    """The dask engine builds the index maps per partition and joins them: the same
    vocabulary and idf, the same model."""
    from gdmix.engines.dask_engine import fit_dask

    remote = fit_dask(parse_config(_raw("raw")), frames["train"], client=dask_client)
    for name in ("g", "u"):
        assert remote[name].features == raw_model[name].features
    np.testing.assert_allclose(remote["g"].coef, raw_model["g"].coef, rtol=0, atol=1e-8)
    expected = raw_model.score(frames["test"])["total"]
    np.testing.assert_allclose(remote.score(frames["test"])["total"], expected, rtol=0, atol=1e-8)
