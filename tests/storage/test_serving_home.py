"""One serving process per MONDRIAN_HOME: a flock'd `serve.lock`, dropped when its holder dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from mondrian.config import Settings
from mondrian.storage.bootstrap import HomeInUse, serving_home

_HOLD = """
import sys, time
from mondrian.config import Settings
from mondrian.storage.bootstrap import serving_home
with serving_home(Settings(home=sys.argv[1])):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_second_server_on_a_home_is_refused_until_the_first_is_gone(tmp_path):
    settings = Settings(home=tmp_path / "home")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(settings.home)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with (
            pytest.raises(HomeInUse, match=rf"already served .*pid {holder.pid}"),
            serving_home(settings),
        ):
            pass
    finally:
        holder.send_signal(signal.SIGKILL)  # no clean-up runs: the kernel drops the lock
        holder.wait(10)
    with serving_home(settings) as lock:
        assert lock.read_text().strip() == str(os.getpid())
        with pytest.raises(HomeInUse), serving_home(settings):  # one process, two apps
            pass
    with serving_home(settings):  # released at the end of the block
        pass
