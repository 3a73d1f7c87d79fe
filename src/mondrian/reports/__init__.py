"""Self-contained HTML reports of an analysis and of an advisor (inline CSS and SVG)."""

from mondrian.reports.radar import DIMENSION_LABELS, radar_svg
from mondrian.reports.render import (
    REPORT_FILES,
    render_advisor_bio,
    render_detailed,
    render_summary,
    report_footer,
    write_reports,
)

__all__ = [
    "DIMENSION_LABELS",
    "REPORT_FILES",
    "radar_svg",
    "render_advisor_bio",
    "render_detailed",
    "render_summary",
    "report_footer",
    "write_reports",
]
