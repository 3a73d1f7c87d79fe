"""`mondrian train --backend mlx`: the same LoRA training run on MLX (Apple Silicon, or
the CPU build on Linux), publishing the same PEFT adapter into the same registry.

What it shares with the PyTorch run (train.py), so both trainers learn the same thing:
the data set and its checks, the example encoding (`ExampleEncoder`: chat template,
answer-only labels ending in `<|im_end|>`, nothing truncated), the image-token check on
every batch (mlx-vlm#824: training that silently drops the images), the TrainConfig and
its learning-rate schedule (setup.py), the run folder and metrics (run_dir.py), and the
publishing of the version with its metadata and loss curve (publish.py).

What is MLX's: the model is mlx-vlm's (backends/mlx/checkpoint.py loads the checkpoint
unchanged), the LoRA layers are mlx-vlm's trainer `LoRALinear` on the language model's
linears only, the loss is mlx-vlm's SFT loss (`vlm_sft_loss`, completion tokens only),
the optimizer MLX's AdamW. Two choices keep a TrainConfig meaning the same on both
trainers: AdamW runs *with* bias correction, as PyTorch's does (MLX's default leaves it
off, which makes the first updates about 3x larger: training was seen to stall at an lr
that PyTorch trains fine with), and gradients are clipped by their global norm
(mlx-vlm's own loop clips each value instead).

The adapter is written in PEFT's format and names (transpose, rename; the scale is
alpha/r in both), so `--backend transformers` and `--backend mlx` serve it alike.
Not supported here yet: `--resume` (no epoch checkpoints) and data-parallel runs.
"""

from __future__ import annotations

import json
import math
import random
import re
import time
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
import torch
from mlx.utils import tree_flatten, tree_map

from mondrian import adapter_format
from mondrian.backends.mlx import checkpoint as mlx_checkpoint
from mondrian.config import Settings
from mondrian.errors import InvalidInput
from mondrian.training.collate import (
    IGNORE_INDEX,
    Collator,
    ExampleEncoder,
    answer_tokens,
    check_batch_images,
    image_token_id,
)
from mondrian.training.config import LM_TARGET_REGEX, TrainConfig
from mondrian.training.dataset_files import load_split
from mondrian.training.export_mlx import mlx_to_peft
from mondrian.training.publish import package_version, publish_run
from mondrian.training.run_dir import RunState, append_metrics, open_run, prepare_run_dir
from mondrian.training.setup import accumulation_group, lr_lambda, total_updates
from mondrian.training.train import TrainResult, progress_bar

# LM_TARGET_REGEX in mlx-vlm's module names (its Qwen-VL models keep the language model
# at language_model.model.layers.N).
MLX_TARGET_REGEX = (
    r"^language_model\.model\.layers\.\d+\."
    r"(?:self_attn\.(?:q|k|v|o)_proj|mlp\.(?:gate|up|down)_proj)$"
)
_DTYPES = {"float32": mx.float32, "bfloat16": mx.bfloat16, "float16": mx.float16}


class TorchOutputProcessor:
    """mlx-vlm's processor as `ExampleEncoder` expects a transformers one: torch tensors out.

    mlx-vlm's numpy processor needs no torchvision, and its pixels are the ones the MLX
    backend serves with (transformers' PIL processor gives the same).
    """

    def __init__(self, processor: Any) -> None:
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.image_processor = processor.image_processor
        self.image_token_id = processor.image_token_id

    def apply_chat_template(self, *args: Any, **kwargs: Any) -> Any:
        return self.processor.apply_chat_template(*args, **kwargs)

    def __call__(self, *, text: Any, images: Any = None, **_: Any) -> dict[str, torch.Tensor]:
        out = self.processor(text=text, images=images)
        return {key: torch.from_numpy(np.array(value)) for key, value in out.items()}


