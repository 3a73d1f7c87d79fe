"""`rag` on a tiny real model: its references are the nearest portfolio images by the
documented measure, recomputed here by brute force in plain Python."""

from __future__ import annotations

import math
import struct

import pytest

from mondrian.analysis import analyze
from mondrian.backends.protocol import GenerationRequest
from mondrian.images import read_image_file
from mondrian.portfolio.indexing import index_paths
from mondrian.prompts import profile_prompt
from mondrian.schema import DIMENSIONS, example_critique
from mondrian.storage import advisors, images, profiles
from mondrian.strategies.rag import Rag

pytestmark = pytest.mark.model


def _scores(critique) -> list[float]:
    out = []
    for key in DIMENSIONS:
        dim = getattr(critique.dimensions, key)
        out.append(dim.expected_score if dim.expected_score is not None else float(dim.score))
    return out


def _brute_force(query_critique, query_embedding, stored, k=3, w=0.5, floor=0.5):
    """Nearest stored profiles: standardised Euclidean -> 1/(1+d), hybrid with cosine."""
    vectors = [_scores(p.critique) for p in stored]
    n = len(vectors)
    means = [sum(v[j] for v in vectors) / n for j in range(8)]
    stds = [math.sqrt(sum((v[j] - means[j]) ** 2 for v in vectors) / n) for j in range(8)]
    scale = [max(s, floor) for s in stds]
    q = _scores(query_critique)
    result = []
    for profile, v in zip(stored, vectors, strict=True):
        d = math.sqrt(sum(((q[j] - v[j]) / scale[j]) ** 2 for j in range(8)))
        sim = 1 / (1 + d)
        blob = profile.embedding
        e = struct.unpack(f"<{len(blob) // 4}f", blob)
        cos = sum(a * b for a, b in zip(query_embedding, e, strict=True)) / (
            math.sqrt(sum(a * a for a in query_embedding)) * math.sqrt(sum(b * b for b in e))
        )
        sim = w * (1 + cos) / 2 + (1 - w) * sim
        result.append((sim, profile.image_hash))
    result.sort(key=lambda item: (-item[0], item[1]))
    return result[:k]


def test_rag_references_are_the_brute_force_nearest(ctx, ansel, photo_copies, photos_dir):
    portfolio = photo_copies("astronaut", "camera", "coffee", "hubble_deep_field", "rocket")
    index_paths(ctx, ansel, [portfolio])
    photo = read_image_file(photos_dir / "chelsea.jpg")

    result = analyze(ctx, ansel, photo, "rag")

    assert result.mode_requested == result.mode_used == "rag"
    assert result.model.adapter is None
    # Pass 1 again (greedy decoding is deterministic) and the photo's embedding.
    (first,) = ctx.backend.generate([GenerationRequest(prompt=profile_prompt(photo.image))])
    (embedding,) = ctx.backend.embed_images([photo.image])
    with ctx.db.read() as conn:
        stored = profiles.list_profiles(conn, ansel.id)
        titles = {i.image_hash: i.title for i in images.list_portfolio(conn, ansel.id)}
    expected = _brute_force(first.critique, embedding, stored)

    assert [r.image_hash for r in result.references] == [h for _, h in expected]
    for reference, (sim, image_hash) in zip(result.references, expected, strict=True):
        assert reference.similarity == pytest.approx(sim, abs=1e-5)
        assert reference.title == titles[image_hash]
        stored_profile = next(p for p in stored if p.image_hash == image_hash)
        assert reference.scores == stored_profile.critique.dimensions.scores()
    for key in ("profile_s", "embed_s", "retrieval_s", "critique_s", "generate_s", "total_s"):
        assert key in result.timings
    assert result.critique.overall_score is not None


def test_a_portfolio_photo_retrieves_itself_first(ctx, ansel, photo_copies):
    folder = photo_copies("coffee", "rocket", "camera", "astronaut")
    index_paths(ctx, ansel, [folder])
    photo = read_image_file(folder / "rocket.jpg")

    outcome = Rag(k=2).run(ctx, ansel, photo)

    assert len(outcome.references) == 2
    first = outcome.references[0]
    assert first.image_hash == photo.sha256 and first.title == "rocket"
    assert first.similarity == pytest.approx(1.0, abs=1e-5)
    assert outcome.references[1].similarity < first.similarity


def test_exemplar_images_go_before_the_photo_when_asked(ctx, ansel, photo_copies, monkeypatch):
    folder = photo_copies("coffee", "rocket", "camera")
    index_paths(ctx, ansel, [folder])
    photo = read_image_file(folder / "coffee.jpg")
    prompts = []
    original = ctx.backend.generate

    def spy(requests, on_token=None):
        prompts.extend(r.prompt for r in requests)
        return original(requests, on_token)

    monkeypatch.setattr(ctx.backend, "generate", spy)

    outcome = Rag(k=2, exemplar_images=True, exemplar_pixels=64 * 64).run(ctx, ansel, photo)

    assert len(outcome.references) == 2
    profile_pass, critique_pass = prompts
    assert len(profile_pass.images) == 1 and len(critique_pass.images) == 3
    assert critique_pass.images[-1] is photo.image
    assert all(img.width * img.height <= 64 * 64 for img in critique_pass.images[:2])
    assert "The first 2 images are reference photographs" in critique_pass.user


class _NamedModel:
    """Retrieval reads only the loaded model's id (to trust stored embeddings)."""

    model_id = "tiny"


def test_context_text_names_exemplars_and_portfolio_statistics(db, settings, photos_dir):
    from mondrian.context import Context
    from mondrian.strategies.rag import context_text, retrieve

    def store(conn):
        for name, score in (("coffee", 4), ("rocket", 8)):
            photo = read_image_file(photos_dir / f"{name}.jpg")
            digest = images.store_image(
                conn, settings.images_dir, photo.data, photo.mime, photo.width, photo.height
            )
            images.add_to_portfolio(conn, "ansel", digest, name)
            profiles.upsert_profile(
                conn, "ansel", digest, example_critique(score=score), "curated", None
            )

    db.write(store)
    ctx = Context(backend=_NamedModel(), db=db, settings=settings)
    with db.read() as conn:
        ansel = advisors.require_advisor(conn, "ansel")
    query = example_critique(score=7)

    retrieval = retrieve(ctx, ansel.id, query, None, k=2)
    text = context_text(ansel, query, retrieval)

    assert [e.title for e in retrieval.exemplars] == ["rocket", "coffee"]  # 7 is nearer 8
    assert text.index('1. "rocket"') < text.index('2. "coffee"')
    assert "Across the 2 profiled photographs" in text
    assert "composition 6.0 +/- 2.0" in text  # mean of 4 and 8, population std 2
    for key in DIMENSIONS:
        assert f"{key} 7" in text  # the first reading's scores
    assert "images are reference" not in text
    assert "The first 2 images" in context_text(ansel, query, retrieval, with_images=True)
