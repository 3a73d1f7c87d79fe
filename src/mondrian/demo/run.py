"""`mondrian demo`: the whole product once, offline, top to bottom.

Setup: a working folder with its own MONDRIAN_HOME, a model (by default a tiny
random-weight Qwen2.5-VL built on the spot, because no weights can be downloaded) and the
shipped training config that fits it. Work: register the advisors, index the sample
portfolio, build a dataset, train a LoRA, evaluate it against the base model on the
held-out and the training photos, critique a photo that is not in the portfolio in the
three modes, serve one real HTTP request. Save: every report, and a summary of them.

The headline is the held-out error: how far the scores on photos the adapter never saw are
from the curated ones. The training error stands beside it, as the evidence that training
worked at all. With the tiny model the critiques' words are noise (random weights), and on
held-out photos the adapter can at best have learned the portfolio's typical scores.
`--model` switches to a real model, e.g. Qwen/Qwen2.5-VL-3B-Instruct. `--quick` is the same
run with less training and no augmentation, for tests.

Every file it reads ships inside the package (src/mondrian/data, src/mondrian/configs).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mondrian.adapter_format import LOSS_CURVE
from mondrian.config import Settings
from mondrian.demo.progress import EvalBars, progress_bar
from mondrian.demo.summary import (
    REAL_MODEL_HINT,
    DemoSummary,
    Say,
    Steps,
    fmt,
    mondrian_command,
    print_finish,
    split_label,
)
from mondrian.errors import MondrianError

if TYPE_CHECKING:
    import httpx

    from mondrian.backends.protocol import Backend

ADVISOR = "ansel"
# The curated sample profiles fit these bounds; they keep tiny-model answers short.
TINY_TEXT_CHARS = 24
TINY_LIST_ITEMS = 2
SAMPLE_PORTFOLIO = "data/sample_portfolio"
# Not in the portfolio: critiquing it shows the adapter and retrieval on an unseen photo.
CRITIQUE_PHOTO = "data/critique/clock.jpg"
VAL_FRACTION = 0.2
# --quick: every stage, with training cut to a few epochs, no augmented copies, and the
# training-split error measured on a few of its photos (the held-out split stays whole).
QUICK_EPOCHS = 5
QUICK_TRAIN_EVAL_PHOTOS = 3
# The tiny demo's training, over the shipped tiny.toml (which the tests train with too).
# Since the prompts carry the Measured block, tiny.toml's 60 constant-rate epochs over two
# copies of each photo left the training error 58% below the base model's; 100 epochs of
# the 11 photos themselves (no augmented copy), one example a step, with a cosine decay,
# learn every curated score of them, in about the same time (figures: tests/test_demo.py).
# `--config FILE` or `--model` drop these.
TINY_DEMO_TRAINING: dict[str, object] = {
    "epochs": 100,
    "batch_size": 1,
    "lr": 4e-3,
    "scheduler": "cosine",
    "warmup_ratio": 0.05,
}


def serve_one_request(settings: Settings, backend: Backend, photo: Path) -> httpx.Response:
    """Start the real service on a free loopback port, POST `photo` to /analyze in lora
    mode, stop the service, and return its answer."""
    import httpx
    import uvicorn

    from mondrian.service.app import create_app

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
        with photo.open("rb") as image:
            return httpx.post(
                f"http://127.0.0.1:{port}/analyze",
                files={"image": (photo.name, image, "image/jpeg")},
                data={"advisor": ADVISOR, "mode": "lora"},
                timeout=120,
            )
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _package_path(relative: str) -> Path:
    return Path(str(resources.files("mondrian").joinpath(relative)))


def run_demo(
    workdir: Path,
    *,
    model: str | None = None,
    config: Path | None = None,
    quick: bool = False,
    say: Say = print,
    progress: bool = True,
    backend_name: str = "transformers",
) -> DemoSummary:
    """Run the demo in `workdir`. `config`: a training TOML (default: the shipped one that
    fits the model; none fitting is an error before any work starts)."""
    # Heavy imports here: `mondrian --help` must not pay for them.
    from mondrian.analysis import analyze
    from mondrian.backends.protocol import create_backend
    from mondrian.context import Context
    from mondrian.evaluation.run import evaluate
    from mondrian.images import read_image_file
    from mondrian.portfolio.indexing import collect_files, index_paths
    from mondrian.portfolio.profiles_io import import_profiles
    from mondrian.reports.render import write_reports
    from mondrian.reports.thumbnails import report_images
    from mondrian.storage import advisors as advisor_store
    from mondrian.storage.bootstrap import open_state
    from mondrian.tiny.checkpoint import make_tiny
    from mondrian.training.config import load_config, pick_config
    from mondrian.training.dataset import build_dataset

    if backend_name == "mlx":  # Apple Silicon (or MLX's CPU build): train on MLX as well
        from mondrian.training.mlx_train import train_mlx as train
    else:
        from mondrian.training.train import train

    # --- setup ----------------------------------------------------------------------------
    workdir = Path(workdir).absolute()
    tiny = model is None
    # Chosen and validated first: a model no config fits fails before minutes of work.
    config_path = Path(config).absolute() if config is not None else pick_config(model)
    # --quick keeps tiny.toml's constant rate: a cosine decay over its 5 epochs learns less.
    demo_training = TINY_DEMO_TRAINING if tiny and config is None and not quick else {}
    load_config(config_path, **demo_training)
    workdir.mkdir(parents=True, exist_ok=True)
    reports = workdir / "reports"
    summary = DemoSummary(
        workdir=workdir,
        model=model or str(workdir / "tiny-model"),
        tiny=tiny,
        config=config_path,
        advisor=ADVISOR,
        quick=quick,
        quick_epochs=QUICK_EPOCHS if quick else None,
        quick_train_eval_photos=QUICK_TRAIN_EVAL_PHOTOS if quick else None,
        training={**demo_training, **({"epochs": QUICK_EPOCHS} if quick else {})},
    )
    step = Steps(8, say, summary)
    if tiny:
        say(
            "Mondrian demo, offline. The model is a TINY RANDOM-WEIGHT Qwen2.5-VL built here:\n"
            "its critiques are well-formed JSON but their words are noise. What you see is\n"
            "the machinery, and an adapter that really learns. For real critiques run:\n"
            f"    {mondrian_command()} demo --model {REAL_MODEL_HINT}"
        )
    over = ", ".join(f"{k} {v}" for k, v in demo_training.items())
    say(
        f"Training config: {config_path}"
        + (f" with the tiny demo's {over}" if over else "")
        + (" (quick: fewer epochs)" if quick else "")
    )
    if tiny:
        with step("Building a tiny Qwen2.5-VL checkpoint (real architecture, random weights)"):
            make_tiny(workdir / "tiny-model", "qwen2_5_vl", seed=0, force=True)
    settings = Settings(
        home=workdir / "home",
        model=summary.model,
        backend=backend_name,
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
            files = collect_files([portfolio])
            with progress_bar(len(files), "indexing", "img", progress) as bar:
                report = index_paths(ctx, advisor, files, lambda _event: bar.update(1))
            curated = (portfolio / f"{ADVISOR}_profiles.jsonl").read_text().splitlines()
            imported = import_profiles(db, ADVISOR, curated)
            say(
                f"    profiled {len(report.indexed)} photos with the model, "
                f"then imported {imported.imported} curated profiles"
            )

        augment = 0 if quick or (tiny and config is None) else 1
        copies = "one augmented copy each" if augment else "no augmentation"
        with step(f"Building the training set (80/20 split by photo, {copies})"):
            dataset_dir = workdir / "dataset"
            manifest = build_dataset(
                db,
                settings,
                ADVISOR,
                dataset_dir,
                val_fraction=VAL_FRACTION,
                augment=augment,
                max_text_chars=settings.max_text_chars,
                max_list_items=settings.max_list_items,
                force=True,
                warn=say,
            )
            splits = manifest["splits"]
            summary.photos = {name: splits[name]["images"] for name in ("validation", "train")}
            say(
                f"    {splits['train']['examples']} training examples from "
                f"{splits['train']['images']} photos; "
                f"{splits['validation']['images']} photos held out"
            )

        with step(f"Training a LoRA adapter for {advisor.name}"):
            cfg = load_config(
                config_path,
                model=settings.model,
                **summary.training,
            )
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
            curve = Path(result.adapter.path) / LOSS_CURVE
            if curve.is_file():
                summary.reports.append(curve)
                say(f"    loss curve: {curve}")

        with step("Evaluating the adapter against the base model, held-out photos first"):
            for split, target in (
                ("validation", summary.val_mae),
                ("train", summary.train_mae),
            ):
                limit = QUICK_TRAIN_EVAL_PHOTOS if quick and split == "train" else None
                split_file, summary.evaluated[split] = _eval_split(dataset_dir, split, limit)
                with EvalBars(split, progress) as bars:
                    evaluation = evaluate(
                        settings,
                        db,
                        backend,
                        ADVISOR,
                        dataset_dir=dataset_dir,
                        split=split_file,
                        out_dir=reports / f"evaluation-{split}",
                        on_progress=bars.update,
                    )
                for variant in evaluation.variants:
                    target[variant.name] = variant.mean_mae
                summary.reports.append(reports / f"evaluation-{split}" / "evaluation.html")
                say(
                    f"    {split_label(split, summary.photos, summary.evaluated)} mean score "
                    f"error: base {fmt(target['base'])}, adapter {fmt(target['adapter'])}"
                )

        with step("Critiquing a photo that is not in the portfolio, in the three modes"):
            held_out = _package_path(CRITIQUE_PHOTO)
            summary.critiqued_photo = held_out
            photo = read_image_file(held_out)
            say(f"    {held_out.name}: never indexed, never trained on")
            for mode in ("baseline", "rag", "lora"):
                analysis = analyze(ctx, advisor, photo, mode)
                summary.modes[mode] = analysis.mode_used
                images = report_images(
                    db,
                    settings.images_dir,
                    photo=photo.data,
                    exemplar_hashes=[ref.image_hash for ref in analysis.references],
                )
                paths = write_reports(
                    analysis, advisor, reports / f"analysis-{mode}", images=images
                )
                summary.reports.extend(paths.values())
                grade = analysis.critique.overall_grade
                say(
                    f"    {mode:<8} -> served by {analysis.mode_used:<8} overall "
                    f"{analysis.critique.overall_score:.1f} ({grade}), "
                    f"{len(analysis.references)} references"
                )

        with step("Serving over HTTP and sending one real request"):
            response = serve_one_request(settings, backend, held_out)
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
    summary.save(workdir / "demo-summary.json")
    print_finish(summary, say)
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


def _eval_split(dataset_dir: Path, split: str, limit: int | None) -> tuple[str, int]:
    """(split file stem to evaluate, photos in it): the whole split, or its first `limit`
    photos written beside it as `<split>_quick.jsonl` (evaluate reads `<stem>.jsonl`)."""
    rows = (dataset_dir / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [row for row in rows if row.strip()]
    # Photos are counted by their source image's hash: an augmented copy is the same photo.
    images = [json.loads(row)["mondrian"]["image_hash"] for row in rows]
    if limit is None or len(set(images)) <= limit:
        return split, len(set(images))
    keep = sorted(set(images))[:limit]
    chosen = [row for row, image in zip(rows, images, strict=True) if image in keep]
    stem = f"{split}_quick"
    (dataset_dir / f"{stem}.jsonl").write_text("\n".join(chosen) + "\n", encoding="utf-8")
    return stem, len(keep)
