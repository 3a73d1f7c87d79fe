"""LoRA weights for the training tests (tests/training, tests/gpu)."""

from __future__ import annotations

from typing import Any


def randomise_lora(model: Any, seed: int, part: str = "lora_B", std: float = 0.05) -> None:
    """Every LoRA tensor whose name holds `part` drawn from N(0, std) under `seed`. PEFT
    initialises B to zero, so until B is not, A's gradients are zero on every path and a
    comparison of them proves nothing."""
    import torch

    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if part in name:
                p.normal_(std=std)
