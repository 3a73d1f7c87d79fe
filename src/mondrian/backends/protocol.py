"""What every model backend offers, and the backends by name. Strategies and the service
talk to this, never to a framework directly.

`Backend` lists every member a caller uses; a backend that cannot do one of them says so
(`admits` False, `merge_adapter` raising `Unavailable`) rather than lacking it, so no
caller probes with getattr. tests/backends/test_protocol.py holds each backend, and each
stand-in for one in the tests, to the full list.

`BACKENDS` names the implementations; each is imported only when chosen
(`create_backend`), so a machine without MLX (or without torch) can still use the others.
"""

from __future__ import annotations

import importlib
import platform
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from PIL import Image

from mondrian.backends.loading import announce_load
from mondrian.config import Settings
from mondrian.errors import InvalidInput, NotFound, Unavailable
from mondrian.model_source import resolve_model
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
    # dimension -> why it has no expected score (the vllm backend: a digit missing from the
    # server's top logprobs); the other backends read every digit, so theirs stays empty
    uncalibrated: dict[str, str] = field(default_factory=dict)
    prompt_tokens: int = 0
    new_tokens: int = 0
    stopped: bool = False  # ended by an end-of-turn token, not by the token limit
    timings: dict[str, float] = field(default_factory=dict)
    adapter: str | None = None
    # Which path ran the model: "fast" (the CUDA engine), "stock" (transformers' generate),
    # "mlx" or "vllm" (a vLLM server); the result's model.engine (schema.py ModelInfo).
    engine: str | None = None


# admit(free_rows, take) -> the requests now in the batch: between two decode steps the
# caller offers waiting requests to `take` (which prepares one and says whether it fits)
# and hands back those taken; their indices follow the call's own requests.
Admit = Callable[[int, Callable[[GenerationRequest], bool]], list[GenerationRequest]]
# deliver(index, generation): one request's answer, as soon as it is finished.
Deliver = Callable[[int, Generation], None]


@dataclass(frozen=True)
class Joining:
    """How a caller runs a batch that waiting requests may join (continuous batching):
    `admit` offers them between steps, `deliver` hears of every row as it finishes
    (admitted ones too), `rows_hint` is how many rows to keep room for (requests known to
    be on their way). Together or not at all: admitted rows have no other way out."""

    admit: Admit
    deliver: Deliver
    rows_hint: int = 0


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
        joining: Joining | None = None,
    ) -> list[Generation]:
        """Run a batch; results follow the requests. With `joining`, waiting requests join
        it where `admits`; elsewhere its `deliver` still gets every result by the time
        generate returns (`deliver_each`)."""
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

    def warm_up(self) -> None:
        """Do now what the first request would otherwise wait for (the fast path's
        compilation: seconds to a minute on a GPU); nothing where nothing is deferred.
        `mondrian serve` calls it before it takes requests."""
        ...


def deliver_each(generations: list[Generation], joining: Joining | None) -> list[Generation]:
    """For a backend that finishes a batch at once: hand each result to `deliver`."""
    if joining is not None:
        for index, generation in enumerate(generations):
            joining.deliver(index, generation)
    return generations


def check_loaded(requests: list[GenerationRequest], adapters: list[str]) -> None:
    """NotFound for the first request whose adapter is not resident, before any work."""
    for request in requests:
        if request.adapter is not None and request.adapter not in adapters:
            raise NotFound(f"adapter {request.adapter} is not loaded")


class Forwarding:
    """A backend that wraps another: every Protocol member passes through to `inner`;
    a subclass overrides the members it changes (the service's per-job stage tracker,
    the tests' stand-ins around a real backend)."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def model_id(self) -> str:
        return self.inner.model_id

    @property
    def answer_budget(self) -> int:
        return self.inner.answer_budget

    @property
    def admits(self) -> bool:
        return self.inner.admits

    def generate(
        self,
        requests: list[GenerationRequest],
        on_token: TokenCallback | None = None,
        *,
        joining: Joining | None = None,
    ) -> list[Generation]:
        return self.inner.generate(requests, on_token, joining=joining)

    def embed_images(self, images: list[Image.Image]) -> list[list[float]]:
        return self.inner.embed_images(images)

    def load_adapter(self, name: str, path: Path) -> None:
        self.inner.load_adapter(name, path)

    def unload_adapter(self, name: str) -> None:
        self.inner.unload_adapter(name)

    def merge_adapter(self, name: str) -> None:
        self.inner.merge_adapter(name)

    def adapters(self) -> list[str]:
        return self.inner.adapters()

    def info(self) -> dict[str, object]:
        return self.inner.info()

    def warm_up(self) -> None:
        self.inner.warm_up()


# --- the backends by name ----------------------------------------------------------------

BACKENDS: dict[str, str] = {
    "transformers": "mondrian.backends.transformers.backend:TransformersBackend",
    "mlx": "mondrian.backends.mlx.backend:MLXBackend",
    # A vLLM server's OpenAI-compatible API (backends/vllm/, docs/vllm.md): no model here.
    "vllm": "mondrian.backends.vllm.backend:VLLMBackend",
}


def resolve_backend_name(name: str) -> str:
    """'auto' is MLX on Apple Silicon when installed and registered, else transformers."""
    if name != "auto":
        if name not in BACKENDS:
            raise InvalidInput(
                f"unknown backend {name!r}; choose one of: auto, {', '.join(BACKENDS)}"
            )
        return name
    apple = platform.system() == "Darwin" and platform.machine() == "arm64"
    if apple and "mlx" in BACKENDS and find_spec("mlx_vlm") is not None:
        return "mlx"
    return "transformers"


def create_backend(settings: Settings, **options: Any) -> Backend:
    """The settings' backend on the settings' model; `options` add to or override them."""
    name = resolve_backend_name(settings.backend)
    if name == "vllm":
        return _create_vllm(settings, **options)
    # Before the backend's module (torch, mlx) is imported: a missing folder or a hub that
    # cannot be reached is said in a second, not after the framework's own import.
    resolve_model(settings.model)
    module_name, _, class_name = BACKENDS[name].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise Unavailable(
            f"backend {name!r} needs packages that are not installed ({exc.name}); "
            "install mondrian with the 'model' extra"
        ) from None
    backend_cls = getattr(module, class_name)
    options.setdefault("max_text_chars", settings.max_text_chars)
    options.setdefault("max_list_items", settings.max_list_items)
    if name == "transformers":
        options.setdefault("fast", settings.fast)
        options.setdefault("fast_kernels", settings.fast_kernels)
    with announce_load(settings.model):  # the load takes up to minutes: say what and how long
        return backend_cls(
            settings.model,
            device=settings.device,
            dtype=settings.dtype,
            max_pixels=settings.max_pixels,
            **options,
        )


def _create_vllm(settings: Settings, **options: Any) -> Backend:
    """The vllm backend: the model is the server's, so nothing is resolved or loaded here;
    `--model` (when set at all) must name the server's."""
    from mondrian.backends.vllm.backend import VLLMBackend

    options.setdefault("max_text_chars", settings.max_text_chars)
    options.setdefault("max_list_items", settings.max_list_items)
    options.setdefault("vllm_url", settings.vllm_url)
    options.setdefault("timeout_s", settings.vllm_timeout_s)
    if settings.vllm_api_key is not None:
        options.setdefault("api_key", settings.vllm_api_key.get_secret_value())
    model = settings.model if "model" in settings.model_fields_set else None
    return VLLMBackend(
        model,
        device=settings.device,
        dtype=settings.dtype,
        max_pixels=settings.max_pixels,
        **options,
    )
