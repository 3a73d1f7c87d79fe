"""The fast training engine's compiled layer halves (training/fast_halves.py): the
`compile` setting, the compiled step equal to the eager one (with dropout, with and
without gradient checkpointing), and the eager fallback when compiling fails, before the
first step or at a real step.

On the CPU inductor takes minutes to compile even the tiny model, so these runs compile
with torch's `aot_eager` backend: dynamo's capture and AOTAutograd's forward and backward
graphs, as the GPU runs them, without inductor's code generation (tests/gpu/
test_fast_train_cuda.py compiles with inductor on CUDA)."""

from __future__ import annotations

import logging

import pytest

from lora_helpers import randomise_lora
from mondrian.training.config import ConfigError, TrainConfig


def test_the_setting_is_on_with_cuda_only_by_default():
    import torch

    from mondrian.training.fast_halves import wants_compile

    assert wants_compile("auto", torch.device("cuda")) is True
    assert wants_compile("auto", torch.device("cpu")) is False
    assert wants_compile("on", torch.device("cpu")) is True
    assert wants_compile("off", torch.device("cuda")) is False
    assert TrainConfig().compile == "auto"
    with pytest.raises(ConfigError, match="compile"):
        TrainConfig().merged(compile="sometimes")
    # How a run is computed, not what it trains: a run resumes with the other setting.
    assert TrainConfig().fingerprint() == TrainConfig(compile="off").fingerprint()
    assert TrainConfig().compile_unit == "halves"
    assert TrainConfig().fingerprint() == TrainConfig(compile_unit="layer").fingerprint()
    with pytest.raises(ConfigError, match="compile_unit"):
        TrainConfig().merged(compile_unit="model")
    assert TrainConfig().compile_launch == "cpp"
    assert TrainConfig().fingerprint() == TrainConfig(compile_launch="python").fingerprint()
    with pytest.raises(ConfigError, match="compile_launch"):
        TrainConfig().merged(compile_launch="rust")


@pytest.mark.model
def test_each_launch_compiles_with_its_inductor_options(tiny_checkpoint_factory, monkeypatch):
    """`compile_launch` reaches inductor as its options: the C++ wrapper by default, none
    for the Python one. The GPU timing is bench/train_bench.py's `python` row beside the
    default ones."""
    from mondrian.training import fast_halves
    from mondrian.training.fast_engine import FastEngine

    calls = []

    def compile(fn, **kwargs):
        calls.append((fn.__name__, kwargs))
        return fn

    monkeypatch.setattr(fast_halves.torch, "compile", compile)
    model = _model(tiny_checkpoint_factory())
    for launch, options in {"cpp": {"cpp_wrapper": True}, "python": None}.items():
        calls.clear()
        engine = FastEngine(
            model, dropout=0.0, compile="on", compile_unit="layer", compile_launch=launch
        )
        assert engine.halves.launch == launch
        assert [name for name, _ in calls] == ["train_pre", "train_post", "train_layer"]
        for _, kwargs in calls:
            assert kwargs["dynamic"] is True and kwargs.get("options") == options
    assert FastEngine(model, dropout=0.0, compile="on").halves.launch == "cpp"
    # Another backend (the CPU tests' aot_eager) takes no inductor options.
    monkeypatch.setattr(fast_halves, "BACKEND", "aot_eager")
    calls.clear()
    FastEngine(model, dropout=0.0, compile="on", compile_launch="cpp")
    assert all("options" not in kwargs for _, kwargs in calls)
    with pytest.raises(ValueError, match="unknown compile launch"):
        FastEngine(model, dropout=0.0, compile="on", compile_launch="rust")
    assert FastEngine(model, dropout=0.0, compile="off").halves.launch is None


def _model(checkpoint):
    import torch

    from mondrian.training.setup import add_lora, load_base

    cfg = TrainConfig(model=str(checkpoint), rank=4, alpha=8, dropout=0.3, dtype="float32")
    _, model = load_base(cfg, torch.device("cpu"))
    model = add_lora(model, cfg)
    randomise_lora(model, 1)
    return model.train()


