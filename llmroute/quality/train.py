"""Training a QualityRouter from labelled data, reproducibly.

Held-out figures are not training fit: every number stored in the model (the calibration, the
score quantiles that turn a share of strong calls into a threshold, the validation curve) comes
from cross-validated predictions, with whole subjects held out together, so they describe
prompts of a kind the model has not seen. The final weights are then fitted on all the data.
Needs scikit-learn (``pip install 'llmroute[train]'``); scoring does not.
"""

from __future__ import annotations

import base64
import hashlib
import math
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .data import DataError, Example
from .features import HAND_FEATURES, hand_features, terms
from .metrics import curve, random_curve
from .model import QualityRouter

if TYPE_CHECKING:
    import numpy as np

SEED = 20260
FOLDS = 5
MIN_SUBJECTS_TO_GROUP = 5


@dataclass(frozen=True, slots=True)
class TrainSettings:
    """What the shipped model was trained with; change them only with held-out results to show."""

    c: float = 0.3  # inverse L2 strength of both linear models
    min_df: int = 3  # a term must appear in this many training prompts
    max_terms: int = 30_000
    folds: int = FOLDS
    seed: int = SEED


def _require_sklearn() -> Any:
    try:
        import numpy
        import scipy.sparse  # noqa: F401
        import sklearn.linear_model  # noqa: F401
    except ImportError:
        raise DataError("training needs scikit-learn: pip install 'llmroute[train]'") from None
    return numpy


def fold_ids(examples: Sequence[Example], folds: int, seed: int) -> list[int]:
    """Cross-validation folds that keep whole subjects together where a benchmark has several.

    A benchmark with ``MIN_SUBJECTS_TO_GROUP`` or more subjects (MMLU) is split by subject, so a
    fold's score is on subjects the model has not seen; others (GSM8K) are split by prompt.
    """
    rng = random.Random(seed)
    subjects_of: dict[str, set[str]] = {}
    for e in examples:
        subjects_of.setdefault(e.benchmark, set()).add(e.subject or "")
    fold_of_subject: dict[tuple[str, str], int] = {}
    for benchmark in sorted(subjects_of):
        subjects = sorted(subjects_of[benchmark])
        if len(subjects) >= MIN_SUBJECTS_TO_GROUP:
            rng.shuffle(subjects)
            fold_of_subject.update({(benchmark, s): i % folds for i, s in enumerate(subjects)})
    ids = []
    for e in examples:
        key = (e.benchmark, e.subject or "")
        ids.append(fold_of_subject[key] if key in fold_of_subject else rng.randrange(folds))
    return ids


def split_holdout(examples: Sequence[Example], share: float = 0.2, seed: int = SEED) -> tuple[list[Example], list[Example]]:
    """(train, validation): whole subjects held out where a benchmark has several, else random prompts."""
    fold_count = max(2, round(1 / share))
    ids = fold_ids(examples, fold_count, seed)
    return ([e for e, i in zip(examples, ids) if i != 0], [e for e, i in zip(examples, ids) if i == 0])


