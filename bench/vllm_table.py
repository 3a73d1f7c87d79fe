"""bench/vllm_bench.py's results: one JSON per arch that several calls fill in, and the
table made from it.

    {"arch": ..., "columns": {COLUMN: {"calls": [CALL, ...], "rows": {ROW: {...}}}}}

A CALL says when and where a column ran ({"id", "at", "host", "gpu", "gpu_uuid",
"settings", "server_ready_s", ...}); every row names the call that measured it
("call": its id). `merge` puts a call's rows over an earlier file's: a measured row
replaces the old one, a skipped or failed one only replaces a row that was not measured
either; calls no row names any more are dropped. The table says whether every kept call
ran on one machine (host and GPU UUID), and warns when not.
"""

from __future__ import annotations

import copy
from typing import Any

WORKLOADS = (
    # name, rows, adapters ("base", "one" or "all"), constrained
    ("b1_base_schema", 1, "base", True),
    ("b1_lora_schema", 1, "one", True),
    ("b1_lora_free", 1, "one", False),
    ("b32_8lora_schema", 32, "all", True),
    ("b32_8lora_free", 32, "all", False),
)
COLUMNS = ("fast", "vllm_caches_off", "vllm_caches_on")
TITLES = {
    "fast": "Mondrian fast path",
    "vllm_caches_off": "Mondrian on vLLM, caches off",
    "vllm_caches_on": "Mondrian on vLLM, caches on",
}


def poisson_name(rate: float) -> str:
    return f"poisson_{rate:g}"


def measured(row: dict[str, Any] | None) -> bool:
    return bool(row) and "skipped" not in row and "error" not in row  # type: ignore[operator]


