#!/usr/bin/env python3
"""Peak-release harness: does resident memory follow the live heap down?

Each (scenario, interpreter) pair runs in a process of its own. The harness
writes a small driver program into a temporary directory and runs it with the
interpreter; the driver measures its own resident set size (RSS, from
/proc/self/statm) and prints JSON lines:

  base   after imports and scenario setup, before building;
  peak   after building the large heap (VmHWM recorded too);
  after  after keeping a scattered 1 in 100 of what was built, dropping the
         rest, gc.collect(), the interpreter's release step and 1 s idle.

kept fraction  = (after - base) / (peak - base)
floor fraction = floor growth / (peak - base), from pymalloc-python runs,
                 where floor = _pymalloc.floor() pool_pages + span_pages +
                 malloc_in_use:
                 the pages no allocator that never moves a block could give
                 back.

The `service` scenario is a long-running loop of request waves with a bounded
cache; RSS is sampled after every wave (drawn as an SVG chart), peak is the
largest sample, and the final RSS is compared with an estimate of the live
size.

Only the standard library is used. Exit status is non-zero when a run fails
or a figure is missing or invalid.

  python3 scripts/peak_release.py --scale 0.05 --only-ours-and-stock \\
      --out /tmp/pr.md --json /tmp/pr.json --svg /tmp/pr.svg     # smoke (CI)
  python3 scripts/peak_release.py --rounds 3                      # the docs/
"""

import argparse
import concurrent.futures
import datetime
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JEMALLOC = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"
MIMALLOC = "/usr/lib/x86_64-linux-gnu/libmimalloc.so.2"
MIB = 1024 * 1024
SCENARIOS = ["records", "instances", "slots", "json", "strings", "service"]

# --------------------------------------------------------------------------
# The driver: runs inside the measured interpreter. Standard library only.
# argv[1] is a JSON object: scenario, scale, release, seed, waves.
# --------------------------------------------------------------------------
DRIVER = r'''
import gc, json, os, random, sys, time

CFG = json.loads(sys.argv[1])
PAGE = os.sysconf("SC_PAGE_SIZE")
try:
    import _pymalloc
except ImportError:
    _pymalloc = None
if CFG["release"] == "malloc_trim":
    import ctypes
    _libc = ctypes.CDLL("libc.so.6")


def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def hwm():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return None


def floor():
    if _pymalloc is None:
        return None
    return dict(_pymalloc.floor())


def emit(event, **kw):
    kw["event"] = event
    sys.stdout.write(json.dumps(kw) + "\n")
    sys.stdout.flush()


def release():
    gc.collect()
    out = {}
    if CFG["release"] == "malloc_trim":
        out["malloc_trim"] = _libc.malloc_trim(0)
    elif CFG["release"] == "purge":
        out["purged_bytes"] = _pymalloc.purge()
    time.sleep(1)
    return out


SCALE = CFG["scale"]
rng = random.Random(CFG["seed"])


def n_of(full):
    return max(200, int(full * SCALE))


# ---- builders: each returns a list of fresh objects ----------------------

def build_records():
    n = n_of(600_000)
    return [{"name": "rec-%d" % i, "tags": ("t%d" % (i % 7), i, i + 0.5),
             "x": rng.random(), "y": rng.random() * 10.0, "z": i * 1.25}
            for i in range(n)]


class Inst:
    def __init__(self, i, r):
        self.name = "inst-%d" % i
        self.ident = i + 1000
        self.x = r
        self.y = r * 2.0
        self.pair = (i, r)


class Slot:
    __slots__ = ("name", "ident", "x", "y", "pair")

    def __init__(self, i, r):
        self.name = "slot-%d" % i
        self.ident = i + 1000
        self.x = r
        self.y = r * 2.0
        self.pair = (i, r)


def build_instances():
    n = n_of(1_000_000)
    return [Inst(i, rng.random()) for i in range(n)]


def build_slots():
    n = n_of(1_100_000)
    return [Slot(i, rng.random()) for i in range(n)]


def json_texts():
    texts = []
    for t in range(64):
        doc = {"id": t, "user": {"name": "user%d" % t, "email": "u%d@example.org" % t,
                                 "roles": ["reader", "writer"][: 1 + t % 2]},
               "items": [{"sku": "SKU-%05d" % (t * 31 + k), "qty": k + 1,
                          "price": round(1.5 * k + t / 7.0, 2), "ok": k % 3 == 0}
                         for k in range(6 + t % 5)],
               "note": "n" * (20 + t % 40)}
        texts.append(json.dumps(doc))
    return texts


def build_json(texts):
    n = n_of(100_000)
    loads = json.loads
    return [loads(texts[i % len(texts)]) for i in range(n)]


def build_strings():
    n = n_of(70_000)
    out = []
    for i in range(n):
        size = rng.randint(512, 8192)
        if i % 2:
            out.append(chr(97 + i % 26) * size)
        else:
            out.append(bytes([65 + i % 26]) * size)
    return out


def deep_size(obj, seen):
    size = 0
    stack = [obj]
    getsizeof = sys.getsizeof
    while stack:
        o = stack.pop()
        if id(o) in seen:
            continue
        seen.add(id(o))
        size += getsizeof(o)
        if isinstance(o, dict):
            stack.extend(o.keys())
            stack.extend(o.values())
        elif isinstance(o, (list, tuple)):
            stack.extend(o)
    return size


def run_static(scenario):
    texts = json_texts() if scenario == "json" else None
    gc.collect()
    emit("base", rss=rss(), floor=floor())
    t0 = time.monotonic()
    if scenario == "records":
        data = build_records()
    elif scenario == "instances":
        data = build_instances()
    elif scenario == "slots":
        data = build_slots()
    elif scenario == "json":
        data = build_json(texts)
    elif scenario == "strings":
        data = build_strings()
    else:
        raise SystemExit("unknown scenario " + scenario)
    emit("peak", rss=rss(), hwm=hwm(), floor=floor(), count=len(data),
         build_s=time.monotonic() - t0)
    picks = sorted(random.Random(CFG["seed"] + 1).sample(range(len(data)), len(data) // 100))
    keep = [data[i] for i in picks]
    del data
    rel = release()
    emit("after", rss=rss(), hwm=hwm(), floor=floor(), kept=len(keep), **rel)
    return keep


def make_request(i):
    r = rng.random()
    if r < 0.4:
        body = chr(97 + i % 26) * rng.randint(512, 8192)
    else:
        body = "payload-%d-" % i * (1 + i % 6)
    req = {"id": i + 100_000, "path": "/api/v1/items/%d" % i,
           "headers": {"host": "example.org", "user-agent": "client/%d" % (i % 97),
                       "x-request-id": "%016x" % (i * 2654435761 % (1 << 64))},
           "params": [i, r * 2.5, "q%d" % i], "body": body}
    items = [{"k": k, "v": r + k, "label": "item-%d-%d" % (i, k)}
             for k in range(1 + i % 7)]
    resp = {"status": 200, "items": items, "ok": True,
            "blob": bytes([i % 251]) * rng.randint(64, 4096)}
    return req, resp


def run_service():
    per_wave = n_of(14_000)
    cap = n_of(12_000)
    waves = CFG["waves"]
    keep_p = 0.015
    cache = {}
    gc.collect()
    base = rss()
    emit("base", rss=base, floor=floor())
    samples = []
    inwave = []
    peak_floor = None
    peak = 0
    i = 0
    t0 = time.monotonic()
    for w in range(waves):
        inflight = []
        for _ in range(per_wave):
            req, resp = make_request(i)
            inflight.append((req, resp))
            i += 1
        s = rss()
        inwave.append(s)
        if s > peak:
            peak = s
        for j in range(len(inflight)):
            if rng.random() < keep_p:
                req, resp = inflight[j]
                cache[req["id"]] = (req, resp)
            elif rng.random() < 0.01 and cache:
                # a cache hit: move an old entry to the young end (LRU)
                k = next(iter(cache))
                cache[k] = cache.pop(k)
        while len(cache) > cap:
            del cache[next(iter(cache))]
        del inflight, req, resp
        if w % 10 == 9:
            gc.collect()
        s = rss()
        samples.append(s)
        if s > peak:
            peak = s
    build_s = time.monotonic() - t0
    emit("peak", rss=peak, hwm=hwm(), floor=peak_floor, count=i, build_s=build_s)
    rel = release()
    after = rss()
    live = deep_size(cache, set())
    emit("after", rss=after, hwm=hwm(), floor=floor(), kept=len(cache), live_bytes=live,
         samples=samples, inflight_samples=inwave, **rel)
    return cache


if CFG["scenario"] == "service":
    held = run_service()
else:
    held = run_static(CFG["scenario"])
emit("done")
'''


