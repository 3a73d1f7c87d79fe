"""Typed settings. Every field has a default and one line of help. Where a value comes
from, highest first: CLI flags (init arguments), the environment (`MONDRIAN_*`), the config
file (`$MONDRIAN_HOME/config.toml`, or `MONDRIAN_CONFIG`), the default.

The module is over 250 lines because the config file's loader, its provenance for
`mondrian config show` and its template belong with the fields they read."""

from __future__ import annotations

import json
import os
import tomllib
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    create_model,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from mondrian.errors import InvalidInput, describe_validation
from mondrian.modes import Mode

DEFAULT_MODEL = "Qwen/Qwen2.5-VL-3B-Instruct"
# Names a loopback service answers to; `mondrian serve` adds the address it binds.
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


ENV_PREFIX = "MONDRIAN_"
# Names the config file by path, over $MONDRIAN_HOME/config.toml; not itself a setting.
CONFIG_ENV = "MONDRIAN_CONFIG"
CONFIG_NAME = "config.toml"
DEFAULT_HOME = Path("~/.mondrian")


class FastMode(StrEnum):
    """Whether the transformers backend serves through its CUDA fast path
    (src/mondrian/backends/transformers/engine/): `auto` wherever CUDA is present."""

    AUTO = "auto"
    ON = "on"
    OFF = "off"


# MONDRIAN_FAST was a boolean before it had `auto`: its old spellings keep their meaning.
_FAST_WORDS = {"1": "on", "true": "on", "yes": "on", "0": "off", "false": "off", "no": "off"}


def fast_mode(value: object) -> object:
    """A bool or an old boolean spelling as `on`/`off`; anything else as given (the
    enum's validation names the bad value)."""
    if isinstance(value, bool):
        return FastMode.ON if value else FastMode.OFF
    if isinstance(value, str):
        return _FAST_WORDS.get(value.strip().lower(), value.strip().lower())
    return value


# The fast path's Triton decode kernels by name (backends/transformers/engine/kernels/);
# `tuned_gemv` is inductor's, tuned, for the one-row products (kernels/tuned_gemv.py).
FAST_KERNEL_NAMES = ("norm_linear", "rope_kv", "decode_attention", "residual_linear", "tuned_gemv")
# MONDRIAN_FAST_KERNELS was a boolean before it named kernels: its old spellings still mean
# all or none; `auto` is the set the project measured fastest (kernels/decode.py's AUTO).
_KERNEL_WORDS = {
    **{word: "all" for word in ("all", "on", "1", "true", "yes")},
    **{word: "none" for word in ("none", "off", "0", "false", "no")},
    "auto": "auto",
}


