"""Cheap checks a command runs before it loads a model.

Loading a real Qwen-VL model takes from half a minute to two, so whatever can be known from
the state, the flags and the machine is checked first: an unknown advisor, a mode that will
fall back (said before the load, with the reason), a port already in use, a data set that is
not there. Each check reads SQLite or the file system only, never a backend; a problem is a
MondrianError, which the CLI prints as one line and exits 2 on.

It sits above `evaluation` (whose adapter and split lookups it reuses) and below the CLI.
"""

from __future__ import annotations

import errno
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path

from mondrian.advisors import Advisor
from mondrian.errors import InvalidInput, NotFound, Unavailable, parse_choice
from mondrian.evaluation.run import load_examples, resolve_adapter
from mondrian.modes import FALLBACK_ORDER, Mode
from mondrian.storage import adapters as adapter_store
from mondrian.storage import profiles as profile_store
from mondrian.storage.advisors import require_advisor
from mondrian.storage.db import Database


@dataclass(frozen=True)
class ModePlan:
    """The mode a job will most likely run in, and why each earlier one cannot serve."""

    requested: Mode
    expected: Mode
    reasons: list[str] = field(default_factory=list)
    advisor_id: str = ""  # named in the notice: `analyze --advisor a,b` plans each

    def notice(self) -> str | None:
        """The line a user reads before the load when the job will fall back; None if not."""
        if self.expected == self.requested:
            return None
        return (
            f"{self.advisor_id + ': ' if self.advisor_id else ''}"
            f"mode {self.requested} is unavailable ({'; '.join(self.reasons)}); "
            f"falling back to {self.expected}"
        )


def _why_not(db: Database, advisor_id: str, mode: Mode) -> str | None:
    # The state's half of each strategy's `unavailable`: whether an adapter can load, or the
    # base-model policy applies, is only known with a backend and is left to the job.
    with db.read() as conn:
        if mode == Mode.LORA and adapter_store.get_active(conn, advisor_id) is None:
            return "no active adapter"
        if mode == Mode.RAG and profile_store.count_profiles(conn, advisor_id) == 0:
            return "no indexed portfolio"
    return None


def plan_analysis(db: Database, advisor_id: str, mode: str, *, strict: bool = False) -> ModePlan:
    """Check `mondrian analyze`'s advisor and mode before the model loads.

    Unknown advisor or mode: NotFound / InvalidInput. A mode that will fall back gives a
    plan whose `notice()` says so; with `strict` it is refused (Unavailable) instead.
    """
    requested = parse_choice(Mode, mode, "mode", code="bad_mode")
    with db.read() as conn:
        advisor: Advisor = require_advisor(conn, advisor_id)
    reasons = []
    for candidate in FALLBACK_ORDER[FALLBACK_ORDER.index(requested) :]:
        why = _why_not(db, advisor.id, candidate)
        if why is None:
            break
        reasons.append(f"{candidate}: {why}")
    else:  # baseline always serves; kept for a future order that ends elsewhere
        raise Unavailable(f"no mode can serve advisor {advisor.id}: {'; '.join(reasons)}")
    plan = ModePlan(requested=requested, expected=candidate, reasons=reasons, advisor_id=advisor.id)
    if strict and plan.notice() is not None:
        raise Unavailable(
            f"advisor {advisor.id} cannot be served in mode {requested}: {'; '.join(reasons)}",
            code="mode_unavailable",
        )
    return plan


def announce_plan(plan: ModePlan) -> None:
    """The fallback, on stderr, before the load: the user learns it now, not in the result."""
    notice = plan.notice()
    if notice is not None:
        print(f"mondrian: note: {notice}", file=sys.stderr)


def check_port_free(host: str, port: int) -> None:
    """Bind `host:port` for a moment, as uvicorn will, so a port in use fails before the load.

    SO_REUSEADDR as uvicorn sets it: a port left in TIME_WAIT by a stopped server is free.
    A race with another process binding it in between is still possible and then uvicorn
    reports it, as before.
    """
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise InvalidInput(f"--host {host!r} does not resolve: {exc.strerror}") from None
    family, kind, proto, _name, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise Unavailable(
                    f"port {port} on {host} is already in use; stop what listens there or "
                    "pass --port N",
                    code="port_in_use",
                ) from None
            if exc.errno in (errno.EACCES, errno.EPERM):
                raise InvalidInput(
                    f"no permission to listen on port {port} (try one above 1023)"
                ) from None
            if exc.errno == errno.EADDRNOTAVAIL:
                raise InvalidInput(f"--host {host} is not an address of this machine") from None
            raise


def check_evaluation(
    db: Database,
    advisor_id: str,
    adapter_ref: str | None,
    dataset_dir: Path | None,
    split: str,
) -> None:
    """`mondrian evaluate`'s advisor, adapter and data set split, before the model loads.

    The split is read in full (rows parsed, photos decoded): a data set is small next to a
    model load, and a bad row found after the load would cost the load again.
    """
    with db.read() as conn:
        require_advisor(conn, advisor_id)
    adapter = resolve_adapter(db, advisor_id, adapter_ref)
    recorded = (adapter.metadata or {}).get("dataset") or {}
    path = dataset_dir or (
        Path(recorded["path"]) if isinstance(recorded, dict) and recorded.get("path") else None
    )
    if path is None:
        raise InvalidInput(f"adapter {adapter.ref} records no dataset; pass --dataset DIR")
    if not Path(path).is_dir():
        raise NotFound(f"dataset not found: {path} (build one with `mondrian dataset build`)")
    examples, _identity = load_examples(Path(path), split)
    if not examples:
        raise InvalidInput(f"the {split} split of {path} is empty")


def check_index_files(files: list[Path]) -> None:
    """`mondrian index`: refuse before the load when not one of the named files exists (a
    typo'd folder); some missing among real ones are reported as unreadable, as before."""
    if files and not any(path.exists() for path in files):
        shown = ", ".join(str(path) for path in files[:3]) + (" ..." if len(files) > 3 else "")
        raise NotFound(f"no such file or folder: {shown}", code="no_images")
