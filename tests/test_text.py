"""Tokenizer and stable hashing of the deep fixed effect's data layer (no torch needed)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from gdmix.deep.text import (
    OOV_ID,
    PAD_ID,
    Tokenizer,
    data_max_length,
    hash_bucket,
    hash_buckets,
    text_values,
)
from gdmix.errors import DataError

TRAIN = ["Toy Story (1995)", "toy story 2", "GoldenEye (1995)", "Heat", "Heat, again!"]


def test_tokenize_lowercases_and_splits_on_non_alphanumerics() -> None:
    assert Tokenizer().tokenize("Toy Story (1995), l'été_2") == [
        "toy",
        "story",
        "1995",
        "l",
        "été",
        "2",
    ]
    assert Tokenizer(lowercase=False).tokenize("Toy story") == ["Toy", "story"]


def test_vocabulary_comes_from_training_texts_by_frequency() -> None:
    tok = Tokenizer().fit(TRAIN)
    # toy, story, 1995, heat twice; then the rest alphabetically.
    assert tok.vocab == ["1995", "heat", "story", "toy", "2", "again", "goldeneye"]
    assert tok.vocab_size == len(tok.vocab) + 2
    ids = tok.encode(["heat toy", "unseen words"])
    assert ids[0, :2].tolist() == [3, 5]
    assert ids[1, :2].tolist() == [OOV_ID, OOV_ID]  # never seen in training: OOV


def test_min_count_and_max_vocab() -> None:
    assert Tokenizer(min_count=2).fit(TRAIN).vocab == ["1995", "heat", "story", "toy"]
    assert Tokenizer(max_vocab=2).fit(TRAIN).vocab == ["1995", "heat"]
    tok = Tokenizer(max_vocab=2).fit(TRAIN)
    assert tok.encode(["toy heat"])[0, :2].tolist() == [OOV_ID, 3]


def test_padding_and_truncation() -> None:
    tok = Tokenizer(max_length=3).fit(TRAIN)
    ids = tok.encode(["toy story 1995 heat", "heat", ""])
    assert ids.shape == (3, 3)
    assert ids.dtype == np.int64
    assert ids[0].tolist() == [5, 4, 2]  # first three tokens kept
    assert ids[1].tolist() == [3, PAD_ID, PAD_ID]
    assert ids[2].tolist() == [PAD_ID] * 3
    assert tok.encode([]).shape == (0, 3)


def test_lowercase_off_keeps_case_apart() -> None:
    tok = Tokenizer(lowercase=False).fit(["Heat", "heat", "heat"])
    assert tok.vocab == ["heat", "Heat"]


def test_save_load_round_trip_through_json() -> None:
    tok = Tokenizer(max_length=5, min_count=1, max_vocab=4, lowercase=True).fit(TRAIN)
    again = Tokenizer.from_dict(json.loads(json.dumps(tok.to_dict())))
    texts = ["Toy Story", "GoldenEye heat again", "nothing known"]
    np.testing.assert_array_equal(again.encode(texts), tok.encode(texts))
    assert again.to_dict() == tok.to_dict()


def test_text_values_rejects_non_strings_and_fills_nulls() -> None:
    values = text_values(pd.Series(["a", None, "b"], name="title"), "training data")
    assert values.tolist() == ["a", "", "b"]
    with pytest.raises(DataError, match=r"text column 'title' must hold strings.*int 7 at row 1"):
        text_values(pd.Series(["a", 7], name="title"), "training data")


def test_hash_is_blake2b_and_fixed() -> None:
    # Expected values computed once with this function; an independent formula agrees.
    assert hash_bucket("user_42", 1000) == 689
    assert hash_bucket("Toy Story (1995)", 2**20) == 105300
    import hashlib

    digest = hashlib.blake2b(b"user_42", digest_size=8).digest()
    assert int.from_bytes(digest, "little") % 1000 == 689


def test_hash_is_stable_across_processes() -> None:
    code = "from gdmix.deep.text import hash_bucket; print(hash_bucket('user_42', 1000))"
    outs = set()
    for seed in ("0", "12345"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        res = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        outs.add(res.stdout.strip())
    assert outs == {"689"}


def test_hash_buckets_vectorised() -> None:
    values = np.array(["user_42", None, "user_42", "x"], dtype=object)
    out = hash_buckets(values, 1000)
    assert out.tolist() == [689, -1, 689, hash_bucket("x", 1000)]
    assert hash_buckets(np.array([], dtype=object), 10).tolist() == []


# -- max_length: data-driven default and the truncation warning -----------------------


def test_default_max_length_follows_the_training_texts() -> None:
    # Texts of 1..100 tokens: the shortest length that keeps 95 of the 100 texts whole
    # is 95 tokens.
    texts = [" ".join(f"w{j}" for j in range(k)) for k in range(1, 101)]
    tok = Tokenizer().fit(texts)
    assert tok.max_length == 95
    assert tok.length_from_data
    lengths = np.array([len(t.split()) for t in texts])
    assert np.mean(lengths <= tok.max_length) >= 0.95 > np.mean(lengths <= tok.max_length - 1)
    assert tok.encode(texts[:3]).shape == (3, 95)
    assert data_max_length([], 256) == 1  # no training text: one (padding) token
    assert data_max_length([0, 0, 0], 256) == 1


def test_default_max_length_is_capped() -> None:
    texts = ["word " * 400, "word " * 500]
    assert Tokenizer().fit(texts).max_length == 256
    assert Tokenizer(max_length_cap=32).fit(texts).max_length == 32


def test_explicit_max_length_is_kept() -> None:
    texts = [" ".join(f"w{j}" for j in range(k)) for k in range(1, 101)]
    tok = Tokenizer(max_length=7).fit(texts)
    assert tok.max_length == 7
    assert not tok.length_from_data


def test_truncation_is_logged_with_the_share_of_rows_cut(caplog) -> None:
    tok = Tokenizer(max_length=3).fit(TRAIN)
    texts = ["toy story 1995 heat", "heat", "a b c d e", "heat", "", "x", "y", "z"]
    with caplog.at_level(logging.WARNING, logger="gdmix"):
        ids = tok.encode(texts, "training data, text column 'title'")
    assert ids.shape == (8, 3)
    records = [r for r in caplog.records if "truncated" in r.getMessage()]
    assert len(records) == 1
    message = records[0].getMessage()
    assert message.startswith("training data, text column 'title': 25.0% of rows (2 of 8)")
    assert "max_length=3" in message and "set in the config" in message
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="gdmix"):
        tok.encode(["heat", "toy story"])  # nothing cut: no warning
    assert not caplog.records


def test_data_driven_length_is_saved_with_the_tokenizer(caplog) -> None:
    texts = ["a b c d e f g h"] + ["a b"] * 19  # 95th percentile: 2 tokens
    with caplog.at_level(logging.WARNING, logger="gdmix"):
        tok = Tokenizer().fit(texts)
        tok.encode(texts)
    assert tok.max_length == 2
    assert "5.0% of rows (1 of 20)" in caplog.text
    assert "chosen from the training data" in caplog.text
    again = Tokenizer.from_dict(json.loads(json.dumps(tok.to_dict())))
    assert again.max_length == 2 and again.length_from_data
    np.testing.assert_array_equal(again.encode(texts), tok.encode(texts))
