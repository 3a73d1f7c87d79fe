"""The package as users get it: build the wheel, install it (not editable) into a fresh
venv, and run the short demo (`mondrian demo --quick`) from another directory.

The heavy dependencies (torch, transformers, ...) are not installed again: a .pth file in
the fresh venv names this environment's site-packages as a plain path, so they import from
there, while that directory's own .pth files (among them the editable mondrian's finder)
are not processed. The test checks that `mondrian` imports from the fresh venv.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

from test_demo import check_demo_outputs

pytestmark = pytest.mark.model

REPO = Path(__file__).parents[1]
# The files `mondrian demo`, the advisors and the tiny checkpoints need, besides the code.
SHIPPED = (
    "mondrian/configs/train/tiny.toml",
    "mondrian/configs/train/qwen2_5_vl_3b.toml",
    "mondrian/data/sample_portfolio/LICENSES.md",
    "mondrian/data/sample_portfolio/ansel_profiles.jsonl",
    "mondrian/data/sample_portfolio/astronaut.jpg",
    "mondrian/data/critique/clock.jpg",
    "mondrian/tiny/data/words.json",
    "mondrian/tiny/data/templates.json",
    "mondrian/tiny/data/qwen3_vl_chat_template.jinja",
    # /docs offline (service/docs.py), with the licence of what is vendored.
    "mondrian/service/static/swagger-ui/swagger-ui-bundle.js",
    "mondrian/service/static/swagger-ui/swagger-ui.css",
    "mondrian/service/static/swagger-ui/favicon-32x32.png",
    "mondrian/service/static/swagger-ui/LICENSE",
    "mondrian/service/static/swagger-ui/NOTICE",
    # The studio at / (service/routes/studio.py).
    "mondrian/service/templates/studio/base.html",
    "mondrian/service/templates/studio/index.html",
    "mondrian/service/templates/studio/critique.html",
    "mondrian/service/templates/studio/pending.html",
    "mondrian/service/static/studio/studio.js",
    "mondrian/service/static/studio/studio.css",
)


def _run(args: list[str], *, cwd: Path, env: dict[str, str], timeout: float = 300):
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{args}\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    pytest.importorskip("setuptools")
    # A copy of what the build needs, so building leaves nothing in the source tree.
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(
        REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    out = tmp_path_factory.mktemp("wheel")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    args = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    _run([*args, "--wheel-dir", str(out), str(source)], cwd=source, env=env)
    (built,) = out.glob("mondrian-*.whl")
    return built


def test_the_wheel_holds_the_configs_and_data_files(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [name for name in SHIPPED if name not in names]
    assert not missing, missing
    portfolio = [n for n in names if n.startswith("mondrian/data/sample_portfolio/")]
    assert len([n for n in portfolio if n.endswith(".jpg")]) >= 14
    assert any(n.startswith("mondrian/advisors/data/") for n in names)
    assert any(n.startswith("mondrian/reports/templates/") for n in names)


# About a minute on an idle 2-core CPU; the limit leaves room for a loaded machine.
@pytest.mark.timeout(1200)
def test_the_installed_wheel_runs_the_short_demo_from_elsewhere(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", MONDRIAN_HOME=str(tmp_path / "h"))
    pip = [sys.executable, "-m", "pip", "--python", str(python)]
    _run([*pip, "install", "--no-deps", "--no-index", str(wheel)], cwd=tmp_path, env=env)
    fresh_site = Path(
        _run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            cwd=tmp_path,
            env=env,
        ).stdout.strip()
    )
    # A plain path line: this environment's packages import, its .pth files do not run.
    (fresh_site / "zz_mondrian_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = _run(
        [str(python), "-c", "import mondrian; print(mondrian.__file__)"], cwd=elsewhere, env=env
    ).stdout.strip()
    assert Path(where).is_relative_to(fresh_site), where

    done = _run(
        [str(env_dir / "bin" / "mondrian"), "demo", "--quick", "--no-progress"],
        cwd=elsewhere,
        env=env,
        timeout=1100,
    )
    lines = done.stdout.splitlines()
    saved = check_demo_outputs(elsewhere / "demo-out", lines, quick=True)
    # Every file it read came from the installed package, none from the source tree.
    assert Path(saved["config"]).is_relative_to(fresh_site)
    assert Path(saved["critiqued_photo"]).is_relative_to(fresh_site)
    assert str(REPO / "src") not in done.stdout
