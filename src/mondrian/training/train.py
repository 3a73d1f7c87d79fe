"""One LoRA training run, top to bottom: set up, train, save.

A plain PyTorch loop driven by `accelerate.Accelerator`, so the same code runs on one CPU,
CUDA or MPS device and data-parallel under `torchrun` / `accelerate launch` (gloo on CPU).
Every process trains on its shard; only the main process writes checkpoints, the adapter
and the database.

    set up   config, data set, base model + LoRA on the LM's linears, loader, optimizer
    train    epochs of steps (loss on the answer tokens, image tokens checked, gradients
             clipped), validation loss and a checkpoint after every epoch
    save     the adapter, its self-description and loss curve, published as advisor@vN

A run lives in a run directory (`--out`). Re-running with `--resume` picks up after the
last completed epoch: adapter weights, optimizer, scheduler, RNG states and step counter
come from the checkpoint, and the data order of the remaining epochs is the one an
uninterrupted run would have seen (it is seeded per epoch).
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from mondrian import __version__, adapter_format
from mondrian.backends.decoding.fingerprint import model_fingerprint
from mondrian.config import Settings
from mondrian.errors import InvalidInput
from mondrian.hf_progress import quiet_hf_progress
from mondrian.prompts import PROMPT_VERSION
from mondrian.schema import SCHEMA_VERSION
from mondrian.storage.adapters import Adapter
from mondrian.storage.db import utcnow
from mondrian.training import registry
from mondrian.training.collate import (
    IGNORE_INDEX,
    Collator,
    ExampleEncoder,
    answer_tokens,
    check_image_tokens,
    image_token_id,
)
from mondrian.training.config import LM_TARGET_REGEX, TrainConfig
from mondrian.training.dataset import load_split, manifest_sha256, read_manifest
from mondrian.training.plot import loss_curve_svg

RUN_FILE = "run.json"
PUBLISHED_FILE = "published.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
KEEP_CHECKPOINTS = 2


@dataclass
class RunState:
    """Where a run stands; saved in every checkpoint."""

    epochs_done: int = 0
    step: int = 0  # micro-batches seen by this process
    updates: int = 0  # optimizer steps
    step_losses: list[float] = field(default_factory=list)  # mean over processes
    train_loss: list[float] = field(default_factory=list)  # per epoch
    val_loss: list[float | None] = field(default_factory=list)  # per epoch
    step_seconds: list[float] = field(default_factory=list)


@dataclass
class TrainResult:
    run_dir: Path
    state: RunState
    adapter: Adapter | None  # None on the other processes of a data-parallel run
    activated: bool
    seconds_per_step: float


class EncodedDataset(Dataset):
    def __init__(self, records: list[dict[str, Any]], encoder: ExampleEncoder) -> None:
        self.records = records
        self.encoder = encoder

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.encoder.encode(self.records[index])


def default_run_dir(
    settings: Settings, advisor_id: str, manifest: dict[str, Any], cfg: TrainConfig
) -> Path:
    """Where a run goes without --out: the same data and settings give the same folder,
    so running the same command again with --resume continues it."""
    name = f"{manifest['data_sha256'][:12]}-{cfg.fingerprint()[:8]}"
    return settings.home_dir / "runs" / advisor_id / name


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
        return _train(
            cfg, advisor_id, Path(dataset_dir), settings, run_dir, resume, activate, progress
        )
    finally:
        torch.set_num_threads(threads)


def _train(
    cfg: TrainConfig,
    advisor_id: str,
    dataset_dir: Path,
    settings: Settings,
    run_dir: Path | None,
    resume: bool,
    activate: bool | None,
    progress: bool,
) -> TrainResult:
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    # --- set up --------------------------------------------------------------------------
    cfg = cfg.merged(model=cfg.model or settings.model)
    dataset_dir = Path(dataset_dir).absolute()
    manifest = read_manifest(dataset_dir)
    _check_manifest(manifest, advisor_id)
    run_dir = Path(run_dir or default_run_dir(settings, advisor_id, manifest, cfg)).absolute()

    accelerator = Accelerator(cpu=cfg.device == "cpu")
    main = accelerator.is_main_process
    if main:
        _prepare_run_dir(run_dir, cfg, advisor_id, dataset_dir, manifest, resume)
    accelerator.wait_for_everyone()
    checkpoint = _latest_checkpoint(run_dir) if resume else None

    set_seed(cfg.seed)
    processor, model = _load_base(cfg, accelerator.device)
    base_fingerprint = model_fingerprint(model)
    base_revision = getattr(model.config, "_commit_hash", None)
    model = add_lora(model, cfg)

    encoder = ExampleEncoder(processor, cfg.max_pixels, cfg.max_seq_len)
    train_set = EncodedDataset(load_split(dataset_dir, "train"), encoder)
    val_set = EncodedDataset(load_split(dataset_dir, "validation"), encoder)
    if len(train_set) == 0:
        raise InvalidInput(f"the data set at {dataset_dir} has no training examples")
    pad_id = processor.tokenizer.pad_token_id
    collate = Collator(pad_id if pad_id is not None else encoder.end_of_turn)
    world, rank = accelerator.num_processes, accelerator.process_index
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

    updates_per_epoch = math.ceil(len(train_loader) / cfg.grad_accum)
    total_updates = updates_per_epoch * cfg.epochs
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, total_updates))
    # The scheduler stays outside prepare(): accelerate would step it once per process.
    model, optimizer = accelerator.prepare(model, optimizer)

    state = RunState()
    if checkpoint is not None:
        state = _load_checkpoint(checkpoint, accelerator, model, optimizer, scheduler)
    image_token, merge_size = image_token_id(processor), encoder.merge_size

    # --- train ---------------------------------------------------------------------------
    bar = _progress(main and progress, len(train_loader) * cfg.epochs, state.step)
    for epoch in range(state.epochs_done, cfg.epochs):
        train_sampler.set_epoch(epoch)
        model.train()
        epoch_losses: list[float] = []
        batches = len(train_loader)
        for i, batch in enumerate(train_loader):
            started = time.perf_counter()
            check_image_tokens(
                batch["input_ids"],
                batch.get("image_grid_thw"),
                batch.get("pixel_values"),
                image_token,
                merge_size,
            )
            batch = {k: v.to(accelerator.device) for k, v in batch.items()}
            if "pixel_values" in batch:
                batch["pixel_values"] = batch["pixel_values"].to(_dtype_of(model))
            group_start = (i // cfg.grad_accum) * cfg.grad_accum
            group_size = min(cfg.grad_accum, batches - group_start)
            sync = i + 1 == group_start + group_size
            with _maybe_no_sync(accelerator, model, sync):
                loss = answer_loss(model, batch)
                accelerator.backward(loss / group_size)
            if sync:
                accelerator.clip_grad_norm_(trainable, cfg.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                state.updates += 1
            mean_loss = float(accelerator.reduce(loss.detach().float(), reduction="mean"))
            state.step += 1
            state.step_losses.append(mean_loss)
            state.step_seconds.append(time.perf_counter() - started)
            epoch_losses.append(mean_loss)
            if main:
                _append_metrics(run_dir, state, epoch, mean_loss, scheduler.get_last_lr()[0])
            bar.set_postfix(epoch=epoch + 1, loss=f"{mean_loss:.4f}")
            bar.update(1)
        state.train_loss.append(sum(epoch_losses) / len(epoch_losses))
        state.val_loss.append(
            evaluate(model, val_loader, accelerator) if val_loader is not None else None
        )
        state.epochs_done = epoch + 1
        if main and progress and state.val_loss[-1] is not None:
            bar.write(
                f"epoch {epoch + 1}: train loss {state.train_loss[-1]:.4f}, "
                f"validation loss {state.val_loss[-1]:.4f}",
                file=sys.stderr,
            )
        _save_checkpoint(run_dir, state, accelerator, model, optimizer, scheduler)
    bar.close()

    # --- save ----------------------------------------------------------------------------
    adapter, activated = None, False
    seconds = _seconds_per_step(state.step_seconds)
    if main:
        meta = {
            "base_fingerprint": base_fingerprint,
            "base_revision": base_revision,
            "hyperparameters": cfg.hyperparameters(),
            "dataset": {
                "path": str(dataset_dir),
                "manifest_sha256": manifest_sha256(dataset_dir),
                "data_sha256": manifest["data_sha256"],
                "train_examples": manifest["splits"]["train"]["examples"],
                "val_examples": manifest["splits"]["validation"]["examples"],
                "images": sum(s["images"] for s in manifest["splits"].values()),
                "sources": manifest["sources"],
            },
            "prompt_version": PROMPT_VERSION,
            "schema_version": SCHEMA_VERSION,
            "package_version": __version__,
            "metrics": {
                "train_loss": state.train_loss,
                "val_loss": state.val_loss,
                "first_step_loss": state.step_losses[0] if state.step_losses else None,
                "last_step_loss": state.step_losses[-1] if state.step_losses else None,
                "steps": state.step,
                "updates": state.updates,
                "seconds_per_step": seconds,
            },
            "training": {
                "processes": world,
                "device": str(accelerator.device),
                "run_dir": str(run_dir),
                "torch": torch.__version__,
                "transformers": _version("transformers"),
                "peft": _version("peft"),
            },
            "created_at": utcnow(),
        }
        adapter, activated = _publish(
            settings, advisor_id, accelerator.unwrap_model(model), cfg, meta, state, activate
        )
        _write_json(run_dir / PUBLISHED_FILE, {"ref": adapter.ref, "path": str(adapter.path)})
    accelerator.wait_for_everyone()
    return TrainResult(run_dir, state, adapter, activated, seconds)


# --- model -------------------------------------------------------------------------------


def _load_base(cfg: TrainConfig, device: torch.device) -> tuple[Any, Any]:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from mondrian.errors import Unavailable

    dtype = _train_dtype(cfg.dtype, device)
    try:
        processor = AutoProcessor.from_pretrained(cfg.model)
        with quiet_hf_progress():
            model = AutoModelForImageTextToText.from_pretrained(cfg.model, dtype=dtype)
    except (OSError, ValueError) as exc:
        raise Unavailable(f"cannot load model {cfg.model!r}: {exc}") from None
    if getattr(processor, "image_processor", None) is None:
        raise Unavailable(f"{cfg.model!r} loaded without an image processor (torchvision?)")
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return processor, model.to(device)


def _train_dtype(requested: str, device: torch.device) -> torch.dtype:
    if requested != "auto":
        return getattr(torch, requested)
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32  # MPS and CPU train in float32: fp16 LoRA training is unstable


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
    import re

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


def _dtype_of(model: Any) -> torch.dtype:
    return next(p.dtype for p in model.parameters() if not p.requires_grad)


def lr_lambda(cfg: TrainConfig, total_updates: int):
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
    time and memory. The call still goes through `model` (its DDP wrapper included)."""
    labels = batch["labels"]
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = labels[:, 1:] != IGNORE_INDEX  # position t predicts token t + 1
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = model(**inputs, logits_to_keep=keep).logits  # (answer tokens, vocab)
    return torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), labels[:, 1:][keep[:, :-1]]
    )