class _Fit:
    """One fitted pair of linear models with its vocabulary and feature scaling."""

    def __init__(self, np: Any, counts: Sequence[Counter[str]], hand: np.ndarray, weak: np.ndarray,
                 strong: np.ndarray, settings: TrainSettings) -> None:
        from sklearn.linear_model import LogisticRegression

        n = len(counts)
        df: Counter[str] = Counter()
        for c in counts:
            df.update(c.keys())
        kept = sorted((t for t, d in df.items() if d >= settings.min_df), key=lambda t: (-df[t], t))[: settings.max_terms]
        self.idf = {t: math.log((1 + n) / (1 + df[t])) + 1.0 for t in sorted(kept)}
        self.columns = {t: i for i, t in enumerate(self.idf)}
        self.mean = hand.mean(axis=0)
        std = hand.std(axis=0)
        # A feature that never varies (up to rounding) is left unscaled: dividing by a std of 1e-15 would
        # turn the model file's seven-digit rounding of its mean into a huge input.
        self.scale = np.where(std > 1e-6 * np.maximum(1.0, np.abs(self.mean)), std, 1.0)
        x = self.matrix(np, counts, hand)
        self.models: list[Any] = []
        for target in (strong, weak):
            mean = float(target.mean())
            if mean in (0.0, 1.0):  # a model that always (or never) answers well: nothing to fit
                self.models.append(_Constant(np, mean, x.shape[1]))
                continue
            model = LogisticRegression(C=settings.c, max_iter=5000)
            rows, labels, weights = _soft_labels(np, x.shape[0], target)
            model.fit(x[rows], labels, sample_weight=weights)
            self.models.append(model)

    def matrix(self, np: Any, counts: Sequence[Counter[str]], hand: np.ndarray) -> Any:
        from scipy.sparse import csr_matrix, hstack

        data, indices, indptr = [], [], [0]
        for c in counts:
            values = {self.columns[t]: (1.0 + math.log(k)) * self.idf[t] for t, k in c.items() if t in self.idf}
            norm = math.sqrt(sum(v * v for v in values.values())) or 1.0
            for column in sorted(values):
                indices.append(column)
                data.append(values[column] / norm)
            indptr.append(len(indices))
        text = csr_matrix((data, indices, indptr), shape=(len(counts), len(self.columns)))
        return hstack([text, csr_matrix((hand - self.mean) / self.scale)]).tocsr()

    def raw(self, np: Any, counts: Sequence[Counter[str]], hand: np.ndarray) -> np.ndarray:
        x = self.matrix(np, counts, hand)
        return self.models[0].predict_proba(x)[:, 1] - self.models[1].predict_proba(x)[:, 1]


class _Constant:
    """Stands in for a logistic model when every label is the same."""

    def __init__(self, np: Any, p: float, width: int) -> None:
        self.np, self.p = np, p
        self.coef_ = np.zeros((1, width))
        self.intercept_ = np.array([30.0 if p == 1.0 else -30.0])

    def predict_proba(self, x: Any) -> Any:
        return self.np.column_stack([self.np.full(x.shape[0], 1 - self.p), self.np.full(x.shape[0], self.p)])


