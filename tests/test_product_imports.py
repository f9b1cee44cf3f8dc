"""
A production node imports nothing that exists only to try or test
blockmover: the local namespace cluster with its demo, database client and
call counter, the OpenStack emulator and its test harness, the tests.
Checked in a fresh interpreter, where nothing else was imported before.
"""

import json
import subprocess
import sys

# What exists only to try or test blockmover, by module name.
TOOLS = ("blockmover.localcluster", "blockmover.emulator", "blockmover.cli",
         "tests", "acceptance", "benchmarks", "pymongo", "secantus")

# The production entry points (setup.py's console scripts) and the
# packages a node or control service runs from.
ENTRY_POINTS = ["agents.main", "blockmover.control.main", "blockmover.deploy"]
PRODUCT_PACKAGES = ["agents", "blockmover"]


def imported_after(code):
    """
    The names of every module loaded after running ``code`` in a new
    interpreter.
    """
    result = subprocess.run(
        [sys.executable, "-c", code + "\nimport json, sys\n"
         "print(json.dumps(sorted(sys.modules)))"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def tools_in(modules):
    return [m for m in modules
            if any(m == t or m.startswith(t + ".") for t in TOOLS)]


def test_entry_points_import_no_tool():
    modules = imported_after("".join(
        "import %s\n" % (name,) for name in ENTRY_POINTS))
    assert set(ENTRY_POINTS) <= set(modules)
    assert tools_in(modules) == []


def test_no_production_module_imports_a_tool():
    """
    Every module of the product, imported as a running node may import it
    late (a backend chosen by its configuration, the planner on the first
    slice), pulls in no tool.
    """
    modules = imported_after(
        "import importlib, pkgutil\n"
        "TOOLS = %r\n"
        "def product(package):\n"
        "    # pkgutil.walk_packages would import the tool packages too.\n"
        "    module = importlib.import_module(package)\n"
        "    for found in pkgutil.iter_modules(module.__path__,\n"
        "                                      package + '.'):\n"
        "        if any(found.name == t or found.name.startswith(t + '.')\n"
        "               for t in TOOLS):\n"
        "            continue\n"
        "        if found.ispkg:\n"
        "            product(found.name)\n"
        "        else:\n"
        "            importlib.import_module(found.name)\n"
        "for package in %r:\n"
        "    product(package)\n"
        % (TOOLS, PRODUCT_PACKAGES))
    assert "blockmover.backends.openstack" in modules
    assert "agents.plan" in modules
    assert tools_in(modules) == []


def test_the_check_sees_a_tool():
    modules = imported_after("import blockmover.localcluster.status")
    assert "blockmover.localcluster.status" in tools_in(modules)
