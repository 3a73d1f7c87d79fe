"""Time of the measured photo facts (src/mondrian/facts/) for a 24 MP photo on the CPU, per
kind, and their share of one tiny-model critique's time. Not a timed test: figures go to
bench/NOTES.md ("Photo facts").

The 24 MP photo is a shipped one (coffee.jpg, 160 x 107) upscaled to 6000 x 4000 with
Lanczos and re-encoded as a JPEG (quality 92), then read by `read_image` as the CLI reads a
file (no working-copy reduction): its detail is smooth, which matters little to the times,
since every fact reads a copy of fixed size (facts/views.py).

    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python bench/facts_bench.py [--repeats 7]
        [--no-critique] [--examples]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from PIL import Image

SHIPPED = Path(__file__).resolve().parents[1] / "src/mondrian/data/sample_portfolio/coffee.jpg"


def photo_24mp():
    from mondrian.images import read_image

    big = Image.open(SHIPPED).convert("RGB").resize((6000, 4000), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    big.save(buf, "JPEG", quality=92)
    return read_image(buf.getvalue())


def timed(fn: Callable[[], object], repeats: int) -> list[float]:
    fn()  # warm-up: imports, OpenCV's first calls, the harmony masks' cache
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1e3)
    return times


def summary(label: str, times: list[float]) -> str:
    return (f"{label:<28} median {statistics.median(times):8.1f} ms  "
            f"min {min(times):8.1f}  max {max(times):8.1f}")  # fmt: skip


def per_kind(photo, repeats: int) -> dict[str, list[float]]:
    from mondrian.facts.colour import colour_facts
    from mondrian.facts.exposure import exposure_facts
    from mondrian.facts.geometry import geometry_facts
    from mondrian.facts.saliency import salient
    from mondrian.facts.sharpness import sharpness_facts
    from mondrian.facts.views import views_of

    views = views_of(photo.image)
    subject = salient(views.work)
    return {
        "copies (views_of)": timed(lambda: views_of(photo.image), repeats),
        "saliency": timed(lambda: salient(views.work), repeats),
        "exposure": timed(lambda: exposure_facts(views.sample), repeats),
        "sharpness": timed(lambda: sharpness_facts(views.work, views.crop, subject), repeats),
        "geometry": timed(
            lambda: geometry_facts(views.work, subject, photo.width, photo.height), repeats
        ),
        "colour": timed(lambda: colour_facts(views.sample), repeats),
    }


def critique_ms(repeats: int) -> list[float]:
    """One constrained critique on the default tiny checkpoint, as tests/conftest.py's
    `backend` fixture builds it (qwen2_5_vl, seed 0, tiny vocabulary, short strings)."""
    from mondrian.advisors import get_shipped
    from mondrian.backends.protocol import GenerationRequest
    from mondrian.backends.transformers.backend import TransformersBackend
    from mondrian.prompts import critique_prompt
    from mondrian.tiny.checkpoint import make_tiny

    with tempfile.TemporaryDirectory() as tmp:
        path = make_tiny(Path(tmp) / "tiny", "qwen2_5_vl", 0)
        backend = TransformersBackend(str(path), device="cpu", max_text_chars=24, max_list_items=2)
        image = Image.open(SHIPPED).convert("RGB")
        prompt = critique_prompt(get_shipped("ansel"), image)
        return timed(lambda: backend.generate([GenerationRequest(prompt=prompt)]), repeats)


def examples() -> None:
    """The facts of three shipped photos and their manipulated copies (issue 17's closing
    note), the copies made as tests/facts/test_facts_manipulations.py makes them."""
    from PIL import ImageEnhance, ImageFilter, ImageOps

    from mondrian.facts import measure
    from mondrian.images import read_image

    keys = ("sharpness", "blur", "highlights_clipped", "median_zone", "tilt",
            "subject_position", "colourfulness", "monochrome", "harmony_template")  # fmt: skip
    print("| photo | copy | " + " | ".join(keys) + " |\n|" + "---|" * (len(keys) + 2))
    for name in ("astronaut.jpg", "coffee.jpg", "chelsea.jpg"):
        image = Image.open(SHIPPED.with_name(name)).convert("RGB")
        copies = {
            "original": image,
            "blurred (sigma 2)": image.filter(ImageFilter.GaussianBlur(2)),
            "brightened x1.6": ImageEnhance.Brightness(image).enhance(1.6),
            "greyscale": ImageOps.grayscale(image).convert("RGB"),
        }
        for label, copy in copies.items():
            buf = io.BytesIO()
            copy.save(buf, "PNG")
            values = {f.name: f.value for f in measure(read_image(buf.getvalue()))}
            print(f"| {name} | {label} | " + " | ".join(str(values[k]) for k in keys) + " |")
    tilts()


def tilts() -> None:
    """Tilt before and after a 5-degree rotation, with the tests' own scenes and rotation
    (tests/facts/facts_scenes.py: rotated, then cropped clear of the empty corners)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "facts"))
    from facts_scenes import facts, horizon, rotated

    wall = Image.open(SHIPPED.with_name("brick.jpg")).convert("RGB")
    wall = wall.resize((wall.width * 4, wall.height * 4), Image.Resampling.LANCZOS)
    print("\n| scene | tilt | rotated +5 | rotated -5 |\n|---|---|---|---|")
    for label, scene in (("brick.jpg, upscaled 4x", wall), ("synthetic horizon", horizon(0))):
        row = [facts(scene)["tilt"], facts(rotated(scene, 5))["tilt"],
               facts(rotated(scene, -5))["tilt"]]  # fmt: skip
        print(f"| {label} | " + " | ".join(str(v) for v in row) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--no-critique", action="store_true", help="skip the tiny critique")
    parser.add_argument("--examples", action="store_true", help="print the example table only")
    args = parser.parse_args()
    if args.examples:
        examples()
        return

    from mondrian.facts import measure

    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}, "
          f"{os.cpu_count()} CPUs")  # fmt: skip
    photo = photo_24mp()
    print(f"photo {photo.width} x {photo.height} ({photo.width * photo.height / 1e6:.1f} MP)")
    total = timed(lambda: measure(photo), args.repeats)
    print(summary("measure() 24 MP", total))
    for label, times in per_kind(photo, args.repeats).items():
        print(summary(f"  {label}", times))
    working = photo_at(photo, 1_000_000)
    small = timed(lambda: measure(working), args.repeats)
    print(summary("measure() 1 MP working copy", small))
    if not args.no_critique:
        critique = critique_ms(max(3, args.repeats // 2))
        print(summary("one tiny critique", critique))
        share = statistics.median(total) / (statistics.median(total) + statistics.median(critique))
        print(f"facts' share of (facts + critique): {share:.1%}")


def photo_at(photo, pixels: int):
    """The photo as the service's working copy of `pixels` would be (images.fit_pixels)."""
    from mondrian.images import Photo, fit_pixels

    return Photo(fit_pixels(photo.image, pixels), photo.data, photo.mime, photo.sha256)


if __name__ == "__main__":
    main()
