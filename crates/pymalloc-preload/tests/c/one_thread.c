/* A single-threaded program: a few hundred small blocks, some freed, some
 * kept, and stdio (whose buffers are blocks too). Prints a checksum. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(void) {
    char *kept[300];
    unsigned long sum = 0;
    for (int i = 0; i < 300; i++) {
        size_t n = 8 + (size_t)(i * 7) % 500;
        kept[i] = malloc(n);
        if (!kept[i]) return 1;
        memset(kept[i], i & 0x7f, n);
        if (i % 3 == 0) {
            free(kept[i]);
            kept[i] = NULL;
        }
    }
    for (int i = 0; i < 300; i++) {
        if (kept[i]) sum += (unsigned char)kept[i][0];
        free(kept[i]);
    }
    printf("sum %lu\n", sum);
    return 0;
}