def fast_kernels_choice(value: object) -> object:
    """`auto`, `all`, `none`, or the kernels named (a comma list, or a list) in
    FAST_KERNEL_NAMES' order; a bool as all/none. An unknown name is a ValueError that
    lists the valid ones."""
    if isinstance(value, bool):
        return "all" if value else "none"
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _KERNEL_WORDS:
            return _KERNEL_WORDS[word]
        given = word.split(",")
    elif isinstance(value, list | tuple | set | frozenset):
        given = [str(v).strip().lower() for v in value]
    else:
        return value  # not a string: pydantic's own type error names it
    names = {name.strip() for name in given if name.strip()}
    unknown = sorted(names - set(FAST_KERNEL_NAMES))
    if unknown or not names:
        raise ValueError(
            f"unknown fast kernel {', '.join(map(repr, unknown)) or repr(value)}: use auto, "
            f"all, none or a comma list of {', '.join(FAST_KERNEL_NAMES)}"
        )
    if names == set(FAST_KERNEL_NAMES):
        return "all"
    return ",".join(name for name in FAST_KERNEL_NAMES if name in names)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Flags > environment > config file > defaults; no .env or secrets directory.
        home = None
        if isinstance(init_settings, InitSettingsSource):
            home = init_settings.init_kwargs.get("home")
        path = config_file_path(home)
        values = read_config_file(settings_cls, path) if path is not None else {}
        return init_settings, env_settings, InitSettingsSource(settings_cls, values)

    home: Path = Field(
        default=DEFAULT_HOME, description="Where the database, images and adapters live."
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
    # --- the vllm backend (backends/vllm/, docs/vllm.md) ---
    vllm_url: str | None = Field(
        default=None,
        description="With --backend vllm: the vLLM server's address (http://host:8000).",
    )
    vllm_timeout_s: float = Field(
        default=300.0, gt=0, description="With --backend vllm: longest wait for the server."
    )
    vllm_api_key: SecretStr | None = Field(
        default=None, description="With --backend vllm: the server's --api-key, if it has one."
    )
    fast: Annotated[FastMode, BeforeValidator(fast_mode)] = Field(
        default=FastMode.AUTO,
        description="CUDA fast path: auto (on wherever CUDA is), on (warns without it) or off.",
    )
    fast_kernels: Annotated[str, BeforeValidator(fast_kernels_choice)] = Field(
        default="auto",
        description="The fast path's Triton decode kernels: auto (measured), all, none or a list.",
    )
    max_upload_bytes: int = Field(
        default=25 * 1024 * 1024, gt=0, description="Largest accepted upload, in bytes."
    )
    max_file_bytes: int = Field(
        default=256 * 1024 * 1024,
        gt=0,
        description="Largest photo file a command reads from disk (a RAW runs to 100 MB).",
    )
    max_image_pixels: int = Field(
        default=100_000_000, gt=0, description="Largest accepted image (decompression-bomb guard)."
    )
    studio_disclaimer: str = Field(
        default=(
            "The voice of this critique is modelled on the photographer's published work "
            "and writing. It is not theirs, and it is not endorsed by them or their estate."
        ),
        min_length=1,
        max_length=1000,
        description="The note every critique page of the studio shows (service/routes/studio.py).",
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
    # Failed operator sign-ins per client address (service/sign_in_limit.py).
    sign_in_attempts: int = Field(
        default=5, ge=1, description="Failed operator sign-ins one address may make per window."
    )
    sign_in_window_s: float = Field(
        default=300.0,
        gt=0,
        description="Seconds over which failed sign-ins are counted; past them, 429.",
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
    # Several replicas (issue 20, docs/storage.md): one PostgreSQL and one folder they all
    # see. Unset, the state is the SQLite file and the folders under MONDRIAN_HOME.
    database_url: SecretStr | None = Field(
        default=None,
        description="postgresql://user:pass@host/db to share state between replicas; "
        "unset, the SQLite file under MONDRIAN_HOME.",
    )
    shared_dir: Path | None = Field(
        default=None,
        description="Folder every replica sees, for images and adapters by content "
        "(unset: MONDRIAN_HOME).",
    )

    @property
    def home_dir(self) -> Path:
        return self.home.expanduser()

    @property
    def db_path(self) -> Path:
        return self.home_dir / "mondrian.db"

    @property
    def files_dir(self) -> Path:
        """Where images and adapters live: the shared folder, else MONDRIAN_HOME."""
        return self.home_dir if self.shared_dir is None else self.shared_dir.expanduser()

    @property
    def images_dir(self) -> Path:
        return self.files_dir / "images"

    @property
    def adapters_dir(self) -> Path:
        return self.files_dir / "adapters"


def fast_path_warning(settings: Settings, cuda_available: bool) -> str | None:
    """Why `fast` will not take effect here, or None when it will (or is auto or off).

    The transformers backend builds the fast path only on a CUDA device
    (src/mondrian/backends/transformers/backend.py) and otherwise runs the stock
    generate() without saying so above info level; a user who asked for `on` should know
    their requests run the slow path. `auto` means "where it can", so it says nothing.
    """
    if settings.fast is not FastMode.ON:
        return None
    if settings.device not in ("auto", "cuda") and not settings.device.startswith("cuda:"):
        return (
            f"--fast on (MONDRIAN_FAST) is ignored: the fast path needs a CUDA device and "
            f"--device is {settings.device}; the stock generate() will run"
        )
    if not cuda_available:
        return (
            "--fast on (MONDRIAN_FAST) is ignored: no CUDA device is available on this "
            "machine; the stock generate() will run"
        )
    return None


# --- the config file ------------------------------------------------------------------


def _env_value(name: str) -> str | None:
    # pydantic-settings matches environment names without regard to case; so does this.
    for key, value in os.environ.items():
        if key.lower() == name.lower():
            return value
    return None


def config_location(home: object = None) -> Path:
    """Where the config file is: MONDRIAN_CONFIG's path, else `<home>/config.toml`, home
    being the flag's, the environment's or the default (whether or not the file exists)."""
    named = _env_value(CONFIG_ENV)
    if named:
        return Path(named).expanduser()
    base = Path(str(home)) if home else Path(_env_value(ENV_PREFIX + "HOME") or DEFAULT_HOME)
    return base.expanduser() / CONFIG_NAME


def config_file_path(home: object = None) -> Path | None:
    """The config file to read, or None: a file MONDRIAN_CONFIG names must exist (reading
    it says so when it does not); the one under home is read when it is there."""
    path = config_location(home)
    return path if _env_value(CONFIG_ENV) or path.is_file() else None


@lru_cache(maxsize=4)
def _file_model(settings_cls: type[BaseModel]) -> type[BaseModel]:
    # The settings' own fields (types, bounds, aliases), with unknown keys refused: one
    # validation names every bad key of a file at once.
    fields: dict[str, Any] = {
        name: (info.annotation, info) for name, info in settings_cls.model_fields.items()
    }
    return create_model("ConfigFile", __config__=ConfigDict(extra="forbid"), **fields)


def read_config_file(settings_cls: type[BaseModel], path: Path) -> dict[str, Any]:
    """The file's values, checked against the settings: InvalidInput names the file and
    every unknown key or bad value in it."""
    label = f"config file {path}"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InvalidInput(f"{label}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{label}: not UTF-8 text (byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInput(f"{label}: invalid TOML: {exc}") from None
    try:
        _file_model(settings_cls).model_validate(data)
    except ValidationError as exc:
        problems = describe_validation(exc, field="key '{}'")
        problems = problems.replace("Extra inputs are not permitted", "unknown setting")
        raise InvalidInput(f"{label}: {problems}") from None
    return data


def env_names(name: str, info: FieldInfo) -> list[str]:
    """The environment variables a setting is read from."""
    if isinstance(info.validation_alias, AliasChoices):
        # The upper-case choices are the variables; a lower-case one is the field's name.
        return [c for c in info.validation_alias.choices if isinstance(c, str) and c.isupper()]
    return [ENV_PREFIX + name.upper()]


def default_of(info: FieldInfo) -> Any:
    return info.default_factory() if info.default_factory else info.default  # type: ignore[call-arg]


def setting_origins(overrides: dict[str, object] | None = None) -> dict[str, str]:
    """Where each setting's effective value comes from: `flag`, `env NAME`,
    `file PATH` or `default` (for `mondrian config show`)."""
    given = {k for k, v in (overrides or {}).items() if v is not None}
    path = config_file_path((overrides or {}).get("home"))
    in_file = read_config_file(Settings, path) if path is not None else {}
    origins: dict[str, str] = {}
    for name, info in Settings.model_fields.items():
        env = [n for n in env_names(name, info) if _env_value(n) is not None]
        if name in given:
            origins[name] = "flag"
        elif env:
            origins[name] = f"env {env[0]}"
        elif name in in_file:
            origins[name] = f"file {path}"
        else:
            origins[name] = "default"
    return origins


def toml_value(value: Any) -> str:
    """A default as TOML writes it (None has no TOML form: the caller comments it)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    return json.dumps(str(value))  # a str, a Path or a StrEnum (its value)


def config_template() -> str:
    """A config file with every setting commented out at its default, with its help and
    environment variable: what `mondrian config init` writes."""
    lines = [
        "# Mondrian settings. Uncomment a line to change it. Flags and MONDRIAN_* variables",
        "# win over this file; run `mondrian config show` to see where each value comes from.",
    ]
    for name, info in Settings.model_fields.items():
        default = default_of(info)
        lines += ["", f"# {info.description}", f"# env: {', '.join(env_names(name, info))}"]
        if default is None:
            lines.append(f"# {name} =   (unset by default)")
        else:
            lines.append(f"# {name} = {toml_value(default)}")
    return "\n".join(lines) + "\n"


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment, with explicit (non-None) overrides on top.

    An invalid value (`MONDRIAN_ANALYSIS_MODE=fast`) is InvalidInput naming the field, so
    the CLI reports it as a user's mistake rather than with a traceback."""
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        raise InvalidInput("invalid settings: " + describe_validation(exc)) from None
