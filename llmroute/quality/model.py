"""QualityRouter: the probability that a prompt needs the strong model, from a small local model.

The model is two linear models over the same features, one predicting that the strong model
answers well and one that the weak model does; their difference is how much the strong model
adds, mapped to a probability by a logistic calibration fitted on held-out predictions. It is a
gzipped JSON file (no pickle: loading a model never runs code), so the shipped default loads
offline from the package and a retrained one is a file a user can read.
"""

from __future__ import annotations

import gzip
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import orjson

from ..errors import LLMRouteError
from .features import HAND_FEATURES, hand_features, terms

FORMAT = "llmroute-quality-router"
VERSION = 1
DEFAULT_MODEL = "default_model.json.gz"


class ModelError(LLMRouteError):
    """A quality model file that cannot be used: names the file and the problem."""


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


@dataclass(slots=True)
class QualityRouter:
    """Scores prompts; higher means the strong model is more likely to be needed.

    ``quantiles`` (101 held-out scores, 0% to 100%) turn a share of strong calls into a
    threshold; ``validation`` holds the held-out cost/quality curve that ``llmroute plan``
    quotes as expected quality.
    """

    term_table: dict[str, tuple[float, float, float]]  # term -> (idf, weight for strong, weight for weak)
    hand_mean: list[float]
    hand_scale: list[float]
    hand_strong: list[float]
    hand_weak: list[float]
    bias: tuple[float, float]
    calibration: tuple[float, float]
    quantiles: list[float]
    validation: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    source: str = "<memory>"

    # -- scoring -----------------------------------------------------------------

    def raw(self, prompt: str) -> float:
        """P(strong answers well) - P(weak answers well): the uncalibrated ranking score."""
        table = self.term_table
        norm2 = dot_strong = dot_weak = 0.0
        for term, count in terms(prompt).items():
            entry = table.get(term)
            if entry is None:
                continue
            value = (1.0 + math.log(count)) * entry[0]
            norm2 += value * value
            dot_strong += value * entry[1]
            dot_weak += value * entry[2]
        if norm2 > 0.0:
            norm = math.sqrt(norm2)
            dot_strong /= norm
            dot_weak /= norm
        z_strong, z_weak = self.bias[0] + dot_strong, self.bias[1] + dot_weak
        for x, mean, scale, ws, ww in zip(hand_features(prompt), self.hand_mean, self.hand_scale,
                                          self.hand_strong, self.hand_weak):
            x = (x - mean) / scale
            z_strong += x * ws
            z_weak += x * ww
        return _sigmoid(z_strong) - _sigmoid(z_weak)

    def score(self, prompt: str) -> float:
        """The probability that ``prompt`` needs the strong model (higher: send it to strong)."""
        a, c = self.calibration
        return _sigmoid(a * self.raw(prompt) + c)

    def score_many(self, prompts: Iterable[str]) -> list[float]:
        """``score`` for each prompt, in order."""
        a, c = self.calibration
        return [_sigmoid(a * self.raw(p) + c) for p in prompts]

    # -- targets -------------------------------------------------------------------

    def threshold_for_share(self, strong_share: float) -> float:
        """The score above which ``strong_share`` of prompts like the held-out ones go to strong."""
        if strong_share <= 0.0:
            return math.inf
        if strong_share >= 1.0:
            return -math.inf
        return _interpolate(self.quantiles, 1.0 - strong_share)

    def share_for_quality(self, min_quality: float) -> float:
        """The smallest strong share whose held-out quality reaches ``min_quality`` x strong-only."""
        quality = self.validation.get("quality")
        if not quality:
            raise ModelError(f"{self.source}: the model has no validation curve, so a quality target cannot be met")
        target = min_quality * quality[-1]
        step = 1.0 / (len(quality) - 1)
        return next((i * step for i, q in enumerate(quality) if q >= target - 1e-12), 1.0)

    def expected_quality(self, strong_share: float) -> float | None:
        """Held-out quality at ``strong_share`` as a fraction of strong-only quality."""
        quality = self.validation.get("quality")
        if not quality or quality[-1] <= 0:
            return None
        return _interpolate(quality, strong_share) / quality[-1]

    # -- files -------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "version": VERSION, "meta": self.meta, "features": list(HAND_FEATURES),
            "terms": {t: [_r(v) for v in e] for t, e in sorted(self.term_table.items())},
            "hand": {"mean": _rs(self.hand_mean), "scale": _rs(self.hand_scale),
                     "strong": _rs(self.hand_strong), "weak": _rs(self.hand_weak)},
            "bias": _rs(self.bias), "calibration": _rs(self.calibration),
            "quantiles": _rs(self.quantiles), "validation": self.validation,
        }

    def save(self, path: str | Path) -> Path:
        """Write the model; the same model always gives the same bytes (sorted keys, no gzip time)."""
        target = Path(path)
        data = orjson.dumps(self.to_dict(), option=orjson.OPT_SORT_KEYS)
        if target.suffix == ".gz":
            data = gzip.compress(data, compresslevel=9, mtime=0)
        target.write_bytes(data)
        return target

    @classmethod
    def from_dict(cls, data: Any, source: str = "<memory>") -> QualityRouter:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ModelError(f"{source}: not an llmroute quality model (no format '{FORMAT}')")
        if data.get("version") != VERSION:
            raise ModelError(f"{source}: model format version {data.get('version')!r}; this llmroute reads {VERSION}")
        if data.get("features") != list(HAND_FEATURES):
            raise ModelError(f"{source}: the model was trained with other hand features than this llmroute computes")
        try:
            hand = data["hand"]
            model = cls(
                term_table={t: (float(e[0]), float(e[1]), float(e[2])) for t, e in data["terms"].items()},
                hand_mean=[float(v) for v in hand["mean"]], hand_scale=[float(v) or 1.0 for v in hand["scale"]],
                hand_strong=[float(v) for v in hand["strong"]], hand_weak=[float(v) for v in hand["weak"]],
                bias=(float(data["bias"][0]), float(data["bias"][1])),
                calibration=(float(data["calibration"][0]), float(data["calibration"][1])),
                quantiles=[float(v) for v in data["quantiles"]],
                validation=dict(data.get("validation") or {}), meta=dict(data.get("meta") or {}), source=source,
            )
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise ModelError(f"{source}: malformed model ({type(exc).__name__}: {exc})") from None
        if len(model.quantiles) < 2 or any(b < a for a, b in zip(model.quantiles, model.quantiles[1:])):
            raise ModelError(f"{source}: 'quantiles' must be at least two non-decreasing numbers")
        return model

    @classmethod
    def load(cls, path: str | Path | None = None) -> QualityRouter:
        """The model at ``path``, or the default shipped inside the package (no download, ever)."""
        if path is None:
            resource = resources.files(__package__).joinpath(DEFAULT_MODEL)
            data, source = resource.read_bytes(), f"llmroute/quality/{DEFAULT_MODEL}"
        else:
            source = str(path)
            try:
                data = Path(path).read_bytes()
            except FileNotFoundError:
                raise ModelError(f"{source}: file not found") from None
            except OSError as exc:
                raise ModelError(f"{source}: cannot read ({type(exc).__name__})") from None
        try:
            if data[:2] == b"\x1f\x8b":
                data = gzip.decompress(data)
            parsed = orjson.loads(data)
        except (OSError, EOFError, orjson.JSONDecodeError) as exc:
            raise ModelError(f"{source}: not a readable model file ({type(exc).__name__})") from None
        return cls.from_dict(parsed, source)


def _interpolate(points: Sequence[float], fraction: float) -> float:
    """Linear interpolation in ``points`` taken at evenly spaced fractions 0..1."""
    position = min(max(fraction, 0.0), 1.0) * (len(points) - 1)
    low = min(int(position), len(points) - 2)
    weight = position - low
    return points[low] * (1 - weight) + points[low + 1] * weight


def _r(value: float) -> float:
    """Seven significant digits: enough for the model, and the file is stable across platforms' last bits."""
    return float(f"{value:.7g}")


def _rs(values: Iterable[float]) -> list[float]:
    return [_r(v) for v in values]
