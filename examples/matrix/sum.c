/* SPDX-License-Identifier: MIT */
#include <stdio.h>

int main(void) {
        unsigned long s = 0;
        for (unsigned long i = 1; i <= 1000; i++)
                s += i;
        printf("sum=%lu\n", s);
        return s == 500500 ? 0 : 1;
}