def _soft_labels(np: Any, n: int, target: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scores in [0, 1] as weighted positive and negative copies of each row (exact soft-label log loss)."""
    rows = np.concatenate([np.arange(n), np.arange(n)])
    labels = np.concatenate([np.ones(n, dtype=int), np.zeros(n, dtype=int)])
    weights = np.concatenate([target, 1.0 - target])
    keep = weights > 0
    return rows[keep], labels[keep], weights[keep]


def train(
    examples: Sequence[Example], settings: TrainSettings | None = None,
    progress: Callable[[str], None] | None = None,
) -> QualityRouter:
    """A QualityRouter fitted on ``examples``; the same data and settings give the same model."""
    np = _require_sklearn()
    from sklearn.linear_model import LogisticRegression

    settings = settings or TrainSettings()
    if len(examples) < 10 * settings.folds:
        raise DataError(f"training needs at least {10 * settings.folds} examples, got {len(examples)}")
    say = progress or (lambda _msg: None)
    counts = [terms(e.prompt) for e in examples]
    hand = np.array([hand_features(e.prompt) for e in examples], dtype=float)
    weak = np.array([e.weak for e in examples])
    strong = np.array([e.strong for e in examples])
    folds = np.array(fold_ids(examples, settings.folds, settings.seed))
    held_out = np.zeros(len(examples))
    for k in range(settings.folds):
        train_rows, test_rows = np.where(folds != k)[0], np.where(folds == k)[0]
        say(f"fold {k + 1}/{settings.folds}: {len(train_rows)} train, {len(test_rows)} held out")
        fit = _Fit(np, [counts[i] for i in train_rows], hand[train_rows], weak[train_rows], strong[train_rows], settings)
        held_out[test_rows] = fit.raw(np, [counts[i] for i in test_rows], hand[test_rows])

    # Calibration: P(strong beats weak) from the held-out raw score, as a soft label.
    gain = np.clip(strong - weak, 0.0, 1.0)
    if not gain.any():
        raise DataError("the strong model never scores above the weak one in this data: there is nothing to route on")
    rows, labels, weights = _soft_labels(np, len(examples), gain)
    calibrator = LogisticRegression(C=1e6, max_iter=1000).fit(held_out[rows].reshape(-1, 1), labels, sample_weight=weights)
    a, c = float(calibrator.coef_[0][0]), float(calibrator.intercept_[0])
    held_scores = 1.0 / (1.0 + np.exp(-(a * held_out + c)))

    say(f"final fit on all {len(examples)} examples")
    fit = _Fit(np, counts, hand, weak, strong, settings)
    (strong_model, weak_model) = fit.models
    n_terms = len(fit.columns)
    table = {t: (fit.idf[t], float(strong_model.coef_[0][i]), float(weak_model.coef_[0][i])) for t, i in fit.columns.items()}
    model = QualityRouter(
        term_table=table,
        hand_mean=[float(v) for v in fit.mean], hand_scale=[float(v) for v in fit.scale],
        hand_strong=[float(v) for v in strong_model.coef_[0][n_terms:]],
        hand_weak=[float(v) for v in weak_model.coef_[0][n_terms:]],
        bias=(float(strong_model.intercept_[0]), float(weak_model.intercept_[0])),
        calibration=(a, c),
        quantiles=[float(v) for v in np.quantile(held_scores, np.linspace(0, 1, 101))],
        validation=validation_summary(examples, list(held_scores)),
        meta={
            "examples": len(examples), "data_sha256": data_digest(examples),
            "prompt_fingerprints": _fingerprint_text(examples),
            "settings": {"c": settings.c, "min_df": settings.min_df, "max_terms": settings.max_terms,
                         "folds": settings.folds, "seed": settings.seed},
            "hand_features": list(HAND_FEATURES),
        },
    )
    return QualityRouter.from_dict(model.to_dict())  # the rounded model, exactly as it will be saved


def validation_summary(examples: Sequence[Example], scores: Sequence[float]) -> dict[str, Any]:
    """The held-out curve overall and per benchmark (what ``plan`` and quality targets read)."""
    def summary(rows: list[int]) -> dict[str, Any]:
        weak = [examples[i].weak for i in rows]
        strong = [examples[i].strong for i in rows]
        held = curve([scores[i] for i in rows], weak, strong)
        return {"examples": len(rows), "calls_for_95": held.calls_for(0.95), "apgr": round(held.apgr(), 4),
                "quality_at_20": round(held.at(0.2), 4), "random_calls_for_95": random_curve(weak, strong).calls_for(0.95),
                "quality": [round(q, 5) for q in held.quality]}

    out = summary(list(range(len(examples))))
    out["benchmarks"] = {}
    for benchmark in sorted({e.benchmark for e in examples}):
        part = summary([i for i, e in enumerate(examples) if e.benchmark == benchmark])
        del part["quality"]
        out["benchmarks"][benchmark] = part
    return out


def data_digest(examples: Sequence[Example]) -> str:
    """What ``meta.data_sha256`` holds: one digest of every prompt and its scores, in order."""
    digest = hashlib.sha256()
    for e in examples:
        digest.update(f"{e.prompt}\x00{e.weak!r}\x00{e.strong!r}\x00".encode())
    return digest.hexdigest()


FINGERPRINT_BYTES = 5
"""Per prompt: 2**40 values, so among 10**5 training prompts a new prompt matches one by chance about once in 10**7."""


def prompt_fingerprint(prompt: str) -> bytes:
    """A prompt's identity without its text: the model file says which prompts it saw, not what they said."""
    return hashlib.sha256(prompt.encode()).digest()[:FINGERPRINT_BYTES]


def _fingerprint_text(examples: Sequence[Example]) -> str:
    """The training prompts' fingerprints, sorted (the file stays the same for the same data), as base64."""
    return base64.b64encode(b"".join(sorted({prompt_fingerprint(e.prompt) for e in examples}))).decode()


def prompt_fingerprints(meta: dict[str, Any]) -> set[bytes] | None:
    """The fingerprints a model stores of the prompts it was trained on; None for a model without them."""
    text = meta.get("prompt_fingerprints")
    if not isinstance(text, str):
        return None
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError:  # a damaged field: the model still scores, eval just cannot tell which prompts it saw
        return None
    return {raw[i:i + FINGERPRINT_BYTES] for i in range(0, len(raw), FINGERPRINT_BYTES)}
