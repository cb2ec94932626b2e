"""Reads the allocators installed in libpython's three domains back through
PyMem_GetAllocator (ctypes) and checks that every function lives in this
executable, pymalloc-python, and not in libpython. Exit status 0 when all are
ours; the output names each function's home."""
import ctypes
import os
import sys


class PyMemAllocatorEx(ctypes.Structure):
    _fields_ = [(name, ctypes.c_void_p) for name in ("ctx", "malloc", "calloc", "realloc", "free")]


class DlInfo(ctypes.Structure):
    _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p),
                ("dli_sname", ctypes.c_char_p), ("dli_saddr", ctypes.c_void_p)]


libc = ctypes.CDLL(None)
libc.dladdr.argtypes = [ctypes.c_void_p, ctypes.POINTER(DlInfo)]
get = ctypes.pythonapi.PyMem_GetAllocator
get.argtypes = [ctypes.c_int, ctypes.POINTER(PyMemAllocatorEx)]
get.restype = None

exe = os.path.realpath(sys.executable)
bad = 0
for domain, name in enumerate(("RAW", "MEM", "OBJ")):
    a = PyMemAllocatorEx()
    get(domain, ctypes.byref(a))
    for field in ("malloc", "calloc", "realloc", "free"):
        addr = getattr(a, field)
        info = DlInfo()
        assert libc.dladdr(addr, ctypes.byref(info)), (name, field)
        home = os.path.realpath(os.fsdecode(info.dli_fname))
        ours = home == exe
        bad += not ours
        print(f"{name} {field:7} {addr:#x} {'ours' if ours else 'NOT OURS'} {home}")

# CPython's name for its own allocators; 3.13 moved it to _testinternalcapi.
try:
    import _testcapi
    getname = getattr(_testcapi, "pymem_getallocatorsname", None)
    if getname is None:
        import _testinternalcapi
        getname = _testinternalcapi.pymem_getallocatorsname
    print("pymem_getallocatorsname:", getname())
    bad += 1
except RuntimeError as e:
    print("pymem_getallocatorsname: RuntimeError:", e)
sys.exit(1 if bad else 0)
