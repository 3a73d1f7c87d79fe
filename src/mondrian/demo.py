"""`mondrian demo`: the whole product once, offline, top to bottom.

Setup: a working folder with its own MONDRIAN_HOME, and a model (by default a tiny
random-weight Qwen2.5-VL built on the spot, because no weights can be downloaded).
Work: register the advisors, index the sample portfolio, build a dataset, train a LoRA,
evaluate it against the base model, critique a held-out photo in the three modes, serve
one real HTTP request. Save: every report, and a summary of where they are.

With the tiny model the critiques' words are noise: it is random weights. What the demo
shows is the machinery, and that the adapter learns (its scores on the training photos
approach the curated ones while the base model's do not). `--model` switches to a real
model, e.g. Qwen/Qwen2.5-VL-3B-Instruct.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from mondrian.config import Settings
from mondrian.errors import MondrianError

ADVISOR = "ansel"
# The curated sample profiles fit these bounds; they keep tiny-model answers short.
TINY_TEXT_CHARS = 24
TINY_LIST_ITEMS = 2
SAMPLE_PORTFOLIO = "data/sample_portfolio"
DEMO_TRAIN_CONFIG = "configs/train/tiny.toml"
REAL_MODEL_HINT = "Qwen/Qwen2.5-VL-3B-Instruct"

Say = Callable[[str], None]


@dataclass
class DemoSummary:
    workdir: Path
    model: str
    tiny: bool
    adapter: str = ""
    train_mae: dict[str, float | None] = field(default_factory=dict)
    val_mae: dict[str, float | None] = field(default_factory=dict)
    modes: dict[str, str] = field(default_factory=dict)  # requested -> used
    http_status: int = 0
    reports: list[Path] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def mae_reduction(self) -> float | None:
        base, adapter = self.train_mae.get("base"), self.train_mae.get("adapter")
        if base is None or adapter is None or base == 0:
            return None
        return 1 - adapter / base


class _Steps:
    """Numbered step headers with their durations."""

    def __init__(self, total: int, say: Say, summary: DemoSummary) -> None:
        self.total, self.say, self.summary = total, say, summary
        self.index = 0

    def __call__(self, title: str) -> _Step:
        self.index += 1
        return _Step(self, f"[{self.index}/{self.total}] {title}")


class _Step:
    def __init__(self, steps: _Steps, title: str) -> None:
        self.steps, self.title = steps, title

    def __enter__(self) -> _Step:
        self.started = time.perf_counter()
        self.steps.say(f"\n{self.title}")
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        seconds = time.perf_counter() - self.started
        self.steps.summary.seconds[self.title] = round(seconds, 1)
        if exc_type is None:
            self.steps.say(f"    done in {seconds:.1f} s")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _package_path(relative: str) -> Path:
    return Path(str(resources.files("mondrian").joinpath(relative)))


def _repo_or_package_config() -> Path:
    shipped = _package_path(DEMO_TRAIN_CONFIG)
    if shipped.is_file():
        return shipped
    return Path(__file__).parents[2] / DEMO_TRAIN_CONFIG


def run_demo(
    workdir: Path,
    *,
    model: str | None = None,
    say: Say = print,
    progress: bool = True,
) -> DemoSummary:
    # Heavy imports here: `mondrian --help` must not pay for them.
    import httpx
    import uvicorn

    from mondrian.evaluation.run import evaluate
    from mondrian.images import read_image_file
    from mondrian.reports.render import write_reports
    from mondrian.runtime.registry import create_backend
    from mondrian.runtime.tiny import make_tiny
    from mondrian.service.app import create_app
    from mondrian.storage import advisors as advisor_store
    from mondrian.storage.bootstrap import open_state
    from mondrian.strategies.base import Context
    from mondrian.strategies.indexing import index_paths
    from mondrian.strategies.profiles_io import import_profiles
    from mondrian.strategies.registry import analyze
    from mondrian.training.config import load_config
    from mondrian.training.dataset import build_dataset, load_split
    from mondrian.training.train import train

    # --- setup ----------------------------------------------------------------------------
    workdir = Path(workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    reports = workdir / "reports"
    tiny = model is None
    summary = DemoSummary(workdir=workdir, model=model or str(workdir / "tiny-model"), tiny=tiny)
    step = _Steps(8, say, summary)
    if tiny:
        say(
            "Mondrian demo, offline. The model is a TINY RANDOM-WEIGHT Qwen2.5-VL built here:\n"
            "its critiques are well-formed JSON but their words are noise. What you see is\n"
            "the machinery, and an adapter that really learns. For real critiques run:\n"
            f"    mondrian demo --model {REAL_MODEL_HINT}"
        )
        with step("Building a tiny Qwen2.5-VL checkpoint (real architecture, random weights)"):
            make_tiny(workdir / "tiny-model", "qwen2_5_vl", seed=0, force=True)
    settings = Settings(
        home=workdir / "home",
        model=summary.model,
        backend="transformers",
        max_text_chars=TINY_TEXT_CHARS if tiny else None,
        max_list_items=TINY_LIST_ITEMS if tiny else None,
    )

    with open_state(settings) as db:
        with step("Registering the advisors and loading the model"):
            backend = create_backend(settings)
            ctx = Context(backend=backend, db=db, settings=settings)
            with db.read() as conn:
                names = [a.name for a in advisor_store.list_advisors(conn)]
                advisor = advisor_store.require_advisor(conn, ADVISOR)
            say(f"    {len(names)} advisors: {', '.join(names)}")
            say(f"    model {backend.model_id} on {backend.info()['device']}")

        # --- work -----------------------------------------------------------------------
        with step(f"Indexing the sample portfolio for {advisor.name}"):
            portfolio = _package_path(SAMPLE_PORTFOLIO)
            report = index_paths(ctx, advisor, [portfolio])
            curated = (portfolio / f"{ADVISOR}_profiles.jsonl").read_text().splitlines()
            imported = import_profiles(db, ADVISOR, curated)
            say(
                f"    profiled {len(report.indexed)} photos with the model, "
                f"then imported {imported.imported} curated profiles"
            )

        with step("Building the training set (80/20 split by photo, one augmentation each)"):
            dataset_dir = workdir / "dataset"
            manifest = build_dataset(
                db,
                settings,
                ADVISOR,
                dataset_dir,
                val_fraction=0.2,
                augment=1,
                max_text_chars=settings.max_text_chars,
                max_list_items=settings.max_list_items,
                force=True,
                warn=say,
            )
            splits = manifest["splits"]
            say(
                f"    {splits['train']['examples']} training examples from "
                f"{splits['train']['images']} photos, {splits['validation']['examples']} held out"
            )

        with step(f"Training a LoRA adapter for {advisor.name}"):
            cfg = load_config(_repo_or_package_config(), model=settings.model)
            result = train(
                cfg,
                advisor_id=ADVISOR,
                dataset_dir=dataset_dir,
                settings=settings,
                run_dir=workdir / "train-run",
                activate=True,
                progress=progress,
            )
            assert result.adapter is not None
            summary.adapter = result.adapter.ref
            say(f"    {summary.adapter} active; {result.seconds_per_step:.2f} s per step")

        with step("Evaluating the adapter against the base model"):
            for split, target in (("train", summary.train_mae), ("val", summary.val_mae)):
                evaluation = evaluate(
                    settings,
                    db,
                    backend,
                    ADVISOR,
                    dataset_dir=dataset_dir,
                    split=split,
                    out_dir=reports / f"evaluation-{split}",
                )
                for variant in evaluation.variants:
                    target[variant.name] = variant.mean_mae
                summary.reports.append(reports / f"evaluation-{split}" / "evaluation.html")
                say(
                    f"    {split:<5} mean score error: base {_fmt(target['base'])}, "
                    f"adapter {_fmt(target['adapter'])}"
                )

        with step("Critiquing a held-out photo in the three modes"):
            held_out = dataset_dir / load_split(dataset_dir, "val")[0]["images"][0]
            photo = read_image_file(held_out)
            for mode in ("baseline", "rag", "lora"):
                analysis = analyze(ctx, advisor, photo, mode)
                summary.modes[mode] = analysis.mode_used
                paths = write_reports(analysis, advisor, reports / f"analysis-{mode}")
                summary.reports.extend(paths.values())
                grade = analysis.critique.overall_grade
                say(
                    f"    {mode:<8} -> served by {analysis.mode_used:<8} overall "
                    f"{analysis.critique.overall_score:.1f} ({grade}), "
                    f"{len(analysis.references)} references"
                )

        with step("Serving over HTTP and sending one real request"):
            port = _free_port()
            server = uvicorn.Server(
                uvicorn.Config(
                    create_app(settings, backend=backend),
                    host="127.0.0.1",
                    port=port,
                    log_level="warning",
                )
            )
            thread = threading.Thread(target=server.run, daemon=True)
            thread.start()
            try:
                _wait_until_up(f"http://127.0.0.1:{port}/health")
                with held_out.open("rb") as image:
                    response = httpx.post(
                        f"http://127.0.0.1:{port}/analyze",
                        files={"image": (held_out.name, image, "image/jpeg")},
                        data={"advisor": ADVISOR, "mode": "lora"},
                        timeout=120,
                    )
            finally:
                server.should_exit = True
                thread.join(timeout=30)
            summary.http_status = response.status_code
            body: dict[str, Any] = response.json()
            if response.status_code != 200:
                raise MondrianError(f"the service answered {response.status_code}: {body}")
            (reports / "http-response.json").write_text(json.dumps(body, indent=2))
            summary.reports.append(reports / "http-response.json")
            say(
                f"    POST /analyze -> {response.status_code}, mode "
                f"{response.headers.get('X-Analysis-Mode')}, variant "
                f"{response.headers.get('X-Model-Variant')}, job {response.headers.get('X-Job-ID')}"
            )

    # --- save -----------------------------------------------------------------------------
    (workdir / "demo-summary.json").write_text(
        json.dumps(
            {
                "model": summary.model,
                "tiny": summary.tiny,
                "adapter": summary.adapter,
                "train_mae": summary.train_mae,
                "val_mae": summary.val_mae,
                "mae_reduction_train": summary.mae_reduction,
                "modes": summary.modes,
                "http_status": summary.http_status,
                "reports": [str(p) for p in summary.reports],
                "seconds": summary.seconds,
            },
            indent=2,
        )
    )
    _print_finish(summary, say)
    return summary


def _wait_until_up(url: str, timeout: float = 60.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise MondrianError(f"the service did not come up at {url} within {timeout:.0f} s")


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _print_finish(summary: DemoSummary, say: Say) -> None:
    total = sum(summary.seconds.values())
    say(f"\nDone in {total:.0f} s. Reports:")
    for path in summary.reports:
        say(f"    {path}")
    reduction = summary.mae_reduction
    if reduction is not None:
        say(
            f"\nOn its training photos the adapter's score error is {100 * reduction:.0f}% "
            "below the base model's: it learned the curated scores."
        )
    home = summary.workdir / "home"
    say(
        "\nNext:\n"
        f"    export MONDRIAN_HOME={home}\n"
        f"    mondrian analyze PHOTO --advisor {ADVISOR} --mode lora --model {summary.model}\n"
        f"    mondrian serve --model {summary.model}      # then open http://127.0.0.1:5100/docs\n"
        f"    mondrian demo --model {REAL_MODEL_HINT}   # real critiques, needs the weights"
    )
