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


@pytest.mark.parametrize("checkout", [True, False])
def test_without_the_packaged_demo_a_checkout_runs_its_own_and_anything_else_is_refused(checkout, tmp_path, monkeypatch):
    # `python -m taskembed` from a checkout that was never installed, or an editable install made before the demo moved
    # into the package, has no taskembed.demo; in site-packages, a demo/app.py beside taskembed/ would be another package's.
    pytest.importorskip("gradio")
    import importlib

    from taskembed import cli
    from taskembed.errors import UserError

    real = importlib.import_module

    def without_demo(name, *args):
        if name.startswith("taskembed.demo"):
            raise ModuleNotFoundError(f"No module named {name!r}", name="taskembed.demo")
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", without_demo)
    (tmp_path / "taskembed").mkdir()
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "app.py").write_text("def main(argv):\n    print('ran', argv)\n    return 0\n", encoding="utf-8")
    if checkout:
        (tmp_path / "pyproject.toml").write_text('[project]\nname = "taskembed"\n', encoding="utf-8")
    monkeypatch.setattr(cli, "__file__", str(tmp_path / "taskembed" / "cli.py"))
    if checkout:
        assert cli.cmd_demo(["runs/x"]) == 0
    else:
        with pytest.raises(UserError, match="lacks its demo"):
            cli.cmd_demo(["runs/x"])


def test_every_subpackage_is_listed_for_the_wheel():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["packages"])
    found = {"taskembed"} | {"taskembed." + ".".join(p.parent.relative_to(ROOT / "taskembed").parts)
                             for p in (ROOT / "taskembed").rglob("__init__.py") if p.parent != ROOT / "taskembed"}
    assert found | {"taskembed.demo"} == listed