def row_specs(ours, stock="python3"):
    """The interpreters (rows), in order: `stock` is the stock interpreter
    the launcher `ours` was built against."""
    return [
        dict(key="stock", label="stock", exe=stock, release="none", env={}, group="stock"),
        dict(key="stock+trim", label="stock + malloc_trim", exe=stock, release="malloc_trim",
             env={}, group="stock"),
        dict(key="jemalloc", label="stock + jemalloc", exe=stock, release="none",
             env={"LD_PRELOAD": JEMALLOC, "PYTHONMALLOC": "malloc"}, group="peer", lib=JEMALLOC),
        dict(key="mimalloc", label="stock + mimalloc", exe=stock, release="none",
             env={"LD_PRELOAD": MIMALLOC, "PYTHONMALLOC": "malloc"}, group="peer", lib=MIMALLOC),
        dict(key="ours-default", label="pymalloc-python (PURGE=default)", exe=ours, release="none",
             env={"PYMALLOC_PURGE": "default"}, group="ours"),
        dict(key="ours-never", label="pymalloc-python (PURGE=never)", exe=ours, release="none",
             env={"PYMALLOC_PURGE": "never"}, group="ours"),
        dict(key="ours-immediate", label="pymalloc-python (PURGE=immediate)", exe=ours,
             release="none", env={"PYMALLOC_PURGE": "immediate"}, group="ours"),
        dict(key="ours-purge", label="pymalloc-python + purge()", exe=ours, release="purge",
             env={"PYMALLOC_PURGE": "default"}, group="ours"),
        dict(key="ours-all", label="pymalloc-python, every size (pymalloc_all)", exe=ours, release="none",
             env={"PYMALLOC_PURGE": "default", "PYTHONMALLOC": "pymalloc_all"}, group="ours"),
        dict(key="ours-all-immediate", label="pymalloc-python, every size, PURGE=immediate", exe=ours,
             release="none", env={"PYMALLOC_PURGE": "immediate", "PYTHONMALLOC": "pymalloc_all"}, group="ours"),
    ]


def child_env(extra):
    env = dict(os.environ)
    for k in ("LD_PRELOAD", "PYTHONMALLOC", "PYMALLOC_PURGE", "PYTHONMALLOCSTATS",
              "PYTHONDEVMODE", "MALLOC_ARENA_MAX", "MALLOC_TRIM_THRESHOLD_"):
        env.pop(k, None)
    env.update(extra)
    return env


