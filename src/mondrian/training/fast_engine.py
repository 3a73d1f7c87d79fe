"""Training a LoRA through the serving engine's fused LM (`--engine fast`).

The forward is the fast path's (backends/transformers/engine/lm.py): the vision tower
frozen under no_grad, q/k/v and gate/up one product each, each group's LoRA one A product
and one block-diagonal B product, and the vocabulary head only where `answer_loss`
(train.py) keeps a position: the step bench/gpu_bench.py's `fast_train_step` measures;
bench/train_bench.py measures both engines as `mondrian train` runs them.

The PEFT model stays the one home of the weights: the engine reads its `lora_A` / `lora_B`
parameters in every forward (`peft_group`, engine/lora_bank.py, differentiable), so the
optimizer steps PEFT's tensors and the LoRA's init (PEFT's), targets (setup.add_lora),
checkpoints, `--resume` and the published files are the stock path's by construction:
nothing is converted, so nothing can drift.

`FastEngine` is an `nn.Module` over the PEFT model, so accelerate wraps it in DDP under
several processes (gradients all-reduced as for the stock path) and its `forward` answers
`answer_loss`'s call the way the transformers model does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from mondrian.backends.transformers.engine.lm import GROUPS, FastLM
from mondrian.backends.transformers.engine.lora_bank import peft_group

ADAPTER = "default"  # the name PEFT gives the one adapter of get_peft_model


class PeftLora:
    """The PEFT model's adapter as `FastLM.prefill` takes a LoRA bank: one slot, its
    tensors gathered from the PEFT parameters on each call (so they carry gradients)."""

    def __init__(self, lm: FastLM, name: str = ADAPTER) -> None:
        self.lm = lm
        self.name = name
        scales = {peft_group(layer, g, name)[2] for layer in lm.layers for g in GROUPS}
        if len(scales) != 1:
            raise ValueError(f"adapter {name} has per-module scalings")
        self.scaling = scales.pop()

    def layer_tensors(
        self, i: int
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor | None, tuple[torch.Tensor, ...]]:
        """As `LoraBank.layer_tensors` (unfused): the frozen working weights, the q/k/v
        bias, and (A, B) per group."""
        layer = self.lm.layers[i]
        weights = {"qkv": layer.qkv_w, "o": layer.o_w, "gu": layer.gu_w, "down": layer.down_w}
        lora: list[torch.Tensor] = []
        for group in GROUPS:
            a, b, _ = peft_group(layer, group, self.name)
            # PEFT keeps a half-precision model's LoRA in float32 (autocast_adapter_dtype);
            # the products run in the model's dtype, the gradients reach the float32 masters.
            lora += [a.to(self.lm.dtype), b.to(self.lm.dtype)]
        return weights, layer.qkv_b, tuple(lora)


class FastEngine(torch.nn.Module):
    """The PEFT-wrapped Qwen-VL model's forward through FastLM, for training."""

    def __init__(self, peft_model: Any, dropout: float, *, checkpointing: bool = False) -> None:
        super().__init__()
        self.peft = peft_model  # a submodule: DDP and the optimizer see its parameters
        base = peft_model.get_base_model()
        self.lm = FastLM(base)  # fused copies of the frozen q/k/v and gate/up weights
        self.lora = PeftLora(self.lm)
        self.dropout = dropout
        # `gradient_checkpointing`: each layer's halves (norms, projections, rotary, MLP)
        # recomputed in backward; attention keeps its own saved tensors. The MLP's
        # activations are most of a layer's, so this keeps most of the saving.
        self.halves = (
            (_recomputed(self.lm.pre), _recomputed(self.lm.post)) if checkpointing else None
        )
        self.train(peft_model.training)

    def train(self, mode: bool = True) -> FastEngine:
        super().train(mode)
        self.lm.lora_dropout = self.dropout if mode else 0.0
        return self

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        image_grid_thw: torch.Tensor | None = None,
        mm_token_type_ids: torch.Tensor | None = None,
        logits_to_keep: torch.Tensor | None = None,
    ) -> Any:
        """Logits [N, kept positions, vocab] (every position [N, T, vocab] without
        `logits_to_keep`: a 1-D tensor of positions), in the transformers model's output
        type.

        Rows are right-padded (collate.py); causal attention keeps each real token from
        the pads after it, so no mask is needed for the positions that carry loss."""
        from transformers.modeling_outputs import CausalLMOutputWithPast

        lm = self.lm
        with torch.no_grad():  # nothing below the LM's linears trains
            embeds, pos3, deepstack, visual = self._inputs(
                input_ids, attention_mask, pixel_values, image_grid_thw, mm_token_type_ids
            )
        rowscale = torch.full(
            (input_ids.shape[0], 1), self.lora.scaling, dtype=torch.float32, device=lm.device
        )
        hidden = lm.prefill(
            embeds,
            pos3,
            lora=self.lora,  # type: ignore[arg-type]  # LoraBank's layer_tensors, one slot
            rowscale=rowscale,
            deepstack=deepstack,
            visual_mask=visual,
            halves=self.halves if self.training and torch.is_grad_enabled() else None,
        )
        if logits_to_keep is not None:  # positions, as transformers takes them
            hidden = hidden[:, logits_to_keep]
        return CausalLMOutputWithPast(logits=lm.logits(hidden))

    def _inputs(
        self,
        ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pixel_values: torch.Tensor | None,
        grid: torch.Tensor | None,
        types: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor] | None, torch.Tensor | None]:
        """Embeddings with the image features in place, 3-D positions [3, N, T], and
        Qwen3-VL's deepstack features with their mask (None elsewhere)."""
        lm, model = self.lm, self.peft.get_base_model().model
        embeds = F.embedding(ids, lm.embed)
        if pixel_values is None or grid is None:
            pos3 = torch.arange(ids.shape[1], device=ids.device).expand(3, *ids.shape)
            return embeds, pos3, None, None
        features = model.get_image_features(pixel_values, image_grid_thw=grid)
        visual = ids == lm.image_token_id
        image = torch.cat(list(features.pooler_output)).to(embeds.dtype)
        embeds = embeds.masked_scatter(visual[..., None], image)
        deepstack = None
        if stacked := getattr(features, "deepstack_features", None):
            deepstack = [torch.cat(list(f)) if isinstance(f, (list, tuple)) else f for f in stacked]
        if types is None:
            types = visual.to(torch.int32)
        pos3, _ = model.get_rope_index(
            ids, mm_token_type_ids=types, image_grid_thw=grid, attention_mask=attention_mask
        )
        return embeds, pos3, deepstack, visual


def _recomputed(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn` under activation checkpointing (the dropout masks replayed: torch keeps the
    RNG state for the recomputation)."""
    from torch.utils.checkpoint import checkpoint

    def run(*args: Any) -> Any:
        return checkpoint(fn, *args, use_reentrant=False)

    return run
