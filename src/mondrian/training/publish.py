"""A finished run becomes the advisor's next version, `advisor@vN`, the same way whichever
trainer ran it (train.py, mlx_train.py): the adapter's files (the trainer's `save`), its
loss curve, and one `AdapterMeta` (adapter_format.py) of what it was trained on, how and
how well, built here once; the registry (registry.py) installs and names it.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from mondrian import adapter_format
from mondrian.adapter_format import AdapterMeta
from mondrian.config import Settings
from mondrian.prompts import PROMPT_VERSION
from mondrian.storage.adapters import Adapter
from mondrian.storage.db import utcnow
from mondrian.training import registry
from mondrian.training.dataset_files import manifest_sha256
from mondrian.training.plot import loss_curve_svg
from mondrian.training.run_dir import PUBLISHED_FILE, Run, RunState, write_json


def publish_run(
    run: Run,
    settings: Settings,
    state: RunState,
    save: Callable[[Path], None],
    *,
    base_fingerprint: str,
    base_revision: str | None,
    training: dict[str, Any],
    activate: bool | None,
    trainer: str = "",
) -> tuple[Adapter, bool]:
    """Stage the adapter (`save` writes it) and its loss curve, register the version, and
    mark the run published. `training` is the trainer's own record (device, versions);
    `activate` as in registry.publish."""
    from mondrian.storage.bootstrap import open_state

    meta = AdapterMeta.trained(
        base_fingerprint=base_fingerprint,
        base_revision=base_revision,
        hyperparameters=run.cfg.hyperparameters(),
        dataset=dataset_record(run.dataset_dir, run.manifest),
        metrics=run_metrics(state),
        prompt_version=PROMPT_VERSION,
        # The data set's, not this package's: the facts the adapter learned from are those
        # measured when the data set was built (None for a data set from before the field).
        facts_version=run.manifest.get("facts_version"),
        training={**training, "run_dir": str(run.run_dir)},
        created_at=utcnow(),
    )
    with registry.staged_version(settings, run.advisor_id) as staging:
        save(staging)
        suffix = f" ({trainer})" if trainer else ""
        svg = loss_curve(state, title=f"{run.advisor_id}: LoRA r={run.cfg.rank}{suffix}")
        (staging / adapter_format.LOSS_CURVE).write_text(svg, encoding="utf-8")
        with open_state(settings) as db:
            adapter, activated = registry.publish(
                db,
                settings,
                run.advisor_id,
                staging,
                run.cfg.model or "",
                meta.as_dict(),
                activate=activate,
            )
    write_json(run.run_dir / PUBLISHED_FILE, {"ref": adapter.ref, "path": str(adapter.path)})
    return adapter, activated


def dataset_record(dataset_dir: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """The data set as the adapter records it (registry.describe and reports read it)."""
    splits = manifest["splits"]
    return {
        "path": str(dataset_dir),
        "manifest_sha256": manifest_sha256(dataset_dir),
        "data_sha256": manifest["data_sha256"],
        "train_examples": splits["train"]["examples"],
        "val_examples": splits["validation"]["examples"],
        "images": sum(s["images"] for s in splits.values()),
        "sources": manifest["sources"],
    }


def run_metrics(state: RunState) -> dict[str, Any]:
    return {
        "train_loss": state.train_loss,
        "val_loss": state.val_loss,
        "first_step_loss": state.step_losses[0] if state.step_losses else None,
        "last_step_loss": state.step_losses[-1] if state.step_losses else None,
        "steps": state.step,
        "updates": state.updates,
        "seconds_per_step": state.seconds_per_step(),
    }


def loss_curve(state: RunState, title: str) -> str:
    """Training loss per step; validation loss at the end of each epoch."""
    points = [(i + 1, loss) for i, loss in enumerate(state.step_losses)]
    steps_per_epoch = state.step / max(1, state.epochs_done)
    valid = [
        (round((e + 1) * steps_per_epoch), loss)
        for e, loss in enumerate(state.val_loss)
        if loss is not None
    ]
    return loss_curve_svg(points, valid, title=title)


def package_version(package: str) -> str | None:
    """An installed package's version, for the adapter's record of how it was trained."""
    try:
        return version(package)
    except PackageNotFoundError:
        return None
