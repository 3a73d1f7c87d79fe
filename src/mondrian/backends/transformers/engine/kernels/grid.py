"""How many programs the device runs at once: the kernels size their grids by it (at a
few rows a decode kernel is a stream from memory, and one program streams from one
multiprocessor, so a grid smaller than the device leaves bandwidth unused)."""

from __future__ import annotations

import torch

INTERPRETER_PROGRAMS = 4  # under Triton's CPU interpreter (tests): small, to cross edges


def multiprocessors(device: torch.device) -> int:
    """The device's multiprocessors (a few under the CPU interpreter)."""
    if device.type != "cuda":
        return INTERPRETER_PROGRAMS
    return torch.cuda.get_device_properties(device).multi_processor_count
