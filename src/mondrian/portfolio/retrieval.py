"""Which portfolio images are most like a photo: the measures RAG retrieves by.

Pure numpy; no model and no database here, so every number is checkable by hand.

Profile similarity
    A profile is the critique of the neutral 8-dimension pass. Its vector holds the eight
    scores in DIMENSIONS order, each the calibrated `expected_score` when present, else
    the integer `score`. Vectors are standardised with the advisor portfolio's
    per-dimension mean and standard deviation (population std, floored at
    `STD_FLOOR` = 0.5 so that a dimension on which the whole portfolio agrees neither
    divides by zero nor turns a half-point difference into a chasm). With `d` the
    Euclidean distance between two standardised vectors, similarity = 1 / (1 + d),
    which is 1 for identical profiles and falls towards 0.

Embedding similarity
    Cosine of the two images' pooled vision-tower embeddings (L2-normalised), in [-1, 1].

Hybrid
    similarity = w * (1 + cosine) / 2 + (1 - w) * profile_similarity, with
    w = `EMBEDDING_WEIGHT` = 0.5: the cosine is mapped onto [0, 1] and the two measures
    count equally. A candidate without a usable embedding (a curated import that was
    never embedded, an embedding from another model, or a query the backend could not
    embed) is ranked by its profile similarity alone, which lies on the same [0, 1] scale.

Ranking takes the k highest similarities (k = `DEFAULT_K` = 3 unless asked otherwise);
ties go to the smaller key (the image hash), so results do not depend on storage order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mondrian.schema import DIMENSIONS, Critique

STD_FLOOR = 0.5
EMBEDDING_WEIGHT = 0.5
DEFAULT_K = 3
# Embeddings are stored as little-endian float32: 4 bytes per value, any platform.
_EMBEDDING_DTYPE = np.dtype("<f4")


def profile_vector(critique: Critique) -> np.ndarray:
    """The 8 scores of a profile, expected_score where the model gave one."""
    return np.array(
        [
            dim.expected_score if dim.expected_score is not None else float(dim.score)
            for _, dim in critique.dimensions.items()
        ],
        dtype=np.float64,
    )


@dataclass(frozen=True)
class PortfolioStats:
    """Per-dimension mean and spread of a portfolio's profile vectors."""

    count: int
    mean: np.ndarray
    std: np.ndarray  # population std, as measured (the floor applies when standardising)

    def scale(self, floor: float = STD_FLOOR) -> np.ndarray:
        return np.maximum(self.std, floor)

    def by_dimension(self) -> dict[str, tuple[float, float]]:
        return {
            key: (float(m), float(s))
            for key, m, s in zip(DIMENSIONS, self.mean, self.std, strict=True)
        }


def portfolio_stats(vectors: Sequence[np.ndarray] | np.ndarray) -> PortfolioStats:
    matrix = _matrix(vectors)
    if matrix.shape[0] == 0:
        raise ValueError("portfolio statistics need at least one profile")
    return PortfolioStats(count=matrix.shape[0], mean=matrix.mean(axis=0), std=matrix.std(axis=0))


def standardise(vectors: np.ndarray, stats: PortfolioStats, floor: float = STD_FLOOR) -> np.ndarray:
    return (np.asarray(vectors, dtype=np.float64) - stats.mean) / stats.scale(floor)


def profile_similarities(
    query: np.ndarray,
    vectors: Sequence[np.ndarray] | np.ndarray,
    stats: PortfolioStats,
    floor: float = STD_FLOOR,
) -> np.ndarray:
    """1 / (1 + Euclidean distance) between standardised profiles, one per candidate."""
    matrix = _matrix(vectors)
    if matrix.shape[0] == 0:
        return np.zeros(0)
    diff = standardise(matrix, stats, floor) - standardise(np.asarray(query), stats, floor)
    return 1.0 / (1.0 + np.linalg.norm(diff, axis=1))


def cosine_similarities(query: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Cosine of `query` with each row; stored embeddings are unit length, but rows
    from elsewhere may not be, so both sides are normalised (a zero vector gives 0)."""
    q = np.asarray(query, dtype=np.float64)
    m = np.atleast_2d(np.asarray(matrix, dtype=np.float64))
    q_norm = np.linalg.norm(q)
    m_norm = np.linalg.norm(m, axis=1)
    denom = m_norm * q_norm
    dots = m @ q
    return np.divide(dots, denom, out=np.zeros_like(dots), where=denom > 0)


def hybrid_similarity(
    profile_similarity: float | np.ndarray,
    cosine: float | np.ndarray,
    weight: float = EMBEDDING_WEIGHT,
) -> float | np.ndarray:
    """w * cosine mapped to [0, 1] + (1 - w) * profile similarity."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"the embedding weight must be within [0, 1], got {weight}")
    return weight * (1.0 + np.asarray(cosine)) / 2.0 + (1.0 - weight) * np.asarray(
        profile_similarity
    )


@dataclass(frozen=True)
class Candidate:
    """A profiled portfolio image as retrieval sees it."""

    key: str  # the image hash: ties are broken on it
    vector: np.ndarray  # profile_vector(...)
    embedding: np.ndarray | None = None


def rank(
    query_vector: np.ndarray,
    query_embedding: np.ndarray | None,
    candidates: Sequence[Candidate],
    stats: PortfolioStats,
    k: int = DEFAULT_K,
    weight: float = EMBEDDING_WEIGHT,
) -> list[tuple[int, float]]:
    """The k most similar candidates as (index into `candidates`, similarity), best first."""
    if k <= 0 or not candidates:
        return []
    similarity = profile_similarities(query_vector, [c.vector for c in candidates], stats)
    if query_embedding is not None:
        q = np.asarray(query_embedding, dtype=np.float64)
        for i, candidate in enumerate(candidates):
            e = candidate.embedding
            if e is not None and e.shape == q.shape:
                cosine = float(cosine_similarities(q, e[None, :])[0])
                similarity[i] = float(hybrid_similarity(similarity[i], cosine, weight))
    order = sorted(range(len(candidates)), key=lambda i: (-similarity[i], candidates[i].key))
    return [(i, float(similarity[i])) for i in order[:k]]


def encode_embedding(values: Sequence[float] | np.ndarray) -> bytes:
    array = np.asarray(values, dtype=_EMBEDDING_DTYPE)
    if array.ndim != 1 or array.size == 0:
        raise ValueError("an embedding is a non-empty vector")
    return array.tobytes()


def decode_embedding(blob: bytes | None) -> np.ndarray | None:
    if not blob or len(blob) % _EMBEDDING_DTYPE.itemsize:
        return None
    return np.frombuffer(blob, dtype=_EMBEDDING_DTYPE).astype(np.float64)


def _matrix(vectors: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    matrix = np.asarray(vectors, dtype=np.float64)
    if matrix.size == 0:
        return np.zeros((0, len(DIMENSIONS)))
    if matrix.ndim != 2 or matrix.shape[1] != len(DIMENSIONS):
        raise ValueError(f"profile vectors must have {len(DIMENSIONS)} values each")
    return matrix
