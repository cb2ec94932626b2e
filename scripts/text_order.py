#!/usr/bin/env python3
"""The functions a pymalloc-python run executes, for the launcher's text
layout (`crates/pymalloc-python/build.rs`, `pymalloc-text-layout`).

The kernel makes a whole 64 KiB window of a file mapping resident on a
page fault (its fault-around). The launcher's linker script puts the code
a run executes first in its windows; this script finds that code. It runs
the release launcher under callgrind (`--dump-instr=yes`) on a few
programs, maps every executed instruction of the launcher to the function
(symbol) holding it, and writes one linker-script pattern per function to
`crates/pymalloc-python/text-order.txt`:

* legacy Rust symbols (`_ZN...17h<hash>E`) without their hash;
* v0 Rust symbols (`_R...`) with each crate's disambiguator wildcarded;
* C symbols as they are.

* a suffix LLVM gives local copies (`.llvm.<number>`) wildcarded;

so that the file survives rebuilds. An instance of a generic function is
listed by its whole symbol (its pattern would match the other instances,
code that does not run), hash included: those lines go stale when the
toolchain or a dependency changes, and the function then lands after the
listed ones, still in the windows. So does a function missing from the
file (new code, another CPython version's code). The launcher's test
`the_code_a_run_makes_resident_is_one_window` says when the list has
drifted too far; regenerate it with `--fresh` and a run per CPython
version (below).

    cargo build --release -p pymalloc-python
    python3 scripts/text_order.py [--launcher target/release/pymalloc-python] [--check] [--fresh]

With `--preload`, the same for the preload library
(`target/release/libpymalloc_preload.so`): it runs C programs (the
library's test programs, built here) and a few system commands with the
library preloaded, and writes `crates/pymalloc-preload/text-order.txt`,
which `crates/pymalloc-preload/build.rs` puts first in the library's
window (after the exported entry points); its test
`the_library_text_a_program_runs_is_one_window` says when it has drifted:

    cargo build --release -p pymalloc-preload
    python3 scripts/text_order.py --preload [--check] [--fresh]

The file is the union of what launchers built for each supported CPython
executed (their code differs a little: 3.12 and later register fork
hooks, for one); each run adds to it, and `--fresh` starts it over. With
`--check` it writes nothing: it fails (exit status 1) if the code this
launcher executes spans more than one 64 KiB window, and names the
executed functions the file does not list (their hashes aside), as a
warning. Needs valgrind and binutils. Standard library only.

A launcher for another CPython:

    PYO3_PYTHON=/path/to/python3.X CARGO_TARGET_DIR=target/py-other cargo build --release -p pymalloc-python
    python3 scripts/text_order.py --launcher target/py-other/release/pymalloc-python
"""

import argparse
import bisect
import fnmatch
import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ORDER = os.path.join(ROOT, "crates", "pymalloc-python", "text-order.txt")

# What the runs execute: start-up and exit alone; a program like the
# launcher's test's (containers, json, pickle, decimal, full collections
# that purge; a request of megabytes, which reaches the fallback after the
# decay's `make_room`), which also builds its heap again over pages given back and
# drops it without a collection, for the decay thread's sweeps to give it
# back; a collection with PYTHONMALLOC naming the default, whose parsing
# is code of its own.
PROGRAMS = [
    ("pass", {}),
    ("import json, os, collections, pickle, decimal, gc\n"
     "d = [{'a': i, 'b': str(i) * 3} for i in range(20000)]\n"
     "s = json.dumps(d); json.loads(s); gc.collect()\n"
     "b = bytearray(4 << 20); del b\n"
     "open('/proc/self/smaps').read()\n"
     "del d, s; gc.collect()\n"
     "import time; time.sleep(3)\n"
     "d = [{'a': i, 'b': str(i) * 3} for i in range(40000)]\n"
     "del d; time.sleep(3)\n"
     "d = [{'a': i, 'b': str(i) * 3} for i in range(40000)]\n"
     "del d; gc.collect(); time.sleep(1)\n", {}),
    ("import gc; gc.collect()\n", {"PYTHONMALLOC": "pymalloc"}),
]

