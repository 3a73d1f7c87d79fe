"""The words Mondrian says to the model. Changing any of them changes PROMPT_VERSION, which
adapters and datasets record: a LoRA is trained against one exact prompt.

Version 2 adds the "Measured:" block (`measured_block`): the photo's facts from its pixels
and EXIF (src/mondrian/facts/), a few compact lines in every mode's critique prompt, so the
model (and a LoRA trained on the same prompts) can rest its judgement on them."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from mondrian.advisors.model import Advisor
from mondrian.schema import DIMENSIONS, Fact

PROMPT_VERSION = "2"

SYSTEM_PROMPT = (
    "You are a photography critic. You look carefully at the photograph you are given and "
    "judge it on eight dimensions, each scored from 0 (failed) to 10 (masterly). "
    "You answer with one JSON object and nothing else."
)

_JSON_SHAPE = (
    "Answer with a single JSON object with the keys image_description (what the photo shows), "
    "dimensions (an object with exactly these keys: "
    + ", ".join(DIMENSIONS)
    + "; each with score as an integer 0-10, comment and recommendation), strengths and "
    "improvements (short lists of sentences). Plain ASCII text, no Markdown."
)

PROFILE_INSTRUCTIONS = (
    "Describe and score this photograph objectively, as a neutral curator would, "
    "so that it can be compared with other photographs."
)


@dataclass
class Prompt:
    """One request to the model: text for the system and user turns, and the images."""

    system: str
    user: str
    images: list[Image.Image] = field(default_factory=list)

    def messages(self) -> list[dict[str, Any]]:
        """Chat messages in the transformers multimodal format, images before the text."""
        content: list[dict[str, Any]] = [{"type": "image"} for _ in self.images]
        content.append({"type": "text", "text": self.user})
        return [
            {"role": "system", "content": [{"type": "text", "text": self.system}]},
            {"role": "user", "content": content},
        ]


def critique_prompt(
    advisor: Advisor,
    image: Image.Image,
    context: str | None = None,
    *,
    facts: Sequence[Fact] = (),
) -> Prompt:
    """The advisor's critique of one photo; `context` carries RAG exemplars when present,
    `facts` the photo's measurements (the "Measured:" block; none, no block)."""
    parts = [advisor.voice_prompt.strip()]
    if context:
        parts.append(context.strip())
    measured = measured_block(facts)
    if measured:
        parts.append(measured)
    parts.append(_JSON_SHAPE)
    return Prompt(system=SYSTEM_PROMPT, user="\n\n".join(parts), images=[image])


def profile_prompt(image: Image.Image) -> Prompt:
    """The neutral 8-dimension profile used for indexing and for RAG's first pass."""
    return Prompt(
        system=SYSTEM_PROMPT, user=f"{PROFILE_INSTRUCTIONS}\n\n{_JSON_SHAPE}", images=[image]
    )


ZONE_NUMERALS = ("0", "I", "II", "III", "IV", "V", "VI", "VII", "VIII", "IX", "X")

# Kept short on purpose: every token here is prompt a small model must see past. On the
# tiny demo (tests/test_demo.py) the adapter's training-MAE reduction was 0.53 with a
# 683-character wordier block on chelsea.jpg, 0.58 with this 363-character one.
MEASURED_HEADER = "Measured (pixels and EXIF, no model):"


def measured_block(facts: Sequence[Fact]) -> str:
    """The facts as a few compact lines, one per family (exposure, zones, sharpness,
    geometry, colour, camera); a line whose facts are all absent is left out, and no facts
    give "" (no block). The zones line is there for every advisor: whether to speak in
    zones is the advisor's voice's choice (Ansel's does)."""
    by_name = {fact.name: fact.value for fact in facts}
    lines = [line for line in (build(by_name) for build in _LINES) if line]
    if not lines:
        return ""
    return "\n".join([MEASURED_HEADER, *lines])


Values = Mapping[str, float | str | list[float]]


def _join(label: str, items: list[str]) -> str:
    return f"{label}: " + ", ".join(items) if items else ""


def _num(value: object, spec: str) -> str | None:
    return format(value, spec) if isinstance(value, (int, float)) else None


def _exposure(v: Values) -> str:
    items = []
    tones = [_num(v.get(k), ".2f") for k in ("luminance_p05", "luminance_p50", "luminance_p95")]
    if all(tones):
        items.append("p5/p50/p95 " + "/".join(t for t in tones if t))
    for key, word in (("shadows_clipped", "shadows"), ("highlights_clipped", "highlights")):
        share = _num(v.get(key), ".1%")
        if share:
            items.append(f"{word} clipped {share}")
    return _join("Exposure", items)


def _zones(v: Values) -> str:
    zones, items = v.get("zones"), []
    if isinstance(zones, list) and len(zones) == len(ZONE_NUMERALS):
        items.append("% " + " ".join(f"{100 * share:.0f}" for share in zones))
    median = v.get("median_zone")
    if isinstance(median, (int, float)):
        items.append(f"median {median:.1f}")
    return _join("Zones 0-X", items)


def _sharpness(v: Values) -> str:
    items = []
    if (blur := _num(v.get("blur"), ".2f")) is not None:
        items.append(f"blur {blur}")
    if (subject := _num(v.get("subject_sharpness"), ".0f")) is not None:
        items.append(f"subject {subject}")
    if (noise := _num(v.get("noise"), ".1%")) is not None:
        items.append(f"noise {noise}")
    return _join("Sharpness", items)


def _geometry(v: Values) -> str:
    items = []
    if (tilt := _num(v.get("tilt"), "+.1f")) is not None:
        items.append(f"tilt {tilt} deg")
    position = v.get("subject_position")
    if isinstance(position, list) and len(position) == 2:
        items.append(f"subject at {position[0]:.2f},{position[1]:.2f}")
    thirds = _num(v.get("subject_thirds_distance"), ".2f")
    centre = _num(v.get("subject_centre_distance"), ".2f")
    if thirds is not None and centre is not None:
        items.append(f"to thirds {thirds}, to centre {centre}")
    if (aspect := _num(v.get("aspect_ratio"), ".2f")) is not None:
        items.append(f"aspect {aspect}")
    return _join("Geometry", items)


def _colour(v: Values) -> str:
    items = []
    if v.get("monochrome") == "yes":
        items.append("monochrome")
    if (m := _num(v.get("colourfulness"), ".0f")) is not None:
        items.append(f"colourfulness {m}")
    hues = v.get("dominant_hues")
    if isinstance(hues, list) and hues and v.get("monochrome") != "yes":
        items.append("hues " + " ".join(f"{h:.0f}" for h in hues))
    template, fit = v.get("harmony_template"), _num(v.get("harmony_fit"), ".0%")
    if isinstance(template, str) and template != "none" and fit is not None:
        items.append(f"harmony {template} fit {fit}")
    return _join("Colour", items)


_EXIF = (
    ("camera", "{}"),
    ("focal_length", "{} mm"),
    ("aperture", "f/{}"),
    ("shutter", "{} s"),
    ("iso", "ISO {}"),
    ("captured", "taken {}"),
)


def _camera(v: Values) -> str:
    items = [shape.format(_exif_text(v[key])) for key, shape in _EXIF if key in v]
    return _join("Camera", items)


def _exif_text(value: object) -> str:
    """EXIF as the facts hold it: a number printed without a trailing .0, text as is."""
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


_LINES: tuple[Callable[[Values], str], ...] = (
    _exposure,
    _zones,
    _sharpness,
    _geometry,
    _colour,
    _camera,
)
