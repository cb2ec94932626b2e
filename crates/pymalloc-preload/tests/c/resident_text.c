/* Runs every kind of request the preload library serves (small, medium,
 * large and huge blocks, aligned ones, realloc, calloc, frees from another
 * thread), then prints how much of the library is resident, from
 * /proc/self/smaps: "text_rss_kib N", the Rss of its executable mapping,
 * and "readonly_rss_kib N", that of its read-only mappings. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N 2000
static void *blocks[N];

static void *worker(void *arg) {
    (void)arg;
    for (int i = 0; i < N; i++) {
        free(blocks[i]); /* blocks of the main thread: remote frees */
        blocks[i] = malloc(16 + (i * 37) % 3000);
    }
    return NULL;
}

int main(void) {
    size_t sizes[] = {8, 24, 100, 512, 600, 2000, 9000, 40000, 200000, 1 << 20, 8 << 20};
    for (int round = 0; round < 3; round++) {
        for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
            char *p = malloc(sizes[s]);
            memset(p, 1, sizes[s]);
            p = realloc(p, sizes[s] * 2);
            p = realloc(p, sizes[s] / 2 + 1);
            free(p);
            free(calloc(sizes[s], 1));
            void *q = NULL;
            if (posix_memalign(&q, 4096, sizes[s]) != 0) return 1;
            free(q);
            free(aligned_alloc(64, sizes[s]));
            free(memalign(256, sizes[s]));
            free(valloc(sizes[s]));
            free(pvalloc(sizes[s]));
            char *r = reallocarray(NULL, sizes[s], 1);
            if (malloc_usable_size(r) < sizes[s]) return 1;
            free(r);
        }
        for (int i = 0; i < N; i++) blocks[i] = malloc(8 + (i * 13) % 1500);
        pthread_t t;
        pthread_create(&t, NULL, worker, NULL);
        pthread_join(t, NULL);
        for (int i = 0; i < N; i++) free(blocks[i]);
    }

    Dl_info info;
    if (!dladdr((void *)malloc, &info) || !info.dli_fname) return 2;
    FILE *f = fopen("/proc/self/smaps", "r");
    if (!f) return 3;
    char line[1024];
    int in_text = 0, in_readonly = 0;
    long kib = -1, readonly_kib = 0;
    while (fgets(line, sizeof line, f)) {
        char perms[8] = "";
        unsigned long lo, hi;
        if (sscanf(line, "%lx-%lx %7s", &lo, &hi, perms) == 3 && strchr(line, '/') ) {
            int ours = strstr(line, info.dli_fname) != NULL;
            in_text = ours && strcmp(perms, "r-xp") == 0;
            in_readonly = ours && strcmp(perms, "r--p") == 0;
        } else if (in_text && strncmp(line, "Rss:", 4) == 0) {
            kib = (kib < 0 ? 0 : kib) + atol(line + 4);
            in_text = 0;
        } else if (in_readonly && strncmp(line, "Rss:", 4) == 0) {
            readonly_kib += atol(line + 4);
            in_readonly = 0;
        }
    }
    fclose(f);
    printf("library %s\ntext_rss_kib %ld\nreadonly_rss_kib %ld\n", info.dli_fname, kib, readonly_kib);
    return 0;
}
