"""Backends by name. Each entry is imported only when chosen, so a machine without MLX
(or without torch) can still use the others."""

from __future__ import annotations

import importlib
import platform
from importlib.util import find_spec
from typing import Any

from mondrian.backends.protocol import Backend
from mondrian.config import Settings
from mondrian.errors import InvalidInput, Unavailable

BACKENDS: dict[str, str] = {
    "transformers": "mondrian.backends.transformers.backend:TransformersBackend",
    "mlx": "mondrian.backends.mlx.backend:MLXBackend",
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
    name = resolve_backend_name(settings.backend)
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
    return backend_cls(
        settings.model,
        device=settings.device,
        dtype=settings.dtype,
        max_pixels=settings.max_pixels,
        **options,
    )
