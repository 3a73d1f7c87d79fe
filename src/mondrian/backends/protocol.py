"""What every model backend offers. Strategies and the service talk to this, never to a
framework directly.

`Backend` lists every member a caller uses; a backend that cannot do one of them says so
(`admits` False, `merge_adapter` raising `Unavailable`) rather than lacking it, so no
caller probes with getattr. tests/backends/test_protocol.py holds each backend, and each
stand-in for one in the tests, to the full list.
"""

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


# admit(free_rows, take) -> the requests now in the batch: between two decode steps the
# caller offers waiting requests to `take` (which prepares one and says whether it fits)
# and hands back those taken; their indices follow the call's own requests.
Admit = Callable[[int, Callable[[GenerationRequest], bool]], list[GenerationRequest]]
# deliver(index, generation): one request's answer, as soon as it is finished.
Deliver = Callable[[int, Generation], None]


@runtime_checkable
class Backend(Protocol):
    @property
    def name(self) -> str:
        """The backend's registry name ('transformers', 'mlx')."""
        ...

    @property
    def model_id(self) -> str:
        """The loaded model: a hub id or a local path (with '+adapter' once merged)."""
        ...

    @property
    def answer_budget(self) -> int:
        """Tokens of the schema's longest answer: a request's limit when it sets none."""
        ...

    @property
    def admits(self) -> bool:
        """Whether `generate` takes waiting requests into its running batch via `admit`."""
        ...

    def generate(
        self,
        requests: list[GenerationRequest],
        on_token: TokenCallback | None = None,
        *,
        admit: Admit | None = None,
        deliver: Deliver | None = None,
        rows_hint: int = 0,
    ) -> list[Generation]:
        """Run a batch; results follow the requests. `admit` and `rows_hint` (rows to keep
        room for) are used only where `admits`; `deliver`, if given, gets every result,
        admitted ones included, by the time generate returns."""
        ...

    def embed_images(self, images: list[Image.Image]) -> list[list[float]]:
        """One L2-normalised embedding per image (pooled vision features), for retrieval."""
        ...

    def load_adapter(self, name: str, path: Path) -> None:
        """Make an adapter resident under `name`; refuses one trained on another base."""
        ...

    def unload_adapter(self, name: str) -> None:
        """Drop a resident adapter (NotFound if it is not loaded)."""
        ...

    def merge_adapter(self, name: str) -> None:
        """Fold a resident adapter into the base weights, which then serve as the base."""
        ...

    def adapters(self) -> list[str]:
        """The names of the resident adapters, in load order."""
        ...

    def info(self) -> dict[str, object]:
        """Model id, device, dtype and resident adapters, for /health and records."""
        ...


def deliver_each(generations: list[Generation], deliver: Deliver | None) -> list[Generation]:
    """For a backend that finishes a batch at once: hand each result to `deliver`."""
    if deliver is not None:
        for index, generation in enumerate(generations):
            deliver(index, generation)
    return generations
