/* SPDX-License-Identifier: MIT */
#include <errno.h>

#include "net.h"

int net_loopback_up(void) {
        return -EOPNOTSUPP;
}

int net_nat_setup(int netns_fd, unsigned slot) {
        return -EOPNOTSUPP;
}

int net_nat_teardown(unsigned slot) {
        return 0;
}

int net_resolv_conf(char **ret) {
        return -EOPNOTSUPP;
}

int net_gc(bool any_nat_sandbox_alive) {
        return 0;
}
