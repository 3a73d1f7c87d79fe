"""The app factory: `create_app(settings)` gives a FastAPI app; uvicorn or a TestClient
runs its lifespan, which opens the state, loads the model and starts the worker.

    app = create_app(Settings(), options=ServiceOptions(model_policy="ab_test"))

Pass `backend` to serve an already-loaded model (tests, or a model shared by several
apps one after another); otherwise the lifespan builds one from `settings`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool

import mondrian
from mondrian.backends.protocol import Backend
from mondrian.config import Settings
from mondrian.context import Context
from mondrian.service import errors
from mondrian.service.batching import BatchingBackend
from mondrian.service.deps import ServiceState
from mondrian.service.docs import install_docs
from mondrian.service.guards import RequestGuard, SecurityHeaders
from mondrian.service.metrics import ServiceMetrics
from mondrian.service.middleware import Arrivals, BodyLimit, RequestMetrics
from mondrian.service.options import ServiceOptions
from mondrian.service.policy import ModelPolicy
from mondrian.service.routes import (
    ab,
    advisors,
    analyze,
    events,
    health,
    jobs,
    library,
    metrics,
    reviews,
    studio,
    studio_advisors,
    studio_library,
    studio_operator,
    studio_review,
)
from mondrian.service.worker import Worker
from mondrian.staging import sweep_adapter_staging
from mondrian.storage.bootstrap import open_state, serving_home
from mondrian.storage.db import Database
from mondrian.training.registry import STAGING_PREFIX

log = logging.getLogger(__name__)

# Room for the multipart framing and the other form fields around the image.
FORM_OVERHEAD_BYTES = 64 * 1024

DESCRIPTION = (
    "Photo critiques in the voice of master photographers. `POST /analyze` answers "
    "synchronously; `POST /jobs` queues and `GET /jobs/{id}` follows. Errors are "
    '`{"error": {"code", "message"}}`.'
)


def create_app(
    settings: Settings,
    backend: Backend | None = None,
    *,
    options: ServiceOptions | None = None,
) -> FastAPI:
    options = options or ServiceOptions()
    policy = ModelPolicy(options.model_policy, options.ab_split)
    service_metrics = ServiceMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # One server per home, taken before the worker's recovery re-queues the jobs a
        # previous server left "running" (a live one's would be taken over).
        with serving_home(settings):
            sweep_adapter_staging(settings.adapters_dir, STAGING_PREFIX)
            db = await run_in_threadpool(open_state, settings)
            try:
                async with _serving(app, db) as worker:
                    yield
                    app.state.mondrian = None
                    # Running jobs get the grace period to finish; after it they are
                    # interrupted, queued again, and the next start re-runs them.
                    await run_in_threadpool(lambda: worker.stop(grace=settings.shutdown_grace_s))
            finally:
                db.close()

    @asynccontextmanager
    async def _serving(app: FastAPI, db: Database) -> AsyncIterator[Worker]:
        if backend is not None:
            model = backend
        else:
            from mondrian.backends.protocol import create_backend

            model = await run_in_threadpool(create_backend, settings)
        batcher = None
        if options.concurrency > 1:
            model = batcher = BatchingBackend(
                model,
                max_rows=options.concurrency,
                max_wait_s=options.batch_wait_ms / 1000,
            )
        ctx = Context(backend=model, db=db, settings=settings)
        if model.name == "vllm":
            # A server's adapters are loaded (or refused: another base, a rank above its
            # --max-lora-rank, runtime loading off) at start, and said in the log, not at
            # the first job that needs one (docs/vllm.md).
            from mondrian.strategies.lora import load_active

            await run_in_threadpool(load_active, ctx)
        # Before the first request, not during it: the fast path compiles its graphs here
        # (engine/fast_path.py's `warm_up`), so no client's critique waits for a compiler.
        started = time.perf_counter()
        await run_in_threadpool(model.warm_up)
        log.info("backend warmed up in %.1f s", time.perf_counter() - started)
        worker = Worker(ctx, policy, service_metrics, options)
        if batcher is not None:
            batcher.ready = worker.batch_ready
            batcher.expected = worker.expected_calls
        await run_in_threadpool(worker.start)
        service_metrics.track_queue(lambda: worker.queue_depth() if db.is_open else 0)
        app.state.mondrian = ServiceState(
            settings=settings,
            options=options,
            policy=policy,
            metrics=service_metrics,
            db=db,
            backend=model,
            worker=worker,
        )
        try:
            yield worker
        finally:
            app.state.mondrian = None
            await run_in_threadpool(worker.stop)  # at once if the graceful stop ran
            if batcher is not None:
                await run_in_threadpool(batcher.close)

    app = FastAPI(
        title="Mondrian",
        version=mondrian.__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # served offline by service/docs.py instead of from a CDN
        redoc_url=None,
    )
    app.state.mondrian = None  # the running state; set while the lifespan runs
    app.state.options = options
    app.state.policy = policy
    errors.install(app)
    install_docs(app)
    for module in (health, advisors, analyze, jobs, events, reviews, ab, metrics, studio):
        app.include_router(module.router)
    # The studio's pages beyond the upload and critique: the photographer's library,
    # reviews, the operator's pages and the advisors' portraits.
    studio_pages = (library, studio_library, studio_review, studio_operator, studio_advisors)
    for module in studio_pages:
        app.include_router(module.router)
    app.add_middleware(Arrivals)
    app.add_middleware(
        BodyLimit,
        max_bytes=settings.max_upload_bytes + FORM_OVERHEAD_BYTES,
        timeout_s=settings.body_timeout_s,
    )
    app.add_middleware(RequestGuard, allowed_hosts=settings.allowed_hosts)
    app.add_middleware(SecurityHeaders)
    # Added last = outermost: metrics see every answer, the refusals above included.
    app.add_middleware(RequestMetrics, metrics=service_metrics)
    return app
