"""`rag`: critique with the advisor's most similar portfolio photographs in context.

Pass 1 profiles the user's photo with the neutral 8-dimension prompt (and embeds it where
the backend can); `retrieval.rank` picks the k most similar profiled portfolio images
(see retrieval.py for the measure); pass 2 is the advisor's critique with a context
text that gives, for each exemplar, its scores, description and two comments, and the
portfolio's per-dimension mean and spread. The photo's measured facts go into pass 2's
prompt only ("Measured:", prompts.py): pass 1's profile must stay comparable with the
portfolio's, which are profiled with the same neutral prompt and no facts.

The exemplars' images can go into the prompt as well (`Rag(exemplar_images=True)`),
shrunk to `exemplar_pixels` each, before the user's photo. It is off by default: each
image costs hundreds of prompt tokens on a real Qwen-VL model, and the text alone
carries what the exemplars are for (how this advisor's own work scores).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mondrian.advisors import Advisor
from mondrian.backends.protocol import GenerationRequest, TokenCallback
from mondrian.context import Context
from mondrian.errors import MondrianError, Unavailable
from mondrian.images import Photo, fit_pixels, read_image_file
from mondrian.modes import Mode
from mondrian.portfolio.retrieval import (
    DEFAULT_K,
    EMBEDDING_WEIGHT,
    Candidate,
    PortfolioStats,
    decode_embedding,
    portfolio_stats,
    profile_vector,
    rank,
)
from mondrian.prompts import critique_prompt, profile_prompt
from mondrian.schema import DIMENSIONS, Critique, Fact, Reference
from mondrian.storage import images as image_store
from mondrian.storage import profiles as profile_store
from mondrian.strategies.base import Outcome, require_critique

log = logging.getLogger(__name__)

EXEMPLAR_PIXELS = 256 * 28 * 28
_COMMENT_CHARS = 140


@dataclass(frozen=True)
class Exemplar:
    """A retrieved portfolio image: its stored profile, title and similarity."""

    profile: profile_store.Profile
    title: str | None
    similarity: float

    def reference(self) -> Reference:
        return Reference(
            image_hash=self.profile.image_hash,
            similarity=round(self.similarity, 6),
            scores=self.profile.critique.dimensions.scores(),
            title=self.title,
        )


@dataclass(frozen=True)
class Retrieval:
    exemplars: list[Exemplar]
    stats: PortfolioStats


def retrieve(
    ctx: Context,
    advisor_id: str,
    query: Critique,
    query_embedding: list[float] | np.ndarray | None,
    k: int = DEFAULT_K,
    weight: float = EMBEDDING_WEIGHT,
) -> Retrieval:
    """The k portfolio images most similar to a photo whose profile is `query`.

    A stored embedding is used only when it came from the model now loaded (the
    profile's `model` is the backend's model id): embeddings of two models do not compare.
    """
    with ctx.db.read() as conn:
        profiles = profile_store.list_profiles(conn, advisor_id)
        titles = {
            item.image_hash: item.title for item in image_store.list_portfolio(conn, advisor_id)
        }
    if not profiles:
        raise Unavailable(f"advisor {advisor_id!r} has no indexed portfolio", code="no_portfolio")
    model_id = ctx.backend.model_id
    candidates = [
        Candidate(
            key=p.image_hash,
            vector=profile_vector(p.critique),
            embedding=decode_embedding(p.embedding) if p.model == model_id else None,
        )
        for p in profiles
    ]
    stats = portfolio_stats([c.vector for c in candidates])
    embedding = None if query_embedding is None else np.asarray(query_embedding, dtype=np.float64)
    ranked = rank(profile_vector(query), embedding, candidates, stats, k=k, weight=weight)
    exemplars = [
        Exemplar(profile=profiles[i], title=titles.get(profiles[i].image_hash), similarity=sim)
        for i, sim in ranked
    ]
    return Retrieval(exemplars=exemplars, stats=stats)


def context_text(
    advisor: Advisor, first_look: Critique, retrieval: Retrieval, with_images: bool = False
) -> str:
    """What pass 2 is told besides the advisor's voice."""
    lines = []
    n = len(retrieval.exemplars)
    if with_images and n:
        lines.append(
            f"The first {n} images are reference photographs from {advisor.name}'s own "
            "portfolio, in the order listed below; the last image is the photograph to critique."
        )
    lines.append(
        f"Reference photographs from {advisor.name}'s portfolio that resemble this one, "
        "with the scores they were given (0-10):"
    )
    for number, exemplar in enumerate(retrieval.exemplars, 1):
        critique = exemplar.profile.critique
        name = f'"{exemplar.title}"' if exemplar.title else exemplar.profile.image_hash[:12]
        lines.append(f"{number}. {name} (similarity {exemplar.similarity:.2f})")
        lines.append(f"   {_short(critique.image_description)}")
        lines.append("   Scores: " + _scores_line(critique.dimensions.scores()))
        ranked = sorted(critique.dimensions.items(), key=lambda kv: kv[1].score)
        for label, (key, dim) in (("Strongest", ranked[-1]), ("Weakest", ranked[0])):
            lines.append(f"   {label}, {key}: {_short(dim.comment)}")
    stats = retrieval.stats
    lines.append(
        f"Across the {stats.count} profiled photographs of the portfolio, each dimension's "
        "mean and standard deviation:"
    )
    lines.append(
        "   "
        + ", ".join(f"{key} {m:.1f} +/- {s:.1f}" for key, (m, s) in stats.by_dimension().items())
    )
    lines.append(
        "A neutral first reading of the photograph to critique scored it: "
        + _scores_line(first_look.dimensions.scores())
        + ". Judge it against the references, in your own voice."
    )
    return "\n".join(lines)


