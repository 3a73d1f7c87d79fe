"""Two real `mondrian serve` replicas (tests/serve_process.py, on the tiny checkpoint) on one
PostgreSQL and one shared folder, each with its own MONDRIAN_HOME:

- 200 jobs submitted across both: every one runs exactly once (one attempt, done), none
  is lost, and both replicas ran some;
- two adapter versions activated at the same moment from the two replicas' sides, again
  and again: exactly one is active each time, and both replicas serve it;
- `kill -9` of one replica mid-batch: its jobs end in a final state through the other,
  once their leases run out.

Figures (times, counts) are printed; `pytest -s` shows them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mondrian.config import Settings
from mondrian.storage import adapters as adapter_store
from mondrian.storage.bootstrap import open_state
from mondrian.training import registry
from serve_process import ServeProcess

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.timeout(1800),
    pytest.mark.model,
    pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning"),
]

ADVISOR = "ansel"
# 200 by the issue; MONDRIAN_TEST_REPLICA_JOBS runs fewer on a crowded machine.
JOBS = int(os.environ.get("MONDRIAN_TEST_REPLICA_JOBS", "200"))
LEASE_S = 10.0  # generous: a crowded CI machine must not stall a live replica past it
ROUNDS = 3  # of concurrent activations
PHOTO = (Path(__file__).resolve().parents[1] / "assets" / "photos" / "chelsea.jpg").read_bytes()


class Cluster:
    def __init__(self, root: Path, model: Path, url: str) -> None:
        self.root, self.model, self.url = root, model, url
        self.shared = root / "shared"
        self.env = {
            "MONDRIAN_DATABASE_URL": url,
            "MONDRIAN_SHARED_DIR": str(self.shared),
            "MONDRIAN_JOB_LEASE_S": str(LEASE_S),
            "MONDRIAN_QUEUE_SIZE": str(JOBS + 50),
            "MONDRIAN_IDLE_POLL_S": "0.2",
        }
        self.replicas: list[ServeProcess] = []

    def start(self, name: str) -> ServeProcess:
        server = ServeProcess(self.root / name, self.model, "--concurrency", "4", **self.env)
        self.replicas.append(server)
        return server

    def settings(self) -> Settings:
        return Settings(home=self.root / "cli", database_url=self.url, shared_dir=self.shared)


@pytest.fixture(scope="module")
def cluster(pg_server, tiny_model, tmp_path_factory) -> Iterator[Cluster]:
    made = Cluster(tmp_path_factory.mktemp("replicas"), tiny_model, pg_server.fresh_database())
    first, second = made.start("a"), made.start("b")  # both start (and migrate) at once
    first.wait_ready()
    second.wait_ready()
    yield made
    for server in made.replicas:
        server.stop()


def submit(server: ServeProcess, n: int, out: list[str]) -> None:
    with server.client() as client:
        for _ in range(n):
            files = {"image": ("a.jpg", PHOTO, "image/jpeg")}
            response = client.post("/jobs", files=files, data={"advisor": ADVISOR})
            assert response.status_code == 202, response.text
            out.append(response.json()["id"])


def final_rows(cluster: Cluster, ids: list[str], timeout: float) -> dict[str, dict]:
    """Every job's row once all are done or failed (read straight from PostgreSQL)."""
    deadline = time.monotonic() + timeout
    with open_state(cluster.settings()) as db:
        while True:
            with db.read() as conn:
                rows = conn.execute(
                    "SELECT id, status, attempts, claimed_by, error FROM jobs"
                ).fetchall()
            found = {row["id"]: dict(zip(row.keys(), row, strict=True)) for row in rows}
            if all(found.get(i, {}).get("status") in ("done", "failed") for i in ids):
                return found
            counts = Counter(r["status"] for r in found.values())
            assert time.monotonic() < deadline, counts
            if int(time.monotonic()) % 30 == 0:
                print(f"  {time.strftime('%H:%M:%S')} {dict(counts)}", flush=True)
            time.sleep(0.5)


