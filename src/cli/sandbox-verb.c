/* SPDX-License-Identifier: MIT */
#include "log.h"
#include "verbs.h"

int verb_sandbox(int argc, char **argv) {
        log_error("not yet");
        return 1;
}
