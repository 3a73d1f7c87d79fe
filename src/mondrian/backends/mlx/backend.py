"""The MLX backend: Qwen2-VL / Qwen2.5-VL / Qwen3-VL through mlx-vlm, on Apple Silicon
(Metal) or on a Linux CPU (`mlx[cpu]`), behind the same Protocol as the transformers one.

What is shared with the transformers backend, so that both answer alike:
- the grammar: backends/decoding/grammar.py's `CritiqueGrammar` and `DecodingControl` run
  unchanged as an mlx-vlm logits processor; each step's logits cross to a CPU torch
  tensor (one vocabulary row) and back, which keeps one implementation of the compact
  separators, the whitespace rule and the special-token suppression;
- calibration (backends/decoding/calibration.py), parsing, the prompt's chat template, the pixel
  budget, the adapter format (PEFT, see mlx_adapters.py) and the base fingerprint.

Requests run one at a time (batch 1), each with its own adapter; a batch's results equal
the single requests by construction. The image processor is mlx-vlm's numpy one, equal to
transformers' PIL processor; transformers' default torchvision processor resizes with
different rounding (at most one 8-bit level per pixel), which the equality test covers.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np
import torch

from mondrian import adapter_format
from mondrian.backends.decoding.decoder import Decoder, stop_token_ids
from mondrian.backends.decoding.grammar import DecodingControl
from mondrian.backends.mlx import adapters as mlx_adapters
from mondrian.backends.mlx import checkpoint as mlx_checkpoint
from mondrian.backends.protocol import (
    Generation,
    GenerationRequest,
    Joining,
    TokenCallback,
    check_loaded,
)
from mondrian.errors import InvalidInput, NotFound, Unavailable
from mondrian.images import fit_pixels
from mondrian.model_source import resolve_model

log = logging.getLogger(__name__)

_DTYPES = {"float32": mx.float32, "bfloat16": mx.bfloat16, "float16": mx.float16}
_DEVICES = {"cpu": "cpu", "gpu": "gpu", "mps": "gpu", "metal": "gpu", "cuda": "gpu"}


def default_cache_dir() -> Path:
    from mondrian.config import load_settings

    return load_settings().home_dir / "cache" / "mlx"


class _GrammarProcessor:
    """backends/decoding/grammar.py's DecodingControl as an mlx-vlm logits processor (batch 1)."""

    def __init__(self, control: DecodingControl) -> None:
        self.control = control

    def __call__(self, tokens: mx.array, logits: mx.array) -> mx.array:
        scores = torch.from_numpy(np.array(logits.astype(mx.float32)))
        last = torch.tensor([[int(tokens[-1].item())]])
        return mx.array(self.control(last, scores).numpy())


def _relay(on_token: TokenCallback | None, index: int) -> TokenCallback | None:
    """The callback for one request of the batch: its rows are numbered from 0."""
    if on_token is None:
        return None
    return lambda _row, count: on_token(index, count)


def _greedy(logprobs: mx.array) -> mx.array:
    return mx.argmax(logprobs, axis=-1)


