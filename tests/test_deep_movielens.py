"""MovieLens-100K with a deep fixed effect, on the real data, same split as the core example.

Paper (GDMix, KDD'22, deep FE = title CNN), test AUC: FE 0.7090, +per-user 0.7665,
+per-movie 0.7680. Full figures (more epochs and passes): ``benchmarks/movielens.py --deep``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest.importorskip("torch")

from gdmix.config import load_config
from gdmix.data.movielens import load_movielens_100k, split_movielens
from gdmix.examples.movielens import deep_example_config, run_deep_example

ROOT = Path(__file__).resolve().parents[1]
DEVICE = os.environ.get("GDMIX_TEST_DEVICE", "cpu")


def _data_dir() -> Path:
    env = os.environ.get("GDMIX_DATA_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="module")
def tables():
    return split_movielens(load_movielens_100k(_data_dir(), download=False), seed=0)


def test_text_cnn_pipeline_end_to_end(tables) -> None:
    # A short run (3 epochs, one pass); the full run reaches about 0.711 / 0.772 / 0.782.
    result = run_deep_example("text_cnn", tables=tables, max_epochs=3, n_passes=1, device=DEVICE)
    fe, fe_user, fe_user_movie = result.auc
    assert fe > 0.69
    assert fe < fe_user < fe_user_movie
    assert fe_user_movie > 0.77
    history = [h for h in result.model.history if h["coordinate"] == "global"]
    assert history[0]["epochs"] == 3
    assert result.model["global"].encoder.tokenizer.vocab_size > 1000  # title words


def test_best_configuration_beats_the_lightgbm_baseline(tables) -> None:
    # DLRM-style fixed effect (user and movie id embeddings, dot interactions) + per-user
    # + per-movie; hyper-parameters chosen on validation. LightGBM reaches about 0.779.
    result = run_deep_example("dlrm", tables=tables, device=DEVICE)
    assert result.auc[2] >= 0.784
    assert result.model.metrics["validation"]["auc"] > 0.78


def test_yaml_example_matches_the_python_example() -> None:
    config = load_config(ROOT / "examples" / "movielens_100k_deep.yaml")
    expected = deep_example_config("text_cnn")
    for ours, theirs in zip(config.coordinates, expected.coordinates, strict=True):
        assert ours.model_dump() == theirs.model_dump()
    assert config.training.n_passes == expected.training.n_passes
