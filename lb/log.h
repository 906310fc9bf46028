/*
 * Logging for the daemon: one printf-checked call per line, written with a
 * single write(2) so lines from several threads never interleave. The log goes
 * to stderr or to a file that SIGUSR1 reopens (for logrotate).
 */
#ifndef LB_LOG_H
#define LB_LOG_H

#include <stdarg.h>

enum lb_log_level { LB_LOG_ERR = 0, LB_LOG_WARN, LB_LOG_INFO, LB_LOG_DEBUG };

/* Sets the destination: NULL, "stderr" or "-" mean stderr. Returns 0 or -errno.
 * Call from the control thread only. */
int lb_log_open(const char *path);
/* Reopens the current file (SIGUSR1). */
int lb_log_reopen(void);
void lb_log_set_level(enum lb_log_level level);

void lb_log(enum lb_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define lb_err(...) lb_log(LB_LOG_ERR, __VA_ARGS__)
#define lb_warn(...) lb_log(LB_LOG_WARN, __VA_ARGS__)
#define lb_info(...) lb_log(LB_LOG_INFO, __VA_ARGS__)
#define lb_debug(...) lb_log(LB_LOG_DEBUG, __VA_ARGS__)

#endif
