"""Checks: where a critique contradicts a measurement of its photo.

A rule is data (`Rule`): the dimension it questions, the score from which the critique
claims the dimension is good, the facts it reads with their thresholds, and the sentence it
says. `run_checks` applies every rule in `RULES` to a final critique and the photo's facts
(facts/measure.py). Checks never change a score: they sit beside the critique so the reader
can weigh it. A rule whose facts were not measured (a fact missing, a value of the wrong
kind) stays silent: no measurement, no contradiction.

The thresholds are deliberately loose: a check should fire where the contradiction is
plain to see, not argue taste. Each is documented beside its rule.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, TypedDict

from mondrian.schema import Check, Critique, Fact

Op = Literal[">=", "<=", "=="]


@dataclass(frozen=True)
class Condition:
    """One fact against one threshold; `magnitude` compares |value| (a signed tilt)."""

    fact: str
    op: Op
    threshold: float | str
    magnitude: bool = False

    def holds(self, facts: Mapping[str, Fact]) -> bool | None:
        """True or False; None when the fact is missing or not a value this compares."""
        fact = facts.get(self.fact)
        if fact is None:
            return None
        value = fact.value
        if self.op == "==":
            return value == self.threshold
        if isinstance(value, (list, str)) or isinstance(self.threshold, str):
            return None
        number = abs(value) if self.magnitude else value
        return number >= self.threshold if self.op == ">=" else number <= self.threshold


@dataclass(frozen=True)
class Rule:
    """A contradiction: `dimension` scored at least `min_score` while every condition holds
    (two facts either of which contradicts are two rules, each with its own message).
    `message` is formatted with `score` and each fact's name bound to its value."""

    id: str
    dimension: str
    min_score: int
    conditions: tuple[Condition, ...]
    message: str

    @property
    def facts(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(c.fact for c in self.conditions))

    def fires(self, score: int, facts: Mapping[str, Fact]) -> bool:
        if score < self.min_score:
            return False
        return all(c.holds(facts) is True for c in self.conditions)


# 8 of 10 is where an advisor calls a dimension strong (grade A- and up, schema.GRADE_TABLE);
# below it a critique may already be conceding the flaw the measurement shows.
STRONG = 8

