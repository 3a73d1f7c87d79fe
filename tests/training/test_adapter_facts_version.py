"""`facts_version` in the adapter metadata (adapter_format.py): recorded from the data set's
manifest at training, listed by `mondrian adapters list`, absent (unknown) on older
adapters, which still load; serving an adapter of another facts version notes it once, as
a warning, and loads it all the same."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from mondrian import adapter_format as fmt
from mondrian.facts import FACTS_VERSION
from mondrian.storage.adapters import Adapter
from mondrian.strategies.lora import ensure_loaded

TRAINED = {
    "base_fingerprint": "f0",
    "base_revision": None,
    "hyperparameters": {"rank": 4},
    "dataset": {},
    "metrics": {},
    "prompt_version": "p1",
    "training": {},
    "created_at": "2026-01-01T00:00:00.000000Z",
}


def test_a_trained_adapter_records_the_data_sets_facts_version():
    assert fmt.AdapterMeta.trained(**TRAINED, facts_version="7").as_dict()["facts_version"] == "7"


def test_a_data_set_from_before_the_field_writes_none_so_it_reads_as_unknown():
    written = fmt.AdapterMeta.trained(**TRAINED, facts_version=None).as_dict()
    assert "facts_version" not in written  # not a null that would read as "recorded: none"
    assert fmt.parse_meta(written, "meta").facts_version is None


def test_an_older_adapter_without_the_field_still_verifies(tmp_path):
    older = {"format": fmt.META_FORMAT, "advisor_id": "ansel", "prompt_version": "3"}
    path = tmp_path / "adapter"
    path.mkdir()
    (path / fmt.ADAPTER_CONFIG).write_text(json.dumps({"peft_type": "LORA"}))
    (path / fmt.ADAPTER_META).write_text(json.dumps(older))
    meta = fmt.read_meta(path)
    assert meta is not None and meta.facts_version is None and meta.prompt_version == "3"


class LoadingBackend:
    """The two members `ensure_loaded` uses: which adapters are resident, and loading one."""

    def __init__(self) -> None:
        self.loaded: list[str] = []

    def adapters(self) -> list[str]:
        return list(self.loaded)

    def load_adapter(self, name: str, path: Path) -> None:
        self.loaded.append(name)


class Ctx:
    def __init__(self) -> None:
        self.backend = LoadingBackend()


def _adapter(version: int, metadata: dict) -> Adapter:
    return Adapter("facts_test", version, Path("/nowhere"), "tiny", metadata)


@pytest.fixture(autouse=True)
def _fresh_notes(monkeypatch):
    monkeypatch.setattr(fmt, "_facts_noted", set())


def test_serving_another_facts_version_warns_once_and_loads(caplog):
    ctx = Ctx()
    other = _adapter(1, {"facts_version": FACTS_VERSION + "-old"})
    with caplog.at_level(logging.INFO, logger=fmt.__name__):
        for _ in range(3):  # the first call loads it; later ones find it resident
            assert ensure_loaded(ctx, other) == "facts_test@v1"  # type: ignore[arg-type]
        ctx.backend.loaded.clear()  # loaded again (another backend, say): still noted once
        ensure_loaded(ctx, other)  # type: ignore[arg-type]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert f"facts version {FACTS_VERSION}-old" in warnings[0].getMessage()
    assert f"measures version {FACTS_VERSION}" in warnings[0].getMessage()


def test_the_current_facts_version_is_not_noted_and_unknown_is_only_info(caplog):
    ctx = Ctx()
    with caplog.at_level(logging.INFO, logger=fmt.__name__):
        ensure_loaded(ctx, _adapter(1, {"facts_version": FACTS_VERSION}))  # type: ignore[arg-type]
        ensure_loaded(ctx, _adapter(2, {}))  # type: ignore[arg-type]
    assert ctx.backend.loaded == ["facts_test@v1", "facts_test@v2"]  # both load
    assert [r.levelno for r in caplog.records] == [logging.INFO]
    assert "facts_test@v2 records no facts_version (unknown" in caplog.records[0].getMessage()


def test_adapters_list_shows_the_facts_version_or_unknown(state, settings, capsys):
    from training_helpers import ADVISOR, fake_adapter

    from mondrian.cli.main import main
    from mondrian.training import registry

    for metadata in ({"facts_version": "1"}, {}):
        staging = registry.new_staging_dir(settings, ADVISOR)
        fake_adapter(staging)
        registry.publish(state, settings, ADVISOR, staging, "tiny-base", metadata)
    assert main(["adapters", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["facts_version"] for r in rows] == ["1", None]
    assert main(["adapters", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "FACTS" in lines[0].split()
    facts_at = lines[0].index("FACTS")
    assert [line[facts_at:].split()[0] for line in lines[1:]] == ["1", "unknown"]
