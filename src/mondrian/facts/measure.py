"""`measure(photo)`: every fact of docs/facts.md, in FACTS order (facts/spec.py), from the
pixels and EXIF of a photo `mondrian.images.read_image` has already checked, so a bad file
is refused there with its usual error before anything here runs."""

from __future__ import annotations

from mondrian.facts.colour import colour_facts
from mondrian.facts.exif import exif_facts
from mondrian.facts.exposure import exposure_facts
from mondrian.facts.geometry import geometry_facts
from mondrian.facts.saliency import salient
from mondrian.facts.sharpness import sharpness_facts
from mondrian.facts.spec import FACTS
from mondrian.facts.views import views_of
from mondrian.images import Photo
from mondrian.schema import Fact

# Changes whenever a fact's definition does (like prompts.PROMPT_VERSION): prompts, data
# sets and adapters that carry facts record it.
FACTS_VERSION = "1"


def measure(photo: Photo) -> list[Fact]:
    views = views_of(photo.image)
    subject = salient(views.work)
    values = {
        **exposure_facts(views.sample),
        **sharpness_facts(views.work, views.crop, subject),
        **geometry_facts(views.work, subject, photo.width, photo.height),
        **colour_facts(views.sample),
        **exif_facts(photo.exif),
    }
    return [
        Fact(name=spec.name, value=values[spec.name], unit=spec.unit, meaning=spec.meaning)
        for spec in FACTS
        if spec.name in values
    ]
