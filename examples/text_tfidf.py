"""Text classification with TF-IDF features passed straight in, against scikit-learn.

A seeded synthetic review corpus (no download): each review is a bag of words whose
sentiment words set the label, and each reviewer has a bias of their own (some rate
everything high). scikit-learn's ``TfidfVectorizer`` turns the texts into a sparse matrix
that goes to gdmix as it is (``features={"text": X}``). The model is a fixed effect on the
TF-IDF columns plus a per-reviewer random effect; ``l2`` of each is chosen on validation,
then :func:`gdmix.refit` trains once more on training + validation data with the chosen
values and pass count. scikit-learn's ``LogisticRegression`` on the same matrix, with ``C``
chosen on the same validation data and refit the same way, is the baseline; both print
their test AUC.

Run with ``python examples/text_tfidf.py`` (``--reviews 4000`` for a quick run).
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

import gdmix

#: l2 values searched (scikit-learn's C = 1 / l2: both minimise the summed log loss plus
#: l2/2 * ||w||^2, intercept unpenalised).
L2_GRID = [10.0, 3.0, 1.0, 0.3, 0.1]


@dataclass
class Corpus:
    """Reviews split into train / validation / test (texts, reviewers, labels)."""

    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame


def make_corpus(n_reviews: int = 30_000, n_reviewers: int = 600, seed: int = 0) -> Corpus:
    """A seeded synthetic corpus: ``logit = 2 * (sum of word sentiments) + reviewer bias``.

    The vocabulary has 60 positive, 60 negative and 1,500 neutral words (Zipf-like
    frequencies); a review has 20 to 80 words.
    """
    rng = np.random.default_rng(seed)
    words = [f"pos{i}" for i in range(60)] + [f"neg{i}" for i in range(60)]
    words += [f"w{i}" for i in range(1500)]
    sentiment = np.r_[rng.uniform(0.2, 0.8, 60), -rng.uniform(0.2, 0.8, 60), np.zeros(1500)]
    freq = 1.0 / np.arange(1, len(words) + 1) ** 0.8
    freq = freq[rng.permutation(len(words))]
    freq /= freq.sum()
    bias = rng.normal(0.0, 1.5, n_reviewers)
    reviewer = rng.zipf(1.6, n_reviews) % n_reviewers  # a few reviewers write a lot
    lengths = rng.integers(20, 81, n_reviews)
    texts, logits = [], np.empty(n_reviews)
    for i in range(n_reviews):
        idx = rng.choice(len(words), lengths[i], p=freq)
        texts.append(" ".join(words[j] for j in idx))
        logits[i] = 2.0 * sentiment[idx].sum() + bias[reviewer[i]]
    label = (rng.random(n_reviews) < 1.0 / (1.0 + np.exp(-logits))).astype(np.int64)
    frame = pd.DataFrame({"text": texts, "reviewer": reviewer, "label": label})
    n_train, n_val = int(0.6 * n_reviews), int(0.2 * n_reviews)
    return Corpus(
        frame.iloc[:n_train].reset_index(drop=True),
        frame.iloc[n_train : n_train + n_val].reset_index(drop=True),
        frame.iloc[n_train + n_val :].reset_index(drop=True),
    )


def gdmix_config() -> gdmix.GDMixConfig:
    """Fixed effect on the TF-IDF matrix (no table columns) plus one per reviewer."""
    return gdmix.GDMixConfig.model_validate(
        {
            "coordinates": [
                {"name": "text", "type": "fixed", "l2": L2_GRID},
                {"name": "per_reviewer", "type": "random", "entity": "reviewer", "l2": L2_GRID},
            ],
            "training": {"n_passes": 3, "progress": False},
        }
    )


def sklearn_baseline(
    X: sp.csr_matrix, Xv: sp.csr_matrix, Xt: sp.csr_matrix, corpus: Corpus
) -> tuple[float, float]:
    """Plain logistic regression: C chosen on validation, refit on train + validation.
    Returns (C, test AUC). Reviewers enter as one-hot columns when ``X`` holds them."""
    y, yv = corpus.train["label"], corpus.validation["label"]
    best = max(
        (roc_auc_score(yv, LogisticRegression(C=1 / l2, max_iter=2000).fit(X, y)
                       .decision_function(Xv)), 1 / l2)
        for l2 in L2_GRID
    )  # fmt: skip
    C = best[1]
    final = LogisticRegression(C=C, max_iter=2000).fit(sp.vstack([X, Xv]), pd.concat([y, yv]))
    return C, float(roc_auc_score(corpus.test["label"], final.decision_function(Xt)))


def _with_reviewers(X: sp.csr_matrix, table: pd.DataFrame, n_reviewers: int) -> sp.csr_matrix:
    """``X`` with one indicator column per reviewer appended (one shared penalty)."""
    rows = np.arange(len(table))
    onehot = sp.csr_matrix(
        (np.ones(len(table)), (rows, table["reviewer"])), (len(table), n_reviewers)
    )
    return sp.hstack([X, onehot], format="csr")


def main(n_reviews: int = 30_000, n_reviewers: int = 600, seed: int = 0) -> dict[str, float]:
    """Run the example; returns the test AUCs (and the chosen values)."""
    corpus = make_corpus(n_reviews, n_reviewers, seed)
    vectorizer = TfidfVectorizer(min_df=2, sublinear_tf=True)
    X = vectorizer.fit_transform(corpus.train["text"])  # CSR, float64
    Xv, Xt = (vectorizer.transform(t["text"]) for t in (corpus.validation, corpus.test))
    vocabulary = list(vectorizer.get_feature_names_out())
    names = {"text": vocabulary}
    print(f"{n_reviews} reviews, {n_reviewers} reviewers, {X.shape[1]} TF-IDF columns "
          f"({X.nnz / X.shape[0]:.0f} non-zeros a row)")  # fmt: skip

    start = time.perf_counter()
    tables = ("train", "validation")
    chosen = gdmix.fit(
        gdmix_config(), corpus.train, corpus.validation,
        features={"text": X}, validation_features={"text": Xv}, feature_names=names,
    )  # fmt: skip
    final = gdmix.refit(chosen, [corpus.train, corpus.validation],
                        features={"text": [X, Xv]}, feature_names=names)  # fmt: skip
    seconds = time.perf_counter() - start
    test = final.evaluate(corpus.test, features={"text": Xt}, feature_names=names)
    before = chosen.evaluate(corpus.test, features={"text": Xt}, feature_names=names)

    start = time.perf_counter()
    C, sk_auc = sklearn_baseline(X, Xv, Xt, corpus)
    sk_seconds = time.perf_counter() - start
    onehot = [_with_reviewers(m, t, n_reviewers) for m, t in
              ((X, corpus.train), (Xv, corpus.validation), (Xt, corpus.test))]  # fmt: skip
    C_user, sk_user_auc = sklearn_baseline(*onehot, corpus)

    params = chosen.metrics["params"]
    print(f"gdmix chose on {tables[1]}: text l2={params['text']['l2']:g}, per_reviewer "
          f"l2={params['per_reviewer']['l2']:g}, {final.lineage['source']['passes']} pass(es); "
          f"scikit-learn chose C={C:g} (l2={1 / C:g})")  # fmt: skip
    print()
    print(f"{'test AUC':<44}{'AUC':>8}{'seconds':>10}")
    print(f"{'scikit-learn LogisticRegression (TF-IDF)':<44}{sk_auc:>8.4f}{sk_seconds:>10.2f}")
    print(f"{'scikit-learn, TF-IDF + one-hot reviewer':<44}{sk_user_auc:>8.4f}")
    print(f"{'gdmix, its fixed effect alone':<44}{test['auc_after@text']:>8.4f}")
    print(f"{'gdmix before the refit (train only)':<44}{before['auc']:>8.4f}")
    print(f"{'gdmix refit on train + validation':<44}{test['auc']:>8.4f}{seconds:>10.2f}")
    return {
        "sklearn_auc": sk_auc,
        "sklearn_onehot_auc": sk_user_auc,
        "sklearn_onehot_C": C_user,
        "gdmix_auc": test["auc"],
        "gdmix_fixed_auc": test["auc_after@text"],
        "gdmix_before_refit_auc": before["auc"],
        "sklearn_C": C,
        "text_l2": params["text"]["l2"],
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reviews", type=int, default=30_000)
    parser.add_argument("--reviewers", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    main(args.reviews, args.reviewers, args.seed)
