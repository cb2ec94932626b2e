#!/bin/sh
# Installs libpymalloc under a prefix:
#
#   crates/pymalloc-capi/install.sh PREFIX [BUILD_DIR]
#
# BUILD_DIR is where cargo put the library (default: target/release, after
# `cargo build --release -p pymalloc-capi`). Installs
#   PREFIX/lib/libpymalloc.so, PREFIX/lib/libpymalloc.a,
#   PREFIX/include/pymalloc.h and pymalloc_gc.h,
#   PREFIX/lib/pkgconfig/pymalloc.pc and pymalloc-static.pc
# (the build's pkg-config files with their directories set to PREFIX).
set -eu
if [ $# -lt 1 ] || [ $# -gt 2 ]; then
    echo "usage: $0 PREFIX [BUILD_DIR]" >&2
    exit 2
fi
prefix=$1
build=${2:-target/release}
here=$(dirname "$0")
for f in libpymalloc.so libpymalloc.a pymalloc.pc pymalloc-static.pc; do
    if [ ! -f "$build/$f" ]; then
        echo "$0: $build/$f is missing; run cargo build --release -p pymalloc-capi first" >&2
        exit 1
    fi
done
mkdir -p "$prefix/lib/pkgconfig" "$prefix/include"
cp "$build/libpymalloc.so" "$build/libpymalloc.a" "$prefix/lib/"
chmod 755 "$prefix/lib/libpymalloc.so"
chmod 644 "$prefix/lib/libpymalloc.a"
cp "$here/include/pymalloc.h" "$here/include/pymalloc_gc.h" "$prefix/include/"
chmod 644 "$prefix/include/pymalloc.h" "$prefix/include/pymalloc_gc.h"
for pc in pymalloc.pc pymalloc-static.pc; do
    sed -e "s|^prefix=.*|prefix=$prefix|" \
        -e 's|^libdir=.*|libdir=${prefix}/lib|' \
        -e 's|^includedir=.*|includedir=${prefix}/include|' \
        "$build/$pc" > "$prefix/lib/pkgconfig/$pc"
done
echo "installed libpymalloc in $prefix"
