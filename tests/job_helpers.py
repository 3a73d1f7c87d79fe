"""Finished jobs written straight into the state (no model): history and export tests."""

from __future__ import annotations

import io

from PIL import Image

from mondrian.schema import AnalysisResult, Check, Fact, ModelInfo, example_critique
from mondrian.storage import advisors, images, jobs
from mondrian.storage.jobs import Job


def photo_jpeg(color=(180, 120, 60), size=(96, 72)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "JPEG")
    return buf.getvalue()


def done_job(
    db,
    settings,
    advisor_id: str = "ansel",
    photo_name: str = "chelsea.jpg",
    score: int = 7,
    exif: dict | None = None,
    critique=None,
    facts: list[Fact] | None = None,
    checks: list[Check] | None = None,
) -> Job:
    """A stored photo and a done job on it, its critique `example_critique(score)`, with
    the `facts` and `checks` given (none by default)."""
    data = photo_jpeg((score * 20, 100, 60))
    with db.read() as conn:
        advisor = advisors.require_advisor(conn, advisor_id)
    image_hash = db.write(images.store_image, settings.images_dir, data, "image/jpeg", 96, 72)
    job = db.write(
        jobs.create_job, advisor_id, image_hash, "baseline", "tiny-model",
        photo_name=photo_name, exif=exif,
    )  # fmt: skip
    db.write(jobs.start_job, job.id)
    result = AnalysisResult(
        advisor_id=advisor_id,
        mode_requested="baseline",
        mode_used="baseline",
        model=ModelInfo(base="tiny-model", backend="transformers"),
        critique=(critique or example_critique(score)).scored(advisor.weights),
        facts=facts or [],
        checks=checks or [],
    )
    return db.write(jobs.finish_job, job.id, result)
