"""What a model name means, settled once before `from_pretrained` runs.

`--model` takes a local folder or a Hugging Face hub id. Left to itself, transformers
answers a missing folder with "Repo id must be in the form..." and an unreachable hub
with minutes of doubled retry warnings. `resolve_model` says instead, within seconds:

    a folder that exists        its path
    a path that does not        "no model folder at PATH"
    a hub id in the cache       its snapshot folder: it loads with no network call
    a hub id not in the cache   the id, once one short request shows the hub answers;
                                else one line that names `mondrian models pull ID`

The backends (backends/transformers/backend.py, backends/mlx/backend.py) and training
(training/setup.py) load whatever it returns. huggingface_hub is imported inside the
functions: `import mondrian` stays light.
"""

from __future__ import annotations

import json
import re
import threading
import urllib.error
import urllib.request
from pathlib import Path

from mondrian.errors import Unavailable

# How long the hub gets to answer one request before we call it unreachable: a healthy
# hub answers in well under a second; a dead route would otherwise hang for minutes.
REACH_TIMEOUT_S = 3.0

# The hub's repo id form: `name` or `owner/name`, word characters, dots and dashes.
_HUB_ID = re.compile(r"[\w.-]{1,96}(/[\w.-]{1,96})?")


def resolve_model(
    name: str,
    *,
    cache_dir: str | Path | None = None,
    endpoint: str | None = None,
    offline: bool | None = None,
    timeout: float = REACH_TIMEOUT_S,
) -> str:
    """A folder path or hub id that `from_pretrained` can load; Unavailable otherwise.

    `cache_dir`, `endpoint` and `offline` default to huggingface_hub's own settings
    (HF_HUB_CACHE, HF_ENDPOINT, HF_HUB_OFFLINE), the ones `from_pretrained` will use.
    """
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path)
    if looks_like_path(name):
        raise Unavailable(f"no model folder at {path.absolute()}")
    from huggingface_hub import constants

    snapshot = cached_snapshot(name, cache_dir)
    if snapshot is not None:
        return str(snapshot)
    if constants.HF_HUB_OFFLINE if offline is None else offline:
        raise Unavailable(unreachable_message(name, "HF_HUB_OFFLINE is set"))
    check_reachable(name, endpoint or constants.ENDPOINT, timeout)
    return name


def looks_like_path(name: str) -> bool:
    """Whether `name` can only be a folder: not in the hub id form, written like a path
    (`./x`, `~/x`, `/x`, `a/b/c`), or under a folder that exists here (`demo-out/x`)."""
    if not _HUB_ID.fullmatch(name) or ".." in name or "--" in name:
        return True
    if name.startswith((".", "~", "/")):
        return True
    parent = Path(name).parent
    return parent != Path(".") and parent.is_dir()


def cached_snapshot(repo_id: str, cache_dir: str | Path | None = None) -> Path | None:
    """The cached snapshot folder of `repo_id` (its default branch) if it holds a whole
    checkpoint: a config.json and every weight file its index names."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        folder = Path(snapshot_download(repo_id, cache_dir=cache_dir, local_files_only=True))
    except (LocalEntryNotFoundError, ValueError):
        return None
    return folder if is_complete_checkpoint(folder) else None


def is_complete_checkpoint(folder: Path) -> bool:
    """config.json and the weights: model.safetensors, or every shard the index names.

    An interrupted download leaves a snapshot folder with some files: loading it would
    fail half way, so it does not count as cached."""
    if not (folder / "config.json").is_file():
        return False
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = set(json.loads(index.read_text(encoding="utf-8")).get("weight_map", {}).values())
        return bool(shards) and all((folder / shard).is_file() for shard in shards)
    return (folder / "model.safetensors").is_file()


def check_reachable(repo_id: str, endpoint: str, timeout: float = REACH_TIMEOUT_S) -> None:
    """One request to the hub's model API; Unavailable unless some HTTP answer comes back
    within `timeout` (any status will do: a missing or gated repo is from_pretrained's to
    word, and it does so without retrying).

    The request runs on a thread we stop waiting for: urllib's timeout bounds the connect
    and each read, but not the name lookup, which can hang on a half-configured network."""
    url = f"{endpoint.rstrip('/')}/api/models/{repo_id}"
    outcome: list[BaseException | None] = []

    def ask() -> None:
        try:
            request = urllib.request.Request(url, method="HEAD")
            with urllib.request.urlopen(request, timeout=timeout):
                outcome.append(None)
        except urllib.error.HTTPError:
            outcome.append(None)  # the hub answered
        except (urllib.error.URLError, OSError, ValueError) as exc:
            outcome.append(exc)

    thread = threading.Thread(target=ask, name="mondrian-hub-check", daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    if outcome and outcome[0] is None:
        return
    if not outcome:
        reason: object = f"no answer in {timeout:g} s"
    elif isinstance(outcome[0], urllib.error.URLError):
        reason = outcome[0].reason
    else:
        reason = outcome[0]
    raise Unavailable(unreachable_message(repo_id, f"{endpoint}: {reason}"))


def unreachable_message(repo_id: str, why: str) -> str:
    return (
        f"cannot reach the Hugging Face hub ({why}) and {repo_id} is not in the model cache; "
        f"run `mondrian models pull {repo_id}` on a connected machine, or pass --model PATH"
    )