def add_lora(model: nn.Module, cfg: TrainConfig) -> list[str]:
    """Freeze `model` and wrap the LM's linears in mlx-vlm's trainable `LoRALinear`."""
    from mlx_vlm.trainer import LoRALinear, set_module_by_name

    model.freeze()
    targets = [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear | nn.QuantizedLinear)
        and re.fullmatch(MLX_TARGET_REGEX, name)
    ]
    if not targets:
        raise InvalidInput("no LoRA target matched: is this a Qwen-VL model?")
    modules = dict(model.named_modules())
    for name in targets:
        lora = LoRALinear.from_base(
            modules[name], r=cfg.rank, dropout=cfg.dropout, scale=cfg.alpha / cfg.rank
        )
        set_module_by_name(model, name, lora)
    trainable = [name for name, _ in tree_flatten(model.trainable_parameters())]
    outside = [n for n in trainable if not re.search(r"\.lora_[ab]$", n)]
    if outside or len(trainable) != 2 * len(targets):
        raise RuntimeError(f"unexpected trainable parameters: {outside[:5] or trainable[:5]}")
    return targets


def to_mlx_batch(batch: dict[str, torch.Tensor], dtype: Any) -> dict[str, mx.array]:
    """A Collator batch as mlx-vlm's SFT loss reads it (completion_mask from the labels)."""
    out = {
        "input_ids": mx.array(batch["input_ids"].numpy()),
        "attention_mask": mx.array(batch["attention_mask"].numpy()),
        "completion_mask": mx.array((batch["labels"] != IGNORE_INDEX).long().numpy()),
    }
    if "pixel_values" in batch:
        out["pixel_values"] = mx.array(batch["pixel_values"].float().numpy()).astype(dtype)
        out["image_grid_thw"] = mx.array(batch["image_grid_thw"].numpy())
    return out


def _batches(records: list[dict[str, Any]], order: list[int], size: int, encoder, collate):
    for start in range(0, len(order), size):
        yield collate([encoder.encode(records[i]) for i in order[start : start + size]])


def train_mlx(
    cfg: TrainConfig,
    *,
    advisor_id: str,
    dataset_dir: Path,
    settings: Settings,
    run_dir: Path | None = None,
    resume: bool = False,
    activate: bool | None = None,
    progress: bool = True,
) -> TrainResult:
    """train.train's contract on MLX: train, then publish the next `advisor@vN` (PEFT)."""
    from mlx_vlm.trainer.vlm.sft.runtime import vlm_sft_loss

    if resume:
        raise InvalidInput("--resume is not supported with --backend mlx (no checkpoints yet)")
    # --- set up --------------------------------------------------------------------------
    run = open_run(cfg, settings, advisor_id, dataset_dir, run_dir)
    cfg = run.cfg
    prepare_run_dir(run, resume)

    mx.random.seed(cfg.seed)
    rng = random.Random(cfg.seed)
    source = mlx_checkpoint.resolve_source(cfg.model)
    checkpoint = mlx_checkpoint.prepare_checkpoint(source, settings.home_dir / "cache" / "mlx")
    model = mlx_checkpoint.load_model(checkpoint)
    # float32 unless asked otherwise, as the PyTorch run on CPU and MPS (fp16 LoRA is unstable)
    model.set_dtype(_DTYPES.get(cfg.dtype, mx.float32))
    dtype = model.language_model.model.embed_tokens.weight.dtype
    base_fingerprint = mlx_checkpoint.fingerprint(source, model)
    add_lora(model, cfg)

    model_type = json.loads((checkpoint / "config.json").read_text())["model_type"]
    processor = TorchOutputProcessor(mlx_checkpoint.load_processor(source, model_type))
    encoder = ExampleEncoder(processor, cfg.max_pixels, cfg.max_seq_len)
    train_records = load_split(run.dataset_dir, "train")
    eval_records = load_split(run.dataset_dir, "validation")
    if not train_records:
        raise InvalidInput(f"the data set at {run.dataset_dir} has no training examples")
    pad_id = processor.tokenizer.pad_token_id
    collate = Collator(pad_id if pad_id is not None else encoder.end_of_turn)
    image_token, merge_size = image_token_id(processor), encoder.merge_size

    batches = math.ceil(len(train_records) / cfg.batch_size)
    factor = lr_lambda(cfg, total_updates(cfg, batches))
    optimizer = optim.AdamW(
        learning_rate=cfg.lr * factor(0), weight_decay=cfg.weight_decay, bias_correction=True
    )

    def loss_fn(model: nn.Module, batch: dict[str, mx.array]) -> mx.array:
        loss, _ = vlm_sft_loss(model, batch, train_on_completions=True)
        return loss

    loss_and_grad = nn.value_and_grad(model, loss_fn)

    # --- train ---------------------------------------------------------------------------
    state = RunState()
    bar = progress_bar(progress, batches * cfg.epochs, 0)
    for epoch in range(cfg.epochs):
        model.train()
        order = list(range(len(train_records)))
        rng.shuffle(order)
        epoch_losses: list[float] = []
        accumulated: Any = None
        for i, batch in enumerate(_batches(train_records, order, cfg.batch_size, encoder, collate)):
            started = time.perf_counter()
            check_batch_images(batch, image_token, merge_size)
            group_size, closes_group = accumulation_group(i, batches, cfg.grad_accum)
            loss, grads = loss_and_grad(model, to_mlx_batch(batch, dtype))
            grads = tree_map(lambda g, n=group_size: g / n, grads)
            accumulated = grads if accumulated is None else tree_map(mx.add, accumulated, grads)
            if closes_group:
                clipped, _ = optim.clip_grad_norm(accumulated, cfg.max_grad_norm)
                optimizer.learning_rate = cfg.lr * factor(state.updates)
                optimizer.update(model, clipped)
                accumulated = None
                state.updates += 1
            mx.eval(loss, model.trainable_parameters(), optimizer.state)
            value = float(loss)
            state.record_step(value, time.perf_counter() - started)
            epoch_losses.append(value)
            append_metrics(run.run_dir, state, epoch, value, float(optimizer.learning_rate))
            bar.set_postfix(epoch=epoch + 1, loss=f"{value:.4f}")
            bar.update(1)
        val_loss = (
            evaluate(model, loss_fn, eval_records, cfg, encoder, collate, dtype)
            if eval_records
            else None
        )
        line = state.end_epoch(epoch_losses, val_loss)
        if line:
            bar.write(line)
    bar.close()

    # --- publish -------------------------------------------------------------------------
    adapter, activated = publish_run(
        run,
        settings,
        state,
        lambda staging: save_peft_adapter(model, cfg, staging),
        base_fingerprint=base_fingerprint,
        base_revision=None,
        training={
            "backend": "mlx",
            "processes": 1,
            "device": str(mx.default_device()),
            "mlx": package_version("mlx"),
            "mlx_vlm": package_version("mlx-vlm"),
        },
        activate=activate,
        trainer="MLX",
    )
    return TrainResult(run.run_dir, state, adapter, activated, state.seconds_per_step())


