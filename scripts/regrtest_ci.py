#!/usr/bin/env python3
"""Runs the CI list of CPython regression-test modules under an interpreter
(pymalloc-python by default) and fails unless every module passes.

    python3 scripts/regrtest_ci.py [--python PATH] [-j N]
"""
import argparse
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from launcher_location import place_like  # noqa: E402


def modules():
    with open(os.path.join(HERE, "regrtest-ci-modules.txt")) as f:
        return [line.strip() for line in f if line.strip() and not line.startswith("#")]


def main():
    default = os.path.join(HERE, "..", "target", "release", "pymalloc-python")
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--python", default=default, help="interpreter to test (default: %(default)s)")
    ap.add_argument("-j", type=int, default=2, help="worker processes")
    ap.add_argument("--timeout", type=int, default=900, help="per-module timeout, seconds")
    args = ap.parse_args()
    mods = modules()
    python = place_like(os.path.realpath(args.python), sys.executable)
    print(f"{len(mods)} modules under {python}", flush=True)
    cmd = [python, "-m", "test", f"-j{args.j}", f"--timeout={args.timeout}", "-w", *mods]
    # A fresh working directory keeps worker files out of the tree.
    workdir = os.path.join(os.environ.get("TMPDIR", "/tmp"), "pymalloc-regrtest-ci")
    os.makedirs(workdir, exist_ok=True)
    rc = subprocess.call(cmd, cwd=workdir)
    sys.exit(rc)


if __name__ == "__main__":
    main()
