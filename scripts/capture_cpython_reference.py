#!/usr/bin/env python3
"""Captures what a stock CPython prints where pymalloc-python must print the
same: the debug hooks' reports and `sys._debugmallocstats()`. The launcher's
tests compare their own output with these files, for the version they were
built against.

    python3 scripts/capture_cpython_reference.py --python /path/to/python3.X

writes crates/pymalloc/tests/data/cpython-3.X/{debug-hooks-reports.txt,
debugmallocstats.txt}. The texts hold addresses and counts of the run that
captured them; the tests compare layouts, not those values.
"""
import argparse
import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASES = ["pymem_buffer_overflow", "pymem_api_misuse", "pymem_malloc_without_gil", "pyobject_malloc_without_gil"]


def stderr_of(python, code, **env):
    e = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    e.update(env)
    p = subprocess.run([python, "-c", code], env=e, capture_output=True, text=True)
    return p.stderr


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--python", required=True, help="the stock interpreter")
    ap.add_argument("--out", help="folder (default: crates/pymalloc/tests/data/cpython-3.X)")
    args = ap.parse_args()
    minor = subprocess.check_output([args.python, "-c", "import sys; print(sys.version_info[1])"], text=True).strip()
    out = args.out or os.path.join(ROOT, "crates", "pymalloc", "tests", "data", f"cpython-3.{minor}")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "debug-hooks-reports.txt"), "w") as f:
        for case in CASES:
            f.write(f"=== {case}\n")
            f.write(stderr_of(args.python, f"import _testcapi; _testcapi.{case}()", PYTHONMALLOC="debug"))
    with open(os.path.join(out, "debugmallocstats.txt"), "w") as f:
        f.write(stderr_of(args.python, "import sys; sys._debugmallocstats()"))
    print(out)


if __name__ == "__main__":
    main()
