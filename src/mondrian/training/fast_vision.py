"""The frozen vision tower as the fast training engine runs it (fast_engine.py), patched
as the serving engine's fast path patches it (backends/transformers/engine/vision.py): on
CUDA the patch embedding as the product it is (cuDNN's Conv3d for it is the slow one), and
where varlen attention exists its one call per block and, with `compile`, the compiled
Qwen2.5-VL blocks.

Why: transformers' vision attention without the flash-attn package calls SDPA once per
window, ~2,000 small launches for one 1036 x 784 photo on Qwen2.5-VL; the serving engine
makes each block one varlen flash-attention call. bench/gpu_bench.py's `fast_train_step`
(the step issue 21's 130-190 ms came from) ran on a model the serving engine had already
patched so; `mondrian train` ran the stock tower. The tower is frozen and runs under
no_grad, so only its forward changes, the same arithmetic per window up to kernel
rounding.

On the CPU the tower is the stock one. The patches are on this model instance (its
modules' `forward`, the class untouched); `restore()` removes them. If a patched forward
raises, the engine warns once and goes on with the stock tower.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from mondrian.backends.transformers.engine.vision import (
    compile_vision_blocks,
    linear_patch_embed,
    patch_vision_attention,
    unpatch_vision_attention,
    varlen_available,
)

log = logging.getLogger(__name__)


class Vision:
    """The image features of a Qwen-VL model (`...ForConditionalGeneration`) for training."""

    def __init__(self, model: Any, *, compile: bool) -> None:
        self.model = model
        param = next(model.model.visual.parameters())
        self.varlen = varlen_available(param.device, param.dtype)
        self.compiled = False
        self.patch_product = param.device.type == "cuda" and linear_patch_embed(model)
        if self.varlen:
            patch_vision_attention(model)
            # Qwen2.5-VL's blocks only (0 elsewhere: those keep the varlen attention alone).
            self.compiled = compile and compile_vision_blocks(model) > 0

    def features(self, pixel_values: torch.Tensor, grid: torch.Tensor) -> Any:
        """`get_image_features`'s output (call under no_grad)."""
        try:
            return self.model.model.get_image_features(pixel_values, image_grid_thw=grid)
        except torch.OutOfMemoryError:
            raise
        except Exception as exc:
            if not (self.varlen or self.patch_product):
                raise
            log.warning(
                "the fast engine's vision tower failed (%s: %s); training goes on with "
                "transformers' own",
                type(exc).__name__,
                exc,
            )
            self.restore()
            return self.model.model.get_image_features(pixel_values, image_grid_thw=grid)

    def restore(self) -> None:
        """The stock tower again (the model's own forwards)."""
        if self.varlen or self.patch_product:
            unpatch_vision_attention(self.model)  # the patch embedding's too
        self.varlen = self.compiled = self.patch_product = False
