"""How the fast training engine runs the frozen vision tower (training/fast_vision.py):
the serving engine's varlen attention only where it exists (never on the CPU), its compiled
blocks only with `compile`, and the stock tower again, with one warning, when a patched
forward fails. The patches themselves run on CUDA (tests/gpu/test_fast_train_cuda.py);
here the engine's vision.py is replaced by recording fakes."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest


class _Tower:
    """A model whose `get_image_features` fails while `fail` is set."""

    def __init__(self) -> None:
        import torch

        self.fail = False
        self.calls = 0
        visual = torch.nn.Linear(2, 2)
        self.model = SimpleNamespace(visual=visual, get_image_features=self._features)

    def _features(self, pixel_values, image_grid_thw=None):
        self.calls += 1
        if self.fail:
            raise RuntimeError("varlen kernel failed (as a test)")
        return "features"


@pytest.fixture
def patches(monkeypatch):
    from mondrian.training import fast_vision

    done: list[str] = []
    monkeypatch.setattr(fast_vision, "varlen_available", lambda device, dtype: True)
    monkeypatch.setattr(fast_vision, "patch_vision_attention", lambda m: done.append("attn"))
    monkeypatch.setattr(fast_vision, "compile_vision_blocks", lambda m: done.append("blocks") or 3)

    def unpatch(model):
        done.append("restore")
        model.fail = False  # the stock tower works

    monkeypatch.setattr(fast_vision, "unpatch_vision_attention", unpatch)
    return done


def test_the_cpu_keeps_the_stock_tower():
    import torch

    from mondrian.training.fast_vision import Vision

    tower = _Tower()
    vision = Vision(tower, compile=True)
    assert not vision.varlen and not vision.compiled
    tower.fail = True  # nothing patched: a failure is the model's own, and surfaces
    with pytest.raises(RuntimeError, match="as a test"):
        vision.features(torch.zeros(1), torch.zeros(1))


def test_varlen_attention_and_compiled_blocks_where_asked(patches):
    from mondrian.training.fast_vision import Vision

    assert Vision(_Tower(), compile=False).compiled is False and patches == ["attn"]
    patches.clear()
    vision = Vision(_Tower(), compile=True)
    assert vision.varlen and vision.compiled and patches == ["attn", "blocks"]
    vision.restore()
    assert not vision.varlen and patches[-1] == "restore"


def test_a_failing_patched_tower_falls_back_with_a_warning(patches, caplog):
    import torch

    from mondrian.training import fast_vision

    tower = _Tower()
    vision = fast_vision.Vision(tower, compile=True)
    tower.fail = True
    with caplog.at_level(logging.WARNING, logger=fast_vision.__name__):
        assert vision.features(torch.zeros(1), torch.zeros(1)) == "features"
    assert "vision attention failed" in caplog.text and "as a test" in caplog.text
    assert patches[-1] == "restore" and not vision.varlen and not vision.compiled
    assert tower.calls == 2  # the failed call, then the stock one
