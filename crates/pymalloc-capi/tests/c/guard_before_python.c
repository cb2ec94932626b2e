/* Must not compile either: Python.h after pymalloc.h. The harness checks
   that the compiler stops on the duplicate definitions. */
#include <pymalloc.h>
#include <Python.h>

int main(void) { return 0; }