PRELOAD_ORDER = os.path.join(ROOT, "crates", "pymalloc-preload", "text-order.txt")
PRELOAD_LIB = os.path.join(ROOT, "target", "release", "libpymalloc_preload.so")
PRELOAD_C = os.path.join(ROOT, "crates", "pymalloc-preload", "tests", "c")

# The preload library's runs: its test programs (every kind of request,
# threads, a single-threaded program; not glibc's questions about the heap,
# whose code runs on request and lies before the window) and system commands that start, allocate and exit as ordinary programs
# do, where this machine has them.
PRELOAD_C_PROGRAMS = [
    ("resident_text.c", ["-O1", "-std=gnu11", "-pthread", "-ldl"]),
    ("one_thread.c", ["-O1", "-std=c11"]),
]
# The purge policies the test programs run under (None: the default), as
# in the library's test `the_library_text_a_program_runs_is_one_window`.
PRELOAD_PURGE_POLICIES = [None, "decay:20", "immediate"]
# Functions of the preload library that programs run natively but that
# callgrind's runs miss, because whether they run depends on timing
# (callgrind runs the threads one at a time, many times slower): the probe
# for moving pages and the moves (a huge block reusing the pages of kept
# ones: valgrind does not move pages) and an
# arena's release by the decay thread. Found by the page faults a native
# run of the test program took beyond the window (`perf record -e
# page-faults -d`), and in the field's programs. Listed always.
PRELOAD_NATIVE_ONLY = [
    "_ZN8pymalloc2os14can_move_pages17h*",
    "_ZN8pymalloc2os10move_pages17h*",
    "_ZN8pymalloc6region15Region$LT$_$GT$14move_kept_into17h*",
    "_ZN8pymalloc11arena_alloc13os_arena_free17h*",
    # xmalloc-test: a pool taken from a later arena with resident free pools.
    "_ZN8pymalloc4heap6arenas6Arenas10warm_arena17h*",
    "_ZN8pymalloc4heap6arenas6Arenas13one_pool_less17h*",
]
PRELOAD_COMMANDS = [
    ["sort", "lines.txt"],
    ["python3", "-c", "import json; json.loads(json.dumps([{'a': str(i)} for i in range(3000)]))"],
    ["git", "--version"],
]

PRELOAD_HEADER = """\
# The functions programs run under the preload library execute (release
# build), one pattern of their symbols each: the library's linker script
# puts them first in its text window, after the exported entry points
# (build.rs). Generated by scripts/text_order.py --preload; edit by
# regenerating.
"""

HEADER = """\
# The functions a pymalloc-python run executes (release build), one
# pattern of their symbols each: the launcher's linker script puts them
# first in its text windows (build.rs). Generated by scripts/text_order.py;
# edit by regenerating.
"""


def symbols(elf):
    """(start, size, name) of every function of `elf`, sorted."""
    out = subprocess.run(["nm", "-S", elf], capture_output=True, text=True, check=True).stdout
    syms = []
    for line in out.splitlines():
        f = line.split()
        if len(f) == 4 and f[2] in "tTwW":
            syms.append((int(f[0], 16), int(f[1], 16), f[3]))
    return sorted(syms)


