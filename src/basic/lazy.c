/* SPDX-License-Identifier: MIT */
/* The resolver behind the lazy-binding stubs of tools/lazy-stubs: loads a
 * library on the first call of any of its functions. */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "macro.h"

void *kiln_lazy_resolve(const char *soname, const char *name, void **slot);

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

void *kiln_lazy_resolve(const char *soname, const char *name, void **slot) {
        static struct {
                const char *soname;
                void *handle;
        } libs[8];
        void *handle = NULL, *f;

        pthread_mutex_lock(&lock);
        for (size_t i = 0; i < ELEMENTSOF(libs) && libs[i].soname; i++)
                if (libs[i].soname == soname || streq(libs[i].soname, soname))
                        handle = libs[i].handle;
        if (!handle) {
                handle = dlopen(soname, RTLD_NOW | RTLD_LOCAL);
                for (size_t i = 0; handle && i < ELEMENTSOF(libs); i++)
                        if (!libs[i].soname) {
                                libs[i].soname = soname;
                                libs[i].handle = handle;
                                break;
                        }
        }
        f = handle ? dlsym(handle, name) : NULL;
        if (!f) {
                /* Nothing sensible can continue: the caller's call has no other target. */
                const char *e = dlerror();
                fprintf(stderr, "kiln: cannot load %s from %s: %s\n", name, soname, e ? e : "not found");
                _exit(127);
        }
        __atomic_store_n(slot, f, __ATOMIC_RELEASE);
        pthread_mutex_unlock(&lock);
        return f;
}
