"""Helpers for the training tests: photos and short critiques an advisor's portfolio is
made of, sized so that a tiny model with max_text_chars=24 can write every target."""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image

from mondrian.config import Settings
from mondrian.schema import DIMENSIONS, Critique
from mondrian.storage import Database, profiles
from mondrian.storage import images as image_store

ADVISOR = "ansel"
TEXT_CHARS = 24
LIST_ITEMS = 2
COLORS = ((200, 40, 40), (40, 180, 60), (40, 60, 200), (220, 200, 40), (150, 40, 170))
PHOTO_SIZE = (112, 112)
NAMES = ("red", "green", "blue", "yellow", "purple")


def photo_bytes(index: int, size: tuple[int, int] = PHOTO_SIZE) -> bytes:
    """A distinct, seeded photo per index: a colour field with texture."""
    rng = np.random.default_rng(index)
    base = np.array(COLORS[index % len(COLORS)], dtype=np.int16)
    noise = rng.integers(-30, 30, (size[1], size[0], 3))
    pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def short_critique(index: int) -> Critique:
    """A target within 24 characters per string and 2 items per list. The description,
    scores and lists differ between indices (a model that ignores the image cannot fit
    them all); comments are shared, which keeps the answer short to learn."""
    name = NAMES[index % len(NAMES)]
    scores = [(index * 3 + k * (index + 2)) % 11 for k in range(len(DIMENSIONS))]
    return Critique.model_validate(
        {
            "image_description": f"A {name} field",
            "dimensions": {
                key: {
                    "score": scores[k],
                    "comment": f"Fine {key.split('_')[0]}",
                    "recommendation": f"Keep it {k}",
                }
                for k, key in enumerate(DIMENSIONS)
            },
            "strengths": [f"{name} tone"],
            "improvements": [f"more {name}"],
        }
    )


def add_profile(
    db: Database,
    settings: Settings,
    index: int,
    critique: Critique | None = None,
    source: str = "curated",
    advisor_id: str = ADVISOR,
) -> str:
    data = photo_bytes(index)
    image_hash = db.write(
        image_store.store_image, settings.images_dir, data, "image/png", *PHOTO_SIZE
    )
    db.write(image_store.add_to_portfolio, advisor_id, image_hash, f"photo {index}")
    db.write(
        profiles.upsert_profile,
        advisor_id,
        image_hash,
        critique or short_critique(index),
        source,
        None,
    )
    return image_hash


def add_short_advisor(db: Database, advisor_id: str = "tester") -> str:
    """An advisor whose voice prompt is one line: the prompt is a third as long as a
    shipped advisor's, which makes tiny-model training steps that much cheaper."""
    from mondrian.advisors import get_shipped
    from mondrian.storage.advisors import upsert_advisor

    advisor = get_shipped("ansel").model_copy(
        update={"id": advisor_id, "name": "Tester", "voice_prompt": "You are a terse critic."}
    )
    db.write(upsert_advisor, advisor)
    return advisor_id


def make_peft_adapter(base_dir, out_dir, seed: int = 0, rank: int = 4, meta: bool = True):
    """A LoRA for the tiny model with random A and B (so it changes the answers), saved
    the way a training run saves one; returns its directory."""
    import json as _json

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    from mondrian.backends.decoding.fingerprint import model_fingerprint
    from mondrian.training.config import LM_TARGET_REGEX

    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_pretrained(base_dir)
    fingerprint = model_fingerprint(model)
    config = LoraConfig(
        r=rank, lora_alpha=2 * rank, target_modules=LM_TARGET_REGEX, init_lora_weights=False
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # PEFT asks a deprecated attribute
        peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.5)
    peft_model.save_pretrained(out_dir)
    if meta:
        (out_dir / "mondrian_adapter.json").write_text(
            _json.dumps({"base_model": str(base_dir), "base_fingerprint": fingerprint})
        )
    return out_dir


def fake_adapter(out_dir):
    """A small but well-formed PEFT LoRA directory (no model needed): for registry tests."""
    import json as _json

    from safetensors.numpy import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "adapter_config.json").write_text(
        _json.dumps({"peft_type": "LORA", "r": 2, "lora_alpha": 4})
    )
    key = "base_model.model.model.language_model.layers.0.self_attn.q_proj.lora_{}.weight"
    save_file(
        {
            key.format("A"): np.zeros((2, 8), dtype=np.float32),
            key.format("B"): np.zeros((8, 2), dtype=np.float32),
        },
        str(out_dir / "adapter_model.safetensors"),
    )
    return out_dir
