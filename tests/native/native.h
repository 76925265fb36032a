/* What the native test programs share: res(r), a syscall's result as the lines print it
 * ("-1 EINVAL" for a failure, the value otherwise). strerrorname_np needs _GNU_SOURCE. */
#ifndef KMOCK_NATIVE_H
#define KMOCK_NATIVE_H

#include <errno.h>
#include <stdio.h>
#include <string.h>

static const char *res(long r)
{
    static char b[64];
    if (r < 0)
        snprintf(b, sizeof b, "-1 %s", strerrorname_np(errno));
    else
        snprintf(b, sizeof b, "%ld", r);
    return b;
}

#endif