def run_one(driver, row, scenario, scale, waves, seed, timeout):
    cfg = dict(scenario=scenario, scale=scale, release=row["release"], seed=seed, waves=waves)
    cmd = [row["exe"], driver, json.dumps(cfg)]
    t0 = time.monotonic()
    res = dict(scenario=scenario, row=row["key"], ok=False, error=None)
    try:
        p = subprocess.run(cmd, env=child_env(row["env"]), capture_output=True, text=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        res["error"] = "timed out after %d s" % timeout
        return res
    except OSError as e:
        res["error"] = "could not start %s: %s" % (row["exe"], e)
        return res
    res["wall_s"] = round(time.monotonic() - t0, 3)
    events = {}
    for line in p.stdout.splitlines():
        if line.startswith("{"):
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            events[ev.pop("event")] = ev
    if p.returncode != 0 or "done" not in events:
        tail = (p.stderr or "").strip().splitlines()[-5:]
        res["error"] = "exit %s: %s" % (p.returncode, " | ".join(tail))
        return res
    res.update(base=events["base"], peak=events["peak"], after=events["after"])
    problems = validate(res, row)
    if problems:
        res["error"] = "; ".join(problems)
        return res
    b, pk, a = res["base"]["rss"], res["peak"]["rss"], res["after"]["rss"]
    res["kept"] = (a - b) / (pk - b)
    if row["group"] == "ours":
        fb, fa = res["base"]["floor"], res["after"]["floor"]
        res["floor_growth"] = floor_bytes(fa) - floor_bytes(fb)
        res["floor_frac"] = res["floor_growth"] / (pk - b)
        if "header_pages" in fa and "header_pages" in fb:
            res["header_frac"] = (fa["header_pages"] - fb["header_pages"]) / (pk - b)
    if scenario == "service":
        live = res["after"]["live_bytes"]
        res["final_over_live"] = a / (b + live)
        res["growth_over_live"] = (a - b) / live
    res["ok"] = True
    return res


def floor_bytes(f):
    """The floor of one `_pymalloc.floor()` reading: pool pages, our span
    pages (launchers before `span_pages` existed give none) and glibc's
    bytes in use."""
    return f["pool_pages"] + f.get("span_pages", 0) + f["malloc_in_use"]


def validate(res, row):
    out = []
    for ev in ("base", "peak", "after"):
        v = res[ev].get("rss")
        if not isinstance(v, int) or v <= 0:
            out.append("%s RSS missing or invalid: %r" % (ev, v))
    if out:
        return out
    if res["peak"]["rss"] <= res["base"]["rss"]:
        out.append("peak (%d) <= base (%d)" % (res["peak"]["rss"], res["base"]["rss"]))
    if row["group"] == "ours":
        for ev in ("base", "after"):
            f = res[ev].get("floor")
            if not isinstance(f, dict) or not all(isinstance(f.get(k), int)
                                                  for k in ("pool_pages", "malloc_in_use")):
                out.append("_pymalloc.floor() missing at %s" % ev)
        if not out:
            fb, fa = res["base"]["floor"], res["after"]["floor"]
            g = floor_bytes(fa) - floor_bytes(fb)
            if g <= 0:
                out.append("floor growth %d <= 0" % g)
    if row["release"] == "purge" and not isinstance(res["after"].get("purged_bytes"), int):
        out.append("purge() result missing")
    if res["scenario"] == "service":
        s = res["after"].get("samples")
        if not s or not all(isinstance(x, int) and x > 0 for x in s):
            out.append("service samples missing")
        if not res["after"].get("live_bytes", 0) > 0:
            out.append("live size estimate missing")
    return out


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def summarize(results, rows, scenarios):
    """Medians per (scenario, row), and each scenario's floor fraction."""
    summary = {}
    for sc in scenarios:
        summary[sc] = {"rows": {}}
        for row in rows:
            runs = [r for r in results if r["scenario"] == sc and r["row"] == row["key"] and r["ok"]]
            if not runs:
                continue
            s = dict(n=len(runs),
                     base=med([r["base"]["rss"] for r in runs]),
                     peak=med([r["peak"]["rss"] for r in runs]),
                     hwm=med([r["peak"].get("hwm") for r in runs]),
                     after=med([r["after"]["rss"] for r in runs]),
                     kept=med([r["kept"] for r in runs]),
                     floor_frac=med([r.get("floor_frac") for r in runs]),
                     floor_growth=med([r.get("floor_growth") for r in runs]),
                     header_frac=med([r.get("header_frac") for r in runs]),
                     build_s=med([r["peak"].get("build_s") for r in runs]),
                     purged=med([r["after"].get("purged_bytes") for r in runs]))
            if sc == "service":
                s["live"] = med([r["after"]["live_bytes"] for r in runs])
                s["final_over_live"] = med([r["final_over_live"] for r in runs])
                s["growth_over_live"] = med([r["growth_over_live"] for r in runs])
                series = [r["after"]["samples"] for r in runs]
                length = min(len(x) for x in series)
                s["series"] = [med([x[w] for x in series]) for w in range(length)]
            summary[sc]["rows"][row["key"]] = s
        rs = summary[sc]["rows"]
        floor = None
        source = None
        for key in ("ours-purge", "ours-default", "ours-immediate", "ours-never"):
            if key in rs and rs[key]["floor_frac"] is not None:
                floor, source = rs[key]["floor_frac"], key
                break
        summary[sc]["floor_frac"] = floor
        summary[sc]["floor_source"] = source
        for s in rs.values():
            s["kept_over_floor"] = (s["kept"] / floor) if floor and floor > 0 else None
            own = s.get("floor_frac")
            s["kept_over_own_floor"] = (s["kept"] / own) if own and own > 0 else None
    return summary


# --------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------

def fmt_mib(b):
    return "%.1f" % (b / MIB) if b is not None else "–"


def fmt_frac(x):
    if x is None:
        return "–"
    return "%.3f" % (0.0 if abs(x) < 0.0005 else x)  # no "-0.000"


def fmt_ratio(x):
    return "%.1f×" % x if x is not None else "–"


COLORS = {"stock": "#7f7f7f", "stock+trim": "#17becf", "jemalloc": "#2ca02c",
          "mimalloc": "#9467bd", "ours-default": "#1f77b4", "ours-never": "#ff7f0e",
          "ours-immediate": "#8c564b", "ours-purge": "#d62728"}


def nice_step(span, target=6):
    raw = span / target
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def esc(s):
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def write_svg(path, summary, rows, title):
    rs = summary.get("service", {}).get("rows", {})
    lines = [(row, rs[row["key"]]) for row in rows if row["key"] in rs]
    W, H = 960, 540
    left, right, top, bottom = 70, 280, 50, 60
    pw, ph = W - left - right, H - top - bottom
    out = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" '
           'viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">' % (W, H, W, H),
           '<rect width="100%" height="100%" fill="white"/>',
           '<text x="%d" y="24" font-size="15" font-weight="bold">%s</text>' % (left, esc(title))]
    if not lines:
        out.append('<text x="%d" y="%d">no service runs</text>' % (left, top + 20))
        out.append("</svg>")
        with open(path, "w") as f:
            f.write("\n".join(out) + "\n")
        return
    nw = max(len(s["series"]) for _, s in lines)
    ymax_b = max(max(s["series"]) for _, s in lines)
    live_levels = [(s["base"] + s["live"]) for _, s in lines if s.get("live")]
    ymax = max(ymax_b, max(live_levels) if live_levels else 0) / MIB
    ystep = nice_step(ymax)
    ytop = ystep * math.ceil(ymax / ystep)
    xstep = nice_step(nw)
    xtop = max(nw, 1)

    def X(w):
        return left + pw * w / xtop

    def Y(mib):
        return top + ph - ph * mib / ytop

    # grid and axes
    y = 0.0
    while y <= ytop + 1e-9:
        out.append('<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#e5e5e5"/>'
                   % (left, Y(y), left + pw, Y(y)))
        out.append('<text x="%.1f" y="%.1f" text-anchor="end">%g</text>' % (left - 6, Y(y) + 4, y))
        y += ystep
    x = 0.0
    while x <= xtop + 1e-9:
        out.append('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#999"/>'
                   % (X(x), top + ph, X(x), top + ph + 5))
        out.append('<text x="%.1f" y="%d" text-anchor="middle">%g</text>' % (X(x), top + ph + 18, x))
        x += xstep
    out.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>' % (left, top, left, top + ph))
    out.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>'
               % (left, top + ph, left + pw, top + ph))
    out.append('<text x="%.1f" y="%d" text-anchor="middle">wave (RSS sampled after each wave of requests)</text>'
               % (left + pw / 2, H - 18))
    out.append('<text transform="translate(18,%.1f) rotate(-90)" text-anchor="middle">RSS (MiB)</text>'
               % (top + ph / 2))
    # live-size estimate (base + deep size of the cache at the end), median over rows
    if live_levels:
        lv = statistics.median(live_levels) / MIB
        out.append('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="black" stroke-dasharray="6,4"/>'
                   % (left, Y(lv), left + pw, Y(lv)))
    for idx, (row, s) in enumerate(lines):
        c = COLORS.get(row["key"], "#000000")
        pts = " ".join("%.1f,%.1f" % (X(w + 1), Y(v / MIB)) for w, v in enumerate(s["series"]))
        dash = ' stroke-dasharray="4,3"' if row["group"] != "ours" else ""
        out.append('<polyline fill="none" stroke="%s" stroke-width="1.8"%s points="%s"/>'
                   % (c, dash, pts))
        # the final RSS (after gc.collect, release step and 1 s idle) as a dot
        out.append('<circle cx="%.1f" cy="%.1f" r="3.5" fill="%s"/>'
                   % (X(nw) + 10, Y(s["after"] / MIB), c))
    # legend
    lx, ly = left + pw + 20, top + 10
    for idx, (row, s) in enumerate(lines):
        c = COLORS.get(row["key"], "#000000")
        dash = ' stroke-dasharray="4,3"' if row["group"] != "ours" else ""
        yy = ly + idx * 20
        out.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2"%s/>'
                   % (lx, yy, lx + 24, yy, c, dash))
        out.append('<text x="%d" y="%d">%s</text>' % (lx + 30, yy + 4, esc(row["label"])))
    yy = ly + len(lines) * 20 + 6
    if live_levels:
        out.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black" stroke-dasharray="6,4"/>'
                   % (lx, yy, lx + 24, yy))
        out.append('<text x="%d" y="%d">base + live size (end)</text>' % (lx + 30, yy + 4))
        yy += 20
    out.append('<circle cx="%d" cy="%d" r="3.5" fill="#555"/>' % (lx + 12, yy))
    out.append('<text x="%d" y="%d">final RSS (after release, 1 s idle),</text>' % (lx + 30, yy + 4))
    out.append('<text x="%d" y="%d">drawn just right of the last wave</text>' % (lx + 30, yy + 20))
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def interp_versions(rows, skipped):
    vers = {}
    seen = set()
    for row in rows:
        if row["exe"] in seen:
            continue
        seen.add(row["exe"])
        try:
            v = subprocess.run([row["exe"], "-c", "import sys; print(sys.version.replace('\\n',' '))"],
                               capture_output=True, text=True, timeout=60,
                               env=child_env({})).stdout.strip()
        except OSError as e:
            v = "unavailable (%s)" % e
        vers[row["exe"]] = v
    for pkg in ("libjemalloc2", "libmimalloc2.0"):
        try:
            v = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", pkg],
                               capture_output=True, text=True, timeout=30).stdout.strip()
        except OSError:
            v = ""
        vers[pkg] = v or "unknown"
    try:
        vers["pymalloc-rs commit"] = subprocess.run(
            ["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
            timeout=30).stdout.strip() or "unknown"
    except OSError:
        vers["pymalloc-rs commit"] = "unknown"
    return vers


def machine():
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem = int(line.split()[1]) * 1024
    except OSError:
        pass
    return dict(cpu=model, nproc=os.cpu_count(), mem_total=mem, kernel=platform.release(),
                glibc=" ".join(platform.libc_ver()))


SCENARIO_TEXT = {
    "records": "a list of dicts (5 keys: a str, a 3-tuple of str/int/float, three floats)",
    "instances": "instances of a class with `__dict__` (5 attributes: str, int, float, float, tuple)",
    "slots": "instances of a class with `__slots__` (same 5 attributes)",
    "json": "`json.loads` of 64 generated documents (nested dicts/lists, ~1 KB of text each), parsed over and over",
    "strings": "`str` and `bytes` objects of 512–8192 bytes (uniform random sizes, fixed seed)",
    "service": "waves of requests (dicts, lists, small strings, 40 % of bodies 0.5–8 KB, "
               "a 64 B–4 KB bytes blob per response); 1.5 % of each wave's requests enter an "
               "insertion-ordered cache bounded to a fixed number of entries (oldest evicted, "
               "1 % LRU touches); `gc.collect()` every 10 waves",
}


def write_md(path, args, cmdline, summary, rows, results, skipped, vers, mach, svg_rel, scenarios,
             started, wall):
    L = []
    L.append("# Peak release: memory that follows the live heap")
    L.append("")
    L.append("Does resident memory come back down when a program's heap shrinks after a peak? "
             "Each scenario builds a large heap, keeps a scattered 1 in 100 of what it built "
             "and drops the rest. Generated by `scripts/peak_release.py`; figures below are "
             "medians of %d round(s)." % args.rounds)
    L.append("")
    L.append("## How it was measured")
    L.append("")
    L.append("- Command: `%s` (wall time %.0f s)" % (cmdline, wall))
    L.append("- Date: %s" % started)
    L.append("- Machine: %s, %s CPUs (nproc), %.1f GiB RAM, Linux %s, %s"
             % (mach["cpu"], mach["nproc"], (mach["mem_total"] or 0) / 2**30, mach["kernel"],
                mach["glibc"]))
    L.append("- Interpreters: stock `python3` = %s; `pymalloc-python` (%s) = %s, repository HEAD at run time %s; "
             "jemalloc %s, mimalloc %s (Debian packages)"
             % (vers.get("python3", "?"), os.path.relpath(args.ours, REPO) if args.ours.startswith(REPO) else args.ours,
                vers.get(args.ours, "?"), vers.get("pymalloc-rs commit"),
                vers.get("libjemalloc2"), vers.get("libmimalloc2.0")))
    L.append("- Scale %g, rounds %d (interpreters interleaved within each round, start order "
             "rotated between rounds), %d run(s) at a time, service waves %d."
             % (args.scale, args.rounds, args.jobs, args.waves))
    L.append("")
    L.append("Every (scenario, interpreter) pair runs in a process of its own: a driver program "
             "(written to a temporary directory) reads its own RSS from `/proc/self/statm` at")
    L.append("")
    L.append("1. **base**: after imports and scenario setup, before building;")
    L.append("2. **peak**: after building the large heap (VmHWM is recorded too, in the JSON);")
    L.append("3. **after**: after keeping a random 1 in 100 of the built objects (fixed seed), "
             "dropping the rest, `gc.collect()`, the row's release step, and `time.sleep(1)`.")
    L.append("")
    L.append("**kept fraction** = (after − base) / (peak − base): 0 means everything went "
             "back, 1 means nothing did; an allocator that gave back exactly the memory of "
             "the dropped objects would score about 0.01 plus fragmentation.")
    L.append("")
    L.append("**floor fraction**: in the pymalloc-python runs the driver also calls "
             "`_pymalloc.floor()` at base and after; floor growth = Δ(`pool_pages` + "
             "`span_pages` + `malloc_in_use`), i.e. the pymalloc pool pages still holding a "
             "live block, the pages of our own heaps holding part of a live block above 512 "
             "bytes (every-size rows; large blocks whole), and "
             "the bytes glibc has handed out and not had back. Given where the blocks were "
             "placed, no allocator that never moves a block could hold less (to page "
             "granularity; the pool pages are counted whole, glibc's bytes exactly). "
             "floor fraction = floor growth / "
             "(peak − base) of the same run; the column shows the scenario's floor from the "
             "`pymalloc-python + purge()` rows, and **kept/floor** = kept fraction / that "
             "floor (1.0× = at the floor). **own floor** is the row's own floor fraction "
             "(pymalloc-python rows), and **kept/own floor** its kept fraction over it: "
             "the every-size rows hold their blocks above 512 bytes in our spans, whose floor "
             "counts the pages holding a live block, where the default's counts glibc's "
             "bytes. The floor leaves out the pages our heaps hold "
             "for their metadata alone (`header_pages`: the header table's page per arena, "
             "where the arena region's pools keep their headers; a pool's first page when "
             "no live block lies on it, for pools that keep CPython's layout, with the header "
             "in the pool; and the header pages of our span segments); their growth, as a "
             "fraction of (peak − base), is listed under each table: that much of a "
             "pymalloc-python row's distance to the floor is what its metadata takes.")
    L.append("")
    L.append("Rows:")
    L.append("")
    L.append("- `stock`: Debian's `python3` (CPython's own pymalloc over glibc malloc), no release step;")
    L.append("- `stock + malloc_trim`: the same, then `ctypes.CDLL(\"libc.so.6\").malloc_trim(0)` after `gc.collect()`;")
    L.append("- `stock + jemalloc` / `stock + mimalloc`: `LD_PRELOAD` of Debian's library and "
             "`PYTHONMALLOC=malloc` (every object straight from that allocator), default "
             "settings, no release step;")
    L.append("- `pymalloc-python (PURGE=…)`: the launcher with `PYMALLOC_PURGE` = `default`, "
             "`never`, `immediate`, no explicit call;")
    L.append("- `pymalloc-python + purge()`: default policy, then `_pymalloc.purge()` after "
             "`gc.collect()` (free pages of pools in use, empty pools, free arenas, then glibc "
             "`malloc_trim`).")
    if skipped:
        L.append("")
        for s in skipped:
            L.append("- Skipped: %s" % s)
    L.append("")
    L.append("## Results")
    for sc in scenarios:
        ss = summary.get(sc)
        if not ss:
            continue
        L.append("")
        L.append("### %s" % sc)
        L.append("")
        text = SCENARIO_TEXT[sc] + "."
        if sc == "service":
            text += (" RSS is sampled twice per wave: with the wave's requests in flight, and "
                     "after they are dropped (the chart shows the latter). Peak = the largest "
                     "sample of either kind; after = the RSS at the end, after `gc.collect()`, "
                     "the release step and 1 s idle, with the cache still alive. Because the "
                     "cache plateaus near the end, peak and after are close for every row and "
                     "the kept fraction says little here; the live-size ratios below are the "
                     "figure to read.")
        L.append(text)
        L.append("")
        L.append("| interpreter | base MiB | peak MiB | after MiB | kept fraction | floor fraction | kept/floor | own floor | kept/own floor |")
        L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for row in rows:
            s = ss["rows"].get(row["key"])
            if not s:
                continue
            own = s.get("floor_frac")
            L.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s |"
                     % (row["label"], fmt_mib(s["base"]), fmt_mib(s["peak"]), fmt_mib(s["after"]),
                        fmt_frac(s["kept"]), fmt_frac(ss["floor_frac"]),
                        fmt_ratio(s["kept_over_floor"]),
                        fmt_frac(own) if own is not None else "—",
                        fmt_ratio(s.get("kept_over_own_floor")) if own else "—"))
        own = ["%s %s" % (row["key"], fmt_frac(ss["rows"][row["key"]]["floor_frac"]))
               for row in rows if row["key"] in ss["rows"] and ss["rows"][row["key"]]["floor_frac"] is not None]
        if own:
            L.append("")
            L.append("Floor fraction measured in each pymalloc-python row's own runs: " + ", ".join(own) + ".")
        heads = ["%s %s" % (row["key"], fmt_frac(ss["rows"][row["key"]]["header_frac"]))
                 for row in rows if row["key"] in ss["rows"] and ss["rows"][row["key"]].get("header_frac") is not None]
        if heads:
            L.append("")
            L.append("Pages held for headers alone (growth / (peak − base)): " + ", ".join(heads) + ".")
        if sc == "service":
            L.append("")
            L.append("![RSS over waves, service scenario](%s)" % svg_rel)
            L.append("")
            L.append("Final RSS against the live size. Live size = `sys.getsizeof` summed over "
                     "everything reachable from the cache at the end (each object once); "
                     "final/(base+live) compares the whole process with a perfectly compact one, "
                     "(final−base)/live compares the growth with the live data alone.")
            L.append("")
            L.append("| interpreter | live MiB | final MiB | final / (base + live) | (final − base) / live |")
            L.append("|---|---:|---:|---:|---:|")
            for row in rows:
                s = ss["rows"].get(row["key"])
                if not s:
                    continue
                L.append("| %s | %s | %s | %s | %s |"
                         % (row["label"], fmt_mib(s["live"]), fmt_mib(s["after"]),
                            "%.2f" % s["final_over_live"], "%.2f" % s["growth_over_live"]))
    L.append("")
    L.append("## Reading")
    L.append("")
    L.extend(reading(summary, rows, scenarios))
    failures = [r for r in results if not r["ok"]]
    if failures:
        L.append("")
        L.append("## Failed runs")
        L.append("")
        for r in failures:
            L.append("- %s / %s: %s" % (r["scenario"], r["row"], r["error"]))
    L.append("")
    L.append("Raw figures (every run, every sample): `%s`." % os.path.basename(args.json))
    with open(path, "w") as f:
        f.write("\n".join(L) + "\n")


