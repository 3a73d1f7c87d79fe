"""What the service adds to `Settings`: model policy, queue size, recovery and waiting.

A separate settings class (same `MONDRIAN_` environment prefix) so that commands which
never serve do not carry service knobs; `mondrian serve` flags override the environment.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from mondrian.modes import Policy


class ServiceOptions(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MONDRIAN_", extra="ignore")

    model_policy: Policy = Field(
        default=Policy.FINE_TUNED,
        description="base: never use adapters; fine_tuned: serve the mode asked; "
        "ab_test: split jobs between the two by a hash of the job id.",
    )
    ab_split: float = Field(
        default=0.5, ge=0.0, le=1.0, description="ab_test: share of jobs served fine_tuned."
    )
    queue_size: int = Field(
        default=16, ge=1, description="Jobs that may wait for the model; more get a 503."
    )
    max_attempts: int = Field(
        default=2,
        ge=1,
        description="Runs a job gets; a job interrupted by a restart is re-run until then.",
    )
    analyze_timeout_s: float = Field(
        default=600.0, gt=0, description="How long POST /analyze waits for its job."
    )
    progress_interval_s: float = Field(
        default=0.25, ge=0, description="Least time between two progress writes of a job."
    )
    concurrency: int = Field(
        default=1,
        ge=1,
        le=256,
        description="Jobs run at once; above 1 their generations are batched on the model "
        "(worth it on a GPU, where a batch of 32 costs about twice one request).",
    )
    batch_wait_ms: float = Field(
        default=20.0,
        ge=0,
        description="With concurrency above 1: the longest a batch waits for more requests "
        "(it closes sooner, once every running job is in it and no upload is on its way).",
    )
    job_lease_s: float = Field(
        default=60.0,
        gt=0,
        description="A running job's lease, renewed while it runs: a replica that dies "
        "leaves its jobs to another once it runs out (docs/storage.md).",
    )
    idle_poll_s: float = Field(
        default=1.0,
        gt=0,
        description="How often an idle worker looks for jobs queued by another process.",
    )
