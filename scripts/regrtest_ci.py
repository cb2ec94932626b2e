#!/usr/bin/env python3
"""Runs a list of CPython regression-test modules under an interpreter
(pymalloc-python by default) and fails unless every module passes.

    python3 scripts/regrtest_ci.py [--python PATH] [-j N]
    python3 scripts/regrtest_ci.py --smoke --stock PYTHON3.X --python LAUNCHER

The default list is CI's CPython 3.11 list (regrtest-ci-modules.txt). With
--smoke it is the memory-heavy smoke list of any version (SMOKE below), for
the launchers built against the other CPython versions; its test_capi entry
becomes the module that holds that version's PyMem debug-hook tests.
"""
import argparse
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from launcher_location import place_like  # noqa: E402

SMOKE = ["test_capi", "test_gc", "test_sys", "test_tracemalloc", "test_dict", "test_list", "test_weakref",
         "test_threading_local"]

# Where each version keeps test_capi's PyMem*DebugTests: a module of its own
# since 3.12, test_capi.test_misc in 3.11, the single test_capi module before.
CAPI_MEMORY = ["test.test_capi.test_mem", "test.test_capi.test_misc", "test.test_capi"]


def modules():
    with open(os.path.join(HERE, "regrtest-ci-modules.txt")) as f:
        return [line.strip() for line in f if line.strip() and not line.startswith("#")]


def smoke_modules(stock):
    """SMOKE, with test_capi resolved for `stock`'s test suite."""
    code = ("import importlib.util as u, sys\n"
            "for m in sys.argv[1:]:\n"
            "    try:\n"
            "        found = u.find_spec(m) is not None\n"
            "    except ImportError:\n"
            "        found = False\n"
            "    if found:\n"
            "        print(m); break\n")
    found = subprocess.run([stock, "-c", code, *CAPI_MEMORY], capture_output=True, text=True).stdout.strip()
    mods = list(SMOKE)
    if found:
        mods[0] = found[len("test."):]
    else:
        # Some builds ship no test_capi (this machine's pyenv 3.10).
        print(f"note: {stock} has no test_capi; the smoke list runs without it", flush=True)
        mods.remove("test_capi")
    return mods


def main():
    default = os.path.join(HERE, "..", "target", "release", "pymalloc-python")
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--python", default=default, help="interpreter to test (default: %(default)s)")
    ap.add_argument("--stock", default=sys.executable,
                    help="the stock interpreter it was built against (default: this python3)")
    ap.add_argument("--smoke", action="store_true", help="the memory-heavy smoke list instead of CI's 3.11 list")
    ap.add_argument("-j", type=int, default=2, help="worker processes")
    ap.add_argument("--timeout", type=int, default=900, help="per-module timeout, seconds")
    args = ap.parse_args()
    mods = smoke_modules(args.stock) if args.smoke else modules()
    python = place_like(os.path.realpath(args.python), args.stock)
    print(f"{len(mods)} modules under {python}: {' '.join(mods)}", flush=True)
    cmd = [python, "-m", "test", f"-j{args.j}", f"--timeout={args.timeout}", "-w", *mods]
    # A fresh working directory keeps worker files out of the tree.
    workdir = os.path.join(os.environ.get("TMPDIR", "/tmp"), "pymalloc-regrtest-ci")
    os.makedirs(workdir, exist_ok=True)
    rc = subprocess.call(cmd, cwd=workdir)
    sys.exit(rc)


if __name__ == "__main__":
    main()
