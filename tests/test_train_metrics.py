"""``training.train_metrics``: training-set metrics after every update only when asked."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_auc_score

import gdmix
from gdmix import training
from gdmix.config import parse_config
from gdmix.errors import ConfigError


def _fit(toy_job, setting, *, validation=True, l2=1.0):
    raw = toy_job.config_copy()
    raw["training"]["train_metrics"] = setting
    raw["training"]["n_passes"] = 1
    raw["coordinates"][1]["l2"] = l2
    if not validation:
        raw["data"].pop("validation")
    return gdmix.fit(parse_config(raw))


def test_always_records_the_training_auc_of_every_update(toy_job):
    model = _fit(toy_job, "always")
    assert [r["coordinate"] for r in model.history] == ["global", "per_user", "per_item"]
    y = toy_job.train["label"].to_numpy()
    running = np.zeros(len(y))
    for record in model.history:  # the training AUC of the scores after each update
        assert record["train_auc"] is not None and record["validation_auc"] is not None
        running += model[record["coordinate"]].score(
            model[record["coordinate"]].design(toy_job.train, "t")
        )
        assert record["train_auc"] == pytest.approx(roc_auc_score(y, running), abs=1e-12)


@pytest.mark.parametrize("validation", [True, False])
def test_never_skips_them_and_validation_metrics_stay(toy_job, validation):
    model = _fit(toy_job, "never", validation=validation)
    for record in model.history:
        # Every record has the keys (gdmix.history); metrics not computed are None.
        assert record["train_auc"] is None and record["train_log_loss"] is None
        assert (record["validation_auc"] is not None) == validation
    ref = _fit(toy_job, "always", validation=validation)
    for a, b in zip(model.history, ref.history, strict=True):
        assert a.get("validation_auc") == b.get("validation_auc")
    # The model's training metrics: the sorted ones (AUC) only when asked for, the log
    # loss always (the objective's loss, already summed).
    y = toy_job.train["label"].to_numpy()
    p = model.predict_proba(toy_job.train)
    assert model.metrics["train"]["auc"] is None
    assert model.metrics["train"]["log_loss"] == pytest.approx(log_loss(y, p), rel=1e-10)
    assert ref.metrics["train"]["auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert ref.metrics["train"]["log_loss"] == pytest.approx(log_loss(y, p), rel=1e-10)


def test_auto_depends_on_the_training_rows(toy_job, monkeypatch):
    assert all(r["train_auc"] is not None for r in _fit(toy_job, "auto").history)
    monkeypatch.setattr(training._Table, "AUTO_METRICS_MAX_ROWS", len(toy_job.train) - 1)
    assert all(r["train_auc"] is None for r in _fit(toy_job, "auto").history)
    # An l2 search still reports the kept candidate's training metrics when on.
    searched = _fit(toy_job, "always", l2=[0.5, 5.0])
    assert all(r["train_auc"] is not None for r in searched.history
               if r["coordinate"] != "per_user" or r["selected"])  # fmt: skip


def test_bad_setting_is_rejected(toy_job):
    raw = toy_job.config_copy()
    raw["training"]["train_metrics"] = "sometimes"
    with pytest.raises(ConfigError, match="train_metrics"):
        parse_config(raw)


@pytest.mark.parametrize("with_offset", [False, True])
def test_the_objective_before_training_is_the_loss_at_the_offsets(with_offset):
    import pandas as pd

    from gdmix.config import DataConfig
    from gdmix.data.roles import extract_roles
    from gdmix.task_metrics import loss_sum

    rng = np.random.default_rng(0)
    n = 500
    frame = pd.DataFrame({"label": rng.integers(0, 2, n), "w": rng.uniform(0.1, 2.0, n),
                          "o": rng.normal(size=n)})  # fmt: skip
    data = DataConfig(label="label", weight="w", offset="o" if with_offset else None)
    roles = extract_roles(frame, data, "t", need_label=True)
    table = training._Table("t", roles, {})
    for name in ("a", "b"):  # coordinates not fitted yet
        table.scores[name] = table.zero_scores[name] = np.zeros(n)
    margin = frame["o"].to_numpy() if with_offset else np.zeros(n)
    expected = loss_sum("logistic", roles.y, margin, roles.weight)
    assert table.loss_sum() == pytest.approx(expected, rel=1e-13)
    p = 1.0 / (1.0 + np.exp(-margin))
    reference = log_loss(roles.y, p, sample_weight=roles.weight) * roles.weight.sum()
    assert table.loss_sum() == pytest.approx(reference, rel=1e-9)
    table.scores["a"] = np.full(n, 0.5)  # a fitted coordinate: summed as usual
    assert table.loss_sum() == pytest.approx(
        loss_sum("logistic", roles.y, margin + 0.5, roles.weight), rel=1e-13
    )