def executed_addresses(callgrind_out, main_offset, anchor="main", only=None):
    """The addresses of the instructions executed in the object that holds
    `anchor` (callgrind names it by path, or "???" when it cannot read it),
    as offsets in that object; with `only`, among the objects whose path
    ends so (or that callgrind could not read: "???"). `main_offset` is the anchor's offset in its object: its
    lowest executed address is its entry."""
    fn_names, ob_names = {}, {}
    ob, fn, last = None, None, 0
    addrs = {}  # object id -> executed addresses
    entry = {}  # object id -> main's lowest executed address, its entry
    for line in open(callgrind_out):
        line = line.rstrip("\n")
        m = re.match(r"^(c?)(ob|fn)=\((\d+)\)(?: (.*))?$", line)
        if m:
            if m.group(2) == "fn" and m.group(4):
                fn_names[m.group(3)] = m.group(4)
            if m.group(2) == "ob" and m.group(4):
                ob_names[m.group(3)] = m.group(4)
            if not m.group(1):
                if m.group(2) == "ob":
                    ob = m.group(3)
                else:
                    fn = fn_names.get(m.group(3))
            continue
        if not line or line.startswith(("calls=", "cfi=", "cfl=", "fl=", "fi=", "fe=")):
            continue
        tok = line.split()[0]
        if tok.startswith("0x"):
            a = int(tok, 16)
        elif tok == "*":
            a = last
        elif tok[0] in "+-":
            a = last + int(tok)
        else:
            continue
        last = a
        addrs.setdefault(ob, set()).add(a)
        if fn == anchor and (only is None or ob_names.get(ob, "???").endswith((only, "???"))):
            entry[ob] = min(entry.get(ob, a), a)
    if len(entry) != 1:
        sys.exit(f"callgrind's output has {len(entry)} objects with a {anchor} that ran")
    (ob, e), = entry.items()
    base = e - main_offset
    found = {a - base for a in addrs[ob]}
    # Callgrind may name a few functions of the same library by its path
    # (`std`'s, whose debug information it reads), at their offsets in the
    # library, and the rest "???", at their addresses: with `only`, those
    # are the library's too.
    for o in addrs:
        if o != ob and only and ob_names.get(o, "").endswith(only):
            found |= addrs[o]
    return found


def pattern(name):
    """A pattern for a function's symbol, stable across rebuilds (build.rs
    makes it the patterns of the function's sections, `.text.<symbol>` or
    `.text.unlikely.<symbol>` for a cold one)."""
    name = re.sub(r"\.llvm\.\d+$", ".llvm.*", name)
    m = re.match(r"^(_ZN.*)17h[0-9a-f]{16}E((?:\.llvm\.\*)?)$", name)
    if m:
        return f"{m.group(1)}17h*{m.group(2)}"
    if name.startswith("_R"):
        # Crate roots carry a disambiguator, `Cs<base62>_` before the
        # crate name's length, which changes with the toolchain and the
        # build (an identifier such as `Csv9read_line` is not one).
        return re.sub(r"(?<=C)s[0-9A-Za-z]*_(?=\d)", "*", name)
    return name


def functions_run(binary, anchor, runs, tmp, only=None, cwd=None):
    """The functions of `binary` that `runs` (argv, extra environment; run
    in `cwd`, their outputs in `tmp`) execute under callgrind, found by the
    address of `anchor`, a function every run executes."""
    syms = symbols(binary)
    entry = [s for s in syms if s[2] == anchor]
    if not entry:
        sys.exit(f"{binary} has no {anchor}")
    starts = [s[0] for s in syms]
    hit = {}
    for i, (argv, env) in enumerate(runs):
        out = os.path.join(tmp, f"cg{i}.out")
        subprocess.run(["valgrind", "--tool=callgrind", "--dump-instr=yes", f"--callgrind-out-file={out}", *argv],
                       env=dict(os.environ, **env), check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, cwd=cwd)
        for a in executed_addresses(out, entry[0][0], anchor, only):
            k = bisect.bisect_right(starts, a) - 1
            if k >= 0 and syms[k][0] <= a < syms[k][0] + syms[k][1]:
                hit[syms[k][0]] = syms[k]
    return sorted(hit.values())


def executed_functions(launcher):
    """The functions of the launcher that its runs (PROGRAMS) execute."""
    with tempfile.TemporaryDirectory() as tmp:
        runs = []
        for i, (code, env) in enumerate(PROGRAMS):
            prog = os.path.join(tmp, f"p{i}.py")
            with open(prog, "w") as f:
                f.write(code)
            runs.append(([launcher, prog], env))
        return functions_run(launcher, "main", runs, tmp)