def evaluate(model, loss_fn, records, cfg, encoder, collate, dtype) -> float:
    """Token-weighted mean loss over the evaluation split, dropout off."""
    model.eval()
    total, tokens = 0.0, 0
    order = list(range(len(records)))
    for batch in _batches(records, order, cfg.batch_size, encoder, collate):
        count = answer_tokens(batch)
        total += float(loss_fn(model, to_mlx_batch(batch, dtype))) * count
        tokens += count
    model.train()
    return total / tokens if tokens else float("nan")


# --- the adapter in PEFT's format --------------------------------------------------------


def peft_config(cfg: TrainConfig) -> dict[str, Any]:
    """An adapter_config.json that PEFT loads: plain LoRA on the LM's linears."""
    return {
        "peft_type": "LORA",
        "task_type": None,
        "base_model_name_or_path": cfg.model,
        "r": cfg.rank,
        "lora_alpha": cfg.alpha,
        "lora_dropout": cfg.dropout,
        "target_modules": LM_TARGET_REGEX,
        "bias": "none",
        "use_rslora": False,
        "use_dora": False,
        "fan_in_fan_out": False,
        "modules_to_save": None,
        "init_lora_weights": True,
        "inference_mode": True,
    }


def save_peft_adapter(model: nn.Module, cfg: TrainConfig, out_dir: Path) -> None:
    """mlx-vlm's LoRA weights (lora_a: in x r, lora_b: r x out) as PEFT's files."""
    from safetensors.torch import save_file

    weights = {
        name: torch.from_numpy(np.array(value.astype(mx.float32)))
        for name, value in tree_flatten(model.trainable_parameters())
    }
    save_file(mlx_to_peft(weights), str(out_dir / adapter_format.ADAPTER_WEIGHTS))
    (out_dir / adapter_format.ADAPTER_CONFIG).write_text(
        json.dumps(peft_config(cfg), indent=2) + "\n", encoding="utf-8"
    )
