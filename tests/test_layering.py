"""The package's layers (README.md, Layout): imports point down only, entry points are leaves,
and the light entry points never import the heavy stacks."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import mondrian

SRC = Path(mondrian.__file__).parent

# Rank of each top-level part of the package. A module may import a part of lower rank,
# or its own part; nothing may import an entry point.
LAYERS: dict[str, int] = {
    "__init__": 0,
    "schema": 0,
    "errors": 0,
    "modes": 0,
    "config": 1,
    "advisors": 1,
    "staging": 1,
    "adapter_format": 1,
    "hf_progress": 1,
    "model_source": 1,
    "storage": 2,
    "prompts": 2,
    "images": 2,
    "backends": 3,
    "tiny": 3,
    "facts": 3,
    "context": 4,
    "reports": 4,
    "portfolio": 5,
    "strategies": 6,
    "analysis": 7,
    "training": 7,
    "evaluation": 7,
    "service": 8,
    "preflight": 8,
    "demo": 9,
    "cli": 10,
    "__main__": 11,
}
ENTRY_POINTS = {"cli", "__main__"}
HEAVY = ("torch", "transformers", "peft", "xgrammar", "fastapi", "mlx", "mlx_vlm", "vllm")


def _part(module_path: Path) -> str:
    rel = module_path.relative_to(SRC)
    return rel.parts[0].removesuffix(".py")


def _imported_parts(path: Path, src: Path = SRC) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = ".".join(("mondrian", *path.relative_to(src).with_suffix("").parts[:-1]))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                names = [".".join([*base, *(node.module.split(".") if node.module else [])])]
            else:
                names = [node.module or ""]
            if names == ["mondrian"]:
                # `from mondrian import x`: x is a submodule, or an attribute of the root.
                names = [
                    f"mondrian.{alias.name}"
                    if (src / alias.name).is_dir() or (src / f"{alias.name}.py").is_file()
                    else "mondrian.__init__"
                    for alias in node.names
                ]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "mondrian" and len(parts) > 1:
                found.add(parts[1])
    return found


def test_every_part_has_a_layer():
    parts = {_part(p) for p in SRC.rglob("*.py")}
    assert parts <= set(LAYERS), f"give these a layer in LAYERS: {parts - set(LAYERS)}"


def test_imports_point_down():
    violations = []
    for path in sorted(SRC.rglob("*.py")):
        own = _part(path)
        for imported in _imported_parts(path):
            if imported == own:
                continue
            if imported not in LAYERS:
                violations.append(f"{path.relative_to(SRC)} imports unknown part {imported}")
            elif (imported in ENTRY_POINTS and own != "__main__") or LAYERS[imported] >= LAYERS[
                own
            ]:
                violations.append(
                    f"{path.relative_to(SRC)} (layer {LAYERS[own]}) imports "
                    f"{imported} (layer {LAYERS[imported]})"
                )
    assert not violations, "\n".join(violations)


def test_import_scan_sees_absolute_and_relative_imports(tmp_path):
    root = tmp_path / "mondrian"
    (root / "reports").mkdir(parents=True)
    (root / "schema.py").write_text("")
    module = root / "reports" / "render.py"
    module.write_text(
        "import mondrian.backends.x\nfrom ..cli import main\n"
        "from mondrian import schema, __version__\n"
    )
    assert _imported_parts(module, root) == {"backends", "cli", "schema", "__init__"}


def test_light_entry_points_import_no_heavy_stack():
    code = (
        "import sys, mondrian, mondrian.cli.main, mondrian.schema, mondrian.config\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
