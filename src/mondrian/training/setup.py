"""What a PyTorch training run sets up before its first step (train.py runs it):

    the base model     transformers' Qwen-VL, in the training dtype, on the run's device
    its LoRA           PEFT's, on the language model's decoder linears only
    the data           the encoded splits, sharded over the processes of the run
    the optimizer      AdamW on the LoRA weights, and the learning-rate schedule

The schedule (`lr_lambda`) is the MLX trainer's too (mlx_train.py), so a TrainConfig means
the same learning rates on both.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from mondrian.errors import InvalidInput, Unavailable
from mondrian.hf_progress import quiet_hf_progress
from mondrian.model_source import resolve_model
from mondrian.training.collate import Collator, ExampleEncoder
from mondrian.training.config import LM_TARGET_REGEX, TrainConfig

# --- the base model and its LoRA ---------------------------------------------------------


def load_base(cfg: TrainConfig, device: torch.device) -> tuple[Any, Any]:
    """(processor, model) of `cfg.model`; Unavailable when it cannot be loaded."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    dtype = train_dtype(cfg.dtype, device)
    source = resolve_model(cfg.model)  # a folder, a cached snapshot or a reachable id
    try:
        processor = AutoProcessor.from_pretrained(source)
        with quiet_hf_progress():
            model = AutoModelForImageTextToText.from_pretrained(source, dtype=dtype)
    except (OSError, ValueError) as exc:
        raise Unavailable(f"cannot load model {cfg.model!r}: {exc}") from None
    if getattr(processor, "image_processor", None) is None:
        raise Unavailable(f"{cfg.model!r} loaded without an image processor (torchvision?)")
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return processor, model.to(device)


def train_dtype(requested: str, device: torch.device) -> torch.dtype:
    if requested != "auto":
        return getattr(torch, requested)
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32  # MPS and CPU train in float32: fp16 LoRA training is unstable


def training_engine(requested: str, device: torch.device) -> str:
    """`fast` or `stock` for the run's `engine` setting: auto is fast on CUDA only (on the
    CPU the fused LM is correct but no faster, and it holds copies of q/k/v and gate/up)."""
    if requested != "auto":
        return requested
    return "fast" if device.type == "cuda" else "stock"


def loss_forward(model: Any, engine: str, cfg: TrainConfig) -> Any:
    """What the loop calls for the loss: the PEFT model itself (stock) or the fast engine
    over it (training/fast_engine.py), which shares its parameters."""
    if engine == "stock":
        return model
    from mondrian.training.fast_engine import FastEngine

    try:
        return FastEngine(
            model,
            cfg.dropout,
            checkpointing=cfg.gradient_checkpointing,
            compile=cfg.compile,
            compile_unit=cfg.compile_unit,
            compile_launch=cfg.compile_launch,
        )
    except ValueError as exc:  # a model or LoRA the fused LM does not cover
        raise InvalidInput(
            f"the fast engine cannot train this model ({exc}); pass --engine stock"
        ) from None


def add_lora(model: Any, cfg: TrainConfig) -> Any:
    """Wrap `model` with a trainable LoRA on the language model's linears only."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=LM_TARGET_REGEX,
        bias="none",
    )
    with warnings.catch_warnings():
        # PEFT asks the model `is_gradient_checkpointing`, which transformers 5 deprecates.
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*checkpointing.*")
        peft_model = get_peft_model(model, config)
    check_lora_targets(peft_model)
    return peft_model


def check_lora_targets(model: Any) -> list[str]:
    """The LoRA-wrapped module names; raises if any is outside the LM's decoder layers
    (vision tower, lm_head, embeddings: vLLM rejects those)."""
    wrapped = [name for name, module in model.named_modules() if hasattr(module, "lora_A")]
    if not wrapped:
        raise InvalidInput("no LoRA target matched: is this a Qwen-VL model?")
    outside = [
        name
        for name in wrapped
        if not re.fullmatch(LM_TARGET_REGEX, name.removeprefix("base_model.model."))
    ]
    if outside:
        raise RuntimeError(f"LoRA landed outside the language model: {outside[:5]}")
    return wrapped


def frozen_dtype(model: Any) -> torch.dtype:
    """The base weights' dtype, which the pixels are cast to."""
    return next(p.dtype for p in model.parameters() if not p.requires_grad)


# --- the data ----------------------------------------------------------------------------


class EncodedDataset(Dataset):
    def __init__(self, records: list[dict[str, Any]], encoder: ExampleEncoder) -> None:
        self.records = records
        self.encoder = encoder

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.encoder.encode(self.records[index])


@dataclass
class Loaders:
    train: DataLoader
    train_sampler: DistributedSampler  # set_epoch() before each epoch: seeded per epoch
    validation: DataLoader | None  # None for an empty validation split


def make_loaders(
    train_set: EncodedDataset,
    val_set: EncodedDataset,
    collate: Collator,
    cfg: TrainConfig,
    world: int,
    rank: int,
) -> Loaders:
    """This process's shard of each split (`rank` of `world`)."""
    train_sampler = DistributedSampler(
        train_set, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed
    )
    train_loader = DataLoader(
        train_set,
        batch_size=cfg.batch_size,
        sampler=train_sampler,
        collate_fn=collate,
        num_workers=cfg.num_workers,
    )
    val_loader = None
    if len(val_set):
        val_sampler = DistributedSampler(val_set, num_replicas=world, rank=rank, shuffle=False)
        val_loader = DataLoader(
            val_set, batch_size=cfg.batch_size, sampler=val_sampler, collate_fn=collate
        )
    return Loaders(train_loader, train_sampler, val_loader)


# --- the optimizer and its schedule ------------------------------------------------------


def lr_lambda(cfg: TrainConfig, total_updates: int) -> Callable[[int], float]:
    """Linear warm-up, then constant, linear or cosine decay to zero."""
    warmup = int(cfg.warmup_ratio * total_updates)

    def factor(update: int) -> float:
        if update < warmup:
            return (update + 1) / (warmup + 1)
        if cfg.scheduler == "constant":
            return 1.0
        progress = (update - warmup) / max(1, total_updates - warmup)
        if cfg.scheduler == "linear":
            return max(0.0, 1.0 - progress)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def total_updates(cfg: TrainConfig, batches_per_epoch: int) -> int:
    """Optimizer steps in the whole run: one per `grad_accum` batches, a short group last."""
    return math.ceil(batches_per_epoch / cfg.grad_accum) * cfg.epochs


def accumulation_group(batch: int, batches: int, grad_accum: int) -> tuple[int, bool]:
    """Batch number `batch` of an epoch's `batches`: the size of its accumulation group
    (an epoch's last group may be short) and whether it closes the group (then the
    optimizer steps). Both trainers group alike, so `grad_accum` means the same."""
    start = (batch // grad_accum) * grad_accum
    size = min(grad_accum, batches - start)
    return size, batch + 1 == start + size


def make_optimizer(
    trainable: list[torch.nn.Parameter], cfg: TrainConfig, batches_per_epoch: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW on the trainable weights and its schedule over the whole run's updates.

    On CUDA the fused AdamW (one kernel for every tensor's update, where the default
    foreach one runs several per group of tensors): the same update, the LoRA's ~500
    small tensors in a few launches."""
    fused = bool(trainable) and all(p.device.type == "cuda" for p in trainable)
    optimizer = torch.optim.AdamW(
        trainable, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused or None
    )
    factor = lr_lambda(cfg, total_updates(cfg, batches_per_epoch))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return optimizer, scheduler
