"""examples/text_tfidf.py at a small size: TF-IDF straight in, l2 chosen on validation,
a refit on all labelled data, scikit-learn in the same run."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("sklearn")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "text_tfidf.py"


def _load():
    spec = importlib.util.spec_from_file_location("text_tfidf_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_text_tfidf_example_runs_and_beats_text_only_logistic_regression(capsys) -> None:
    result = _load().main(n_reviews=4000, n_reviewers=80, seed=0)
    out = capsys.readouterr().out
    assert "gdmix refit on train + validation" in out
    # The reviewers' biases are in the data: the mixed model must beat text alone, and
    # match a logistic regression given the reviewers as one-hot columns.
    assert result["gdmix_auc"] > result["sklearn_auc"] + 0.03
    assert abs(result["gdmix_auc"] - result["sklearn_onehot_auc"]) < 0.03
    # Its fixed effect alone is the text model: about scikit-learn's.
    assert abs(result["gdmix_fixed_auc"] - result["sklearn_auc"]) < 0.03
