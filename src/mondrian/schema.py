"""The critique: the one schema that generation, training data and the HTTP API share.

`Critique` is the source of truth. `generation_schema()` derives from it the JSON schema
that constrained decoding follows: the same keys in the same order, minus the fields that
Mondrian computes itself (`expected_score`, `overall_score`, `overall_grade`), with every
string bounded in length and restricted to printable ASCII so that a weak or random model
cannot fill the token budget with whitespace or control characters (docs/generation.md).
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

SCHEMA_VERSION = "1"

DIMENSIONS: tuple[str, ...] = (
    "composition",
    "lighting",
    "focus_sharpness",
    "color_harmony",
    "subject_isolation",
    "depth_perspective",
    "visual_balance",
    "emotional_impact",
)

# How people read the keys (reports, CLI).
DIMENSION_LABELS: dict[str, str] = {
    "composition": "Composition",
    "lighting": "Lighting",
    "focus_sharpness": "Focus & sharpness",
    "color_harmony": "Color harmony",
    "subject_isolation": "Subject isolation",
    "depth_perspective": "Depth & perspective",
    "visual_balance": "Visual balance",
    "emotional_impact": "Emotional impact",
}

MAX_DESCRIPTION_CHARS = 400
MAX_COMMENT_CHARS = 300
MAX_LIST_ITEMS = 5
MAX_LIST_ITEM_CHARS = 200

# Anything but control characters; generation narrows this further (see generation_schema).
_NO_CONTROL = r"^[^\x00-\x1f\x7f]*$"


def _text(max_chars: int) -> Any:
    return Annotated[
        str,
        StringConstraints(
            strip_whitespace=True, min_length=1, max_length=max_chars, pattern=_NO_CONTROL
        ),
    ]


Description = _text(MAX_DESCRIPTION_CHARS)
Comment = _text(MAX_COMMENT_CHARS)
ListItem = _text(MAX_LIST_ITEM_CHARS)

# Fields Mondrian fills in after generation; the model never writes them.
_COMPUTED = {"computed": True}


class DimensionScore(BaseModel):
    model_config = ConfigDict(extra="forbid")

    score: int = Field(ge=0, le=10, description="The score the model wrote, 0 to 10.")
    expected_score: float | None = Field(
        default=None,
        ge=0,
        le=10,
        description="Probability-weighted score over the score tokens (Q-Align style).",
        json_schema_extra=_COMPUTED,
    )
    # Added after schema version 1 shipped, with a default: results stored before it read
    # as before (None), and the model never writes it (computed fields leave the grammar).
    expected_score_unavailable: str | None = Field(
        default=None,
        description="Why `expected_score` is null where the backend could not compute it "
        "(the vllm backend: a digit missing from the server's top logprobs); null otherwise.",
        json_schema_extra=_COMPUTED,
    )
    comment: Comment = Field(description="What the advisor sees in this dimension.")
    recommendation: Comment = Field(description="One concrete thing to do differently.")


class Dimensions(BaseModel):
    """The eight dimensions, as explicit fields so the keys and their order are fixed."""

    model_config = ConfigDict(extra="forbid")

    composition: DimensionScore
    lighting: DimensionScore
    focus_sharpness: DimensionScore
    color_harmony: DimensionScore
    subject_isolation: DimensionScore
    depth_perspective: DimensionScore
    visual_balance: DimensionScore
    emotional_impact: DimensionScore

    def items(self) -> list[tuple[str, DimensionScore]]:
        return [(key, getattr(self, key)) for key in DIMENSIONS]

    def scores(self) -> dict[str, int]:
        return {key: dim.score for key, dim in self.items()}


class Critique(BaseModel):
    model_config = ConfigDict(extra="forbid")

    image_description: Description = Field(description="What the photograph shows.")
    dimensions: Dimensions
    overall_score: float | None = Field(
        default=None,
        ge=0,
        le=10,
        description="Weighted mean of the dimension scores; computed, never trusted.",
        json_schema_extra=_COMPUTED,
    )
    overall_grade: str | None = Field(
        default=None, description="Letter grade from GRADE_TABLE.", json_schema_extra=_COMPUTED
    )
    strengths: list[ListItem] = Field(default_factory=list, max_length=MAX_LIST_ITEMS)
    improvements: list[ListItem] = Field(default_factory=list, max_length=MAX_LIST_ITEMS)

    def scored(self, weights: Mapping[str, float] | None = None) -> Critique:
        """A copy with overall score and grade computed from the dimension scores."""
        overall = overall_score(self.dimensions.scores(), weights)
        return self.model_copy(
            update={"overall_score": overall, "overall_grade": grade_for(overall)}
        )


# Lower bound of each grade, highest first; a score gets the first grade it reaches.
GRADE_TABLE: tuple[tuple[float, str], ...] = (
    (9.0, "A+"),
    (8.5, "A"),
    (8.0, "A-"),
    (7.5, "B+"),
    (7.0, "B"),
    (6.5, "B-"),
    (6.0, "C+"),
    (5.5, "C"),
    (5.0, "C-"),
    (4.0, "D"),
    (0.0, "F"),
)


def grade_for(score: float) -> str:
    for lower, grade in GRADE_TABLE:
        if score >= lower:
            return grade
    raise ValueError(f"score {score} is below 0")


def overall_score(scores: Mapping[str, float], weights: Mapping[str, float] | None) -> float:
    """Weighted mean of the eight dimension scores, rounded to two decimals.

    Missing weights count as 1; weights need not sum to 1.
    """
    if set(scores) != set(DIMENSIONS):
        raise ValueError(f"scores must cover exactly {DIMENSIONS}")
    w = {key: float((weights or {}).get(key, 1.0)) for key in DIMENSIONS}
    if any(v < 0 for v in w.values()) or sum(w.values()) <= 0:
        raise ValueError("weights must be non-negative and not all zero")
    total = sum(w[key] * scores[key] for key in DIMENSIONS) / sum(w.values())
    return round(total, 2)


# --- the schema constrained decoding follows -------------------------------------------

# Printable ASCII without '"' and '\': nothing that needs escaping, no control characters;
# non-ASCII classes let invalid UTF-8 byte sequences through the grammar. Without '<' too:
# every special token's text starts with it (Qwen's `<|vision_pad|>`, `<|im_end|>`, and
# `<tool_call>`-style added tokens), so no grammar engine can take a special token for
# string text (vLLM's xgrammar would, and then strip it from the returned text).
GENERATION_CHAR_CLASS = r"[ !#-;=-\[\]-~]"
# xgrammar fails to compile a bounded repetition over 128, so longer bounds are spelled as
# alternatives: 1..128 characters, or exactly 128 then 1..128 more, and so on. Chaining
# optional runs instead ("{0,128}{0,128}...") is ambiguous: the matcher then tracks every
# split of the string, which measured 50x slower per token and 6x slower to compile.
_MAX_REPEAT = 128


def bounded_text_pattern(max_chars: int, min_chars: int = 1) -> str:
    """A regex for 'min..max printable characters' that xgrammar compiles and matches fast."""
    if not 0 < min_chars <= max_chars:
        raise ValueError("need 0 < min_chars <= max_chars")
    if min_chars > _MAX_REPEAT:
        raise ValueError(f"min_chars over {_MAX_REPEAT} is not supported")
    alternatives, full_runs, rest = [], 0, max_chars
    while rest > 0:
        chunk = min(rest, _MAX_REPEAT)
        low = min_chars if full_runs == 0 else 1
        prefix = f"{GENERATION_CHAR_CLASS}{{{_MAX_REPEAT}}}" * full_runs
        alternatives.append(f"{prefix}{GENERATION_CHAR_CLASS}{{{low},{chunk}}}")
        full_runs += 1
        rest -= chunk
    if len(alternatives) == 1:
        return f"^{alternatives[0]}$"
    return "^(?:" + "|".join(alternatives) + ")$"


def generation_schema(max_text_chars: int | None = None, max_list_items: int | None = None) -> dict:
    """The JSON schema a model's output is constrained to.

    Derived from `Critique.model_json_schema()`: computed fields are dropped, every
    property is required and nothing else is allowed, strings get a bounded ASCII
    pattern. `max_text_chars` and `max_list_items` can only tighten the model's bounds
    (a short budget keeps tiny-model tests fast); they never loosen them.
    """
    schema = copy.deepcopy(Critique.model_json_schema())
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return resolve(defs[node["$ref"].rsplit("/", 1)[-1]])
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    def narrow(node: dict) -> dict:
        kind = node.get("type")
        if kind == "object":
            props = {k: narrow(v) for k, v in node["properties"].items() if not v.get("computed")}
            return {
                "type": "object",
                "properties": props,
                "required": list(props),
                "additionalProperties": False,
            }
        if kind == "array":
            limit = node.get("maxItems", MAX_LIST_ITEMS)
            if max_list_items is not None:
                limit = min(limit, max_list_items)
            return {
                "type": "array",
                "items": narrow(node["items"]),
                "minItems": 0,
                "maxItems": limit,
            }
        if kind == "string":
            limit = node["maxLength"]
            if max_text_chars is not None:
                limit = min(limit, max_text_chars)
            return {"type": "string", "pattern": bounded_text_pattern(limit)}
        if kind == "integer":
            return {"type": "integer", "minimum": node["minimum"], "maximum": node["maximum"]}
        raise ValueError(f"no generation rule for schema node {node}")

    return narrow(resolve(schema))


def example_critique(score: int = 7) -> Critique:
    """A small valid critique: documentation, report previews and tests use it."""
    dim = {
        "score": score,
        "comment": "Clear structure with a strong diagonal.",
        "recommendation": "Step left to free the horizon from the tree.",
    }
    return Critique.model_validate(
        {
            "image_description": "A lone pine on a granite ridge under a darkening sky.",
            "dimensions": {key: dim for key in DIMENSIONS},
            "strengths": ["Tonal separation between rock and sky."],
            "improvements": ["Give the tree more room at the top of the frame."],
        }
    )


# --- an analysis: the critique and how it was produced ---------------------------------


class ModelInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base: str = Field(description="Hub id or path of the base model.")
    adapter: str | None = Field(default=None, description="Adapter version, e.g. 'ansel@v3'.")
    variant: str = Field(default="base", description="'base' or 'fine_tuned' (A/B policy).")
    backend: str | None = Field(default=None, description="Backend that ran the model.")
    engine: str | None = Field(
        default=None,
        description="Path that ran it: 'fast' (CUDA engine), 'stock' (generate), 'mlx' or 'vllm'.",
    )


class Reference(BaseModel):
    """A portfolio image that RAG retrieved and put in the prompt."""

    model_config = ConfigDict(extra="forbid")

    image_hash: str
    similarity: float
    scores: dict[str, int] = Field(default_factory=dict)
    title: str | None = None


class Fact(BaseModel):
    """One measurement of the photo from its pixels or EXIF, no model weights
    (src/mondrian/facts/): what the prompt's "measured" block, the result and the reports
    show beside the critique."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Stable id, e.g. `highlights_clipped`.")
    value: float | str | list[float] = Field(description="The measured value, in `unit`.")
    unit: str = Field(description="e.g. `share`, `degrees`, `zone`, `px`; '' when none.")
    meaning: str = Field(description="One line a photographer reads.")


