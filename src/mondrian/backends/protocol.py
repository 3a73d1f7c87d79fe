"""What every model backend offers. Strategies and the service talk to this, never to a
framework directly."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from PIL import Image

from mondrian.prompts import Prompt
from mondrian.schema import Critique

# Called as on_token(request_index, token_count) after each generated token.
TokenCallback = Callable[[int, int], None]


@dataclass
class GenerationRequest:
    prompt: Prompt
    adapter: str | None = None  # a loaded adapter's name ('ansel@v3'); None is the base model
    constrained: bool = True  # grammar-constrained to the critique schema
    max_new_tokens: int | None = None  # None: the schema's longest possible answer


@dataclass
class Generation:
    text: str
    critique: Critique | None  # None when the text is not a valid critique
    error: str | None  # why `critique` is None
    expected_scores: dict[str, float] = field(default_factory=dict)
    # P(score = 0..10) per dimension, read at the score position (calibration)
    score_distributions: dict[str, list[float]] = field(default_factory=dict)
    prompt_tokens: int = 0
    new_tokens: int = 0
    stopped: bool = False  # ended by an end-of-turn token, not by the token limit
    timings: dict[str, float] = field(default_factory=dict)
    adapter: str | None = None


@runtime_checkable
class Backend(Protocol):
    name: str
    model_id: str

    def generate(
        self, requests: list[GenerationRequest], on_token: TokenCallback | None = None
    ) -> list[Generation]:
        """Run a batch of requests; the order of results follows the requests."""
        ...

    def embed_images(self, images: list[Image.Image]) -> list[list[float]]:
        """One L2-normalised embedding per image (pooled vision features), for retrieval."""
        ...

    def load_adapter(self, name: str, path: Path) -> None:
        """Make an adapter resident under `name`; refuses one trained on another base."""
        ...

    def unload_adapter(self, name: str) -> None: ...

    def adapters(self) -> list[str]: ...

    def info(self) -> dict[str, object]:
        """Model id, device, dtype and resident adapters, for /health and records."""
        ...
