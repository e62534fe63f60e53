"""The pytest plugin stays out of the way of every other project's tests."""

import os
import subprocess
import sys


def _broken_plugin_environment(tmp_path):
    """A site directory declaring a gradparity plugin whose module does not exist, and an
    unrelated project whose test fails if anything of gradparity's was imported."""
    site = tmp_path / "site"
    dist = site / "broken_plugin-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[gradparity.plugins]\nbroken = no_such_module_anywhere\n")
    project = tmp_path / "project"
    project.mkdir()
    (project / "test_other.py").write_text(
        "import sys\n\n"
        "def test_nothing_of_gradparity_was_imported():\n"
        "    loaded = [m for m in sys.modules if m.startswith(('gradparity.reference', 'gradparity.adapters',\n"
        "                                                     'gradparity.reports', 'no_such_module'))]\n"
        "    assert loaded == []\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}
    return project, env


def test_an_unrelated_project_imports_nothing_of_gradparity_nor_its_plugins(tmp_path):
    project, env = _broken_plugin_environment(tmp_path)
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist", "."],
                          cwd=project, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "1 passed" in done.stdout


def test_a_gradparity_option_loads_the_plugins_and_names_a_broken_one_in_one_line(tmp_path):
    project, env = _broken_plugin_environment(tmp_path)
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
                           "--frameworks", "torch", "."],
                          cwd=project, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 4, done.stdout[-3000:] + done.stderr[-3000:]  # a usage error, before any test
    assert "gradparity plugin broken (no_such_module_anywhere) failed to load" in done.stderr
    assert "Traceback" not in done.stderr
