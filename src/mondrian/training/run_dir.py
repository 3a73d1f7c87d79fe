"""A training run's directory (`--out`), shared by both trainers (train.py, mlx_train.py).

    run.json         advisor, data set, settings and their fingerprint (resume checks them)
    metrics.jsonl    one line per step: loss, learning rate, seconds
    checkpoints/     epoch-NNN: adapter, optimizer, scheduler, RNG states, RunState
    published.json   the version the run became; a finished run is never trained again

`open_run` checks the data set against the advisor and this package's prompt and schema,
and names the folder: without `--out`, the same data and settings give the same folder,
so the same command with `--resume` continues it.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mondrian.config import Settings
from mondrian.errors import InvalidInput
from mondrian.prompts import PROMPT_VERSION
from mondrian.schema import SCHEMA_VERSION
from mondrian.storage.db import utcnow
from mondrian.training.config import TrainConfig
from mondrian.training.dataset_files import read_manifest

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

    def record_step(self, loss: float, seconds: float) -> None:
        self.step += 1
        self.step_losses.append(loss)
        self.step_seconds.append(seconds)

    def end_epoch(self, losses: list[float], val_loss: float | None) -> str | None:
        """Close an epoch; the line to show when it had a validation loss."""
        self.train_loss.append(sum(losses) / len(losses))
        self.val_loss.append(val_loss)
        self.epochs_done += 1
        if val_loss is None:
            return None
        return (
            f"epoch {self.epochs_done}: train loss {self.train_loss[-1]:.4f}, "
            f"validation loss {val_loss:.4f}"
        )

    def seconds_per_step(self) -> float:
        # The first step pays for allocation and lazy initialisation; leave it out.
        timed = self.step_seconds[1:] if len(self.step_seconds) > 1 else self.step_seconds
        return round(sum(timed) / len(timed), 4) if timed else 0.0


@dataclass(frozen=True)
class Run:
    """A run's inputs, checked: the config with its model, the data set and the folder."""

    cfg: TrainConfig
    advisor_id: str
    dataset_dir: Path
    manifest: dict[str, Any]
    run_dir: Path


def open_run(
    cfg: TrainConfig, settings: Settings, advisor_id: str, dataset_dir: Path, run_dir: Path | None
) -> Run:
    cfg = cfg.merged(model=cfg.model or settings.model)
    dataset_dir = Path(dataset_dir).absolute()
    manifest = read_manifest(dataset_dir)
    check_manifest(manifest, advisor_id)
    run_dir = Path(run_dir or default_run_dir(settings, advisor_id, manifest, cfg)).absolute()
    return Run(cfg, advisor_id, dataset_dir, manifest, run_dir)


def default_run_dir(
    settings: Settings, advisor_id: str, manifest: dict[str, Any], cfg: TrainConfig
) -> Path:
    name = f"{manifest['data_sha256'][:12]}-{cfg.fingerprint()[:8]}"
    return settings.home_dir / "runs" / advisor_id / name


def check_manifest(manifest: dict[str, Any], advisor_id: str) -> None:
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


def prepare_run_dir(run: Run, resume: bool) -> None:
    """Create or re-open the folder; refuse a finished run, another run, or a resume
    whose data or settings differ (only --epochs may change)."""
    run_dir, run_file = run.run_dir, run.run_dir / RUN_FILE
    record = {
        "advisor_id": run.advisor_id,
        "dataset": str(run.dataset_dir),
        "data_sha256": run.manifest["data_sha256"],
        "config": run.cfg.model_dump(),
        "config_fingerprint": run.cfg.fingerprint(),
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
    write_json(run_file, {**record, "updated_at": utcnow()})


def append_metrics(run_dir: Path, state: RunState, epoch: int, loss: float, lr: float) -> None:
    line = {
        "step": state.step,
        "epoch": epoch + 1,
        "loss": round(loss, 6),
        "lr": lr,
        "seconds": round(state.step_seconds[-1], 4),
    }
    with (run_dir / METRICS_FILE).open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(line) + "\n")


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2)
        fh.write("\n")
    os.replace(tmp, path)


# --- epoch checkpoints (the PyTorch trainer's) -------------------------------------------


def latest_checkpoint(run_dir: Path) -> Path | None:
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


def save_checkpoint(
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
        write_json(staging / "state.json", state.__dict__)
        final = folder / f"epoch-{state.epochs_done:03d}"
        if final.exists():
            shutil.rmtree(final)
        os.rename(staging, final)
        for old in sorted(folder.glob("epoch-*"))[:-KEEP_CHECKPOINTS]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def load_checkpoint(
    path: Path, accelerator: Any, model: Any, optimizer: Any, scheduler: Any
) -> RunState:
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    from mondrian.adapter_format import ADAPTER_WEIGHTS

    weights = load_file(str(path / "adapter" / ADAPTER_WEIGHTS), device="cpu")
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
