"""What the backend tests share: varied random photos and critique requests over the
shipped advisors, and checks of a generated text against the schema the grammar enforced
and of generated token ids against the tokenizer's special and added tokens."""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np
from PIL import Image

from mondrian.advisors import shipped_advisors
from mondrian.backends.protocol import GenerationRequest
from mondrian.prompts import critique_prompt
from mondrian.schema import Critique, generation_schema


def random_photos(count: int, seed: int = 0) -> list[Image.Image]:
    """`count` noise photos of varied sizes (so batches pad), the same for a seed."""
    rng = np.random.default_rng(seed)
    return [
        Image.fromarray(rng.integers(0, 256, (48 + 8 * (i % 5), 64 + 4 * i, 3), dtype=np.uint8))
        for i in range(count)
    ]


def critique_requests(count: int, **kwargs: Any) -> list[GenerationRequest]:
    """One critique request per random photo, the shipped advisors in turn."""
    advisors = shipped_advisors()
    return [
        GenerationRequest(prompt=critique_prompt(advisors[i % len(advisors)], photo), **kwargs)
        for i, photo in enumerate(random_photos(count))
    ]


def schema_problems(value: Any, node: dict[str, Any], path: str = "$") -> list[str]:
    """Where `value` breaks `node`, for the subset of JSON Schema generation_schema() uses
    (objects, arrays, pattern strings, bounded integers); an empty list when it obeys."""
    kind = node["type"]
    if kind == "object":
        if not isinstance(value, dict):
            return [f"{path}: not an object"]
        problems = [f"{path}: missing {k}" for k in node.get("required", ()) if k not in value]
        if node.get("additionalProperties") is False:
            problems += [f"{path}: extra {k}" for k in value if k not in node["properties"]]
        for key, child in node["properties"].items():
            if key in value:
                problems += schema_problems(value[key], child, f"{path}.{key}")
        return problems
    if kind == "array":
        if not isinstance(value, list):
            return [f"{path}: not an array"]
        problems = []
        if not node.get("minItems", 0) <= len(value) <= node.get("maxItems", len(value)):
            problems.append(f"{path}: {len(value)} items")
        for index, item in enumerate(value):
            problems += schema_problems(item, node["items"], f"{path}[{index}]")
        return problems
    if kind == "string":
        ok = isinstance(value, str) and re.fullmatch(node["pattern"], value)
        return [] if ok else [f"{path}: {value!r} does not match {node['pattern']}"]
    if kind == "integer":
        ok = type(value) is int and node["minimum"] <= value <= node["maximum"]
        return [] if ok else [f"{path}: {value!r} out of range"]
    raise AssertionError(f"schema type {kind} is not checked here")


def _as_written(critique: Critique) -> dict[str, Any]:
    """The fields the model writes (not the ones Mondrian computes afterwards)."""
    data = critique.model_dump(exclude={"overall_score", "overall_grade"})
    for dim in data["dimensions"].values():
        dim.pop("expected_score")
    return data


def assert_text_is_the_critique(
    text: str, critique: Critique | None, max_text_chars: int | None, max_list_items: int | None
) -> None:
    """`text` is strict JSON within the grammar's schema, and it says what the returned
    critique says."""
    assert critique is not None, text
    data = json.loads(text)
    problems = schema_problems(data, generation_schema(max_text_chars, max_list_items))
    assert not problems, problems
    assert _as_written(Critique.model_validate(data)) == _as_written(critique)


def assert_plain_tokens_then_a_stop(tokenizer: Any, stop_token_ids: Any, ids: list[int]) -> None:
    """The answer's ids are ordinary vocabulary, below every special and added token (and
    the unused embedding rows above those, which decode to nothing), and an end-of-turn
    token ends it. Decoded text cannot show this: decoding skips special tokens."""
    first_added = min(tokenizer.added_tokens_decoder)
    stop = next((i for i, t in enumerate(ids) if t in stop_token_ids), None)
    assert stop is not None, "no end-of-turn token"
    assert stop > 0 and max(ids[:stop]) < first_added, ids[:stop]