class Check(BaseModel):
    """A contradiction between the critique and a measurement (a rule in facts/checks.py).
    Checks never change the model's scores; they inform the reader."""

    model_config = ConfigDict(extra="forbid")

    rule: str = Field(description="The rule's id, e.g. `sharp_score_blurred_subject`.")
    dimension: str | None = Field(default=None, description="The dimension it questions.")
    facts: list[str] = Field(default_factory=list, description="The facts it rests on.")
    message: str = Field(description="What contradicts what, in one sentence.")


class AnalysisResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    job_id: str | None = None
    advisor_id: str
    mode_requested: str
    mode_used: str
    model: ModelInfo
    critique: Critique
    references: list[Reference] = Field(default_factory=list)
    facts: list[Fact] = Field(default_factory=list)
    checks: list[Check] = Field(default_factory=list)
    timings: dict[str, float] = Field(default_factory=dict)


def longest_answer(max_text_chars: int | None = None, max_list_items: int | None = None) -> str:
    """The longest JSON text `generation_schema(...)` admits, in its compact form.

    Every token is at least one character, so its length bounds the tokens a constrained
    answer can take: a `max_new_tokens` of len + 1 (the end-of-turn token) always finishes.
    """
    schema = generation_schema(max_text_chars, max_list_items)

    def fill(node: dict) -> Any:
        kind = node["type"]
        if kind == "object":
            return {k: fill(v) for k, v in node["properties"].items()}
        if kind == "array":
            return [fill(node["items"]) for _ in range(node["maxItems"])]
        if kind == "string":
            return "x" * _pattern_limit(node["pattern"])
        return node["maximum"]

    return json.dumps(fill(schema), separators=(",", ":"))


def _pattern_limit(pattern: str) -> int:
    """The most characters a `bounded_text_pattern` admits: its longest alternative."""
    body = pattern.removeprefix("^").removesuffix("$")
    body = body.removeprefix("(?:").removesuffix(")") if body.startswith("(?:") else body
    return max(
        sum(int(high or low) for low, high in re.findall(r"\{(\d+)(?:,(\d+))?\}", alternative))
        for alternative in body.split("|")
    )
