"""What the default model costs: its download, the memory it needs and the speed to expect
on each kind of machine. One table, printed by `mondrian --help`, `mondrian models --help`
and `mondrian doctor`, and copied into docs/models.md (tests/test_models_cli.py checks that
the copy is this table).

Every figure says where it comes from. The sizes are computed, not measured: parameters x
bytes per parameter of the dtype the backend picks there (backends/transformers/backend.py's
pick_dtype: float32 on the CPU, bfloat16 on CUDA, float16 on MPS; MLX keeps the checkpoint's
bfloat16), plus a stated margin. The speeds are the measured H200 run of
bench/results/2026-12-01-h200-bench/table.md; nothing was measured on a CPU or a Mac, so
those rows say so.
"""

from __future__ import annotations

from dataclasses import dataclass

from mondrian.config import DEFAULT_MODEL

GB = 1e9

# Qwen2.5-VL-3B-Instruct: 3.75e9 parameters (vision tower + language model, tied
# embedding). Its safetensors hold them in bfloat16, 2 bytes each.
DEFAULT_PARAMS = 3.75e9
DOWNLOAD_BYTES = DEFAULT_PARAMS * 2

# Above the weights: the image's vision activations, the prompt's activations and the KV
# cache of one critique (74 MB at batch 1 for the 3B, bench/NOTES.md), with room to spare.
# A margin we state, not a measurement.
MARGIN_BYTES = 2 * GB

BENCH_RUN = "bench/results/2026-12-01-h200-bench/table.md"


@dataclass(frozen=True)
class Platform:
    name: str  # where it runs
    backend: str  # the backend that runs there
    dtype: str  # the dtype it picks there
    bytes_per_param: int
    speed: str  # measured (the source is BENCH_RUN) or "not measured"

    @property
    def weight_bytes(self) -> float:
        return DEFAULT_PARAMS * self.bytes_per_param

    @property
    def memory_bytes(self) -> float:
        return self.weight_bytes + MARGIN_BYTES


PLATFORMS: tuple[Platform, ...] = (
    Platform("CPU", "transformers", "float32", 4, "not measured"),
    Platform("CUDA", "transformers", "bfloat16", 2, "H200: 24.7 tok/s; 310.7 with MONDRIAN_FAST=1"),
    Platform("Mac (MPS)", "transformers", "float16", 2, "not measured"),
    Platform("Mac (MLX)", "mlx", "bfloat16", 2, "not measured"),
)


def gb(size: float) -> str:
    return f"{size / GB:.1f} GB"


def platform(name: str) -> Platform:
    """The row for `name` (CPU, CUDA, Mac (MPS), Mac (MLX))."""
    return next(p for p in PLATFORMS if p.name == name)


def cost_table() -> str:
    """The default model's costs as plain text, under 100 columns (a terminal's help and
    a Markdown code block both show it)."""
    rows = [("where", "backend, dtype", "memory", "speed (decode)")]
    rows += [
        (p.name, f"{p.backend}, {p.dtype}", f"~{gb(p.memory_bytes)}", p.speed) for p in PLATFORMS
    ]
    widths = [max(len(row[i]) for row in rows) + 2 for i in range(3)]
    table = [
        "".join(c.ljust(w) for c, w in zip(row[:3], widths, strict=True)) + row[3] for row in rows
    ]
    return "\n".join(
        [
            f"Default model: {DEFAULT_MODEL}, {DEFAULT_PARAMS / 1e9:.2f} billion parameters.",
            f"Download ~{gb(DOWNLOAD_BYTES)} (3.75e9 x 2 bytes of bfloat16 safetensors): "
            "`mondrian models pull`.",
            "",
            *(line.rstrip() for line in table),
            "",
            f"Memory: parameters x bytes of the dtype + {gb(MARGIN_BYTES)} margin (image, "
            "activations, KV cache);",
            "computed, not measured. Speed: tokens/s with the critique grammar, measured on one",
            f"H200 ({BENCH_RUN});",
            "with MONDRIAN_FAST=1 a 600-token critique took 2.02 s there.",
        ]
    )
