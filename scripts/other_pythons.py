#!/usr/bin/env python3
"""Prints the path of each CPython besides python3 that the launcher
supports (3.9, 3.10, 3.12, 3.13; GIL builds with a shared libpython), one
per line: pyenv's versions first, then python3.X on PATH. Versions not
found are named on stderr. CI builds and tests the launcher against each.

    python3 scripts/other_pythons.py [--versions 3.9,3.10,3.12,3.13]
"""
import argparse
import glob
import os
import shutil
import subprocess
import sys


def usable(python, version):
    code = ("import sys, sysconfig; print('%d.%d' % sys.version_info[:2], "
            "bool(sysconfig.get_config_var('Py_ENABLE_SHARED')), bool(sysconfig.get_config_var('Py_GIL_DISABLED')))")
    try:
        out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=30).stdout.split()
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out == [version, "True", "False"]


def find(version):
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    candidates = sorted(glob.glob(os.path.join(root, "versions", version + ".*", "bin", "python3")), reverse=True)
    on_path = shutil.which("python" + version)
    if on_path:
        candidates.append(on_path)
    return next((c for c in candidates if usable(c, version)), None)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--versions", default="3.9,3.10,3.12,3.13")
    args = ap.parse_args()
    for v in args.versions.split(","):
        p = find(v)
        if p:
            print(p)
        else:
            print(f"other_pythons: no CPython {v} with a shared libpython found", file=sys.stderr)


if __name__ == "__main__":
    main()