def test_200_jobs_across_two_replicas_each_run_exactly_once(cluster: Cluster) -> None:
    first, second = cluster.replicas[:2]
    ids_a: list[str] = []
    ids_b: list[str] = []
    started = time.perf_counter()
    threads = [
        threading.Thread(target=submit, args=(first, JOBS // 2, ids_a)),
        threading.Thread(target=submit, args=(second, JOBS // 2, ids_b)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    submitted = time.perf_counter() - started
    ids = ids_a + ids_b
    assert len(set(ids)) == JOBS
    rows = final_rows(cluster, ids, timeout=900)
    took = time.perf_counter() - started
    assert set(rows) == set(ids)  # none lost, none made up
    assert Counter(rows[i]["status"] for i in ids) == {"done": JOBS}
    assert {rows[i]["attempts"] for i in ids} == {1}  # each ran exactly once
    by = Counter(rows[i]["claimed_by"].split(":")[1] for i in ids)
    assert set(by) == {str(first.pid), str(second.pid)}, by  # both replicas worked
    print(
        f"\n{JOBS} jobs on 2 replicas: submitted in {submitted:.1f} s, all done in "
        f"{took:.1f} s; ran per replica {dict(by)}"
    )


def test_concurrent_activation_leaves_exactly_one_active_and_loadable(
    cluster: Cluster, random_adapter_factory, tmp_path: Path
) -> None:
    first, second = cluster.replicas[:2]
    settings = cluster.settings()
    fingerprint = first.health()["fingerprint"]
    template = random_adapter_factory(cluster.model, tmp_path / "adapter", 3, fingerprint)
    with open_state(settings) as db:
        for n in (1, 2):
            staging = registry.new_staging_dir(settings, ADVISOR)
            shutil.copytree(template, staging, dirs_exist_ok=True)
            registry.publish(
                db, settings, ADVISOR, staging, str(cluster.model), {"n": n}, activate=False
            )
        versions = [a.version for a in registry.list_versions(db, ADVISOR)]
    assert len(versions) == 2
    command = [sys.executable, "-m", "mondrian", "adapters", "activate"]
    winners: Counter[str] = Counter()
    for _ in range(ROUNDS):
        procs = [
            subprocess.Popen(
                [*command, f"{ADVISOR}@v{v}"],
                env=server.env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            for server, v in zip((first, second), versions, strict=True)
        ]
        for proc in procs:
            assert proc.wait(120) == 0, proc.stderr.read() if proc.stderr else ""
        with open_state(settings) as db, db.read() as conn:
            active = conn.execute(
                "SELECT version FROM adapters WHERE advisor_id = ? AND active = 1", (ADVISOR,)
            ).fetchall()
            assert len(active) == 1, active
            current = adapter_store.get_active(conn, ADVISOR)
        assert current is not None and current.path.is_relative_to(cluster.shared)
        registry.verify_adapter_dir(current.path)
        winners[current.ref] += 1
        # Loadable: each replica serves a lora job with the one active version.
        for server in (first, second):
            with server.client(timeout=600) as client:  # an adapter loads first
                files = {"image": ("a.jpg", PHOTO, "image/jpeg")}
                response = client.post(
                    "/analyze", files=files, data={"advisor": ADVISOR, "mode": "lora"}
                )
                assert response.status_code == 200, response.text
                body = response.json()
                assert body["mode_used"] == "lora" and body["model"]["adapter"] == current.ref
    print(f"\nconcurrent activations, {ROUNDS} rounds: active afterwards {dict(winners)}")


def test_kill_9_of_a_replica_leaves_its_jobs_to_the_other(cluster: Cluster) -> None:
    first, second = cluster.replicas[:2]
    ids: list[str] = []
    submit(first, 24, ids)
    deadline = time.monotonic() + 120
    while not first.health()["queue"]["running_jobs"]:
        assert time.monotonic() < deadline, "no job started on the first replica"
        time.sleep(0.02)
    first.kill()  # SIGKILL mid-batch: no shutdown runs, its jobs stay `running`
    killed_at = time.perf_counter()
    rows = final_rows(cluster, ids, timeout=600)
    took = time.perf_counter() - killed_at
    orphans = [i for i in ids if rows[i]["attempts"] == 2]
    assert {rows[i]["status"] for i in ids} <= {"done", "failed"}
    assert orphans, "the killed replica was running jobs: they must have run again"
    for job_id in orphans:
        assert rows[job_id]["claimed_by"].endswith(f":{second.pid}"), rows[job_id]
        assert rows[job_id]["status"] == "done", rows[job_id]
    assert second.health()["status"] == "ok"
    try:
        httpx.get(first.url + "/health", timeout=2)
        raise AssertionError("the killed replica still answers")
    except httpx.HTTPError:
        pass
    print(
        f"\nkill -9 mid-batch: {len(orphans)} of its running jobs re-run by the other "
        f"replica; all {len(ids)} final {took:.1f} s after the kill (lease {LEASE_S} s)"
    )