def _batch(length: int = 40):
    import torch

    torch.manual_seed(0)
    ids = torch.randint(0, 100, (1, length))
    labels = ids.clone()
    labels[:, : length // 2] = -100
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


def _step(engine, model, batch, seed: int = 7):
    import torch

    from mondrian.training.train import answer_loss

    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)  # the dropout masks
    loss = answer_loss(engine, batch)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return float(loss.detach()), grads


def _assert_same(a, b) -> None:
    import torch

    (loss_a, grads_a), (loss_b, grads_b) = a, b
    assert loss_b == pytest.approx(loss_a, rel=1e-5)
    assert grads_a.keys() == grads_b.keys()
    for name, g in grads_a.items():
        torch.testing.assert_close(grads_b[name], g, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.model
def test_compiled_halves_train_as_the_eager_ones(tiny_checkpoint_factory, monkeypatch, one_thread):
    from mondrian.training import fast_halves
    from mondrian.training.fast_engine import FastEngine

    monkeypatch.setattr(fast_halves, "BACKEND", "aot_eager")
    model = _model(tiny_checkpoint_factory())
    batch = _batch()
    eager = _step(FastEngine(model, dropout=0.3), model, batch)
    for checkpointing in (False, True):
        engine = FastEngine(model, dropout=0.3, compile="on", checkpointing=checkpointing)
        compiled = _step(engine.train(), model, batch)
        assert engine.compiled, "fell back to eager"
        _assert_same(eager, compiled)
        # Another length: the same dynamic graphs, the same arithmetic.
        longer = _batch(56)
        _assert_same(
            _step(FastEngine(model, dropout=0.3), model, longer), _step(engine, model, longer)
        )
    assert engine.halves.checked


@pytest.mark.model
def test_compiled_whole_layers_train_as_the_eager_ones(
    tiny_checkpoint_factory, monkeypatch, one_thread
):
    from mondrian.training import fast_halves
    from mondrian.training.fast_engine import FastEngine

    monkeypatch.setattr(fast_halves, "BACKEND", "aot_eager")
    model = _model(tiny_checkpoint_factory())
    batch = _batch()
    eager = _step(FastEngine(model, dropout=0.3), model, batch)
    for checkpointing in (False, True):
        engine = FastEngine(
            model, dropout=0.3, compile="on", compile_unit="layer", checkpointing=checkpointing
        )
        _assert_same(eager, _step(engine.train(), model, batch))
        assert engine.compiled and engine.halves.unit == "layer", "fell back"
        longer = _batch(56)
        _assert_same(
            _step(FastEngine(model, dropout=0.3), model, longer), _step(engine, model, longer)
        )


@pytest.mark.model
@pytest.mark.parametrize("at", ["the trial pass", "a real step"])
def test_failing_compiled_layers_fall_back_to_the_compiled_halves(
    at, tiny_checkpoint_factory, monkeypatch, caplog, one_thread
):
    from mondrian.training import fast_halves
    from mondrian.training.fast_engine import FastEngine

    monkeypatch.setattr(fast_halves, "BACKEND", "aot_eager")
    trial = fast_halves.TRIAL_TOKENS

    def failing(layer, launch):
        def run(hidden, *args):
            if (hidden.shape[1] == trial) == (at == "the trial pass"):
                raise RuntimeError("backend compiler failed (as a test)")
            return layer(hidden, *args)

        return run

    monkeypatch.setattr(fast_halves, "_compiled_layer", failing)
    model = _model(tiny_checkpoint_factory())
    batch = _batch()
    eager = _step(FastEngine(model, dropout=0.3), model, batch)
    engine = FastEngine(model, dropout=0.3, compile="on", compile_unit="layer").train()
    with caplog.at_level(logging.WARNING, logger=fast_halves.__name__):
        fell_back = _step(engine, model, batch)
    assert engine.compiled and engine.halves.unit == "halves"  # compiled halves, not eager
    assert "compiled layers failed" in caplog.text and "halves failed" not in caplog.text
    assert engine.halves.checked  # the halves' own trial ran
    _assert_same(eager, fell_back)


@pytest.mark.model
def test_a_failing_cpp_wrapper_falls_back_to_the_python_one(
    tiny_checkpoint_factory, monkeypatch, caplog, one_thread
):
    """No C++ compiler, say: the halves compile again through inductor's Python wrapper
    (their own trial first), not eager."""
    from mondrian.training import fast_halves
    from mondrian.training.fast_engine import FastEngine

    launches = []

    def compiled(halves, launch):
        launches.append(launch)
        if launch == "cpp":
            return _failing(halves, lambda hidden: True)
        return halves

    monkeypatch.setattr(fast_halves, "_compiled", compiled)
    model = _model(tiny_checkpoint_factory())
    batch = _batch()
    eager = _step(FastEngine(model, dropout=0.3), model, batch)
    engine = FastEngine(model, dropout=0.3, compile="on").train()
    with caplog.at_level(logging.WARNING, logger=fast_halves.__name__):
        fell_back = _step(engine, model, batch)
    assert launches == ["cpp", "python"]
    assert engine.compiled and engine.halves.launch == "python" and engine.halves.checked
    assert "C++ wrapper" in caplog.text and "eager" not in caplog.text
    _assert_same(eager, fell_back)


def _failing(halves, when):
    """`halves` (the eager pair the engine would compile) raising as a compiler would,
    `when(hidden)` says at which call."""

    def fn(eager):
        def run(hidden, *args):
            if when(hidden):
                raise RuntimeError("backend compiler failed (as a test)")
            return eager(hidden, *args)

        return run

    return fn(halves[0]), fn(halves[1])


@pytest.mark.model
@pytest.mark.parametrize("at", ["the trial pass", "a real step"])
def test_a_compiler_failure_trains_on_eager_with_a_warning(
    at, tiny_checkpoint_factory, monkeypatch, caplog, one_thread
):
    from mondrian.training import fast_halves
    from mondrian.training.fast_engine import FastEngine

    trial = fast_halves.TRIAL_TOKENS
    if at == "the trial pass":
        when = lambda hidden: hidden.shape[1] == trial  # noqa: E731
    else:
        when = lambda hidden: hidden.shape[1] != trial  # noqa: E731
    monkeypatch.setattr(fast_halves, "_compiled", lambda fns, launch: _failing(fns, when))
    model = _model(tiny_checkpoint_factory())
    batch = _batch()
    eager = _step(FastEngine(model, dropout=0.3), model, batch)
    engine = FastEngine(model, dropout=0.3, compile="on").train()
    assert engine.compiled
    with caplog.at_level(logging.WARNING, logger=fast_halves.__name__):
        fell_back = _step(engine, model, batch)
    assert not engine.compiled
    assert "compiled layer halves failed" in caplog.text and "as a test" in caplog.text
    _assert_same(eager, fell_back)
    caplog.clear()
    _assert_same(eager, _step(engine, model, batch))  # eager from then on, no new warning
    assert caplog.text == ""


@pytest.mark.model
def test_eval_and_the_stock_setting_never_compile(tiny_checkpoint_factory, monkeypatch):
    """Validation (eval, no grad) runs eager; `compile` off builds no compiled halves."""
    import torch

    from mondrian.training import fast_halves
    from mondrian.training.fast_engine import FastEngine

    calls = []
    monkeypatch.setattr(fast_halves, "_compiled", lambda fns, launch: calls.append(fns) or fns)
    model = _model(tiny_checkpoint_factory())
    assert not FastEngine(model, dropout=0.0, compile="off").compiled and calls == []
    engine = FastEngine(model, dropout=0.0, compile="on").eval()
    batch = _batch()
    with torch.no_grad():
        engine(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    assert not engine.halves.checked  # no trial pass: nothing compiled ran
