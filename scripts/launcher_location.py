"""Where to run pymalloc-python from when running CPython's test suite.

Some tests (test_subprocess.test_user) start sys.executable as another user
(nobody) and expect exactly one of two outcomes: the exec is refused, or the
child runs fully. Stock python3 here lives under /root (mode 700), so the
exec is refused. A launcher in the world-readable build tree would be
executed, then fail to read the standard library under /root. So the
launcher is run from a place exactly as reachable by other users as the
stock interpreter: a private copy if the stock one is private, the build
output otherwise.
"""
import os
import shutil
import stat
import tempfile


def reachable_by_others(path):
    """True if every directory above `path` lets other users through."""
    path = os.path.realpath(path)
    d = os.path.dirname(path)
    while True:
        if not os.stat(d).st_mode & stat.S_IXOTH:
            return False
        parent = os.path.dirname(d)
        if parent == d:
            return True
        d = parent


def place_like(launcher, stock):
    """A path to run `launcher` from that other users reach iff they reach
    `stock`."""
    if reachable_by_others(stock) or not reachable_by_others(launcher):
        return launcher
    private = tempfile.mkdtemp(prefix="pymalloc-python-")  # mode 0700
    dest = os.path.join(private, "pymalloc-python")
    shutil.copy2(launcher, dest)
    return dest
