"""What the scale bench runs on, built once per `--work` folder and reused by later calls:

- the model folder: bench/gpu_bench.py's `build` (the real config, random bf16 weights, the
  real Qwen2 vocabulary; or the tiny checkpoint) saved where vLLM and `mondrian train`
  read it;
- 8 random PEFT LoRAs (gpu_bench's `make_adapters`);
- a Mondrian home per serving row: 8 advisors (the 5 shipped, then copies under new ids),
  each with one of the LoRAs published as its version (training/registry.py's `publish`,
  which writes mondrian_adapter.json with the model folder as its base) and active, so the
  service serves `lora` by advisor and the vllm backend's base check runs;
- a training data set for the shipped advisor `ansel` (curated profiles of bench photos
  with short critiques, built by training/dataset.py), the same for every N.
"""

from __future__ import annotations

import io
import shutil
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import gpu_bench  # the model, adapters and photos of the fast path's bench

TRAIN_ADVISOR = "ansel"
DONE = ".built"


def adapter_rank(arch: str) -> int:
    return 4 if arch == "tiny" else 16


def model_and_adapters(arch: str, work: Path, count: int) -> tuple[Path, Path, list[str]]:
    """(model folder, adapters folder, adapter folder names), built unless `work` holds
    them from an earlier call with the same arch."""
    model_dir, adapter_root = work / "model", work / "adapters"
    names = [f"advisor{i}@v1" for i in range(count)]
    marker = work / DONE
    if marker.exists() and marker.read_text() == f"{arch} {count}":
        return model_dir, adapter_root, names
    shutil.rmtree(model_dir, ignore_errors=True)
    shutil.rmtree(adapter_root, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    model = _built_model(arch, model_dir)
    made = gpu_bench.make_adapters(model, adapter_root, count, adapter_rank(arch))
    assert made == names, made
    del model
    _free_device()  # vLLM and the trainers take the GPUs next
    marker.write_text(f"{arch} {count}")
    return model_dir, adapter_root, names


def _free_device() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _built_model(arch: str, model_dir: Path) -> Any:
    import torch

    device = "cuda" if torch.cuda.is_available() and arch != "tiny" else "cpu"
    model, processor, tiny_path = gpu_bench.build(arch, device)
    if tiny_path is not None:
        from transformers import AutoModelForImageTextToText

        shutil.copytree(tiny_path, model_dir)
        return AutoModelForImageTextToText.from_pretrained(model_dir)
    model.save_pretrained(model_dir)
    processor.save_pretrained(model_dir)
    model.generation_config.save_pretrained(model_dir)
    return model


def advisor_ids(count: int) -> list[str]:
    """The 5 shipped advisors, then copies of them under new ids (`ansel_5`, ...)."""
    from mondrian.advisors import shipped_advisors

    shipped = [a.id for a in shipped_advisors()]
    return [
        shipped[i] if i < len(shipped) else f"{shipped[i % len(shipped)]}_{i}" for i in range(count)
    ]


def serving_home(
    home: Path, model_dir: Path, adapter_root: Path, names: list[str]
) -> dict[str, str]:
    """A fresh home whose advisors each have one LoRA published and active; advisor ->
    its version's ref."""
    from mondrian.advisors import get_shipped, shipped_advisors
    from mondrian.config import load_settings
    from mondrian.storage.advisors import upsert_advisor
    from mondrian.storage.bootstrap import open_state
    from mondrian.training import registry

    shutil.rmtree(home, ignore_errors=True)
    settings = load_settings(home=home)
    shipped = {a.id for a in shipped_advisors()}
    refs = {}
    with open_state(settings) as db:
        for i, (advisor_id, name) in enumerate(zip(advisor_ids(len(names)), names, strict=True)):
            if advisor_id not in shipped:
                source = get_shipped(advisor_id.rsplit("_", 1)[0])
                db.write(upsert_advisor, source.model_copy(update={"id": advisor_id}))
            with registry.staged_version(settings, advisor_id) as staging:
                for path in (adapter_root / name).iterdir():
                    shutil.copy2(path, staging / path.name)
                adapter, _ = registry.publish(
                    db,
                    settings,
                    advisor_id,
                    staging,
                    str(model_dir),
                    {"bench": f"random LoRA {i} (bench/scale_setup.py)"},
                    activate=True,
                )
            refs[advisor_id] = adapter.ref
    return refs


# --- training data -------------------------------------------------------------------------


def target(index: int, text_chars: int) -> Any:
    """A short critique that differs per photo (scores, description, lists), every string
    within `text_chars`."""
    from mondrian.schema import DIMENSIONS, Critique

    def short(text: str) -> str:
        return text[:text_chars]

    scores = [(index * 3 + k * (index + 2)) % 11 for k in range(len(DIMENSIONS))]
    return Critique.model_validate(
        {
            "image_description": short(f"Bench photo {index}"),
            "dimensions": {
                key: {
                    "score": scores[k],
                    "comment": short(f"Fine {key.split('_')[0]}"),
                    "recommendation": short(f"Keep it {k}"),
                }
                for k, key in enumerate(DIMENSIONS)
            },
            "strengths": [short(f"tone {index}")],
            "improvements": [short(f"more {index}")],
        }
    )


def training_dataset(
    work: Path, images: int, photo_size: tuple[int, int], text_chars: int, val_fraction: float
) -> tuple[Path, dict[str, Any]]:
    """`images` bench photos as curated profiles of TRAIN_ADVISOR, built into a data set
    (rebuilt on every call: it is small); (its folder, its manifest)."""
    from mondrian.config import load_settings
    from mondrian.storage import images as image_store
    from mondrian.storage import profiles
    from mondrian.storage.bootstrap import open_state
    from mondrian.training.dataset import build_dataset

    home, out = work / "train-data-home", work / "train-dataset"
    shutil.rmtree(home, ignore_errors=True)
    settings = load_settings(home=home)
    width, height = photo_size
    with open_state(settings) as db:
        for i in range(images):
            buf = io.BytesIO()
            gpu_bench.photo(width, height, seed=i).save(buf, "JPEG", quality=90)
            image_hash = db.write(
                image_store.store_image,
                settings.images_dir,
                buf.getvalue(),
                "image/jpeg",
                width,
                height,
            )
            db.write(image_store.add_to_portfolio, TRAIN_ADVISOR, image_hash, f"photo {i}")
            db.write(
                profiles.upsert_profile,
                TRAIN_ADVISOR,
                image_hash,
                target(i, text_chars),
                "curated",
                None,
            )
        manifest = build_dataset(
            db, settings, TRAIN_ADVISOR, out, val_fraction=val_fraction, force=True
        )
    return out, manifest


def versions_in(home: Path, advisor_id: str) -> list[str]:
    """The refs registered for `advisor_id` in `home`."""
    from mondrian.config import load_settings
    from mondrian.storage.bootstrap import open_state
    from mondrian.training import registry

    with open_state(load_settings(home=home)) as db:
        return [v.ref for v in registry.list_versions(db, advisor_id)]
