"""What the demo reports: its numbered steps with their durations, the summary it saves
(`demo-summary.json`) and the closing lines it prints, held-out error first."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REAL_MODEL_HINT = "Qwen/Qwen2.5-VL-3B-Instruct"

Say = Callable[[str], None]


@dataclass
class DemoSummary:
    workdir: Path
    model: str
    tiny: bool
    config: Path
    advisor: str
    quick: bool = False
    # --quick's cuts, kept here so that the summary says what the run did.
    quick_epochs: int | None = None
    quick_train_eval_photos: int | None = None
    # What the demo set over the training config's own values (run.py's TINY_DEMO_TRAINING).
    training: dict[str, object] = field(default_factory=dict)
    adapter: str = ""
    photos: dict[str, int] = field(default_factory=dict)  # split -> photos in it
    evaluated: dict[str, int] = field(default_factory=dict)  # split -> photos evaluated
    train_mae: dict[str, float | None] = field(default_factory=dict)
    val_mae: dict[str, float | None] = field(default_factory=dict)
    modes: dict[str, str] = field(default_factory=dict)  # requested -> used
    http_status: int = 0
    reports: list[Path] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    critiqued_photo: Path | None = None

    @property
    def val_reduction(self) -> float | None:
        """How much lower the adapter's held-out error is than the base model's (0.3: 30%)."""
        return _reduction(self.val_mae)

    @property
    def train_reduction(self) -> float | None:
        return _reduction(self.train_mae)

    def save(self, path: Path) -> None:
        """`demo-summary.json`: what ran (model, config, quick) and what it measured."""
        record = {
            "model": self.model,
            "tiny": self.tiny,
            "config": str(self.config),
            "quick": self.quick,
            "training": self.training,
            "adapter": self.adapter,
            "photos": self.photos,
            "evaluated": self.evaluated,
            "val_mae": self.val_mae,
            "train_mae": self.train_mae,
            "mae_reduction_val": self.val_reduction,
            "mae_reduction_train": self.train_reduction,
            "critiqued_photo": str(self.critiqued_photo),
            "modes": self.modes,
            "http_status": self.http_status,
            "reports": [str(p) for p in self.reports],
            "seconds": self.seconds,
        }
        path.write_text(json.dumps(record, indent=2))


def _reduction(mae: dict[str, float | None]) -> float | None:
    base, adapter = mae.get("base"), mae.get("adapter")
    if base is None or adapter is None or base == 0:
        return None
    return 1 - adapter / base


class Steps:
    """Numbered step headers with their durations."""

    def __init__(self, total: int, say: Say, summary: DemoSummary) -> None:
        self.total, self.say, self.summary = total, say, summary
        self.index = 0

    def __call__(self, title: str) -> Step:
        self.index += 1
        return Step(self, f"[{self.index}/{self.total}] {title}")


class Step:
    def __init__(self, steps: Steps, title: str) -> None:
        self.steps, self.title = steps, title

    def __enter__(self) -> Step:
        self.started = time.perf_counter()
        self.steps.say(f"\n{self.title}")
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        seconds = time.perf_counter() - self.started
        self.steps.summary.seconds[self.title] = round(seconds, 1)
        if exc_type is None:
            self.steps.say(f"    done in {seconds:.1f} s")


def fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def split_label(split: str, photos: dict[str, int], evaluated: dict[str, int]) -> str:
    name = "held-out" if split == "validation" else "training"
    total, done = photos.get(split, "?"), evaluated.get(split, photos.get(split, "?"))
    count = f"{total} photos" if done == total else f"{done} of {total} photos"
    return f"{name} ({split} split, {count})"


def _change(reduction: float | None) -> str:
    if reduction is None:
        return "n/a"
    word = "below" if reduction >= 0 else "above"
    return f"{100 * abs(reduction):.0f}% {word} the base model's"


def print_finish(summary: DemoSummary, say: Say) -> None:
    total = sum(summary.seconds.values())
    say(f"\nDone in {total:.0f} s.")
    # The headline: held-out first, the training error beside it (never the other way).
    say("Mean score error against the curated profiles (0-10 scale, lower is better):")
    for split, mae, reduction in (
        ("validation", summary.val_mae, summary.val_reduction),
        ("train", summary.train_mae, summary.train_reduction),
    ):
        say(
            f"    {split_label(split, summary.photos, summary.evaluated)}: "
            f"base {fmt(mae.get('base'))}, adapter {fmt(mae.get('adapter'))} "
            f"({_change(reduction)})"
        )
    if summary.tiny:
        say(
            "    The model has random weights: on held-out photos the adapter can only have\n"
            "    learned the portfolio's typical scores, not to see. A real model is needed\n"
            "    for held-out errors that mean more."
        )
    if summary.quick:
        say(
            f"    --quick: {summary.quick_epochs} epochs, no augmentation, training error on "
            f"{summary.quick_train_eval_photos} photos; the full demo trains longer."
        )
    say("\nReports:")
    for path in summary.reports:
        say(f"    {path}")
    mondrian = mondrian_command()
    home = summary.workdir / "home"
    advisor, model = summary.advisor, summary.model
    say(
        "\nNext:\n"
        f"    export MONDRIAN_HOME={home}\n"
        f"    {mondrian} analyze PHOTO --advisor {advisor} --mode lora --model {model}\n"
        f"    {mondrian} serve --model {model}      # then open http://127.0.0.1:5100/docs\n"
        f"    {mondrian} demo --model {REAL_MODEL_HINT}   # real critiques, needs the weights"
    )


def mondrian_command() -> str:
    """How to type `mondrian` from here: plain when it is on PATH, else the path of the
    script beside this interpreter (`.venv/bin/mondrian` under `make demo`)."""
    script = Path(sys.executable).parent / "mondrian"
    on_path = shutil.which("mondrian")
    if on_path is not None and (not script.exists() or Path(on_path).samefile(script)):
        return "mondrian"
    if not script.exists():
        return "python -m mondrian"
    try:
        return os.path.relpath(script) if script.is_relative_to(Path.cwd()) else str(script)
    except ValueError:  # another drive on Windows
        return str(script)
