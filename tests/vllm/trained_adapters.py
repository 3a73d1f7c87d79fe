"""Two adapter versions for the `vllm` suite, made the way `mondrian train` makes them:
a data set built from a small curated portfolio (tests/training/training_helpers.py's
photos and short critiques), two short `train()` runs with configs/train/tiny.toml,
each published to the registry of a Mondrian home of their own: `tester@v1` (the
advisor's first version, so active) and `tester@v2` (inactive, for the activation test).
Their folders hold what training writes: PEFT files plus mondrian_adapter.json (base
model, fingerprint, data set, metrics)."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

from mondrian.config import Settings, load_settings
from mondrian.storage.bootstrap import open_state

# The training room's helpers, reused rather than copied (tests/training is not a package).
sys.path.insert(0, str(Path(__file__).parents[1] / "training"))
from training_helpers import add_profile, add_short_advisor

TINY_CONFIG = Path(__file__).parents[2] / "configs" / "train" / "tiny.toml"
PHOTOS = 4
# Few steps (2 per epoch; a second or less each at idle): the loss falls from about 9 to
# about 2, so each version answers unlike the base model. They differ in length and seed,
# so their weights differ. (Learning the targets exactly is tests/training/'s business.)
RUNS = ({"epochs": 8, "seed": 0}, {"epochs": 12, "seed": 1})


@dataclass(frozen=True)
class TrainedAdapters:
    settings: Settings  # the home whose registry holds both versions
    advisor_id: str
    paths: dict[str, Path]  # ref -> the registry's folder of that version
    dataset: Path
    seconds: float  # both runs, build included


def train_two_versions(base: Path, root: Path) -> TrainedAdapters:
    from mondrian.training.config import load_config
    from mondrian.training.dataset import build_dataset
    from mondrian.training.train import train

    started = time.perf_counter()
    settings = load_settings(home=root / "home")
    dataset = root / "dataset"
    with open_state(settings) as db:
        advisor_id = add_short_advisor(db)
        for index in range(PHOTOS):
            add_profile(db, settings, index, advisor_id=advisor_id)
        build_dataset(db, settings, advisor_id, dataset, val_fraction=0)
    paths = {}
    for number, overrides in enumerate(RUNS, start=1):
        cfg = load_config(TINY_CONFIG, model=str(base), device="cpu").merged(**overrides)
        result = train(
            cfg,
            advisor_id=advisor_id,
            dataset_dir=dataset,
            settings=settings,
            run_dir=root / f"run-{number}",
            progress=False,
        )
        assert result.adapter is not None and result.adapter.ref == f"{advisor_id}@v{number}"
        assert result.activated == (number == 1)  # the first version only
        paths[result.adapter.ref] = Path(result.adapter.path)
    return TrainedAdapters(settings, advisor_id, paths, dataset, time.perf_counter() - started)
