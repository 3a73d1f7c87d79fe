"""Typed settings. Every field has a default and one line of help; the environment
(`MONDRIAN_*`) and CLI flags override them."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from mondrian.errors import InvalidInput, describe_validation
from mondrian.modes import Mode

DEFAULT_MODEL = "Qwen/Qwen2.5-VL-3B-Instruct"
# Names a loopback service answers to; `mondrian serve` adds the address it binds.
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MONDRIAN_", extra="ignore")

    home: Path = Field(
        default=Path("~/.mondrian"), description="Where the database, images and adapters live."
    )
    model: str = Field(default=DEFAULT_MODEL, description="Hub id or local path of the base model.")
    backend: str = Field(default="auto", description="Model backend by name (auto picks one).")
    device: str = Field(default="auto", description="cuda, mps, cpu or auto (first available).")
    dtype: str = Field(default="auto", description="float32, bfloat16, float16 or auto.")
    analysis_mode: Mode = Field(
        default=Mode.BASELINE,
        validation_alias=AliasChoices("MONDRIAN_ANALYSIS_MODE", "ANALYSIS_MODE", "analysis_mode"),
        description="Mode used when a request names none.",
    )
    max_pixels: int = Field(
        default=1280 * 28 * 28, gt=0, description="Pixel budget an image is resized to."
    )
    max_text_chars: int | None = Field(
        default=None,
        gt=0,
        description="Tighter bound on each generated string (small values keep tiny models fast).",
    )
    max_list_items: int | None = Field(
        default=None,
        gt=0,
        description="Tighter bound on strengths/improvements items (tiny-model runs).",
    )
    fast: bool = Field(
        default=False,
        description="Serve with the CUDA fast path (static KV cache, CUDA graphs) on a GPU.",
    )
    max_upload_bytes: int = Field(
        default=25 * 1024 * 1024, gt=0, description="Largest accepted upload, in bytes."
    )
    max_image_pixels: int = Field(
        default=100_000_000, gt=0, description="Largest accepted image (decompression-bomb guard)."
    )
    admin_token: SecretStr | None = Field(
        default=None,
        description="Bearer token for operator actions over HTTP; unset, they are refused.",
    )
    review_tokens: dict[str, SecretStr] = Field(
        default_factory=dict,
        description='Trusted reviewers\' tokens by id (JSON {"id": "token"}): accepted at once.',
    )
    reviews_per_hour: int = Field(
        default=30, ge=1, description="Reviews one client (address or token) may post per hour."
    )
    allowed_hosts: list[str] = Field(
        default_factory=lambda: list(LOOPBACK_HOSTS),
        description="Host header values served (DNS-rebinding guard); '*' serves any.",
    )
    header_timeout_s: float = Field(
        default=10.0, gt=0, description="Longest a client may take to send a request's headers."
    )
    body_timeout_s: float = Field(
        default=60.0, gt=0, description="Longest a client may take to send a request's body."
    )
    keep_alive_timeout_s: int = Field(
        default=5, ge=1, description="Idle seconds before a kept-alive connection is closed."
    )
    max_connections: int = Field(
        default=256, ge=1, description="Connections served at once; more are answered 503."
    )
    max_connections_per_client: int = Field(
        default=32,
        ge=1,
        description="Connections of one client address served at once; more wait unread.",
    )
    shutdown_grace_s: float = Field(
        default=30.0, ge=0, description="On SIGTERM, how long running jobs get to finish."
    )
    # The model never sees more than max_pixels (the Qwen processors' budget, 1280 x 28 x 28
    # by default, about 1 MP): an upload is reduced to that working copy at once, so the
    # pixels decoded beyond it are only a cost. 24 MP (a full-frame camera) bounds that cost
    # at about 100 MB a decode; a JPEG is accepted up to max_image_pixels, as draft() decodes
    # it at 1/2 to 1/8 scale. The limit is never below max_pixels (service/routes/analyze.py).
    max_decode_pixels: int = Field(
        default=24_000_000,
        gt=0,
        description="Most pixels an upload decodes to (a JPEG shrinks while decoding).",
    )
    decode_concurrency: int = Field(
        default=2, ge=1, description="Uploads the service decodes at once; the rest wait."
    )

    @property
    def home_dir(self) -> Path:
        return self.home.expanduser()

    @property
    def db_path(self) -> Path:
        return self.home_dir / "mondrian.db"

    @property
    def images_dir(self) -> Path:
        return self.home_dir / "images"

    @property
    def adapters_dir(self) -> Path:
        return self.home_dir / "adapters"


def fast_path_warning(settings: Settings, cuda_available: bool) -> str | None:
    """Why `fast` will not take effect here, or None when it will (or is off).

    The transformers backend builds the fast path only on a CUDA device
    (src/mondrian/backends/transformers/backend.py) and otherwise runs the stock
    generate() without saying so above info level; a user who set MONDRIAN_FAST=1 should
    know their requests run the slow path.
    """
    if not settings.fast:
        return None
    if settings.device not in ("auto", "cuda") and not settings.device.startswith("cuda:"):
        return (
            f"MONDRIAN_FAST=1 is ignored: the fast path needs a CUDA device and "
            f"--device is {settings.device}; the stock generate() will run"
        )
    if not cuda_available:
        return (
            "MONDRIAN_FAST=1 is ignored: no CUDA device is available on this machine; "
            "the stock generate() will run"
        )
    return None


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment, with explicit (non-None) overrides on top.

    An invalid value (`MONDRIAN_ANALYSIS_MODE=fast`) is InvalidInput naming the field, so
    the CLI reports it as a user's mistake rather than with a traceback."""
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        raise InvalidInput("invalid settings: " + describe_validation(exc)) from None
