/* Must not compile: pymalloc.h after Python.h. The harness checks that the
   compiler stops with pymalloc.h's own #error message. */
#include <Python.h>
#include <pymalloc.h>

int main(void) { return 0; }
