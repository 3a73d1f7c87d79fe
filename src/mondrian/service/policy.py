"""Model policy: which variant serves a job.

The policy gates adapter use:
- `base`: every job is served by the base model (a `lora` request falls back, lora -> rag
  -> baseline, because strategies refuse adapters for the `base` variant);
- `fine_tuned`: every job is served in the mode asked, `lora` with the advisor's active
  adapter;
- `ab_test`: each job is `fine_tuned` with probability `split`, else `base`.

The A/B assignment is a hash of the job id, not a random draw: the same job always gets
the same variant (a re-run after a restart stays in its arm, tests are deterministic),
and the split holds over many jobs because job ids are random.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from mondrian.errors import InvalidInput, parse_choice
from mondrian.modes import Policy, Variant


def assignment_point(job_id: str) -> float:
    """A number in [0, 1) fixed by the job id: the first 8 bytes of its SHA-256."""
    digest = hashlib.sha256(job_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass(frozen=True)
class ModelPolicy:
    name: Policy = Policy.FINE_TUNED
    ab_split: float = 0.5

    def __post_init__(self) -> None:
        # A name given as a plain string (the environment, a caller) becomes the member.
        name = parse_choice(Policy, self.name, "model policy", code="unknown_policy")
        object.__setattr__(self, "name", name)
        if not 0.0 <= self.ab_split <= 1.0:
            raise InvalidInput(f"the A/B split must be within 0..1, got {self.ab_split}")

    def variant_for(self, job_id: str) -> Variant:
        """`base` or `fine_tuned` for this job."""
        if self.name == Policy.BASE:
            return Variant.BASE
        if self.name == Policy.FINE_TUNED:
            return Variant.FINE_TUNED
        return Variant.FINE_TUNED if assignment_point(job_id) < self.ab_split else Variant.BASE

    def describe(self) -> dict[str, object]:
        out: dict[str, object] = {"name": self.name}
        if self.name == Policy.AB_TEST:
            out["ab_split"] = self.ab_split
        return out