class Rag:
    name = Mode.RAG

    def __init__(
        self,
        k: int = DEFAULT_K,
        weight: float = EMBEDDING_WEIGHT,
        exemplar_images: bool = False,
        exemplar_pixels: int = EXEMPLAR_PIXELS,
    ) -> None:
        self.k = k
        self.weight = weight
        self.exemplar_images = exemplar_images
        self.exemplar_pixels = exemplar_pixels

    def unavailable(self, ctx: Context, advisor: Advisor) -> str | None:
        with ctx.db.read() as conn:
            if profile_store.count_profiles(conn, advisor.id) == 0:
                return "no indexed portfolio"
        return None

    def run(
        self,
        ctx: Context,
        advisor: Advisor,
        photo: Photo,
        on_token: TokenCallback | None = None,
        *,
        facts: Sequence[Fact] = (),
    ) -> Outcome:
        timings: dict[str, float] = {}
        (first,) = ctx.backend.generate(
            [GenerationRequest(prompt=profile_prompt(photo.image))], on_token=on_token
        )
        first_look = require_critique(first)
        timings["profile_s"] = first.timings.get("generate_s", 0.0)

        started = time.perf_counter()
        embedding = _embed(ctx, photo)
        timings["embed_s"] = round(time.perf_counter() - started, 4)

        started = time.perf_counter()
        retrieval = retrieve(ctx, advisor.id, first_look, embedding, self.k, self.weight)
        images = self._exemplar_images(ctx, retrieval) if self.exemplar_images else []
        timings["retrieval_s"] = round(time.perf_counter() - started, 4)

        context = context_text(advisor, first_look, retrieval, with_images=bool(images))
        prompt = critique_prompt(advisor, photo.image, context, facts=facts)
        prompt.images = [*images, *prompt.images]
        (second,) = ctx.backend.generate([GenerationRequest(prompt=prompt)], on_token=on_token)
        critique = require_critique(second)
        timings["critique_s"] = second.timings.get("generate_s", 0.0)
        timings["generate_s"] = round(timings["profile_s"] + timings["critique_s"], 4)
        if "tokens_per_s" in second.timings:
            timings["tokens_per_s"] = second.timings["tokens_per_s"]
        return Outcome(
            critique=critique,
            generation=second,
            references=[e.reference() for e in retrieval.exemplars],
            timings=timings,
        )

    def _exemplar_images(self, ctx: Context, retrieval: Retrieval) -> list:
        """The exemplars' stored images, shrunk; all or none, so the numbering holds."""
        loaded = []
        try:
            for exemplar in retrieval.exemplars:
                with ctx.db.read() as conn:
                    path = image_store.image_path(
                        conn, ctx.settings.images_dir, exemplar.profile.image_hash
                    )
                photo = read_image_file(path, max_pixels=ctx.settings.max_image_pixels)
                loaded.append(fit_pixels(photo.image, self.exemplar_pixels))
        except MondrianError as exc:
            log.warning("exemplar images left out of the prompt: %s", exc.message)
            return []
        return loaded


def _embed(ctx: Context, photo: Photo) -> list[float] | None:
    """The photo's embedding, or None where the backend has none (profiles only then)."""
    try:
        (vector,) = ctx.backend.embed_images([photo.image])
    except (NotImplementedError, MondrianError) as exc:
        log.info("no image embedding for retrieval: %s", exc)
        return None
    return vector


def _scores_line(scores: dict[str, int]) -> str:
    return ", ".join(f"{key} {scores[key]}" for key in DIMENSIONS)


def _short(text: str, limit: int = _COMMENT_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."
