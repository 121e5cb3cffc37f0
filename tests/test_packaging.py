"""What an installed wheel holds: the package and its demo, so `taskembed demo` works outside a source checkout."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_the_wheel_ships_the_demo_and_an_install_of_it_finds_it(tmp_path):
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    # No build isolation: setuptools is already in the environment (torch requires it), and the tests stay offline.
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(ROOT)],
                   check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("taskembed-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        assert zf.read("taskembed/demo/app.py") == (ROOT / "demo" / "app.py").read_bytes()
        assert "taskembed/cli.py" in zf.namelist()
    site = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True, capture_output=True, timeout=300)
    probe = "import importlib.util as u, taskembed; print(taskembed.__file__); print(u.find_spec('taskembed.demo.app').origin)"
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(site)}).stdout.split()
    # Both from the installed copy, not from this checkout.
    assert out == [str(site / "taskembed" / "__init__.py"), str(site / "taskembed" / "demo" / "app.py")]


def test_the_demo_command_runs_the_packaged_app(monkeypatch):
    pytest.importorskip("gradio")
    import taskembed.demo.app as app
    from taskembed import cli

    seen = []
    monkeypatch.setattr(app, "main", lambda argv: seen.append(argv) or 0)
    assert cli.cmd_demo(["runs/a", "runs/b"], port=7999) == 0
    assert seen == [["runs/a", "runs/b", "--host", "127.0.0.1", "--port", "7999"]]