def reading(summary, rows, scenarios):
    """A reading of the figures, computed from them (so it stays true on a rerun)."""
    out = []
    labels = {r["key"]: r["label"] for r in rows}

    def k(sc, key):
        s = summary.get(sc, {}).get("rows", {}).get(key)
        return s["kept"] if s else None

    def kf(sc, key):
        s = summary.get(sc, {}).get("rows", {}).get(key)
        return s["kept_over_floor"] if s else None

    for sc in scenarios:
        ss = summary.get(sc)
        if not ss or not ss["rows"]:
            continue
        fl = ss["floor_frac"]
        best = min(ss["rows"], key=lambda key: ss["rows"][key]["kept"])
        parts = ["**%s**: floor %s;" % (sc, fmt_frac(fl))]
        p, d, st = k(sc, "ours-purge"), k(sc, "ours-default"), k(sc, "stock")
        if p is not None:
            parts.append("pymalloc-python + purge() keeps %s (%s the floor)" % (fmt_frac(p), fmt_ratio(kf(sc, "ours-purge"))))
        if d is not None:
            parts.append("the default policy without a call keeps %s" % fmt_frac(d))
        if st is not None:
            parts.append("stock keeps %s" % fmt_frac(st))
        parts.append("; lowest: %s (%s)." % (labels[best], fmt_frac(ss["rows"][best]["kept"])))
        out.append("- " + ", ".join(parts[:-1]).replace(";,", ";") + parts[-1])
        if sc == "service":
            ratios = ["%s %.2f" % (labels[key], ss["rows"][key]["final_over_live"])
                      for key in labels if key in ss["rows"]]
            out.append("  Final RSS / (base + live size): " + ", ".join(ratios) + ".")
    out.append("")
    out.append("What the mechanisms predict, to read the figures against:")
    out.append("")
    out.append("- **Scattered survivors pin pool pages.** A pymalloc pool is 16 KiB (4 pages); "
               "with 1 in 100 objects kept at random, most pools of the build keep a block or "
               "two, so no pool is empty and no arena is free. Only giving back the *free pages "
               "inside pools in use* (what `purge()` does) gets below that; the floor counts "
               "every page still holding a live block, which for small objects is far more than "
               "1 % of the peak.")
    out.append("- **Blocks above 512 bytes live in glibc's heap.** The `strings` objects (and "
               "the service's bodies and blobs) are plain `malloc` blocks inside glibc's brk "
               "heap; free ones inside the heap are given back only by `malloc_trim(0)` "
               "(glibc trims only the top of the heap on its own). So stock and the "
               "pymalloc-python rows without `purge()` hold them, and `stock + malloc_trim` "
               "and `purge()` (which ends with `malloc_trim`) can reach the floor.")
    out.append("- **Peers decay lazily.** jemalloc returns dirty pages after "
               "`dirty_decay_ms` (10 s by default) and mimalloc purges on later allocator "
               "activity; the 1 s idle before *after* is shorter than that, so their rows show "
               "what an idle process holds shortly after the drop, not their eventual floor.")
    out.append("- **`malloc_trim` alone does nothing for small objects.** pymalloc's arenas "
               "(CPython's and ours) are `mmap`ed, not in glibc's heap, so `stock + "
               "malloc_trim` keeps what `stock` keeps in records, instances, slots and json.")
    out.append("- **Survivors that were allocated together pin fewer pools.** A kept JSON "
               "document is ~100 objects allocated one after another, so its survivors share "
               "pools and most pools empty entirely: the json floor is far lower than the "
               "records/instances/slots floors (where each kept record is a handful of objects "
               "in different size classes), and even the pymalloc-python rows without a call "
               "give most of the peak back there.")
    out.append("- **The floor counts glibc's bytes, not pages.** For blocks above 512 bytes the "
               "floor is the survivors' bytes; `malloc_trim` can only give back whole free "
               "pages, and a 0.5–8 KB survivor (plus its chunk header) keeps one or three "
               "pages, so even a perfect trim stays a small multiple of the strings floor.")
    out.append("- **service**: the cache keeps 1.5 % of every wave, scattered over pools and "
               "glibc chunks that later waves reuse, so RSS climbs with the cache and stays "
               "at its plateau; after the end, only `purge()`/`malloc_trim` give anything "
               "back, and what remains is about the floor plus glibc's page granularity. "
               "Its peak growth (~160 MiB at scale 1) is below the other scenarios' 280–390 MiB.")
    out.append("- `PYMALLOC_PURGE=never` is the stock-pymalloc-like baseline of the launcher; "
               "`immediate` gives back each pool's pages as the pool empties, which helps only "
               "where whole pools empty.")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stock", default="python3",
                    help="the stock interpreter the launcher was built for (default: python3)")
    ap.add_argument("--ours", default=os.path.join(REPO, "target", "release", "pymalloc-python"),
                    help="the pymalloc-python launcher (default: target/release/pymalloc-python)")
    ap.add_argument("--scale", type=float, default=1.0, help="heap size factor (1: ~200-400 MB peaks)")
    ap.add_argument("--rounds", type=int, default=1, help="repeat each pair N times; medians reported")
    ap.add_argument("--waves", type=int, default=100, help="waves of the service scenario")
    ap.add_argument("--jobs", type=int, default=2, help="runs at a time (RSS is per process)")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated subset")
    ap.add_argument("--out", default=os.path.join(REPO, "docs", "peak-release.md"))
    ap.add_argument("--json", default=os.path.join(REPO, "docs", "peak-release.json"))
    ap.add_argument("--svg", default=os.path.join(REPO, "docs", "peak-release-service.svg"))
    ap.add_argument("--only-ours-and-stock", action="store_true",
                    help="skip the jemalloc and mimalloc rows (CI smoke test)")
    ap.add_argument("--seed", type=int, default=12345)
    ap.add_argument("--timeout", type=int, default=900, help="seconds per run")
    ap.add_argument("--render-only", metavar="JSON",
                    help="do not run anything: rewrite --out/--svg from a JSON file this script wrote")
    args = ap.parse_args()

    if args.render_only:
        return render_only(args)
    args.ours = os.path.abspath(args.ours)
    if not (os.path.isfile(args.ours) and os.access(args.ours, os.X_OK)):
        sys.exit("peak_release: the pymalloc-python launcher %r does not exist or is not "
                 "executable (build it with `cargo build --release` or pass --ours PATH)" % args.ours)
    if args.rounds < 1 or args.scale <= 0 or args.jobs < 1 or args.waves < 1:
        sys.exit("peak_release: --rounds, --jobs, --waves must be >= 1 and --scale > 0")
    scenarios = [s for s in args.scenarios.split(",") if s]
    bad = [s for s in scenarios if s not in SCENARIOS]
    if bad:
        sys.exit("peak_release: unknown scenario(s) %s; known: %s" % (bad, ", ".join(SCENARIOS)))

    rows, skipped = [], []
    for row in row_specs(args.ours, args.stock):
        if row["group"] == "peer" and args.only_ours_and_stock:
            continue
        if row.get("lib") and not os.path.exists(row["lib"]):
            skipped.append("%s: %s not found" % (row["label"], row["lib"]))
            continue
        rows.append(row)

    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    t_start = time.monotonic()
    cmdline = "python3 " + " ".join(shlex.quote(a) for a in
                                    [os.path.relpath(os.path.abspath(sys.argv[0]), REPO)] + sys.argv[1:])
    vers = interp_versions(rows, skipped)
    vers["python3"] = vers.get(args.stock, "?")
    mach = machine()

    with tempfile.TemporaryDirectory(prefix="peak-release-") as tmp:
        driver = os.path.join(tmp, "peak_driver.py")
        with open(driver, "w") as f:
            f.write(DRIVER)
        jobs = []
        for rnd in range(args.rounds):
            for sc in scenarios:
                order = rows[rnd % len(rows):] + rows[:rnd % len(rows)]
                for row in order:
                    jobs.append((rnd, sc, row))
        results = []
        with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as ex:
            futs = {ex.submit(run_one, driver, row, sc, args.scale, args.waves, args.seed,
                              args.timeout): (rnd, sc, row) for rnd, sc, row in jobs}
            done = 0
            for fut in concurrent.futures.as_completed(futs):
                rnd, sc, row = futs[fut]
                r = fut.result()
                r["round"] = rnd
                results.append(r)
                done += 1
                if r["ok"]:
                    msg = "kept %.3f" % r["kept"]
                    if "floor_frac" in r:
                        msg += " floor %.3f" % r["floor_frac"]
                    msg += " peak %.0f MiB (%.1f s)" % ((r["peak"]["rss"] - r["base"]["rss"]) / MIB,
                                                        r["wall_s"])
                else:
                    msg = "FAILED: " + r["error"]
                print("[%d/%d] round %d %-9s %-34s %s" % (done, len(jobs), rnd + 1, sc, row["label"], msg),
                      flush=True)
    order_key = {(sc, row["key"]): i for i, (sc, row) in
                 enumerate((sc, row) for sc in scenarios for row in rows)}
    results.sort(key=lambda r: (r["round"], order_key[(r["scenario"], r["row"])]))
    wall = time.monotonic() - t_start

    return finish(args, cmdline, started, wall, rows, skipped, vers, mach, scenarios, results,
                  write_json=True)


