"""One LoRA training run on PyTorch, top to bottom: set up, train, publish.

A plain PyTorch loop driven by `accelerate.Accelerator`, so the same code runs on one CPU,
CUDA or MPS device and data-parallel under `torchrun` / `accelerate launch` (gloo on CPU).
Every process trains on its shard; only the main process writes checkpoints, the adapter
and the database.

    set up   the run and its folder (run_dir.py); base model + LoRA on the LM's linears,
             loaders, optimizer and schedule (setup.py)
    train    epochs of steps (loss on the answer tokens, image tokens checked, gradients
             clipped), validation loss and a checkpoint after every epoch (this module)
    publish  the adapter, its self-description and loss curve, as advisor@vN (publish.py)

Re-running with `--resume` picks up after the last completed epoch: adapter weights,
optimizer, scheduler, RNG states and step counter come from the checkpoint, and the data
order of the remaining epochs is the one an uninterrupted run would have seen (it is
seeded per epoch).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from mondrian.backends.decoding.fingerprint import model_fingerprint
from mondrian.config import Settings
from mondrian.errors import InvalidInput
from mondrian.storage.adapters import Adapter
from mondrian.training.collate import (
    IGNORE_INDEX,
    Collator,
    ExampleEncoder,
    answer_tokens,
    check_batch_images,
    image_token_id,
)
from mondrian.training.config import TrainConfig
from mondrian.training.dataset_files import load_split
from mondrian.training.publish import package_version, publish_run
from mondrian.training.run_dir import (
    Run,
    RunState,
    append_metrics,
    latest_checkpoint,
    load_checkpoint,
    open_run,
    prepare_run_dir,
    save_checkpoint,
)
from mondrian.training.setup import (
    EncodedDataset,
    Loaders,
    accumulation_group,
    add_lora,
    frozen_dtype,
    load_base,
    loss_forward,
    make_loaders,
    make_optimizer,
    training_engine,
)


@dataclass
class TrainResult:
    run_dir: Path
    state: RunState
    adapter: Adapter | None  # None on the other processes of a data-parallel run
    activated: bool
    seconds_per_step: float


def train(
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
    """Train a LoRA for `advisor_id` on the data set and publish it as the next version.

    `activate`: True activates the new version, False never, None only when the advisor
    has no active adapter. `resume` continues the run in `run_dir` from its last
    checkpoint. On every process of a data-parallel run; only the main one publishes.
    """
    threads = torch.get_num_threads()
    if cfg.cpu_threads:
        torch.set_num_threads(cfg.cpu_threads)
    try:
        run = open_run(cfg, settings, advisor_id, dataset_dir, run_dir)
        return _train(run, settings, resume, activate, progress)
    finally:
        torch.set_num_threads(threads)


@dataclass
class _Parts:
    """What the loop works with, once set up."""

    accelerator: Any
    model: Any  # PEFT's model: checkpoints and the adapter are its weights
    forward: Any  # what the loss calls (the model, or the fast engine over it), wrapped by
    # accelerate (DDP under several processes)
    trainable: list[torch.nn.Parameter]
    optimizer: Any
    scheduler: Any
    loaders: Loaders
    image_token: int
    merge_size: int


def _train(
    run: Run, settings: Settings, resume: bool, activate: bool | None, progress: bool
) -> TrainResult:
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    accelerator = Accelerator(cpu=run.cfg.device == "cpu")
    # The engine that runs is the one the run and its adapter record (auto resolved).
    run = dataclasses.replace(
        run, cfg=run.cfg.merged(engine=training_engine(run.cfg.engine, accelerator.device))
    )
    cfg = run.cfg
    main = accelerator.is_main_process
    if main:
        prepare_run_dir(run, resume)
    accelerator.wait_for_everyone()
    checkpoint = latest_checkpoint(run.run_dir) if resume else None

    set_seed(cfg.seed)
    processor, model = load_base(cfg, accelerator.device)
    base_fingerprint = model_fingerprint(model)
    base_revision = getattr(model.config, "_commit_hash", None)
    model = add_lora(model, cfg)

    encoder = ExampleEncoder(processor, cfg.max_pixels, cfg.max_seq_len)
    train_set = EncodedDataset(load_split(run.dataset_dir, "train"), encoder)
    val_set = EncodedDataset(load_split(run.dataset_dir, "validation"), encoder)
    if len(train_set) == 0:
        raise InvalidInput(f"the data set at {run.dataset_dir} has no training examples")
    pad_id = processor.tokenizer.pad_token_id
    collate = Collator(pad_id if pad_id is not None else encoder.end_of_turn)
    world, rank = accelerator.num_processes, accelerator.process_index
    loaders = make_loaders(train_set, val_set, collate, cfg, world, rank)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer, scheduler = make_optimizer(trainable, cfg, len(loaders.train))
    # The scheduler stays outside prepare(): accelerate would step it once per process.
    forward, optimizer = accelerator.prepare(loss_forward(model, cfg.engine, cfg), optimizer)
    if cfg.engine == "stock":
        model = forward  # the prepared one: checkpoints unwrap it
    parts = _Parts(
        accelerator=accelerator,
        model=model,
        forward=forward,
        trainable=trainable,
        optimizer=optimizer,
        scheduler=scheduler,
        loaders=loaders,
        image_token=image_token_id(processor),
        merge_size=encoder.merge_size,
    )

    state = RunState()
    if checkpoint is not None:
        state = load_checkpoint(checkpoint, accelerator, model, optimizer, scheduler)
    _run_epochs(run, parts, state, progress=main and progress)

    adapter, activated = None, False
    if main:
        adapter, activated = publish_run(
            run,
            settings,
            state,
            _peft_saver(accelerator.unwrap_model(model)),
            base_fingerprint=base_fingerprint,
            base_revision=base_revision,
            training={
                "processes": world,
                "engine": cfg.engine,
                "device": str(accelerator.device),
                "torch": torch.__version__,
                "transformers": package_version("transformers"),
                "peft": package_version("peft"),
            },
            activate=activate,
        )
    accelerator.wait_for_everyone()
    return TrainResult(run.run_dir, state, adapter, activated, state.seconds_per_step())


def _run_epochs(run: Run, parts: _Parts, state: RunState, *, progress: bool) -> None:
    """The epochs still to go: steps, validation loss, a checkpoint after each."""
    cfg, accelerator, model = run.cfg, parts.accelerator, parts.forward
    main = accelerator.is_main_process
    batches = len(parts.loaders.train)
    bar = progress_bar(progress, batches * cfg.epochs, state.step)
    for epoch in range(state.epochs_done, cfg.epochs):
        parts.loaders.train_sampler.set_epoch(epoch)
        model.train()
        epoch_losses: list[float] = []
        for i, batch in enumerate(parts.loaders.train):
            started = time.perf_counter()
            check_batch_images(batch, parts.image_token, parts.merge_size)
            group_size, sync = accumulation_group(i, batches, cfg.grad_accum)
            loss = _step(parts, batch, cfg, group_size, sync)
            if sync:
                state.updates += 1
            mean_loss = float(accelerator.reduce(loss.detach().float(), reduction="mean"))
            state.record_step(mean_loss, time.perf_counter() - started)
            epoch_losses.append(mean_loss)
            if main:
                lr = parts.scheduler.get_last_lr()[0]
                append_metrics(run.run_dir, state, epoch, mean_loss, lr)
            bar.set_postfix(epoch=epoch + 1, loss=f"{mean_loss:.4f}")
            bar.update(1)
        val_loader = parts.loaders.validation
        line = state.end_epoch(
            epoch_losses, evaluate(model, val_loader, accelerator) if val_loader else None
        )
        if progress and line:
            bar.write(line, file=sys.stderr)
        save_checkpoint(
            run.run_dir, state, accelerator, parts.model, parts.optimizer, parts.scheduler
        )
    bar.close()


def _step(
    parts: _Parts, batch: dict[str, torch.Tensor], cfg: TrainConfig, group_size: int, sync: bool
) -> torch.Tensor:
    """One micro-batch forward and backward; the optimizer steps when `sync` (the last
    batch of an accumulation group of `group_size`)."""
    accelerator, model = parts.accelerator, parts.forward
    batch = _to_device(batch, model, accelerator.device)
    with _maybe_no_sync(accelerator, model, sync):
        loss = answer_loss(model, batch)
        accelerator.backward(loss / group_size)
    if sync:
        accelerator.clip_grad_norm_(parts.trainable, cfg.max_grad_norm)
        parts.optimizer.step()
        parts.scheduler.step()
        parts.optimizer.zero_grad(set_to_none=True)
    return loss


def _to_device(batch: dict[str, torch.Tensor], model: Any, device: Any) -> dict[str, Any]:
    batch = {k: v.to(device) for k, v in batch.items()}
    if "pixel_values" in batch:
        batch["pixel_values"] = batch["pixel_values"].to(frozen_dtype(model))
    return batch


class _maybe_no_sync:
    """DDP's no_sync while accumulating, a no-op on the step that syncs."""

    def __init__(self, accelerator: Any, model: Any, sync: bool) -> None:
        self.ctx = None if sync else accelerator.no_sync(model)

    def __enter__(self) -> None:
        if self.ctx is not None:
            self.ctx.__enter__()

    def __exit__(self, *exc: object) -> None:
        if self.ctx is not None:
            self.ctx.__exit__(*exc)


