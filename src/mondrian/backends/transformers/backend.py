"""The transformers backend: any Qwen2-VL / Qwen2.5-VL / Qwen3-VL checkpoint, by hub id or
local path, on CUDA, MPS or CPU, with PEFT adapters resident side by side."""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor
from transformers.utils import logging as hf_logging

from mondrian import adapter_format
from mondrian.backends.decoding.decoder import Decoder, stop_token_ids
from mondrian.backends.decoding.fingerprint import model_fingerprint
from mondrian.backends.decoding.grammar import DecodingControl
from mondrian.backends.protocol import (
    Generation,
    GenerationRequest,
    Joining,
    TokenCallback,
    check_loaded,
    deliver_each,
)
from mondrian.config import FastMode, fast_kernels_choice, fast_mode
from mondrian.errors import NotFound, Unavailable
from mondrian.images import fit_pixels
from mondrian.model_source import resolve_model

if TYPE_CHECKING:
    from mondrian.backends.transformers.engine.fast_path import FastPath

log = logging.getLogger(__name__)

BASE_ADAPTER = "__base__"  # PEFT's name for "no adapter" in a mixed batch


def pick_device(requested: str = "auto") -> torch.device:
    if requested != "auto":
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(requested: str, device: torch.device) -> torch.dtype:
    if requested != "auto":
        return getattr(torch, requested)
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    if device.type == "mps":
        return torch.float16
    return torch.float32