@torch.no_grad()
def evaluate(model: Any, loader: DataLoader, accelerator: Any) -> float:
    """Token-weighted mean loss over the validation split (all processes together)."""
    model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=accelerator.device)
    for batch in loader:
        batch = {k: v.to(accelerator.device) for k, v in batch.items()}
        if "pixel_values" in batch:
            batch["pixel_values"] = batch["pixel_values"].to(_dtype_of(model))
        tokens = answer_tokens(batch)
        loss = answer_loss(model, batch)
        total += torch.tensor([float(loss) * tokens, tokens], dtype=torch.float64).to(total)
    total = accelerator.reduce(total, reduction="sum")
    model.train()
    return float(total[0] / total[1]) if total[1] > 0 else float("nan")


# --- run directory and checkpoints -------------------------------------------------------


def _check_manifest(manifest: dict[str, Any], advisor_id: str) -> None:
    if manifest["advisor_id"] != advisor_id:
        raise InvalidInput(
            f"the data set was built for advisor {manifest['advisor_id']!r}, not {advisor_id!r}"
        )
    if manifest["prompt_version"] != PROMPT_VERSION:
        raise InvalidInput(
            f"the data set was built with prompt version {manifest['prompt_version']}; this "
            f"Mondrian prompts with version {PROMPT_VERSION}: rebuild the data set"
        )
    if manifest["schema_version"] != SCHEMA_VERSION:
        raise InvalidInput(
            f"the data set targets schema version {manifest['schema_version']}, not "
            f"{SCHEMA_VERSION}: rebuild the data set"
        )


