"""Prometheus metrics on a registry of the app's own (`GET /metrics`: routes/metrics.py).

A private `CollectorRegistry` per app (not the process-wide default) so that several apps
in one process, as in the tests, never register a metric twice or mix their counts.
Labels are bounded sets only (route templates, modes, variants, statuses), never ids.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

# Seconds; a tiny model answers in well under one, a 7B model on a laptop in minutes.
ANALYSIS_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "mondrian_http_requests",
            "HTTP requests answered, by route template, method and status.",
            ["route", "method", "status"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "mondrian_http_request_seconds",
            "Time to answer an HTTP request, by route template and method.",
            ["route", "method"],
            buckets=REQUEST_BUCKETS,
            registry=r,
        )
        self.analyze_seconds = Histogram(
            "mondrian_analyze_request_seconds",
            "POST /analyze end to end (queue wait included), by mode used and variant.",
            ["mode", "variant"],
            buckets=ANALYSIS_BUCKETS,
            registry=r,
        )
        self.analysis_seconds = Histogram(
            "mondrian_analysis_seconds",
            "Time the worker spent on a job, by mode used and variant.",
            ["mode", "variant"],
            buckets=ANALYSIS_BUCKETS,
            registry=r,
        )
        self.jobs = Counter(
            "mondrian_jobs_finished",
            "Jobs finished, by status, mode (used, or requested when failed) and variant.",
            ["status", "mode", "variant"],
            registry=r,
        )
        self.tokens = Counter(
            "mondrian_tokens_generated",
            "Tokens the model generated, by mode used and variant.",
            ["mode", "variant"],
            registry=r,
        )
        self.queue_depth = Gauge("mondrian_queue_depth", "Jobs waiting for the model.", registry=r)
        self.running = Gauge("mondrian_jobs_running", "Jobs being run now.", registry=r)
        self.rejected = Counter(
            "mondrian_queue_rejections",
            "Submissions refused because the queue was full.",
            registry=r,
        )

    def track_queue(self, depth: Callable[[], float]) -> None:
        """Read the queue depth at scrape time from `depth()`: never stale."""
        self.queue_depth.set_function(depth)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
