"""A model folder from elsewhere is data, not code: loading it is safe by default."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gdmix.cli import main
from gdmix.errors import ModelDirectoryError
from gdmix.model import GDMixModel


def _manifest(path: Path) -> dict[str, Any]:
    return json.loads((path / "manifest.json").read_text())


def _write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    (path / "manifest.json").write_text(json.dumps(manifest))


def _load_fails(path: Path, match: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ModelDirectoryError, match=match):
        GDMixModel.load(path)
    capsys.readouterr()
    assert main(["evaluate", "--model", str(path), "--data", str(path / "x.parquet")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("gdmix evaluate: error:"), err


@pytest.mark.parametrize(
    "bad_path", ["../outside", "/etc", "coordinates/../../outside", "coordinates/."]
)
def test_coordinate_paths_must_stay_inside(trained_toy_model, bad_path, capsys) -> None:
    manifest = _manifest(trained_toy_model)
    manifest["coordinates"][1]["path"] = bad_path
    _write_manifest(trained_toy_model, manifest)
    _load_fails(trained_toy_model, "must live in 'coordinates/per_user'", capsys)


@pytest.mark.parametrize("name", [".", "..", "../x", "a/b", ""])
def test_coordinate_names_must_be_plain(trained_toy_model, name, capsys) -> None:
    manifest = _manifest(trained_toy_model)
    entry = manifest["coordinates"][1]
    entry["name"] = entry["config"]["name"] = name
    entry["path"] = f"coordinates/{name}"
    _write_manifest(trained_toy_model, manifest)
    _load_fails(trained_toy_model, "invalid name", capsys)


def test_symlinks_out_of_the_folder_are_refused(trained_toy_model, tmp_path, capsys) -> None:
    outside = tmp_path / "elsewhere.parquet"
    table = trained_toy_model / "coordinates" / "per_item" / "coefficients.parquet"
    os.replace(table, outside)
    os.symlink(outside, table)
    _load_fails(trained_toy_model, "points outside the model directory", capsys)


def test_duplicate_coordinates_are_refused(trained_toy_model, capsys) -> None:
    manifest = _manifest(trained_toy_model)
    manifest["coordinates"].append(manifest["coordinates"][0])
    _write_manifest(trained_toy_model, manifest)
    _load_fails(trained_toy_model, "appears twice", capsys)


def test_manifests_that_are_not_strict_json_are_refused(trained_toy_model, capsys) -> None:
    text = (trained_toy_model / "manifest.json").read_text()
    (trained_toy_model / "manifest.json").write_text(
        text.replace('"history": [', '"x": Infinity, "history": [')
    )
    _load_fails(trained_toy_model, "Infinity is not valid JSON", capsys)
    (trained_toy_model / "manifest.json").write_text(
        text.replace('"history": [', '"format": 1, "history": [')
    )
    _load_fails(trained_toy_model, "duplicate key 'format'", capsys)  # fmt: skip


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda m: m.update(coordinates="all"), "non-empty list"),
        (lambda m: m.update(coordinates=[]), "non-empty list"),
        (lambda m: m.update(data=[1]), "'data' must be an object"),
        (lambda m: m["coordinates"][0].update(params=None), "'params' must be an object"),
        (lambda m: m["coordinates"][0]["config"].update(l2=-3), "bad config"),
        (lambda m: m.update(history={"a": 1}), "'history' must be a JSON list"),
    ],
)
def test_malformed_manifests_are_one_line_errors(trained_toy_model, edit, match, capsys):
    manifest = _manifest(trained_toy_model)
    edit(manifest)
    _write_manifest(trained_toy_model, manifest)
    _load_fails(trained_toy_model, match, capsys)


def _rewrite_table(path: Path, change) -> None:
    frame = pq.read_table(path).to_pandas()
    change(frame)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)


def test_nan_coefficients_are_refused(trained_toy_model, capsys) -> None:
    table = trained_toy_model / "coordinates" / "per_user" / "coefficients.parquet"

    def poison(frame: pd.DataFrame) -> None:
        frame.loc[2, "intercept"] = np.nan

    _rewrite_table(table, poison)
    _load_fails(trained_toy_model, "NaN", capsys)


def test_nan_fixed_effect_coefficients_are_refused(trained_toy_model, capsys) -> None:
    table = trained_toy_model / "coordinates" / "global" / "coefficients.parquet"
    _rewrite_table(table, lambda f: f.__setitem__("coefficient", f["coefficient"] * np.nan))
    _load_fails(trained_toy_model, "NaN", capsys)


def test_duplicate_entities_are_refused(trained_toy_model, capsys) -> None:
    table = trained_toy_model / "coordinates" / "per_item" / "coefficients.parquet"
    frame = pq.read_table(table).to_pandas()
    doubled = pd.concat([frame, frame.iloc[:1]], ignore_index=True)
    pq.write_table(pa.Table.from_pandas(doubled, preserve_index=False), table)
    _load_fails(trained_toy_model, "more than once", capsys)


def test_custom_code_is_not_imported_unless_trusted(trained_toy_model, tmp_path, capsys) -> None:
    """A manifest naming a module must not make the loader import it."""
    module = tmp_path / "evil_payload_mod.py"
    marker = tmp_path / "ran.txt"
    module.write_text(f"open({str(marker)!r}, 'w').write('pwned')\n")
    sys.path.insert(0, str(tmp_path))
    try:
        manifest = _manifest(trained_toy_model)
        manifest["coordinates"][0]["config"] = {
            "name": "global", "type": "deep",
            "architecture": {"kind": "custom", "module": "evil_payload_mod:Net"},
            "features": {"numeric": ["x1"]},
        }  # fmt: skip
        _write_manifest(trained_toy_model, manifest)
        _load_fails(trained_toy_model, "runs custom code .*trust_custom_code", capsys)
        assert not marker.exists()
        assert "evil_payload_mod" not in sys.modules
    finally:
        sys.path.remove(str(tmp_path))
