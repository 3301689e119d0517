/* SPDX-License-Identifier: MIT */
#include <stdio.h>

#include "greet.h"

int main(int argc, char **argv) {
        char buf[256];
        greet(buf, sizeof(buf), argc > 1 ? argv[1] : NULL);
        puts(buf);
        return 0;
}
