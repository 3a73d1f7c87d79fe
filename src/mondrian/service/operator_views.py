"""What the studio's operator pages show (routes/studio_operator.py), read from the state:
adapter versions per advisor, the A/B report as charts, and each portfolio's index status.

The A/B figures are service/abreport.py's `compare_variants` over the same window as
`GET /ab/report`; the charts are reports/charts.py's inline SVG (no script).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

from markupsafe import Markup

from mondrian.advisors import Advisor
from mondrian.reports.charts import grouped_bars
from mondrian.service.abreport import ABReport
from mondrian.storage import adapters as adapter_store
from mondrian.storage import advisors as advisor_store
from mondrian.storage import images as image_store
from mondrian.storage import profiles as profile_store
from mondrian.training.registry import describe


@dataclass(frozen=True)
class AdvisorAdapters:
    advisor: Advisor
    versions: list[dict[str, Any]]  # registry.describe() of each, oldest first
    active: str | None
    can_roll_back: bool


def adapters_by_advisor(conn: sqlite3.Connection) -> list[AdvisorAdapters]:
    """Every advisor with its versions, the active one, and whether an older one exists."""
    rows = []
    for advisor in advisor_store.list_advisors(conn):
        versions = adapter_store.list_adapters(conn, advisor.id)
        active = next((a for a in versions if a.active), None)
        rows.append(
            AdvisorAdapters(
                advisor=advisor,
                versions=[describe(a) for a in versions],
                active=None if active is None else active.ref,
                can_roll_back=active is not None
                and any(a.version < active.version for a in versions),
            )
        )
    return rows


@dataclass(frozen=True)
class PortfolioStatus:
    advisor: Advisor
    photos: int  # in the portfolio
    profiled: int  # of those, with a profile (what rag retrieves by)
    embedded: int  # of those, with an image embedding too
    curated: int
    model: int
    last_indexed: str | None

    @property
    def unprofiled(self) -> int:
        return self.photos - self.profiled

    @property
    def state(self) -> str:
        if self.photos == 0 and self.profiled == 0:
            return "no portfolio: rag falls back to baseline"
        if self.unprofiled:
            return f"{self.unprofiled} photo(s) not profiled yet: run mondrian index"
        return "indexed"


def portfolio_status(conn: sqlite3.Connection) -> list[PortfolioStatus]:
    found = []
    for advisor in advisor_store.list_advisors(conn):
        in_portfolio = {item.image_hash for item in image_store.list_portfolio(conn, advisor.id)}
        profiles = profile_store.list_profiles(conn, advisor.id)
        profiled = [p for p in profiles if p.image_hash in in_portfolio]
        found.append(
            PortfolioStatus(
                advisor=advisor,
                photos=len(in_portfolio),
                profiled=len(profiled),
                embedded=sum(1 for p in profiled if p.embedding),
                curated=sum(1 for p in profiles if p.source == "curated"),
                model=sum(1 for p in profiles if p.source == "model"),
                last_indexed=max((p.updated_at for p in profiles), default=None),
            )
        )
    return found


def ab_charts(report: ABReport) -> dict[str, Markup]:
    """The report's figures as bar charts, one per scale (counts, seconds, score, rates)."""
    names = [s.variant for s in report.variants]

    def series(fields: list[str]) -> dict[str, list[float | None]]:
        return {
            name: [stats.model_dump()[f] for f in fields]
            for name, stats in zip(names, report.variants, strict=True)
        }

    return {
        "jobs": grouped_bars(
            ["done", "failed", "pending"],
            series(["done", "failed", "pending"]),
            label="Jobs per variant: done, failed, pending",
        ),
        "latency": grouped_bars(
            ["p50", "p95"],
            series(["latency_p50_s", "latency_p95_s"]),
            label="Latency per variant, seconds (p50, p95)",
        ),
        "quality": grouped_bars(
            ["mean overall score"],
            series(["mean_overall_score"]),
            max_value=10,
            label="Mean overall score per variant (0 to 10)",
        ),
        "rates": grouped_bars(
            ["schema valid", "with checks"],
            series(["validity_rate", "checked_rate"]),
            max_value=1,
            label="Schema-valid rate and share of critiques with checks, per variant",
        ),
    }
