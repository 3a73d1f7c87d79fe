"""Which critique each image of an advisor's data set teaches, and on which side it sits.

Targets come from the advisor's profiles (`curated` and `model` sources) and, on request,
from reviewed jobs (a person's corrected critique of a past analysis). Each target must be
a valid `Critique` AND fit the generation bounds (printable ASCII without '"' or '\\',
bounded lengths, at most N list items): the constrained model can only ever write such
text, so a target outside them teaches an answer the grammar forbids (`check_target`).

The target text is exactly what the constrained model writes: compact JSON of the
generated fields, keys in schema order (`target_text`). One target per image
(`choose_targets`), and the split is by image (`split_images`), so an image and every
augmentation of it sit on one side only. dataset.py builds the data set from these.
"""

from __future__ import annotations

import json
import random
import re
import sqlite3
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from mondrian.errors import InvalidInput, validation_problems
from mondrian.schema import GENERATION_CHAR_CLASS, Critique, generation_schema
from mondrian.storage import reviews as review_store

SOURCES = ("curated", "model", "review")

# --- targets -----------------------------------------------------------------------------


def target_payload(critique: Critique) -> dict[str, Any]:
    """The generated fields of a critique, keys in the order the grammar writes them."""
    data = critique.model_dump(mode="json")

    def pick(node: dict[str, Any], value: Any) -> Any:
        if node["type"] == "object":
            return {key: pick(sub, value[key]) for key, sub in node["properties"].items()}
        if node["type"] == "array":
            return [pick(node["items"], item) for item in value]
        return value

    return pick(generation_schema(), data)


def target_text(critique: Critique) -> str:
    """The exact text the constrained model writes for this critique."""
    return json.dumps(target_payload(critique), separators=(",", ":"), ensure_ascii=False)


def check_target(
    critique: Critique, max_text_chars: int | None = None, max_list_items: int | None = None
) -> list[str]:
    """Why the constrained model could not write this critique; empty when it could."""
    schema = generation_schema(max_text_chars, max_list_items)
    reasons: list[str] = []

    def walk(node: dict[str, Any], value: Any, where: str) -> None:
        kind = node["type"]
        if kind == "object":
            for key, sub in node["properties"].items():
                walk(sub, value[key], f"{where}.{key}" if where else key)
        elif kind == "array":
            if len(value) > node["maxItems"]:
                reasons.append(f"{where}: {len(value)} items, at most {node['maxItems']}")
            for i, item in enumerate(value):
                walk(node["items"], item, f"{where}[{i}]")
        elif kind == "string":
            if not re.fullmatch(node["pattern"], value):
                reasons.append(f"{where}: {_string_problem(value, node['pattern'])}")
        elif kind == "integer" and not node["minimum"] <= value <= node["maximum"]:
            reasons.append(f"{where}: {value} outside {node['minimum']}..{node['maximum']}")

    walk(schema, target_payload(critique), "")
    return reasons


def _string_problem(value: str, pattern: str) -> str:
    bad = sorted({c for c in value if not re.fullmatch(GENERATION_CHAR_CLASS, c)})
    if bad:
        return "characters the grammar cannot write: " + ", ".join(repr(c) for c in bad)
    limit = sum(int(b or a) for a, b in re.findall(r"\{(\d+)(?:,(\d+))?\}", pattern))
    return f"{len(value)} characters, at most {limit}"


# --- candidates --------------------------------------------------------------------------


@dataclass
class Candidate:
    image_hash: str
    source: str  # curated | model | review
    critique: Critique | None
    origin: str  # where it came from, for reports: 'profile' or 'review <id> of job <id>'
    created_at: str
    reasons: list[str] = field(default_factory=list)


def _candidate(row: sqlite3.Row, source: str, origin: str, created_at: str) -> Candidate:
    """A stored critique as a candidate, validated here: a bad one keeps its reasons."""
    try:
        critique, reasons = Critique.model_validate_json(row["critique"]), []
    except ValidationError as exc:
        critique, reasons = None, validation_problems(exc, root="critique")
    return Candidate(row["image_hash"], source, critique, origin, created_at, reasons)


def collect_candidates(
    conn: sqlite3.Connection, advisor_id: str, include_reviews: bool
) -> list[Candidate]:
    """Every target the advisor has, valid or not, oldest first.

    The rows are read as stored and validated here (not through `list_profiles`, which
    raises on the first bad row): a target the current schema rejects is reported, and
    the rest of the data set is still built.
    """
    profiles = conn.execute(
        "SELECT image_hash, critique, source, updated_at FROM profiles "
        "WHERE advisor_id = ? ORDER BY created_at, image_hash",
        (advisor_id,),
    ).fetchall()
    found = [_candidate(row, row["source"], "profile", row["updated_at"]) for row in profiles]
    if include_reviews:
        reviews = review_store.training_rows(conn, advisor_id)  # accepted ones only
        found += [
            _candidate(
                row, "review", f"review {row['id']} of job {row['job_id']}", row["created_at"]
            )
            for row in reviews
        ]
    return found


def choose_targets(candidates: list[Candidate]) -> tuple[list[Candidate], list[Candidate]]:
    """One target per image: (chosen, superseded).

    Two different answers to the same input teach the model their average. A person's
    review of an image outranks its profile (it is a correction), and the newest review
    wins among reviews. Only valid candidates compete; invalid ones are reported apart.
    """
    rank = {"review": 2, "curated": 1, "model": 0}
    best: dict[str, Candidate] = {}
    superseded: list[Candidate] = []
    for cand in candidates:
        current = best.get(cand.image_hash)
        if current is None:
            best[cand.image_hash] = cand
            continue
        newer = (rank[cand.source], cand.created_at) >= (rank[current.source], current.created_at)
        if newer:
            superseded.append(current)
            best[cand.image_hash] = cand
        else:
            superseded.append(cand)
    return list(best.values()), superseded


def split_images(hashes: list[str], val_fraction: float, seed: int) -> tuple[set[str], set[str]]:
    """(train, val) image hashes: seeded, independent of input order.

    With two images or more and a positive fraction, each side gets at least one image.
    """
    if not 0 <= val_fraction < 1:
        raise InvalidInput(f"--val-fraction must be in [0, 1), got {val_fraction}")
    ordered = sorted(set(hashes))
    random.Random(f"mondrian-split:{seed}").shuffle(ordered)
    n = len(ordered)
    n_val = round(n * val_fraction)
    if val_fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    elif n < 2:
        n_val = 0
    return set(ordered[n_val:]), set(ordered[:n_val])
