"""Retrieval maths, checked against numbers worked out by hand (no model)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mondrian.portfolio import retrieval as r
from mondrian.schema import DIMENSIONS, Critique, example_critique


def _critique(scores: list[int], expected: list[float | None] | None = None) -> Critique:
    base = example_critique().model_dump()
    for i, key in enumerate(DIMENSIONS):
        base["dimensions"][key]["score"] = scores[i]
        base["dimensions"][key]["expected_score"] = expected[i] if expected else None
    return Critique.model_validate(base)


def test_profile_vector_prefers_expected_score_and_falls_back_to_score():
    critique = _critique([1, 2, 3, 4, 5, 6, 7, 8], [1.5, None, 3.25, None, None, None, None, 9.0])
    assert r.profile_vector(critique).tolist() == [1.5, 2, 3.25, 4, 5, 6, 7, 9.0]


def test_portfolio_stats_are_population_mean_and_std():
    vectors = np.array([[2.0] * 8, [4.0] * 8, [6.0] * 8])
    stats = r.portfolio_stats(vectors)
    assert stats.count == 3
    assert stats.mean.tolist() == [4.0] * 8
    assert stats.std == pytest.approx([math.sqrt(8 / 3)] * 8)
    assert stats.by_dimension()["lighting"] == pytest.approx((4.0, math.sqrt(8 / 3)))
    with pytest.raises(ValueError):
        r.portfolio_stats([])


def test_constant_portfolio_uses_the_std_floor_instead_of_dividing_by_zero():
    stats = r.portfolio_stats([[5.0] * 8, [5.0] * 8])
    assert stats.std.tolist() == [0.0] * 8
    assert stats.scale().tolist() == [r.STD_FLOOR] * 8
    # One point off on one dimension is 1 / 0.5 = 2 standard units: similarity 1 / 3.
    query = np.array([6.0, 5, 5, 5, 5, 5, 5, 5])
    sims = r.profile_similarities(query, [[5.0] * 8], stats)
    assert np.isfinite(sims).all()
    assert sims[0] == pytest.approx(1 / 3)


def test_profile_similarity_by_hand():
    # Dimension 0 spreads with std 2 (values 3 and 7); the others with std 1 (4 and 6).
    a = [3.0] + [4.0] * 7
    b = [7.0] + [6.0] * 7
    stats = r.portfolio_stats([a, b])
    assert stats.std.tolist() == [2.0] + [1.0] * 7
    query = np.array([5.0] * 8)  # the mean: one standard unit from each on every dimension
    sims = r.profile_similarities(query, [a, b, query], stats)
    assert sims.tolist() == pytest.approx([1 / (1 + math.sqrt(8)), 1 / (1 + math.sqrt(8)), 1.0])
    # Standardising matters: 2 points on dimension 0 (std 2) is as far as 1 point elsewhere.
    near0 = [7.0] + [5.0] * 7
    near1 = [5.0, 6.0] + [5.0] * 6
    s0, s1 = r.profile_similarities(query, [near0, near1], stats)
    assert s0 == pytest.approx(s1) == pytest.approx(0.5)


def test_cosine_similarities():
    q = np.array([1.0, 0.0])
    rows = np.array([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    assert r.cosine_similarities(q, rows).tolist() == pytest.approx(
        [1.0, 0.0, -1.0, 1 / math.sqrt(2), 0.0]
    )


def test_hybrid_maps_cosine_to_unit_interval_and_weights_it():
    assert r.EMBEDDING_WEIGHT == 0.5
    assert r.hybrid_similarity(0.0, 1.0) == pytest.approx(0.5)
    assert r.hybrid_similarity(1.0, -1.0) == pytest.approx(0.5)
    assert r.hybrid_similarity(1.0, 1.0) == pytest.approx(1.0)
    assert r.hybrid_similarity(0.4, 0.0, weight=0.25) == pytest.approx(0.25 * 0.5 + 0.75 * 0.4)
    with pytest.raises(ValueError):
        r.hybrid_similarity(0.5, 0.5, weight=1.5)


def test_rank_uses_embeddings_where_usable_and_breaks_ties_by_key():
    stats = r.portfolio_stats([[5.0] * 8, [6.0] * 8])  # std 0.5 everywhere
    query = np.array([5.0] * 8)
    e = np.array([1.0, 0.0, 0.0])
    candidates = [
        r.Candidate("b", np.array([5.0] * 8), None),  # profile only: 1.0
        r.Candidate("a", np.array([5.0] * 8), None),  # same: the tie goes to "a"
        r.Candidate("c", np.array([5.0] * 8), -e),  # hybrid: 0.5 * 0 + 0.5 * 1 = 0.5
        r.Candidate("d", np.array([6.0] * 8), e),  # d = sqrt(8 * 4): 0.5 + 0.5 / (1 + 5.657)
        r.Candidate("e", np.array([5.0] * 8), np.ones(4)),  # another model's size: profile only
    ]
    ranked = r.rank(query, e, candidates, stats, k=5)
    keys = [candidates[i].key for i, _ in ranked]
    assert keys == ["a", "b", "e", "d", "c"]
    sims = dict(zip(keys, (s for _, s in ranked), strict=True))
    assert sims["d"] == pytest.approx(0.5 + 0.5 / (1 + math.sqrt(32)))
    assert sims["c"] == pytest.approx(0.5)
    assert [candidates[i].key for i, _ in r.rank(query, e, candidates, stats, k=2)] == ["a", "b"]
    # Without a query embedding every candidate is ranked by its profile.
    no_embedding = r.rank(query, None, candidates, stats, k=5)
    assert [candidates[i].key for i, _ in no_embedding] == ["a", "b", "c", "e", "d"]
    assert r.rank(query, e, [], stats) == [] and r.rank(query, e, candidates, stats, k=0) == []


def test_embedding_bytes_round_trip_as_float32():
    values = [0.6, -0.8, 0.0]
    blob = r.encode_embedding(values)
    assert len(blob) == 12
    assert r.decode_embedding(blob).tolist() == pytest.approx(values, abs=1e-7)
    assert r.decode_embedding(None) is None
    assert r.decode_embedding(b"") is None
    assert r.decode_embedding(b"\x00" * 5) is None
    with pytest.raises(ValueError):
        r.encode_embedding([])


_scores = st.lists(st.floats(0, 10, allow_nan=False), min_size=8, max_size=8)


@given(st.lists(_scores, min_size=1, max_size=6), _scores)
def test_profile_similarity_is_in_unit_interval_and_falls_with_distance(portfolio, q):
    stats = r.portfolio_stats(portfolio)
    sims = r.profile_similarities(np.array(q), portfolio, stats)
    assert ((sims > 0) & (sims <= 1)).all()
    assert r.profile_similarities(np.array(q), [q], stats)[0] == 1.0
    # Moving a candidate further from the query on one dimension never raises its similarity.
    for vector, sim in zip(portfolio, sims, strict=True):
        farther = np.array(vector, dtype=float)
        farther[0] += 1.0 if farther[0] >= q[0] else -1.0
        assert r.profile_similarities(np.array(q), [farther], stats)[0] < sim