def preload_functions(lib):
    """The functions of the preload library `lib` that its runs execute."""
    with tempfile.TemporaryDirectory() as tmp:
        lib = os.path.abspath(lib)
        runs = []
        for src, flags in PRELOAD_C_PROGRAMS:
            exe = os.path.join(tmp, os.path.splitext(src)[0])
            subprocess.run(["cc", *flags, os.path.join(PRELOAD_C, src), "-o", exe], check=True)
            # Each purge policy the test runs it under: under callgrind the
            # threads run one at a time and slowly, so the default decay's
            # timing differs from a native run's; a decay of a few
            # milliseconds makes the sweep run in the program's pause, and
            # `immediate` the arenas' release.
            for purge in PRELOAD_PURGE_POLICIES:
                runs.append(([exe], {"LD_PRELOAD": lib, **({"PYMALLOC_PURGE": purge} if purge else {})}))
        with open(os.path.join(tmp, "lines.txt"), "w") as f:
            f.writelines(f"{(i * 7919) % 10007} line\n" for i in range(20000))
        runs += [(c, {"LD_PRELOAD": lib}) for c in PRELOAD_COMMANDS if shutil.which(c[0])]
        # Callgrind cannot read the library (its layout): "???" is it.
        return functions_run(lib, "malloc", runs, tmp,
                             os.path.basename(lib), cwd=tmp)


def read_patterns(order):
    """The patterns the file lists now (none if it is missing)."""
    if not os.path.exists(order):
        return []
    lines = (l.strip() for l in open(order))
    return [l for l in lines if l and not l.startswith("#")]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--launcher", default=os.path.join(ROOT, "target", "release", "pymalloc-python"))
    ap.add_argument("--check", action="store_true",
                    help="only check that the file covers what this launcher executes")
    ap.add_argument("--preload", nargs="?", const=PRELOAD_LIB, metavar="LIB",
                    help="the preload library's list instead (default library: %(const)s)")
    ap.add_argument("--fresh", action="store_true",
                    help="forget the file's patterns (by default the new ones are added to them, so that "
                         "runs of launchers built for several CPython versions add up)")
    args = ap.parse_args()
    binary = args.preload or args.launcher
    order, header = (PRELOAD_ORDER, PRELOAD_HEADER) if args.preload else (ORDER, HEADER)
    funcs = preload_functions(args.preload) if args.preload else executed_functions(args.launcher)
    if not funcs:
        sys.exit(f"callgrind saw no function of {binary} run")
    lo, hi = funcs[0][0], max(f[0] + f[1] for f in funcs)
    windows = (hi - 1) // 0x10000 - lo // 0x10000 + 1
    print(f"{len(funcs)} functions executed, {sum(f[1] for f in funcs)} bytes, "
          f"at {lo:#x}-{hi:#x} ({windows} windows of 64 KiB)", file=sys.stderr)
    old = read_patterns(order)
    if args.check:
        # Hash-blind: a whole symbol listed matches its function after a
        # toolchain change too.
        listed = [pattern(p) for p in old]
        missing = [n for _, _, n in funcs if not any(fnmatch.fnmatchcase(pattern(n), p) for p in listed)]
        if missing:
            print(f"warning: {order} lacks {len(missing)} executed functions ({', '.join(missing[:5])}); "
                  "they lie after the listed ones", file=sys.stderr)
        if windows > 1:
            sys.exit(f"the code {binary} executes spans {windows} windows of 64 KiB: "
                     "run scripts/text_order.py (see its --help)")
        return
    # A pattern that other functions' symbols match too (the instances of a
    # generic function, whose symbols differ only in their hash) would pull
    # code that does not run into the windows: those are listed by their
    # whole symbol.
    matches = {}
    for _, _, name in symbols(binary):
        matches[pattern(name)] = matches.get(pattern(name), 0) + 1
    lines = set() if args.fresh else set(old)
    if args.preload:
        lines.update(PRELOAD_NATIVE_ONLY)
    for _, _, name in funcs:
        p = pattern(name)
        lines.add(name if matches[p] > 1 else p)
    # Sorted: the order within the group does not matter to the windows,
    # and the file then does not change with the layout it makes.
    with open(order, "w") as f:
        f.write(header + "".join(p + "\n" for p in sorted(lines)))
    print(f"wrote {order}: {len(lines)} patterns", file=sys.stderr)


if __name__ == "__main__":
    main()
