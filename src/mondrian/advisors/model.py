"""An advisor is data: who they are, how they speak, what they weigh."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from mondrian.schema import DIMENSIONS

ADVISOR_ID_PATTERN = r"^[a-z0-9_-]{1,64}$"

AdvisorId = Annotated[str, StringConstraints(pattern=ADVISOR_ID_PATTERN)]
ShortText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
LongText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=4000)]


class Advisor(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: AdvisorId = Field(description="Stable identifier, e.g. 'ansel'.")
    name: ShortText = Field(description="Display name.")
    years: ShortText = Field(description="Life span, e.g. '1902-1984'.")
    bio: LongText = Field(description="Short, accurate biography.")
    sources: list[ShortText] = Field(min_length=1, description="Where the bio's facts come from.")
    philosophy: LongText = Field(description="What the photographer believed about the craft.")
    techniques: list[ShortText] = Field(min_length=1, description="Signature techniques.")
    voice_prompt: LongText = Field(description="The prompt that gives the critique its voice.")
    weights: dict[str, float] = Field(description="Per-dimension weight of the overall score.")
    allows_flip: bool = Field(
        default=True,
        description="Whether a mirrored photo is still the same picture for this advisor "
        "(training augmentation).",
    )

    @field_validator("weights")
    @classmethod
    def _weights_cover_dimensions(cls, weights: dict[str, float]) -> dict[str, float]:
        missing = [k for k in DIMENSIONS if k not in weights]
        unknown = [k for k in weights if k not in DIMENSIONS]
        if missing or unknown:
            raise ValueError(
                f"weights must name exactly the 8 dimensions; missing {missing}, unknown {unknown}"
            )
        if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
            raise ValueError("weights must be non-negative and not all zero")
        return {k: float(weights[k]) for k in DIMENSIONS}
