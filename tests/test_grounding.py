"""Grounding end to end: `analyze` measures the photo once, every strategy's critique prompt
carries its "Measured:" block, and the result holds the facts and the checks the final
critique breaks against them (scores untouched)."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
from PIL import Image

from backend_fakes import ScriptedBackend
from mondrian.analysis import analyze
from mondrian.facts import measure
from mondrian.facts.checks import run_checks
from mondrian.images import read_image
from mondrian.prompts import MEASURED_HEADER
from mondrian.schema import Critique, example_critique


def strong_critique() -> Critique:
    """A critique that scores every dimension 9: every rule's score condition holds."""
    data = example_critique().model_dump()
    for dim in data["dimensions"].values():
        dim["score"] = 9
    return Critique.model_validate(data)


def blown_photo():
    """Noise with its top third pure white: a large clipped-highlight area."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(40, 200, size=(96, 128, 3), dtype=np.uint8)
    pixels[:32] = 255
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return read_image(buffer.getvalue())


@pytest.fixture
def scripted(ctx):
    backend = ScriptedBackend(ctx.backend, strong_critique)
    return dataclasses.replace(ctx, backend=backend), backend


def test_baseline_result_has_facts_and_the_checks_of_its_critique(scripted, ansel) -> None:
    ctx, backend = scripted
    photo = blown_photo()
    result = analyze(ctx, ansel, photo, "baseline")
    assert [f.name for f in result.facts] == [f.name for f in measure(photo)]
    by_name = {f.name: f.value for f in result.facts}
    assert by_name["highlights_clipped"] >= 0.3
    assert "lighting_score_highlights_clipped" in [c.rule for c in result.checks]
    assert result.checks == run_checks(result.critique, result.facts)
    assert result.critique.dimensions.scores() == strong_critique().dimensions.scores()
    assert "facts_s" in result.timings
    (user,) = backend.users
    assert MEASURED_HEADER in user and "highlights clipped" in user


def test_rag_puts_the_block_in_the_critique_pass_only(scripted, ansel, photos_dir) -> None:
    from mondrian.portfolio.indexing import index_paths

    ctx, backend = scripted
    index_paths(ctx, ansel, [photos_dir / "chelsea.jpg", photos_dir / "coffee.jpg"])
    backend.users.clear()
    result = analyze(ctx, ansel, blown_photo(), "rag")
    assert result.mode_used == "rag"
    profile_pass, critique_pass = backend.users
    # The neutral profile stays comparable with the indexed portfolio's, measured without.
    assert MEASURED_HEADER not in profile_pass
    assert MEASURED_HEADER in critique_pass
    assert result.facts and result.checks
