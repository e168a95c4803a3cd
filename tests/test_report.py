"""Inspection, probabilities, the HTML report, and the one schema of history records."""

from __future__ import annotations

import base64
import html
import io
import json
import re

import numpy as np
import pandas as pd
import pytest

import gdmix
from gdmix.cli import main
from gdmix.history import RECORD_KEYS
from gdmix.losses import sigmoid
from gdmix.model import GDMixModel
from gdmix.model_dir import model_extras


@pytest.fixture
def model(trained_toy_model) -> GDMixModel:
    return GDMixModel.load(trained_toy_model)


def test_summary_numbers_are_the_models_own(model) -> None:
    info = model.summary(as_dict=True)
    by_name = {c["name"]: c for c in info["coordinates"]}
    user = model["per_user"]
    s = by_name["per_user"]
    assert s["n_entities"] == int(user.has_model.sum())
    assert s["rows_seen"] == int(user.n_rows.sum())
    assert s["intercept"]["mean"] == pytest.approx(user.intercept.mean())
    assert s["intercept"]["max"] == pytest.approx(user.intercept.max())
    assert sum(b["entities"] for b in s["shrinkage"]) == s["n_entities"]
    fe = model.coefficient_table("global")
    top = by_name["global"]["top_coefficients"]
    body = fe.iloc[1:]
    assert top[0]["coefficient"] == pytest.approx(body["coefficient"].abs().max(), abs=0) or (
        abs(top[0]["coefficient"]) == pytest.approx(body["coefficient"].abs().max())
    )
    magnitudes = [abs(t["coefficient"]) for t in top]
    assert magnitudes == sorted(magnitudes, reverse=True)
    kept = [r for r in model.history if r["selected"]]
    assert len(info["passes"]) == len(kept)
    text = model.summary()
    assert "per_user (random)" in text and f"{s['n_entities']} entities" in text


def test_inspect_command(trained_toy_model, capsys) -> None:
    assert main(["inspect", str(trained_toy_model)]) == 0
    assert "coordinates" in capsys.readouterr().out
    assert main(["inspect", str(trained_toy_model), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert [c["name"] for c in info["coordinates"]] == ["global", "per_user", "per_item"]
    # One entity; its id typed as text on the command line finds the integer entity.
    assert main(["inspect", str(trained_toy_model), "--entity", "per_user=7", "--json"]) == 0
    entity = json.loads(capsys.readouterr().out)
    m = GDMixModel.load(trained_toy_model)
    row = m.coefficient_table("per_user").set_index("entity_id").loc[7]
    assert entity["intercept"] == pytest.approx(row["intercept"])
    assert entity["n_rows"] == row["n_rows"]
    assert {c["feature"]: c["coefficient"] for c in entity["coefficients"]} == pytest.approx(
        {"x1": row["x1"]}
    )
    assert main(["inspect", str(trained_toy_model), "--entity", "per_user=99999"]) == 2
    assert "no model for entity" in capsys.readouterr().err
    assert main(["inspect", str(trained_toy_model), "--entity", "nonsense"]) == 2


def test_probabilities(model, toy_job, tmp_path) -> None:
    total = model.score(toy_job.test)["total"].to_numpy()
    np.testing.assert_allclose(model.predict_proba(toy_job.test), 1 / (1 + np.exp(-total)))
    out = tmp_path / "scores.parquet"
    argv = ["-q", "score", "--model", str(model.path), "--data", str(toy_job.test_path),
            "--output", str(out), "--output-probabilities"]  # fmt: skip
    assert main(argv) == 0
    written = pd.read_parquet(out)
    np.testing.assert_allclose(written["probability"], sigmoid(written["total"].to_numpy()))


def _images(text: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([^"]+)"', text)]


def test_report_is_self_contained_html_with_decodable_images(model, toy_job, tmp_path) -> None:
    import matplotlib.image

    path = gdmix.report.write_report(model, tmp_path / "r.html", toy_job.test)
    text = path.read_text()
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    assert "http://" not in text and "https://" not in text  # nothing fetched
    images = _images(text)
    assert len(images) >= 5
    for png in images:
        pixels = matplotlib.image.imread(io.BytesIO(png), format="png")
        assert pixels.ndim == 3 and pixels.shape[0] > 50 and pixels.shape[1] > 50
    plain = html.unescape(text)
    for section in ("Training history", "largest coefficients", "Random effect 'per_user'",
                    "calibration", "On the given data"):  # fmt: skip
        assert section in plain
    with pytest.raises(gdmix.OutputError, match="exists"):
        gdmix.report.write_report(model, path)


def test_report_command_and_train_report(toy_job, capsys) -> None:
    out = toy_job.root / "out"
    argv = ["-q", "train", "--config", str(toy_job.config_path), "--output", str(out),
            "--report"]  # fmt: skip
    assert main(argv) == 0
    assert (out / "report.html").is_file()
    assert model_extras(out) == []  # a report inside is the model's own file
    assert main(argv) == 0  # and the folder is still replaceable without --overwrite
    html_out = toy_job.root / "report.html"
    assert main(["-q", "report", "--model", str(out), "--output", str(html_out)]) == 0
    assert len(_images(html_out.read_text())) >= 3


def test_history_records_share_one_schema(toy_job) -> None:
    raw = toy_job.config_copy()
    raw["coordinates"][1]["l2"] = [1.0, 10.0]  # a search on one coordinate
    config = gdmix.config.parse_config(raw)
    model = gdmix.fit(config)
    for record in model.history:
        assert list(record)[: len(RECORD_KEYS)] == list(RECORD_KEYS)
    searched = [r for r in model.history if r["coordinate"] == "per_user" and r["pass"] == 1]
    assert [r["candidate"] for r in searched] == [0, 1]
    assert sum(r["selected"] for r in searched) == 1
    plain = gdmix.fit(gdmix.config.parse_config(toy_job.config_copy()))
    assert all(list(r)[: len(RECORD_KEYS)] == list(RECORD_KEYS) for r in plain.history)
