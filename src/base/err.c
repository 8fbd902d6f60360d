/* err — an error value that knows how it should look on the wire. */
#include "base/base.h"

#include <stdio.h>
#include <string.h>

int err_set(err *e, int status, const char *code, const char *fmt, ...)
{
    if (!e)
        return -1;
    e->status = status;
    snprintf(e->code, sizeof e->code, "%s", code ? code : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    return -1;
}

void err_clear(err *e)
{
    e->status = 0;
    e->code[0] = e->message[0] = '\0';
}

bool err_is_set(const err *e) { return e->status != 0; }
