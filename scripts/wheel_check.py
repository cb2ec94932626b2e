#!/usr/bin/env python3
"""Builds pymalloc-python the way a Python user installs it, with pip, for
several CPython versions, and checks each install in a fresh venv.

    python3 -m pip download 'maturin>=1.5,<2' -d WHEELS   # once, needs PyPI
    python3 scripts/wheel_check.py --wheels WHEELS PYTHON [PYTHON ...]

For the first interpreter: `maturin build` makes a wheel, which pip installs
into a fresh venv without the network. For the others: pip installs the
source folder itself (PEP 517, maturin as the build backend: what
`pip install pymalloc-python` does from a source distribution). In each
venv, `pymalloc-python` must be on the venv's PATH, run the interpreter it
was built for inside the venv, serve all three allocator domains itself
(tests/py/domains_are_ours.py), and run pip. Exits 1 on the first failure.
"""
import argparse
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CRATE = os.path.join(ROOT, "crates", "pymalloc-python")
PROBE = ("import _pymalloc, sys; "
         "print(_pymalloc.allocator(), '%d.%d' % sys.version_info[:2], sys.prefix != sys.base_prefix, sys.prefix)")


def sh(cmd, **kw):
    print("+", " ".join(cmd), flush=True)
    return subprocess.run(cmd, check=True, text=True, **kw)


def minor_of(python):
    return subprocess.check_output([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                                   text=True).strip()


def check_venv(venv, want_minor):
    exe = os.path.join(venv, "bin", "pymalloc-python")
    if not os.path.exists(exe):
        sys.exit(f"FAIL: {exe} was not installed")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON") and k != "PYMALLOC_PURGE"}
    env["PATH"] = os.path.join(venv, "bin") + os.pathsep + env.get("PATH", "")
    # On the venv's PATH, by name, as a user runs it.
    out = sh(["pymalloc-python", "-c", PROBE], env=env, capture_output=True).stdout.split()
    print(" ".join(out))
    if out[0] != "pymalloc" or out[1] != want_minor or out[2] != "True":
        sys.exit(f"FAIL: expected pymalloc, {want_minor}, inside the venv; got {out}")
    if os.path.realpath(out[3]) != os.path.realpath(venv):
        sys.exit(f"FAIL: sys.prefix {out[3]} is not the venv {venv}")
    domains = os.path.join(CRATE, "tests", "py", "domains_are_ours.py")
    r = subprocess.run([exe, domains], env=env, capture_output=True, text=True)
    if r.returncode != 0 or r.stdout.count(" ours ") != 12:
        sys.exit(f"FAIL: the domain check in {venv}:\n{r.stdout}{r.stderr}")
    print(f"domains: 12 of 12 functions are pymalloc-python's ({venv})")
    pip = sh([exe, "-m", "pip", "--version"], env=env, capture_output=True).stdout
    if venv not in pip:
        sys.exit(f"FAIL: pip under pymalloc-python is not the venv's: {pip}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--wheels", required=True, help="a folder holding maturin's wheel (pip download maturin)")
    ap.add_argument("--work", default=os.path.join(ROOT, "target", "wheel-check"))
    ap.add_argument("pythons", nargs="+", help="interpreters (at least two versions to be the issue's check)")
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    wheels = os.path.realpath(args.wheels)
    tools = os.path.join(args.work, "tools")
    if not os.path.exists(os.path.join(tools, "bin", "maturin")):
        sh([sys.executable, "-m", "venv", tools])
        sh([os.path.join(tools, "bin", "pip"), "install", "--no-index", "--find-links", wheels, "maturin>=1.5,<2"])
    maturin = os.path.join(tools, "bin", "maturin")
    for i, python in enumerate(args.pythons):
        minor = minor_of(python)
        work = os.path.join(args.work, minor)
        shutil.rmtree(work, ignore_errors=True)
        os.makedirs(work)
        # A target folder of its own: the workspace's target/release keeps
        # the launcher built for the default python3.
        env = dict(os.environ, CARGO_TARGET_DIR=os.path.join(args.work, "target"))
        env.pop("PYO3_PYTHON", None)
        venv = os.path.join(work, "venv")
        sh([python, "-m", "venv", venv])
        pip = os.path.join(venv, "bin", "pip")
        if i == 0:
            dist = os.path.join(work, "dist")
            sh([maturin, "build", "--release", "-i", python, "--out", dist], cwd=CRATE, env=env)
            built = [os.path.join(dist, w) for w in os.listdir(dist) if w.endswith(".whl")]
            tag = "cp" + minor.replace(".", "")
            if len(built) != 1 or f"-{tag}-{tag}-" not in os.path.basename(built[0]):
                sys.exit(f"FAIL: expected one {tag} wheel, got {built}")
            sh([pip, "install", "--no-index", built[0]], env=env)
        else:
            # pip builds the source folder in an isolated environment, with
            # the build backend (maturin) from the wheels folder.
            sh([pip, "install", "--no-cache-dir", "--no-index", "--find-links", wheels, CRATE], env=env, cwd=work)
        check_venv(venv, minor)
    print(f"wheel check: {len(args.pythons)} interpreter(s) installed with pip and checked")


if __name__ == "__main__":
    main()
