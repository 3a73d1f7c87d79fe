"""The prompt pass of a batch: vision tower, embeddings and the causal pass of several
requests packed into one sequence (their 3-D rotary positions are the preparer's,
prepare.py), writing their K/V into their rows of a `State` and their first logits
beside it.

With `compile`, the pass's layer halves are `torch.compile`d, dynamic in the length; a
compiler failure falls back to the eager pass once, and says so."""

from __future__ import annotations

import itertools
import logging
import time
from typing import Any

import torch
import torch.nn.functional as F

from mondrian.backends.transformers.engine.lm import FastLM
from mondrian.backends.transformers.engine.lora_bank import LoraBank
from mondrian.backends.transformers.engine.prepare import Prepared
from mondrian.backends.transformers.engine.state import State

log = logging.getLogger(__name__)

PREFILL_TOKENS = 16384  # prompt tokens packed into one prefill pass (bounds its memory)


class Laps:
    """With `profile` on, the prefill's parts timed into `last` (it synchronises)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.profile = False
        self.last: dict[str, float] = {}

    def lap(self, key: str, began: float) -> float:
        """With `profile` on: add the time since `began` to last[key], once the GPU has
        caught up. Returns now (or `began`, unchanged, when not profiling)."""
        if not self.profile:
            return began
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        now = time.perf_counter()
        if key:
            self.last[key] = self.last.get(key, 0.0) + now - began
        return now


class Prefiller:
    """Packed prompt passes of the fused LM over a loaded Qwen-VL model."""

    def __init__(self, lm: FastLM, model: Any, laps: Laps, *, compile: bool) -> None:
        self.lm = lm
        self.model = model  # the transformers model: its vision tower
        self.device = lm.device
        self.laps = laps
        self.halves: tuple[Any, Any] | None = None  # compiled (pre, post); None: eager
        if compile:
            # Through wrappers of their own because compiled caches belong to a function's
            # code, and the decode halves' static entries (step.py) must stay apart.
            def prefill_pre(*args: Any) -> Any:
                return lm.pre(*args)

            def prefill_post(*args: Any) -> Any:
                return lm.post(*args)

            self.halves = (
                torch.compile(prefill_pre, dynamic=True),
                torch.compile(prefill_post, dynamic=True),
            )

    def prefill(
        self,
        st: State,
        rows: list[int],
        prepared: list[Prepared],
        slots: list[int | None],
        bank: LoraBank | None,
    ) -> None:
        """Prefill requests into rows `rows` of `st`, in groups of at most PREFILL_TOKENS
        tokens: one pass of large products instead of one small pass per request."""
        for group in token_groups([p.length for p in prepared], PREFILL_TOKENS):
            self._packed(
                st,
                [rows[j] for j in group],
                [prepared[j] for j in group],
                [slots[j] for j in group],
                bank,
            )

    def _packed(
        self,
        st: State,
        rows: list[int],
        prepared: list[Prepared],
        slots: list[int | None],
        bank: LoraBank | None,
    ) -> None:
        lm, model, laps = self.lm, self.model, self.laps
        lap = laps.lap("", time.perf_counter())
        ids = torch.cat([p.input_ids for p in prepared], dim=1)  # [1, T]
        embeds = F.embedding(ids, lm.embed)
        with_images = [p for p in prepared if p.inputs.get("pixel_values") is not None]
        deepstack = visual_mask = None
        if with_images:
            # One vision pass over every image of the group, in token order.
            grid = torch.cat([p.inputs["image_grid_thw"] for p in with_images])
            pixels = torch.cat([p.inputs["pixel_values"] for p in with_images])
            features = model.model.get_image_features(pixels, image_grid_thw=grid)
            image = torch.cat(list(features.pooler_output)).to(embeds.dtype)
            visual_mask = ids == lm.image_token_id
            embeds = embeds.masked_scatter(visual_mask[..., None], image)
            stacked = getattr(features, "deepstack_features", None)
            if stacked:
                deepstack = [
                    torch.cat(list(f)) if isinstance(f, (list, tuple)) else f for f in stacked
                ]
        lap = laps.lap("vision_s", lap)
        pos3 = torch.cat([p.pos3 for p in prepared], dim=2)  # the preparer's (prepare.py)
        deltas = [p.delta for p in prepared]

        lengths = [p.length for p in prepared]
        row_of = torch.repeat_interleave(
            torch.tensor(rows, device=self.device), torch.tensor(lengths, device=self.device)
        )
        pos_of = torch.cat([torch.arange(n, device=self.device) for n in lengths])
        heads = torch.arange(lm.kv_heads, device=self.device)[:, None]
        # Where each (KV head, token) of the packed pass goes in the flattened cache
        # [rows * kv_heads * length, head_dim]: one index_copy_ per layer for the group.
        flat_index = ((row_of[None] * lm.kv_heads + heads) * st.length + pos_of[None]).reshape(-1)

        def store_kv(i: int, k: torch.Tensor, v: torch.Tensor) -> None:
            st.k[i].view(-1, lm.head_dim).index_copy_(0, flat_index, k[0].reshape(-1, lm.head_dim))
            st.v[i].view(-1, lm.head_dim).index_copy_(0, flat_index, v[0].reshape(-1, lm.head_dim))

        rowscale = None
        if st.mixed and bank is not None:
            per_row = bank.rowscale(slots, self.device)  # [requests, slots]
            rowscale = torch.repeat_interleave(
                per_row, torch.tensor(lengths, device=self.device), dim=0
            )[None]
        segments = None
        if len(prepared) > 1:
            bounds = [0, *itertools.accumulate(lengths)]
            segments = torch.tensor(bounds, dtype=torch.int32, device=self.device)
        lap = laps.lap("positions_s", lap)

        def pass_(halves: Any) -> torch.Tensor:
            return lm.prefill(
                embeds,
                pos3,
                lora=bank if st.mixed else None,
                rowscale=rowscale,
                store_kv=store_kv,
                deepstack=deepstack,
                visual_mask=visual_mask,
                segments=segments,
                halves=halves,
            )

        try:
            hidden = pass_(self.halves)
        except Exception as exc:  # a compiler failure must not take generation down
            if self.halves is None:
                raise
            log.warning("the compiled prompt pass failed (%s); using the eager one", exc)
            self.halves = None
            hidden = pass_(None)
        last = torch.tensor(list(itertools.accumulate(lengths)), device=self.device) - 1
        index = torch.tensor(rows, device=self.device)
        st.logits.index_copy_(0, index, lm.logits(hidden[0, last]).to(st.logits.dtype))
        st.cache_pos.index_copy_(0, index, torch.tensor(lengths, device=self.device))
        starts = [n + d for n, d in zip(lengths, deltas, strict=True)]
        st.rope_pos.index_copy_(0, index, torch.tensor(starts, device=self.device))
        laps.lap("lm_s", lap)


def token_groups(lengths: list[int], most: int) -> list[list[int]]:
    """Consecutive indices of `lengths` in groups of at most `most` tokens (a longer one
    alone in its group)."""
    groups: list[list[int]] = []
    tokens = 0
    for i, length in enumerate(lengths):
        if not groups or tokens + length > most:
            groups.append([])
            tokens = 0
        groups[-1].append(i)
        tokens += length
    return groups
