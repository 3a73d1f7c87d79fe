"""One training row of the scale bench: `mondrian train` under `torchrun --nproc_per_node N`
(accelerate picks NCCL on CUDA, gloo on the CPU), on the same data set, config and epochs
for every N, into a fresh Mondrian home, so that the run's one registered version can be
counted there.

Speed is the main process's own step timing (`seconds_per_step` in `train --json`: the
mean step, the first one left out as it pays for allocation); examples/s counts the data
set's training examples, not a sampler's padding: train examples x epochs / (steps x
seconds per step). The wall time of the whole command (model load included) is beside it.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import scale_setup
from scale_procs import Children, child_env, tail


@dataclass
class TrainRow:
    arch: str
    gpus: int
    python: str
    work: Path
    dataset: Path
    train_examples: int
    config: Path
    epochs: int
    batch_size: int
    deadline: float  # time.monotonic()


def train_command(row: TrainRow, model_dir: Path, run_dir: Path) -> list[str]:
    device = "cpu" if row.arch == "tiny" else "cuda"
    return [
        row.python, "-m", "torch.distributed.run",
        "--standalone",  # a free local port for the rendezvous
        "--nproc_per_node", str(row.gpus),
        "-m", "mondrian", "train",
        "--advisor", scale_setup.TRAIN_ADVISOR,
        "--dataset", str(row.dataset),
        "--model", str(model_dir),
        "--config", str(row.config),
        "--epochs", str(row.epochs),
        "--batch-size", str(row.batch_size),
        "--grad-accum", "1",
        "--device", device,
        "--out", str(run_dir),
        "--no-progress", "--json",
    ]  # fmt: skip


def run_row(row: TrainRow, children: Children) -> dict[str, Any]:
    model_dir = row.work / "model"
    home, run_dir = row.work / f"train-home-{row.gpus}", row.work / f"train-run-{row.gpus}"
    for folder in (home, run_dir):
        shutil.rmtree(folder, ignore_errors=True)
    settings = {"MONDRIAN_HOME": str(home)}
    if row.arch == "tiny":  # the CPU run: one thread a process, as tests/training/test_ddp.py
        settings["OMP_NUM_THREADS"] = "1"
    stdout = children.log_dir / f"train-{row.gpus}.json"
    started = time.monotonic()
    proc, log = children.start(
        f"train-{row.gpus}",
        train_command(row, model_dir, run_dir),
        child_env(settings),
        sorted(settings),
        stdout=stdout,
    )
    try:
        code = proc.wait(max(1.0, row.deadline - started))
    except Exception:
        children.stop(proc)
        raise TimeoutError("the run's time budget ended during training") from None
    wall = time.monotonic() - started
    children.stop(proc)  # torchrun's workers, should any be left
    if code != 0:
        raise RuntimeError(f"mondrian train exited {code}: {tail(log)}")
    report = json.loads(stdout.read_text())
    metrics = report["metrics"]
    per_step = report["seconds_per_step"]
    steps = metrics["steps"]
    meta = json.loads((Path(report["path"]) / "mondrian_adapter.json").read_text())
    versions = scale_setup.versions_in(home, scale_setup.TRAIN_ADVISOR)
    return {
        "processes": meta["training"]["processes"],
        "device": meta["training"]["device"],
        "epochs": row.epochs,
        "batch_per_process": row.batch_size,
        "train_examples": row.train_examples,
        "steps": steps,
        "seconds_per_step": per_step,
        "steps_s": round(1 / per_step, 3) if per_step else None,
        "examples_s": round(row.train_examples * row.epochs / (steps * per_step), 3)
        if per_step
        else None,
        "wall_s": round(wall, 1),
        "val_loss": (metrics.get("val_loss") or [None])[-1],
        "train_loss": (metrics.get("train_loss") or [None])[-1],
        "versions": versions,
        "one_version": versions == [report["ref"]],
    }