RULES: tuple[Rule, ...] = (
    # The blur estimate (facts/sharpness.py, after scikit-image's blur_effect) reads
    # 0.33-0.76 on the 14 shipped sharp photos (src/mondrian/data/sample_portfolio, 160 px;
    # fine texture reads high) and 0.71-0.93 on the same photos Gaussian-blurred by 3 px:
    # 0.80 fires on 9 of the 14 blurred copies and on none of the sharp originals.
    Rule(
        id="sharp_score_blurred_photo",
        dimension="focus_sharpness",
        min_score=STRONG,
        conditions=(Condition("blur", ">=", 0.80),),
        message="Focus & sharpness scored {score}/10, but the photo measures blurred "
        "(blur {blur:.2f}; 0.80 and above reads as blurred).",
    ),
    # Laplacian variance of the salient region (8-bit grey, the measurement copy): 246-7854
    # on 13 of the 14 shipped photos (41 on a featureless fundus image), 2-44 on 13 of
    # their 3 px-blurred copies (60 on the last): 50 splits them.
    Rule(
        id="sharp_score_soft_subject",
        dimension="focus_sharpness",
        min_score=STRONG,
        conditions=(Condition("subject_sharpness", "<=", 50.0),),
        message="Focus & sharpness scored {score}/10, but the salient region measures soft "
        "(Laplacian variance {subject_sharpness:.0f}; 50 and below reads as soft).",
    ),
    # 5% of the frame at 255 in some channel is a blown area one sees at a glance (a bright
    # sky's few specular points stay well under 1%).
    Rule(
        id="lighting_score_highlights_clipped",
        dimension="lighting",
        min_score=STRONG,
        conditions=(Condition("highlights_clipped", ">=", 0.05),),
        message="Lighting scored {score}/10, but {highlights_clipped:.0%} of the pixels are "
        "clipped white (5% and above is a blown area).",
    ),
    # Crushed blacks are a style more often than blown whites, so the bar is twice as high.
    Rule(
        id="lighting_score_shadows_clipped",
        dimension="lighting",
        min_score=STRONG,
        conditions=(Condition("shadows_clipped", ">=", 0.10),),
        message="Lighting scored {score}/10, but {shadows_clipped:.0%} of the pixels are "
        "clipped black (10% and above is a crushed area).",
    ),
    # Under about 1-2 degrees a tilt passes unseen; from 3 degrees a horizon looks off level.
    Rule(
        id="balance_score_tilted",
        dimension="visual_balance",
        min_score=STRONG,
        conditions=(Condition("tilt", ">=", 3.0, magnitude=True),),
        message="Visual balance scored {score}/10, but the dominant line is tilted by "
        "{tilt:+.1f} degrees (3 and above looks off level).",
    ),
    # harmony_fit is the share of the photo's hues inside the best template; under 0.6 most
    # colour falls outside every harmony. A monochrome photo has no hues to fit.
    Rule(
        id="harmony_score_poor_fit",
        dimension="color_harmony",
        min_score=STRONG,
        conditions=(Condition("monochrome", "==", "no"), Condition("harmony_fit", "<=", 0.6)),
        message="Color harmony scored {score}/10, but only {harmony_fit:.0%} of the hues fit "
        "the best harmony template ({harmony_template}; 60% and below is a poor fit).",
    ),
    # Shares of the diagonal: a thirds point lies 0.17 from the centre (square frame), so a
    # subject 0.12 or more from both sits out near an edge, on neither classical anchor.
    Rule(
        id="composition_score_subject_off_anchors",
        dimension="composition",
        min_score=9,
        conditions=(
            Condition("subject_thirds_distance", ">=", 0.12),
            Condition("subject_centre_distance", ">=", 0.12),
        ),
        message="Composition scored {score}/10, but the salient subject sits far from both "
        "the thirds and the centre ({subject_thirds_distance:.2f} and "
        "{subject_centre_distance:.2f} of the diagonal; 0.12 and above is far).",
    ),
)


def run_checks(
    critique: Critique, facts: Sequence[Fact], rules: Sequence[Rule] = RULES
) -> list[Check]:
    """The rules `critique` breaks against `facts`, in the order of `rules`."""
    by_name = {fact.name: fact for fact in facts}
    scores = critique.dimensions.scores()
    checks: list[Check] = []
    for rule in rules:
        score = scores[rule.dimension]
        if not rule.fires(score, by_name):
            continue
        # Every rule's own facts, and the template a harmony message names beside its fit.
        values = {"harmony_template": _value(by_name, "harmony_template")}
        values.update({name: by_name[name].value for name in rule.facts})
        checks.append(
            Check(
                rule=rule.id,
                dimension=rule.dimension,
                facts=list(rule.facts),
                message=rule.message.format(score=score, **values),
            )
        )
    return checks


def _value(facts: Mapping[str, Fact], name: str) -> float | str | list[float]:
    fact = facts.get(name)
    return fact.value if fact is not None else "unmeasured"


class CheckRate(TypedDict):
    critiques: int
    with_checks: float  # share of the critiques with at least one check
    per_rule: dict[str, float]  # rule id -> share of the critiques it fired on


def check_rate(checks_per_critique: Sequence[Sequence[Check]]) -> CheckRate:
    """How often checks fire over some critiques: the share with at least one check, and
    each rule's share (every rule in RULES listed, 0.0 where it never fired)."""
    n = len(checks_per_critique)
    per_rule: dict[str, int] = dict.fromkeys((rule.id for rule in RULES), 0)
    flagged = 0
    for checks in checks_per_critique:
        flagged += bool(checks)
        for rule_id in {c.rule for c in checks}:
            per_rule[rule_id] = per_rule.get(rule_id, 0) + 1
    return {
        "critiques": n,
        "with_checks": round(flagged / n, 4) if n else 0.0,
        "per_rule": {k: round(v / n, 4) if n else 0.0 for k, v in per_rule.items()},
    }
