"""Training a LoRA through the serving engine's fused LM (`--engine fast`).

The forward is the fast path's (backends/transformers/engine/lm.py): the vision tower
frozen under no_grad, q/k/v and gate/up one product each, each group's LoRA one A product
and each part's own B on its columns of it, and the vocabulary head only where
`answer_loss` (train.py) keeps a position: the step bench/gpu_bench.py's `fast_train_step`
measures; bench/train_bench.py measures both engines as `mondrian train` runs them.

The PEFT model stays the one home of the weights: each forward multiplies by one
model-dtype working copy of its `lora_A` / `lora_B` parameters, differentiable back to
them (fast_lora.py), so the optimizer steps PEFT's tensors and the LoRA's init (PEFT's),
targets (setup.add_lora), checkpoints, `--resume` and the published files are the stock
path's by construction: nothing is converted, so nothing can drift.

The layers' two halves around attention run compiled on CUDA (the `compile` setting,
fast_halves.py, with an eager fallback; `compile_unit` layer: each whole layer one
graph) and recomputed in backward under
`gradient_checkpointing`; the frozen vision tower runs the serving engine's varlen
attention where CUDA has it (fast_vision.py).

`FastEngine` is an `nn.Module` over the PEFT model, so accelerate wraps it in DDP under
several processes (gradients all-reduced as for the stock path) and its `forward` answers
`answer_loss`'s call the way the transformers model does.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from mondrian.backends.transformers.engine.lm import FastLM
from mondrian.training.fast_halves import Halves, wants_compile
from mondrian.training.fast_lora import ADAPTER, PeftLora
from mondrian.training.fast_vision import Vision

__all__ = ["ADAPTER", "FastEngine"]


class FastEngine(torch.nn.Module):
    """The PEFT-wrapped Qwen-VL model's forward through FastLM, for training."""

    def __init__(
        self,
        peft_model: Any,
        dropout: float,
        *,
        checkpointing: bool = False,
        compile: str = "off",
        compile_unit: str = "halves",
        compile_launch: str = "cpp",
    ) -> None:
        """`compile`: the setting (auto, on, off; fast_halves.wants_compile);
        `compile_unit`: what one compiled graph covers (halves or layer, fast_halves.py);
        `compile_launch`: how its kernels are launched (fast_halves.LAUNCH)."""
        super().__init__()
        self.peft = peft_model  # a submodule: DDP and the optimizer see its parameters
        base = peft_model.get_base_model()
        self.lm = FastLM(base)  # fused copies of the frozen q/k/v and gate/up weights
        self.lora = PeftLora(self.lm)
        self.dropout = dropout
        # `gradient_checkpointing`: each layer's halves (norms, projections, rotary, MLP)
        # recomputed in backward; attention keeps its own saved tensors. The MLP's
        # activations are most of a layer's, so this keeps most of the saving.
        compiled = wants_compile(compile, self.lm.device)
        self.halves = Halves(
            self.lm,
            self.lora.packing,
            compile=compiled,
            checkpointing=checkpointing,
            unit=compile_unit,
            launch=compile_launch,
        )
        self.vision = Vision(base, compile=compiled)  # varlen attention where CUDA has it
        self.train(peft_model.training)

    @property
    def compiled(self) -> bool:
        """Whether training steps run the compiled halves (False after a fallback)."""
        return self.halves.compiled

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
        lora = self.lora.working()  # this forward's model-dtype copy of PEFT's LoRA
        training = self.training and torch.is_grad_enabled()
        if training and self.halves.compiled:
            self.halves.check(lora, rowscale)
            # Every layer's input then requires grad, layer 0's too: one compiled graph
            # per half (not a second for layer 0) for one extra input gradient.
            embeds.requires_grad_(True)

        def run() -> torch.Tensor:
            return lm.prefill(
                embeds,
                pos3,
                lora=lora,
                rowscale=rowscale,
                deepstack=deepstack,
                visual_mask=visual,
                halves=self.halves.current() if training else None,
                layer=self.halves.layer() if training else None,
                layer_args=lora.packed_args if training else None,  # the halves' form
            )

        while True:
            try:
                hidden = run()
                break
            except torch.OutOfMemoryError:
                raise
            except Exception as exc:  # a compiler failure must not end the run
                if not (training and self.halves.compiled):
                    raise
                self.halves.fall_back(exc)  # layers -> halves -> eager: at most twice
                self.halves.check(lora, rowscale)  # the compiled halves' trial, if now theirs
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
        visual = ids == lm.image_token_id
        if types is None:
            types = visual.to(torch.int32)
        # The positions first: transformers' get_rope_index reads the device (boolean
        # indexing, item()) several times, which costs little while the GPU is idle at the
        # step's start and a whole vision tower's time if it comes after the tower's
        # launches (the compiled step is bound by the CPU: each wait is lost).
        pos3, _ = model.get_rope_index(
            ids, mm_token_type_ids=types, image_grid_thw=grid, attention_mask=attention_mask
        )
        features = self.vision.features(pixel_values, grid)
        image = torch.cat(list(features.pooler_output)).to(embeds.dtype)
        embeds = embeds.masked_scatter(visual[..., None], image)
        deepstack = None
        if stacked := getattr(features, "deepstack_features", None):
            deepstack = [torch.cat(list(f)) if isinstance(f, (list, tuple)) else f for f in stacked]
        return embeds, pos3, deepstack, visual
