"""Processor work of a batch's requests (chat template, resize, patches), on the CPU's
threads, cut back into one `Prepared` per request on the device."""

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
    """One request's processor outputs, on the device."""

    input_ids: torch.Tensor  # [1, T]
    inputs: Any
    length: int


class Preparer:
    """Runs a Qwen-VL processor (and the photo resize) for requests."""

    def __init__(self, processor: Any, max_pixels: int, device: torch.device) -> None:
        self.processor = processor
        self.max_pixels = max_pixels
        self.device = device
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
        batch = self.processor(
            text=texts, images=images or None, padding=True, return_tensors="pt"
        ).to(self.device)
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
            ids = inputs["input_ids"]
            prepared.append(Prepared(input_ids=ids, inputs=inputs, length=ids.shape[1]))
        return prepared