def answer_loss(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy over the answer tokens, the head applied only where a label is.

    The same value as `model(**batch).loss` (which shifts labels by one and ignores
    IGNORE_INDEX), but the vocabulary head runs on the answer positions alone: on Qwen's
    151,936-row head over a prompt with an image, the full logits would dominate a step's
    time and memory. The call still goes through `model` (its DDP wrapper included).

    The kept positions go as one 1-D tensor (every row's answer positions together), the
    form every transformers 5 release takes: a 2-D boolean mask is newer (5.17's Qwen-VL
    models index the hidden states with it and fail). Positions another row's answer
    brings in are ignored by the loss (masked, not indexed out: a boolean index after
    the forward would make the CPU wait for the whole forward before it could queue the
    backward)."""
    labels = batch["labels"]
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = labels[:, 1:] != IGNORE_INDEX  # position t predicts token t + 1
    positions = keep.any(dim=0).nonzero().squeeze(1)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = model(**inputs, logits_to_keep=positions).logits  # (rows, positions, vocab)
    targets = labels[:, positions + 1].masked_fill(~keep[:, positions], IGNORE_INDEX)
    return torch.nn.functional.cross_entropy(
        logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX
    )


@torch.no_grad()
def evaluate(model: Any, loader: DataLoader, accelerator: Any) -> float:
    """Token-weighted mean loss over the validation split (all processes together)."""
    model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=accelerator.device)
    for batch in loader:
        batch = _to_device(batch, model, accelerator.device)
        tokens = answer_tokens(batch)
        loss = answer_loss(model, batch)
        total += torch.tensor([float(loss) * tokens, tokens], dtype=torch.float64).to(total)
    total = accelerator.reduce(total, reduction="sum")
    model.train()
    return float(total[0] / total[1]) if total[1] > 0 else float("nan")


def _peft_saver(model: Any) -> Callable[[Path], None]:
    def save(staging: Path) -> None:
        model.save_pretrained(staging)
        (staging / "README.md").unlink(missing_ok=True)  # PEFT's model-card template

    return save


def progress_bar(enabled: bool, total: int, initial: int) -> Any:
    """The steps' progress on stderr (both trainers); a silent one when not `enabled`."""
    from tqdm import tqdm

    return tqdm(
        total=total,
        initial=initial,
        desc="training",
        unit="step",
        file=sys.stderr,
        disable=not enabled,
        dynamic_ncols=True,
    )