def render_only(args):
    with open(args.render_only) as f:
        d = json.load(f)
    a = argparse.Namespace(**vars(args))
    a.rounds, a.scale, a.waves, a.jobs, a.seed = d["rounds"], d["scale"], d["waves"], d["jobs"], d["seed"]
    a.ours = d.get("ours") or next((r["exe"] for r in d["rows"] if r["group"] == "ours"), args.ours)
    scenarios = d.get("scenarios") or [s for s in SCENARIOS if s in d["summary"]]
    a.json = args.render_only
    return finish(a, d["command"], d["date"], d["wall_s"], d["rows"], d["skipped"], d["versions"],
                  d["machine"], scenarios, d["runs"], write_json=False)


def finish(args, cmdline, started, wall, rows, skipped, vers, mach, scenarios, results, write_json):
    summary = summarize(results, rows, scenarios)
    failures = [r for r in results if not r["ok"]]
    for sc in scenarios:
        for row in rows:
            if row["key"] not in summary[sc]["rows"]:
                failures.append(dict(scenario=sc, row=row["key"], error="no valid run"))
        if summary[sc]["floor_frac"] is None:
            failures.append(dict(scenario=sc, row="floor", error="no floor figure"))

    for p in (args.out, args.json, args.svg):
        d = os.path.dirname(os.path.abspath(p))
        os.makedirs(d, exist_ok=True)
    svg_rel = os.path.relpath(os.path.abspath(args.svg), os.path.dirname(os.path.abspath(args.out)))
    if "service" in scenarios:
        write_svg(args.svg, summary, rows, "Service scenario: RSS after each wave (scale %g, median of %d)"
                  % (args.scale, args.rounds))
    write_md(args.out, args, cmdline, summary, rows, results, skipped, vers, mach, svg_rel,
             scenarios, started, wall)
    slim = {sc: {"floor_frac": v["floor_frac"], "floor_source": v["floor_source"],
                 "rows": {k: {kk: vv for kk, vv in s.items()} for k, s in v["rows"].items()}}
            for sc, v in summary.items()}
    if write_json:
        with open(args.json, "w") as f:
            json.dump(dict(command=cmdline, date=started, wall_s=round(wall, 1), machine=mach,
                           ours=args.ours, scenarios=scenarios,
                           versions=vers, scale=args.scale, rounds=args.rounds, waves=args.waves,
                           seed=args.seed, jobs=args.jobs, skipped=skipped,
                           rows=[{k: v for k, v in r.items()} for r in rows],
                           summary=slim, runs=results,
                           failures=[dict(scenario=f["scenario"], row=f["row"], error=f["error"])
                                     for f in failures]),
                      f, indent=1)
            f.write("\n")
    print("wrote %s%s%s (%.0f s of runs)" % (args.out, ", " + args.json if write_json else "",
                                            ", " + args.svg if "service" in scenarios else "", wall))
    if failures:
        for f_ in failures:
            print("FAILED: %s / %s: %s" % (f_["scenario"], f_["row"], f_["error"]), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
