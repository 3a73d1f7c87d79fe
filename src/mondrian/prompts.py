"""The words Mondrian says to the model. Changing any of them changes PROMPT_VERSION, which
adapters and datasets record: a LoRA is trained against one exact prompt."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from mondrian.advisors.model import Advisor
from mondrian.schema import DIMENSIONS

PROMPT_VERSION = "1"

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


def critique_prompt(advisor: Advisor, image: Image.Image, context: str | None = None) -> Prompt:
    """The advisor's critique of one photo; `context` carries RAG exemplars when present."""
    parts = [advisor.voice_prompt.strip()]
    if context:
        parts.append(context.strip())
    parts.append(_JSON_SHAPE)
    return Prompt(system=SYSTEM_PROMPT, user="\n\n".join(parts), images=[image])


def profile_prompt(image: Image.Image) -> Prompt:
    """The neutral 8-dimension profile used for indexing and for RAG's first pass."""
    return Prompt(
        system=SYSTEM_PROMPT, user=f"{PROFILE_INSTRUCTIONS}\n\n{_JSON_SHAPE}", images=[image]
    )
