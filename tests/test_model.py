"""Model directory: save/load round trips, scoring rules, atomic replacement."""

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import gdmix
from gdmix.config import parse_config
from gdmix.errors import ModelDirectoryError, OutputError


def _data(seed: int, n: int = 1200) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    users = np.array([f"u{i:03d}" for i in range(30)])
    user = users[rng.integers(0, 30, n)]
    color = rng.choice(["red", "green", "blue"], n)
    x = rng.normal(size=n)
    bags = [
        [{"name": "tag", "term": t, "value": 1.0} for t in rng.choice(["a", "b", "c"], k)]
        for k in rng.integers(0, 3, n)
    ]
    logit = 0.7 * x + (color == "red") - 0.5 + rng.normal(0, 0.8, 30)[np.searchsorted(users, user)]
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return pd.DataFrame({"uid": np.arange(n), "user": user, "x": x, "color": color,
                         "tags": bags, "label": y})  # fmt: skip


def _config() -> gdmix.GDMixConfig:
    return parse_config(
        {
            "data": {"uid": "uid"},
            "coordinates": [
                {"name": "global", "type": "fixed", "features": {
                    "numeric": ["x"], "categorical": ["color"], "bags": ["tags"]}},
                {"name": "per_user", "type": "random", "entity": "user",
                 "features": {"numeric": ["x"], "bags": ["tags"]}},
            ],
            "training": {"n_passes": 2, "progress": False},
        }
    )  # fmt: skip


@pytest.fixture(scope="module")
def trained():
    frame = _data(0)
    return frame, gdmix.fit(_config(), frame)


def test_round_trip_scores_identically(trained, tmp_path):
    _frame, model = trained
    model.save(tmp_path / "m")
    loaded = gdmix.GDMixModel.load(tmp_path / "m")
    test = _data(1, 300)
    pd.testing.assert_frame_equal(model.score(test), loaded.score(test))
    assert loaded.metrics["params"] == model.metrics["params"]
    assert [c.name for c in loaded.coordinates] == ["global", "per_user"]


def test_directory_layout_and_tables(trained, tmp_path):
    frame, model = trained
    path = model.save(tmp_path / "m")
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["format"] == "gdmix-model" and manifest["format_version"] == 1
    assert [c["name"] for c in manifest["coordinates"]] == ["global", "per_user"]
    fixed = pq.read_table(path / "coordinates/global/coefficients.parquet").to_pandas()
    names = fixed["feature"].tolist()
    assert names[0] == "(intercept)"
    assert names[1:] == ["x", "color=blue", "color=green", "color=red",
                         "tags[tag,a]", "tags[tag,b]", "tags[tag,c]"]  # fmt: skip
    np.testing.assert_array_equal(fixed["coefficient"].to_numpy()[1:], model["global"].coef)
    rand = pq.read_table(path / "coordinates/per_user/coefficients.parquet").to_pandas()
    assert rand["entity_id"].tolist() == sorted(frame["user"].unique())
    assert rand["n_rows"].sum() == len(frame)
    re = model["per_user"]
    for _, row in rand.iterrows():
        e = re.entity_ids.get_loc(row["entity_id"])
        dense = np.zeros(re.coef.shape[1])
        dense[row["indices"]] = row["values"]
        np.testing.assert_array_equal(dense, re.coef[e])
        assert row["intercept"] == re.intercept[e]


def test_unseen_entities_score_zero_and_fall_back(trained):
    _frame, model = trained
    test = _data(2, 50)
    test.loc[:9, "user"] = "never-seen"
    scores = model.score(test)
    assert (scores["per_user"].iloc[:10] == 0).all()
    assert (scores["per_user"].iloc[10:] != 0).all()
    np.testing.assert_allclose(scores["total"], scores["global"] + scores["per_user"])
    assert scores["uid"].tolist() == test["uid"].tolist()


def test_unseen_category_and_bag_terms_are_ignored(trained):
    _frame, model = trained
    test = _data(3, 20)
    base = model.score(test)
    test["color"] = "purple"
    test["tags"] = [[{"name": "tag", "term": "zzz", "value": 5.0}]] * len(test)
    fe = model["global"]
    expected = fe.intercept + fe.coef[0] * test["x"].to_numpy()
    np.testing.assert_allclose(model.score(test)["global"], expected)
    assert not np.allclose(base["global"], expected)


def test_predict_proba_and_evaluate(trained):
    from sklearn.metrics import roc_auc_score

    _frame, model = trained
    test = _data(4, 500)
    p = model.predict_proba(test)
    np.testing.assert_allclose(p, 1 / (1 + np.exp(-model.score(test)["total"])))
    metrics = model.evaluate(test, group_by=["user"])
    assert metrics["auc"] == pytest.approx(roc_auc_score(test["label"], p))
    assert metrics["auc_after@per_user"] == pytest.approx(metrics["auc"])
    assert 0.5 < metrics["auc@user"] < 1


def test_save_replaces_a_model_but_not_other_folders(trained, tmp_path):
    _frame, model = trained
    target = tmp_path / "m"
    model.save(target)
    model.save(target)  # replacing a model is fine
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(OutputError, match="does not hold a gdmix model"):
        model.save(other)
    assert (other / "keep.txt").read_text() == "mine"


def test_load_rejects_other_format_versions(trained, tmp_path):
    _frame, model = trained
    path = model.save(tmp_path / "m")
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["format_version"] = 99
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelDirectoryError, match="version 99"):
        gdmix.GDMixModel.load(path)


def test_missing_coefficients_file_is_reported(trained, tmp_path):
    _frame, model = trained
    path = model.save(tmp_path / "m")
    (path / "coordinates/per_user/coefficients.parquet").unlink()
    with pytest.raises(ModelDirectoryError, match="per_user"):
        gdmix.GDMixModel.load(path)