class TransformersBackend:
    name = "transformers"
    model_id: str  # the Protocol's data member, set in __init__

    def __init__(
        self,
        model_id: str,
        *,
        device: str = "auto",
        dtype: str = "auto",
        max_pixels: int = 1280 * 28 * 28,
        max_text_chars: int | None = None,
        max_list_items: int | None = None,
        fast: FastMode | str | bool = FastMode.AUTO,
        fast_kernels: str | bool = "auto",
    ) -> None:
        self.model_id = model_id
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        self.max_pixels = max_pixels
        hf_logging.disable_progress_bar()  # our own progress display is the one to see
        source = resolve_model(model_id)  # a folder, a cached snapshot or a reachable id
        try:
            self.processor = AutoProcessor.from_pretrained(source)
            model = AutoModelForImageTextToText.from_pretrained(source, dtype=self.dtype)
        except (OSError, ValueError) as exc:
            raise Unavailable(f"cannot load model {model_id!r}: {exc}") from None
        if getattr(self.processor, "image_processor", None) is None:
            raise Unavailable(
                f"{model_id!r} loaded without an image processor; transformers' Qwen-VL "
                "processors need torchvision installed beside torch"
            )
        self.base = model.to(self.device).eval()
        self.model: Any = self.base  # becomes a PeftModel once an adapter is loaded
        self.fingerprint = model_fingerprint(self.base)
        self.tokenizer = self.processor.tokenizer
        self.tokenizer.padding_side = "left"

        stops = stop_token_ids(self.tokenizer, self.base.generation_config.eos_token_id)
        self.decoder = Decoder(
            self.tokenizer,
            self.base.get_output_embeddings().weight.shape[0],
            stops,
            max_text_chars=max_text_chars,
            max_list_items=max_list_items,
        )
        self.pad_token_id = self.tokenizer.pad_token_id
        if self.pad_token_id is None:
            self.pad_token_id = stops[0]
        self._adapters: dict[str, str] = {}  # name -> path
        # [fast path] backends/transformers/engine/: CUDA graphs, merged/stacked LoRA,
        # overlapped grammar. CUDA only (`auto` and `on` alike); elsewhere (None) the stock
        # generate() below serves. Tests and bench/ set one of their own (CPU, eager) here.
        mode = FastMode(fast_mode(fast))
        # The fast path's Triton kernels (engine/kernels/): auto, all, none or names.
        self.fast_kernels = str(fast_kernels_choice(fast_kernels))
        self.fast_path: FastPath | None = None
        if mode is not FastMode.OFF and self.device.type == "cuda":
            from mondrian.backends.transformers.engine.fast_path import FastPath

            self.fast_path = FastPath(self)
        elif mode is FastMode.ON:
            log.info("fast path needs CUDA; %s uses the stock generate()", self.device)

    @property
    def answer_budget(self) -> int:
        return self.decoder.answer_budget

    # --- generation ----------------------------------------------------------------------

    @property
    def admits(self) -> bool:
        """Whether generate() can take requests into a running batch (`admit`)."""
        return self.fast_path is not None

    @torch.inference_mode()
    def generate(
        self,
        requests: list[GenerationRequest],
        on_token: TokenCallback | None = None,
        *,
        joining: Joining | None = None,
    ) -> list[Generation]:
        """The batch's generations; `joining` is FastPath.generate's (continuous batching,
        fast path only: `admits`); the stock path delivers at the end."""
        if not requests:
            return []
        check_loaded(requests, self.adapters())
        if self.fast_path is not None:  # [fast path]
            return self.fast_path.generate(requests, on_token, joining=joining)
        started = time.perf_counter()
        texts = [
            self.processor.apply_chat_template(
                r.prompt.messages(), add_generation_prompt=True, tokenize=False
            )
            for r in requests
        ]
        images = [fit_pixels(img, self.max_pixels) for r in requests for img in r.prompt.images]
        inputs = self.processor(
            text=texts, images=images or None, padding=True, return_tensors="pt"
        ).to(self.device)
        prompt_len = inputs["input_ids"].shape[1]
        control = self.decoder.control(requests, on_token)
        budget = max(self.decoder.limit(r) for r in requests)
        output = self._run_generate(inputs, requests, control, budget)
        elapsed = time.perf_counter() - started

        results = []
        for row, request in enumerate(requests):
            tokens = output[row, prompt_len:].tolist()
            prompt_tokens = int(inputs["attention_mask"][row].sum())
            results.append(
                self.decoder.finish(
                    request,
                    tokens[: self.decoder.limit(request)],
                    control.logits_for(row),
                    prompt_tokens=prompt_tokens,
                    elapsed=elapsed,
                )
            )
            results[-1].engine = "stock"
        return deliver_each(results, joining)

    def _run_generate(
        self,
        inputs: Any,
        requests: list[GenerationRequest],
        control: DecodingControl,
        budget: int,
    ) -> torch.Tensor:
        # The generation rule (docs/generation.md): greedy, one beam, no repetition penalty,
        # whatever the checkpoint's generation_config.json says (Qwen's Instruct ones sample
        # with repetition_penalty 1.05), so that the config cannot change a critique and
        # DecodingControl sees the model's own logits.
        kwargs: dict[str, Any] = dict(
            **inputs,
            max_new_tokens=budget,
            do_sample=False,
            num_beams=1,
            repetition_penalty=1.0,
            no_repeat_ngram_size=0,
            temperature=None,
            top_p=None,
            top_k=None,
            logits_processor=[control],
            eos_token_id=self.decoder.stop_token_ids,
            pad_token_id=self.pad_token_id,
        )
        names = {r.adapter for r in requests}
        if not self._adapters:
            return self.model.generate(**kwargs)
        if len(names) > 1:
            kwargs["adapter_names"] = [r.adapter or BASE_ADAPTER for r in requests]
            return self.model.generate(**kwargs)
        (name,) = names
        if name is None:
            with self.model.disable_adapter():
                return self.model.generate(**kwargs)
        self.model.set_adapter(name)
        return self.model.generate(**kwargs)

    @torch.inference_mode()
    def embed_images(self, images: list[Any]) -> list[list[float]]:
        """Mean-pooled, L2-normalised vision-tower features, one vector per image."""
        if not images:
            return []
        pixels = self.processor.image_processor(
            images=[fit_pixels(img, self.max_pixels) for img in images], return_tensors="pt"
        ).to(self.device)
        features = self.base.get_image_features(
            pixels["pixel_values"], image_grid_thw=pixels["image_grid_thw"]
        ).pooler_output
        vectors = [torch.nn.functional.normalize(f.float().mean(dim=0), dim=0) for f in features]
        return [v.cpu().tolist() for v in vectors]

    # --- adapters ------------------------------------------------------------------------

    def load_adapter(self, name: str, path: Path) -> None:
        from peft import PeftModel

        path = Path(path)
        if name in self._adapters:
            return
        adapter_format.check_loadable(name, path, self.fingerprint, self.model_id)
        with warnings.catch_warnings():
            # PEFT asks transformers 5 a deprecated question; nothing for our users to do.
            warnings.filterwarnings("ignore", ".*is_gradient_checkpointing", FutureWarning)
            if self.model is self.base:
                self.model = PeftModel.from_pretrained(
                    self.base, str(path), adapter_name=name, is_trainable=False
                )
                self.model.eval()
            else:
                self.model.load_adapter(str(path), adapter_name=name, is_trainable=False)
        self._adapters[name] = str(path)

    def merge_adapter(self, name: str) -> None:
        """Fold a loaded adapter into the base weights; the backend then serves the merged
        model as its base, and other resident adapters are dropped."""
        if name not in self._adapters:
            raise NotFound(f"adapter {name} is not loaded")
        merged = self.model.merge_and_unload(adapter_names=[name])
        self.base = self.model = merged.eval()
        self._adapters.clear()
        self.model_id = f"{self.model_id}+{name}"

    def unload_adapter(self, name: str) -> None:
        if name not in self._adapters:
            raise NotFound(f"adapter {name} is not loaded")
        self.model.delete_adapter(name)
        del self._adapters[name]

    def adapters(self) -> list[str]:
        return list(self._adapters)

    def info(self) -> dict[str, object]:
        return {
            "backend": self.name,
            "model": self.model_id,
            "fingerprint": self.fingerprint,
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
            "adapters": self.adapters(),
            "engine": "stock" if self.fast_path is None else "fast",
            "fast_kernels": self._kernels_running(),
        }

    def warm_up(self) -> None:
        """The fast path's compilation (engine/fast_path.py's `warm_up`); the stock path
        compiles nothing."""
        if self.fast_path is not None:  # [fast path]
            self.fast_path.warm_up()

    def _kernels_running(self) -> list[str]:
        """The Triton decode kernels the fast path runs (those asked for that passed their
        check; none on the stock path)."""
        kernels = self.fast_path.kernels if self.fast_path is not None else None
        return sorted(kernels.names) if kernels is not None else []