class MLXBackend:
    name = "mlx"
    admits = False  # one request at a time: no running batch to take others into
    model_id: str  # the Protocol's other data member, set in __init__

    def __init__(
        self,
        model_id: str,
        *,
        device: str = "auto",
        dtype: str = "auto",
        max_pixels: int = 1280 * 28 * 28,
        max_text_chars: int | None = None,
        max_list_items: int | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        self.model_id = model_id
        if device != "auto":
            if device not in _DEVICES:
                raise InvalidInput(f"unknown device {device!r} for MLX; use cpu, gpu or auto")
            mx.set_default_device(getattr(mx, _DEVICES[device]))
        if dtype != "auto" and dtype not in _DTYPES:
            raise InvalidInput(f"unknown dtype {dtype!r}; use {', '.join(_DTYPES)} or auto")
        self.max_pixels = max_pixels
        self.source = mlx_checkpoint.resolve_source(resolve_model(model_id))
        self.checkpoint = mlx_checkpoint.prepare_checkpoint(
            self.source, cache_dir or default_cache_dir()
        )
        config = json.loads((self.checkpoint / "config.json").read_text(encoding="utf-8"))
        self.model_type = config["model_type"]
        self.model: Any = mlx_checkpoint.load_model(self.checkpoint)
        if dtype != "auto":
            self.model.set_dtype(_DTYPES[dtype])
        self.model.eval()
        self.dtype = self.model.language_model.model.embed_tokens.weight.dtype
        # From the source: its files are the same, and transformers reads its config as saved.
        self.processor = mlx_checkpoint.load_processor(self.source, self.model_type)
        self.tokenizer = self.processor.tokenizer
        self.fingerprint = mlx_checkpoint.fingerprint(self.source, self.model)

        self.decoder = Decoder(
            self.tokenizer,
            self._vocab_size(),
            stop_token_ids(self.tokenizer, self._eos(config)),
            max_text_chars=max_text_chars,
            max_list_items=max_list_items,
        )
        self.bank = mlx_adapters.AdapterBank()
        self._adapters: dict[str, str] = {}  # name -> path

    def _vocab_size(self) -> int:
        lm = self.model.language_model
        head = getattr(lm, "lm_head", None)
        weight = head.weight if head is not None else lm.model.embed_tokens.weight
        return int(weight.shape[0])

    def _eos(self, config: dict[str, Any]) -> Any:
        """generation_config.json's eos id(s), as transformers reads them, else config's."""
        eos: Any = None
        generation_file = self.source / "generation_config.json"
        if generation_file.is_file():
            eos = json.loads(generation_file.read_text(encoding="utf-8")).get("eos_token_id")
        if eos is None:
            eos = config.get("eos_token_id", config.get("text_config", {}).get("eos_token_id"))
        return eos

    @property
    def answer_budget(self) -> int:
        return self.decoder.answer_budget

    # --- generation ----------------------------------------------------------------------

    def generate(
        self,
        requests: list[GenerationRequest],
        on_token: TokenCallback | None = None,
        *,
        joining: Joining | None = None,
    ) -> list[Generation]:
        """One request after another (nothing joins: `admits` is False); `joining`'s
        `deliver` gets each as it finishes."""
        check_loaded(requests, self.adapters())
        results = []
        for index, request in enumerate(requests):
            results.append(self._generate_one(request, _relay(on_token, index)))
            if joining is not None:
                joining.deliver(index, results[-1])
        return results

    def _inputs(self, request: GenerationRequest) -> dict[str, Any]:
        text = self.processor.apply_chat_template(
            request.prompt.messages(), add_generation_prompt=True, tokenize=False
        )
        images = [fit_pixels(img, self.max_pixels) for img in request.prompt.images]
        return self.processor(text=[text], images=images or None)

    def _generate_one(
        self, request: GenerationRequest, on_token: TokenCallback | None
    ) -> Generation:
        from mlx_vlm.generate.ar import generate_step

        started = time.perf_counter()
        inputs = self._inputs(request)
        limit = self.decoder.limit(request)
        control = self.decoder.control([request], on_token)
        # mlx-vlm keeps the last prompt's mRoPE positions on the language model.
        language_model = self.model.language_model
        language_model._position_ids = None
        language_model._rope_deltas = None
        self.bank.active = request.adapter
        extra = {k: inputs[k] for k in ("image_grid_thw",) if k in inputs}
        tokens: list[int] = []
        steps = generate_step(
            inputs["input_ids"],
            self.model,
            inputs.get("pixel_values"),
            inputs.get("attention_mask"),
            max_tokens=limit,
            sampler=_greedy,
            logits_processors=[_GrammarProcessor(control)],
            **extra,
        )
        try:
            for token, _ in steps:
                tokens.append(int(token))
                if tokens[-1] in self.decoder.stop_token_ids or len(tokens) >= limit:
                    break
        finally:
            steps.close()
            self.bank.active = None
        elapsed = time.perf_counter() - started
        prompt_tokens = int(inputs["input_ids"].shape[1])
        generation = self.decoder.finish(
            request, tokens, control.logits_for(0), prompt_tokens=prompt_tokens, elapsed=elapsed
        )
        generation.engine = "mlx"
        return generation

    def embed_images(self, images: list[Any]) -> list[list[float]]:
        """Mean-pooled, L2-normalised vision-tower features (after the merger), per image."""
        if not images:
            return []
        processed = self.processor.image_processor(
            images=[fit_pixels(img, self.max_pixels) for img in images]
        )
        grid = np.asarray(processed["image_grid_thw"])
        pixels = mx.array(np.asarray(processed["pixel_values"])).astype(self.dtype)
        features = self.model.vision_tower(pixels, mx.array(grid), output_hidden_states=False)
        if isinstance(features, tuple):  # Qwen3-VL also returns its deepstack features
            features = features[0]
        merge = self.model.config.vision_config.spatial_merge_size**2
        counts = [int(np.prod(thw)) // merge for thw in grid]
        vectors = []
        start = 0
        for count in counts:
            pooled = features[start : start + count].astype(mx.float32).mean(axis=0)
            norm = mx.maximum(mx.linalg.norm(pooled), 1e-12)  # torch's normalize eps
            vectors.append(np.array(pooled / norm).tolist())
            start += count
        return vectors

    # --- adapters ------------------------------------------------------------------------

    def load_adapter(self, name: str, path: Path) -> None:
        path = Path(path)
        if name in self._adapters:
            return
        adapter_format.check_loadable(name, path, self.fingerprint, self.model_id)
        modules = mlx_adapters.read_peft_adapter(path)
        mlx_adapters.attach(self.model, name, modules, self.bank)
        self._adapters[name] = str(path)

    def unload_adapter(self, name: str) -> None:
        if name not in self._adapters:
            raise NotFound(f"adapter {name} is not loaded")
        mlx_adapters.detach(self.model, name, self.bank)
        del self._adapters[name]

    def merge_adapter(self, name: str) -> None:
        # The adapters are attached as separate LoRA layers (backends/mlx/adapters.py);
        # folding one into the weights is not implemented here.
        raise Unavailable(
            f"the mlx backend cannot merge adapter {name} into the base weights; "
            "use the transformers backend, or `mondrian adapters merge` and load the result"
        )

    def adapters(self) -> list[str]:
        return list(self._adapters)

    def info(self) -> dict[str, object]:
        return {
            "backend": self.name,
            "model": self.model_id,
            "fingerprint": self.fingerprint,
            "device": mx.default_device().type.name,  # "cpu" or "gpu" (Metal)
            "dtype": str(self.dtype).removeprefix("mlx.core."),
            "adapters": self.adapters(),
        }

    def warm_up(self) -> None:
        """Nothing: MLX compiles nothing ahead of a request here."""