def _prepare_run_dir(
    run_dir: Path,
    cfg: TrainConfig,
    advisor_id: str,
    dataset_dir: Path,
    manifest: dict[str, Any],
    resume: bool,
) -> None:
    run_file = run_dir / RUN_FILE
    record = {
        "advisor_id": advisor_id,
        "dataset": str(dataset_dir),
        "data_sha256": manifest["data_sha256"],
        "config": cfg.model_dump(),
        "config_fingerprint": cfg.fingerprint(),
    }
    if (run_dir / PUBLISHED_FILE).is_file():
        published = json.loads((run_dir / PUBLISHED_FILE).read_text())
        raise InvalidInput(
            f"the run in {run_dir} already finished and published {published['ref']}; "
            "choose another --out to train again"
        )
    if run_file.is_file():
        if not resume:
            raise InvalidInput(
                f"{run_dir} holds an earlier run; pass --resume to continue it, or choose "
                "another --out"
            )
        earlier = json.loads(run_file.read_text())
        if earlier["data_sha256"] != record["data_sha256"]:
            raise InvalidInput(f"cannot resume {run_dir}: it was trained on another data set")
        if earlier["config_fingerprint"] != record["config_fingerprint"]:
            raise InvalidInput(
                f"cannot resume {run_dir}: its settings differ (only --epochs may change)"
            )
    elif run_dir.exists() and any(run_dir.iterdir()):
        raise InvalidInput(f"{run_dir} exists, is not empty and is not a training run")
    run_dir.mkdir(parents=True, exist_ok=True)
    _write_json(run_file, {**record, "updated_at": utcnow()})


