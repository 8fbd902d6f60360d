/* log — one line per event on stderr, with a UTC timestamp. Lines are written with a single
 * write so concurrent threads never interleave within a line. */
#include "base/base.h"

#include <stdio.h>
#include <time.h>
#include <unistd.h>

static log_level min_level = LOG_INFO;

void log_set_level(log_level level) { min_level = level; }

void log_msg(log_level level, const char *fmt, ...)
{
    if (level < min_level)
        return;
    static const char *names[] = {"debug", "info", "warn", "error"};
    char stamp[32];
    text_iso8601(text_now_ms(), stamp);
    char line[2048];
    int n = snprintf(line, sizeof line, "%s %-5s ", stamp, names[level]);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof line - 2)
        len = sizeof line - 2;
    line[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}
