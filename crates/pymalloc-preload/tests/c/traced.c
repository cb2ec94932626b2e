/* A program traced through the preload library (PYTHONTRACEMALLOC): one
   block of 12345 bytes made by make_leak() stays alive to the end, where
   the snapshot (PYMALLOC_TRACE_DUMP) is written. It also opens a file,
   which the C library allocates from its internal functions, and prints
   how many files of debug information the process has mapped by then:
   classifying the frames of a traced allocation needs none. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

__attribute__((noinline)) char *make_leak(size_t n)
{
    char *p = malloc(n);
    if (p) memset(p, 7, n);
    return p;
}

int main(void)
{
    for (int i = 0; i < 1000; i++) {
        char *p = malloc(100 + (size_t)i);
        p = realloc(p, 300 + (size_t)i);
        free(p);
    }
    char *keep = make_leak(12345);
    FILE *maps = fopen("/proc/self/maps", "r");
    char line[4096];
    int debug_maps = 0;
    while (maps && fgets(line, sizeof line, maps))
        if (strstr(line, "/usr/lib/debug/")) debug_maps++;
    printf("kept %d\n", keep ? keep[100] : -1);
    printf("debug_maps %d\n", debug_maps);
    return 0;
}