def _latest_checkpoint(run_dir: Path) -> Path | None:
    folder = run_dir / CHECKPOINTS
    if not folder.is_dir():
        return None
    done = sorted(p for p in folder.glob("epoch-*") if (p / "state.json").is_file())
    return done[-1] if done else None


def _rng_state() -> dict[str, Any]:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _save_checkpoint(
    run_dir: Path, state: RunState, accelerator: Any, model: Any, optimizer: Any, scheduler: Any
) -> None:
    """checkpoints/epoch-NNN: adapter, optimizer, scheduler, every process's RNG, state.

    Written into a staging folder and renamed, so a checkpoint exists whole or not at
    all; `state.json` goes last and marks it complete.
    """
    folder = run_dir / CHECKPOINTS
    staging = folder / f".epoch-{state.epochs_done:03d}.partial"
    if accelerator.is_main_process:
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
    accelerator.wait_for_everyone()
    torch.save(_rng_state(), staging / f"rng-{accelerator.process_index}.pt")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        accelerator.unwrap_model(model).save_pretrained(staging / "adapter")
        torch.save(optimizer.state_dict(), staging / "optimizer.pt")
        torch.save(scheduler.state_dict(), staging / "scheduler.pt")
        _write_json(staging / "state.json", state.__dict__)
        final = folder / f"epoch-{state.epochs_done:03d}"
        if final.exists():
            shutil.rmtree(final)
        os.rename(staging, final)
        for old in sorted(folder.glob("epoch-*"))[:-KEEP_CHECKPOINTS]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def _load_checkpoint(
    path: Path, accelerator: Any, model: Any, optimizer: Any, scheduler: Any
) -> RunState:
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    weights = load_file(str(path / "adapter" / adapter_format.ADAPTER_WEIGHTS), device="cpu")
    result = set_peft_model_state_dict(accelerator.unwrap_model(model), weights)
    if getattr(result, "unexpected_keys", None):
        raise InvalidInput(f"checkpoint {path} does not fit this model: {result.unexpected_keys}")
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=False))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=False))
    rng = path / f"rng-{accelerator.process_index}.pt"
    if rng.is_file():  # a run resumed on fewer processes keeps the extra states unused
        _set_rng_state(torch.load(rng, weights_only=False))
    data = json.loads((path / "state.json").read_text())
    return RunState(**data)