def merge(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """`new` (one call's columns) over `old` (the file so far, or None)."""
    out = copy.deepcopy(upgrade(old)) if old else {"arch": new["arch"], "columns": {}}
    for column, fresh in new["columns"].items():
        kept = out["columns"].setdefault(column, {"calls": [], "rows": {}})
        for name, row in fresh["rows"].items():
            if measured(row) or not measured(kept["rows"].get(name)):
                kept["rows"][name] = row
        kept["calls"] += fresh["calls"]
        named = {row.get("call") for row in kept["rows"].values()}
        latest = fresh["calls"][-1]["id"] if fresh["calls"] else None
        kept["calls"] = [c for c in kept["calls"] if c["id"] in named or c["id"] == latest]
    return out


def upgrade(d: dict[str, Any]) -> dict[str, Any]:
    """A file of the first layout (one call, columns at the top) in this one."""
    if "columns" in d:
        return d
    columns: dict[str, Any] = {}
    for column in COLUMNS:
        col = d.get(column)
        if not col:
            continue
        call = {
            "id": f"{column}-first",
            "host": None,
            "gpu": d.get("env", {}).get("device"),
            "gpu_uuid": None,
            "server_ready_s": col.get("server_ready_s"),
            "error": col.get("error"),
            "settings": {k: d.get(k) for k in ("text_chars", "free_tokens", "repeats")},
        }
        rows = {n: {**col[n], "call": call["id"]} for n, *_ in WORKLOADS if n in col}
        for rate, row in (col.get("poisson") or {}).items():
            if rate != "skipped":
                rows[poisson_name(float(rate))] = {**row, "call": call["id"]}
        columns[column] = {"calls": [call], "rows": rows}
    return {"arch": d["arch"], "columns": columns}


# --- the table ---------------------------------------------------------------------------


def _cell(row: dict[str, Any] | None) -> str:
    if not row:
        return "—"
    if "skipped" in row:
        return f"skipped ({row['skipped']})"
    if "error" in row:
        return f"failed ({row['error'][:80]})"
    if "throughput_tok_s" in row:  # a Poisson row
        return (
            f"{row['throughput_tok_s'] or 0:,.0f} tok/s, p50 {row['latency_p50_s']:.2f} s, "
            f"p95 {row['latency_p95_s']:.2f} s, {row['valid']}/{row['requests']} valid"
        )
    text = f"{row['tok_s']:,.0f} tok/s ({row['tokens']} tok, {row['s']:.2f} s"
    if "valid" in row:
        text += f", {row['valid']}/{row['rows']} valid, {row['calibrated']} calibrated"
    return text + ")"


def _flight(row: dict[str, Any] | None) -> str:
    flight = (row or {}).get("in_flight")
    if not flight:
        return "—"
    server = flight.get("server_held_peak")
    return f"{flight.get('client_peak', '?')} / {'?' if server is None else f'{server:g}'}"


def _has_flight(row: dict[str, Any] | None) -> bool:
    return bool((row or {}).get("in_flight"))


def _machines(d: dict[str, Any]) -> list[str]:
    calls = [c for col in d["columns"].values() for c in col["calls"]]
    seen = {(c.get("host"), c.get("gpu"), c.get("gpu_uuid")) for c in calls}
    machines = [f"{h or '?'}, {g or '?'} ({u or 'no UUID'})" for h, g, u in sorted(seen, key=str)]
    if len(machines) == 1:
        return [f"Every column on one machine: {machines[0]}."]
    return [f"**Warning: the columns come from {len(machines)} machines:** " + "; ".join(machines)]


def _row_names(d: dict[str, Any]) -> tuple[list[str], list[str]]:
    names = [n for n, *_ in WORKLOADS]
    rates = {r for col in d["columns"].values() for r in col["rows"] if r.startswith("poisson_")}
    return names, sorted(rates, key=lambda r: float(r.split("_", 1)[1]))


def arch_table(d: dict[str, Any]) -> list[str]:
    d = upgrade(d)
    cols = [c for c in COLUMNS if c in d["columns"]]
    rows = {c: d["columns"][c]["rows"] for c in cols}
    header = "| {} | " + " | ".join(TITLES[c] for c in cols) + " |"
    rule = "|---|" + "---|" * len(cols)
    settings = next((c["settings"] for c in d["columns"][cols[0]]["calls"]), {}) if cols else {}
    lines = [f"### {d['arch']}", "", *_machines(d), ""]
    lines.append(
        "Stops honoured in every row (constrained: at the schema's end, every valid answer "
        "stopped there; free: at end-of-turn or the token limit, the JSON's `stopped` counts "
        f"end-of-turn stops); strings bounded at {settings.get('text_chars')} chars; free rows "
        f"up to {settings.get('free_tokens')} tokens; median of {settings.get('repeats')} "
        f"after a warm-up; the b32 rows are {settings.get('batch', 32)} requests."
    )
    names, rates = _row_names(d)
    lines += ["", header.format("workload"), rule]
    for n in names:
        lines.append(f"| {n} | " + " | ".join(_cell(rows[c].get(n)) for c in cols) + " |")
    if rates:
        lines += ["", header.format("Poisson arrivals (8 adapters, schema, stops honoured)"), rule]
        for r in rates:
            cells = " | ".join(_cell(rows[c].get(r)) for c in cols)
            lines.append(f"| {r.split('_', 1)[1]} req/s | {cells} |")
    flights = [n for n in [*names, *rates] if any(_has_flight(rows[c].get(n)) for c in cols)]
    if flights:
        lines += [
            "",
            "Requests in flight, peak (Mondrian's open streams / vLLM's running + waiting):",
            "",
            header.format("row"),
            rule,
        ]
        for n in flights:
            lines.append(f"| {n} | " + " | ".join(_flight(rows[c].get(n)) for c in cols) + " |")
    lines += ["", "Calls:"]
    for c in cols:
        for call in d["columns"][c]["calls"]:
            lines.append(f"- {c}: {_call_line(call)}")
    lines.append("")
    return lines


def _call_line(call: dict[str, Any]) -> str:
    parts = [str(call.get("at") or "?"), f"on {call.get('host') or '?'}"]
    build = call.get("build") or {}
    if build.get("reused") is not None:
        built = f"model built in {build.get('built_s')} s" if not build["reused"] else ""
        parts.append(built or f"model reused from the build of {build.get('built_at')}")
    if call.get("server_ready_s") is not None:
        parts.append(f"server healthy {call['server_ready_s']} s after start")
    if call.get("vllm"):
        parts.append(f"vLLM {call['vllm']}")
    if call.get("torch"):
        parts.append(f"torch {call['torch']}")
    if call.get("error"):
        parts.append(f"failed: {call['error'][:300]}")
    return ", ".join(parts)


def table(files: list[dict[str, Any]]) -> str:
    return "\n".join(line for d in files for line in arch_table(d))
