"""Processor work of a batch's requests (chat template, resize, patches), on the CPU's
threads, cut back into one `Prepared` per request on the device.

The cutting and each prompt's 3-D rotary positions (the model's `get_rope_index`) run on
the CPU tensors, before anything moves to the device: on device tensors each boolean
mask, `.tolist()` and loop over the image grid is a synchronisation, and the prompt
pass (prefill.py) ran them between the vision tower and the LM's layers, so the GPU
waited on the CPU there once per prompt."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch

from mondrian.backends.protocol import GenerationRequest
from mondrian.images import fit_pixels

PREPARE_THREADS = 8  # processor calls at once for a batch's requests


@dataclass
class Prepared:
    """One request's processor outputs and rotary positions, on the device."""

    input_ids: torch.Tensor  # [1, T]
    inputs: Any
    length: int
    pos3: torch.Tensor  # [3, 1, T]: the prompt's 3-D rotary positions
    delta: int  # the next text position minus T (images take fewer positions)


class RopeIndex:
    """A Qwen-VL model's 3-D rotary positions of one prompt (its `get_rope_index`, the
    transformers model's own arithmetic), for tensors on any device: `positions(ids [1,
    T], that prompt's inputs)` -> (positions [3, 1, T], the text-position offset)."""

    def __init__(self, model: Any, image_token_id: int) -> None:
        self.model = model  # the ...ForConditionalGeneration
        self.image_token_id = image_token_id

    def positions(self, ids: torch.Tensor, inputs: dict[str, Any]) -> tuple[torch.Tensor, int]:
        if inputs.get("pixel_values") is None:
            return torch.arange(ids.shape[1], device=ids.device).view(1, 1, -1).expand(3, 1, -1), 0
        types = inputs.get("mm_token_type_ids")
        if types is None:
            types = (ids == self.image_token_id).to(torch.int32)
        pos3, delta = self.model.model.get_rope_index(
            ids,
            mm_token_type_ids=types,
            image_grid_thw=inputs["image_grid_thw"],
            attention_mask=inputs.get("attention_mask"),
        )
        return pos3, int(delta.view(-1)[0])


class Preparer:
    """Runs a Qwen-VL processor (and the photo resize) for requests, and `rope` for each
    prompt's rotary positions, on the CPU."""

    def __init__(
        self, processor: Any, max_pixels: int, device: torch.device, rope: RopeIndex
    ) -> None:
        self.processor = processor
        self.max_pixels = max_pixels
        self.device = device
        self.rope = rope
        self._pool: ThreadPoolExecutor | None = None

    def prepare(self, request: GenerationRequest) -> Prepared:
        return self.prepare_chunk([request])[0]

    def prepare_all(self, requests: list[GenerationRequest]) -> list[Prepared]:
        """Every request's inputs: one processor call per chunk of requests, the chunks on
        the CPU's threads. One call per photo costs ~12 ms each; one call for 32 photos
        takes as long as 32 calls (its tensor work runs on one thread at a time); chunks on
        threads overlap it (bench/NOTES.md)."""
        workers = max(1, min(PREPARE_THREADS, os.cpu_count() or 1, len(requests)))
        size = -(-len(requests) // workers)
        chunks = [requests[i : i + size] for i in range(0, len(requests), size)]
        if len(chunks) == 1:
            return self.prepare_chunk(chunks[0])
        if self._pool is None:
            self._pool = ThreadPoolExecutor(PREPARE_THREADS, thread_name_prefix="prepare")
        return [p for done in self._pool.map(self.prepare_chunk, chunks) for p in done]

    def prepare_chunk(self, requests: list[GenerationRequest]) -> list[Prepared]:
        """One processor call for several requests, cut back into one `Prepared` each."""
        texts = [
            self.processor.apply_chat_template(
                r.prompt.messages(), add_generation_prompt=True, tokenize=False
            )
            for r in requests
        ]
        per_request = [
            [fit_pixels(img, self.max_pixels) for img in r.prompt.images] for r in requests
        ]
        images = [img for imgs in per_request for img in imgs]
        batch = self.processor(text=texts, images=images or None, padding=True, return_tensors="pt")
        mask = batch["attention_mask"].bool()
        grid = batch.get("image_grid_thw")
        patches = grid.prod(-1).tolist() if grid is not None else []
        prepared, image, patch = [], 0, 0
        for row, imgs in enumerate(per_request):
            inputs: dict[str, Any] = {}
            for key, value in batch.items():
                if isinstance(value, torch.Tensor) and value.shape[:2] == mask.shape:
                    inputs[key] = value[row][mask[row]][None]  # per token: drop the padding
            if imgs:
                count = sum(patches[image : image + len(imgs)])
                inputs["image_grid_thw"] = grid[image : image + len(imgs)]
                inputs["pixel_values"] = batch["pixel_values"][patch : patch + count]
                image, patch = image + len(imgs), patch + count
            pos3, delta = self.rope.positions(inputs["input_ids"], inputs)
            pos3 = pos3.to(self.device)
            inputs = {key: value.to(self.device) for key, value in inputs.items()}
            ids = inputs["input_ids"]
            prepared.append(
                Prepared(input_ids=ids, inputs=inputs, length=ids.shape[1], pos3=pos3, delta=delta)
            )
        return prepared
