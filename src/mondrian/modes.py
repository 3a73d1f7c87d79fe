"""The names users choose between: analysis modes, serving policies, and the variant a
policy assigns. Each is one `StrEnum`; the edges (CLI flags, HTTP fields, settings) turn a
user's string into a member with `errors.parse_choice`, and code past them compares
members. A member is a `str`, so it reads, prints and serialises as its value.

No imports: layer 0, below the settings (config.py) that name a default mode.
"""

from __future__ import annotations

from enum import StrEnum


class Mode(StrEnum):
    """How a critique is made (docs/modes.md where present; strategies/ implements them)."""

    BASELINE = "baseline"  # the advisor's prompt alone
    RAG = "rag"  # plus the advisor's most similar portfolio images
    LORA = "lora"  # with the advisor's active adapter


class Policy(StrEnum):
    """Which variant serves a job (service/policy.py)."""

    BASE = "base"  # never an adapter
    FINE_TUNED = "fine_tuned"  # the mode asked, `lora` with the active adapter
    AB_TEST = "ab_test"  # fine_tuned for a share of jobs, base for the rest


class Variant(StrEnum):
    """The arm a job was served in, recorded with it (storage/jobs.py, the A/B report)."""

    BASE = "base"
    FINE_TUNED = "fine_tuned"


# A request that names a mode is served by it or, when it cannot serve, by each later one
# in this order (strategies/registry.py's Fallback; preflight.py says so before a load).
FALLBACK_ORDER: tuple[Mode, ...] = (Mode.LORA, Mode.RAG, Mode.BASELINE)

# The names as plain strings, for argparse `choices` (its messages show their repr).
MODES: tuple[str, ...] = tuple(m.value for m in Mode)
POLICIES: tuple[str, ...] = tuple(p.value for p in Policy)
