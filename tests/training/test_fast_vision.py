"""How the fast training engine runs the frozen vision tower (training/fast_vision.py):
the serving engine's patches (the patch embedding as a product on CUDA, varlen attention
where it exists, never on the CPU, the compiled blocks only with `compile`), and the stock
tower again, with one warning, when a patched forward fails. The patches themselves run
on CUDA (tests/gpu/test_fast_train_cuda.py); here the engine's vision.py is replaced by
recording fakes."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest


class _Tower:
    """A model whose `get_image_features` fails while `fail` is set, its vision tower's
    parameter on `device` (only its device and dtype are read: no CUDA needed)."""

    def __init__(self, device: str = "cpu") -> None:
        import torch

        self.fail = False
        self.calls = 0
        param = SimpleNamespace(device=torch.device(device), dtype=torch.bfloat16)
        visual = SimpleNamespace(parameters=lambda: iter([param]))
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
    monkeypatch.setattr(fast_vision, "linear_patch_embed", lambda m: done.append("embed") or True)

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
    assert not vision.varlen and not vision.compiled and not vision.patch_product
    tower.fail = True  # nothing patched: a failure is the model's own, and surfaces
    with pytest.raises(RuntimeError, match="as a test"):
        vision.features(torch.zeros(1), torch.zeros(1))


def test_varlen_attention_and_compiled_blocks_where_asked(patches):
    """With varlen attention (and the tower on CUDA: `device` below), attention always, the
    blocks compiled only with `compile`; the patch embedding as a product on CUDA only."""
    from mondrian.training.fast_vision import Vision

    assert Vision(_Tower(), compile=False).compiled is False and patches == ["attn"]
    patches.clear()
    vision = Vision(_Tower("cuda"), compile=True)
    assert vision.varlen and vision.compiled and vision.patch_product
    assert patches == ["embed", "attn", "blocks"]
    vision.restore()
    assert not vision.varlen and not vision.patch_product and patches[-1] == "restore"


def test_a_failing_patched_tower_falls_back_with_a_warning(patches, caplog):
    import torch

    from mondrian.training import fast_vision

    tower = _Tower()
    vision = fast_vision.Vision(tower, compile=True)
    tower.fail = True
    with caplog.at_level(logging.WARNING, logger=fast_vision.__name__):
        assert vision.features(torch.zeros(1), torch.zeros(1)) == "features"
    assert "vision tower failed" in caplog.text and "as a test" in caplog.text
    assert patches[-1] == "restore" and not vision.varlen and not vision.compiled
    assert tower.calls == 2  # the failed call, then the stock one
