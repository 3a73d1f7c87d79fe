"""Every backend, and every stand-in for one in the tests, has each member the `Backend`
Protocol declares, with the Protocol's parameters, and none forwards with a catch-all
`__getattr__`: callers use the Protocol's members and probe for none
(src/mondrian/backends/protocol.py)."""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import pytest

import backend_fakes
from mondrian.backends.protocol import Backend

TESTS = Path(__file__).resolve().parents[1]
MEMBERS = [name for name in vars(Backend) if not name.startswith("_")]
METHODS = [name for name in MEMBERS if inspect.isfunction(vars(Backend)[name])]
REAL = [
    ("mondrian.backends.transformers.backend", "TransformersBackend", "transformers"),
    ("mondrian.backends.mlx.backend", "MLXBackend", "mlx_vlm"),
    ("mondrian.backends.vllm.backend", "VLLMBackend", "httpx"),
    ("mondrian.service.batching", "BatchingBackend", None),
    ("mondrian.service.stages", "StageBackend", None),
]
FAKES = [
    cls
    for cls in vars(backend_fakes).values()
    if inspect.isclass(cls) and cls.__module__ == backend_fakes.__name__
]


def _real(module: str, name: str, needs: str | None) -> type:
    if needs is not None:
        pytest.importorskip(needs)
    return getattr(importlib.import_module(module), name)


def _declared(cls: type, member: str) -> bool:
    """A method, property or class attribute, or a data member annotated on the class
    (the real backends annotate what their __init__ sets)."""
    return any(
        member in vars(klass) or member in vars(klass).get("__annotations__", {})
        for klass in cls.__mro__[:-1]
    )


def _parameters(function: object) -> list[tuple[str, object, object]]:
    """Names, kinds and defaults, without `self`; annotations may differ (fakes have none)."""
    params = list(inspect.signature(function).parameters.values())[1:]
    return [(p.name, p.kind, p.default) for p in params]


def _problems(cls: type) -> list[str]:
    problems = [f"lacks {name}" for name in MEMBERS if not _declared(cls, name)]
    problems += [
        f"{name}{inspect.signature(getattr(cls, name))} differs from the Protocol's"
        for name in METHODS
        if _declared(cls, name)
        and _parameters(getattr(cls, name)) != _parameters(vars(Backend)[name])
    ]
    if any("__getattr__" in vars(klass) for klass in cls.__mro__):
        problems.append("forwards with __getattr__")
    return problems


def test_the_protocol_declares_what_its_callers_use():
    assert [
        *("name", "model_id", "answer_budget", "admits"),
        *("generate", "embed_images"),
        *("load_adapter", "unload_adapter", "merge_adapter", "adapters", "info"),
        "warm_up",
    ] == MEMBERS
    for name in MEMBERS:
        assert inspect.getdoc(vars(Backend)[name]), f"Backend.{name} has no docstring"


@pytest.mark.parametrize(("module", "name", "needs"), REAL, ids=[r[1] for r in REAL])
def test_each_backend_has_every_member(module, name, needs):
    assert _problems(_real(module, name, needs)) == []


@pytest.mark.parametrize("cls", FAKES, ids=[c.__name__ for c in FAKES])
def test_each_stand_in_has_every_member(cls):
    assert _problems(cls) == []


def test_the_checks_catch_a_backend_that_falls_short():
    class Probed:
        name = "probed"

        def __getattr__(self, attr):
            return None

        def generate(self, requests, on_token=None):
            return []

    problems = _problems(Probed)
    assert "lacks answer_budget" in problems and "forwards with __getattr__" in problems
    assert any(p.startswith("generate(") for p in problems)


def test_every_stand_in_in_the_tests_is_one_of_the_checked_ones():
    # A class that defines generate() stands in for a backend: it lives in
    # tests/backend_fakes.py, where the test above holds it to the Protocol.
    elsewhere = []
    for path in sorted(TESTS.rglob("*.py")):
        if path.name == "backend_fakes.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and any(
                isinstance(item, ast.FunctionDef) and item.name == "generate" for item in node.body
            ):
                elsewhere.append(f"{path.relative_to(TESTS)}:{node.name}")
    elsewhere.remove("backends/test_protocol.py:Probed")  # the checks' own counter-example
    assert elsewhere == []


def test_a_batcher_around_a_stand_in_is_a_backend_and_reads_through():
    from mondrian.service.batching import BatchingBackend

    inner = backend_fakes.EchoBackend()
    batcher = BatchingBackend(inner)
    try:
        assert isinstance(batcher, Backend) and isinstance(inner, Backend)
        for name in MEMBERS:
            inspect.getattr_static(batcher, name)  # no __getattr__ to fall back on
        assert (batcher.name, batcher.model_id, batcher.answer_budget) == ("echo", "echo-model", 7)
    finally:
        batcher.close()


@pytest.mark.model
def test_a_loaded_backend_sets_every_data_member(backend):
    # The annotated members are set by __init__: present on the instance itself.
    assert isinstance(backend, Backend)
    for name in MEMBERS:
        inspect.getattr_static(backend, name)
    assert backend.answer_budget > 0 and backend.admits is False


@pytest.mark.model
def test_a_loaded_mlx_backend_sets_every_data_member(tiny_checkpoint_factory, tmp_path):
    pytest.importorskip("mlx_vlm")
    from mondrian.backends.mlx.backend import MLXBackend
    from mondrian.errors import Unavailable

    backend = MLXBackend(str(tiny_checkpoint_factory()), cache_dir=tmp_path)
    assert isinstance(backend, Backend)
    for name in MEMBERS:
        inspect.getattr_static(backend, name)
    assert backend.answer_budget > 0 and backend.admits is False
    with pytest.raises(Unavailable, match="cannot merge"):
        backend.merge_adapter("ansel@v1")