# --- saving the adapter ------------------------------------------------------------------


def _publish(
    settings: Settings,
    advisor_id: str,
    model: Any,
    cfg: TrainConfig,
    meta: dict[str, Any],
    state: RunState,
    activate: bool | None,
) -> tuple[Adapter, bool]:
    def save(staging: Path) -> None:
        model.save_pretrained(staging)
        (staging / "README.md").unlink(missing_ok=True)  # PEFT's model-card template

    return publish_run(settings, advisor_id, cfg, meta, state, activate, save)


def publish_run(
    settings: Settings,
    advisor_id: str,
    cfg: TrainConfig,
    meta: dict[str, Any],
    state: RunState,
    activate: bool | None,
    save: Callable[[Path], None],
    trainer: str = "",
) -> tuple[Adapter, bool]:
    """Stage the adapter (`save` writes it) and its loss curve, then register the version.
    Shared by every trainer, so a version looks the same whoever trained it."""
    from mondrian.storage.bootstrap import open_state

    with registry.staged_version(settings, advisor_id) as staging:
        save(staging)
        points = [(i + 1, loss) for i, loss in enumerate(state.step_losses)]
        steps_per_epoch = state.step / max(1, state.epochs_done)
        valid = [
            (round((e + 1) * steps_per_epoch), loss)
            for e, loss in enumerate(state.val_loss)
            if loss is not None
        ]
        suffix = f" ({trainer})" if trainer else ""
        svg = loss_curve_svg(points, valid, title=f"{advisor_id}: LoRA r={cfg.rank}{suffix}")
        (staging / adapter_format.LOSS_CURVE).write_text(svg, encoding="utf-8")
        with open_state(settings) as db:
            return registry.publish(
                db, settings, advisor_id, staging, cfg.model or "", meta, activate=activate
            )


# --- small helpers -----------------------------------------------------------------------


def _progress(enabled: bool, total: int, initial: int) -> Any:
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


def _append_metrics(run_dir: Path, state: RunState, epoch: int, loss: float, lr: float) -> None:
    line = {
        "step": state.step,
        "epoch": epoch + 1,
        "loss": round(loss, 6),
        "lr": lr,
        "seconds": round(state.step_seconds[-1], 4),
    }
    with (run_dir / METRICS_FILE).open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(line) + "\n")


def _seconds_per_step(seconds: list[float]) -> float:
    # The first step pays for allocation and lazy initialisation; leave it out.
    timed = seconds[1:] if len(seconds) > 1 else seconds
    return round(sum(timed) / len(timed), 4) if timed else 0.0


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2)
        fh.write("\n")
    os.replace(tmp, path)


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None
