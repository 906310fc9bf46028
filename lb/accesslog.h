/*
 * Access log: one line per request or TCP session. Each worker formats lines
 * into its own buffer and writes the buffer once per loop iteration (or when
 * it fills), so logging costs no syscall per request and needs no lock; the
 * file is opened with O_APPEND so workers' writes never interleave inside a
 * line.
 */
#ifndef LB_ACCESSLOG_H
#define LB_ACCESSLOG_H

#include <stddef.h>
#include <stdint.h>

struct lb_worker;

/* Opens dest ("stdout", "-" or a path; NULL turns the log off). Control thread. */
int lb_accesslog_open(const char *dest);
int lb_accesslog_reopen(void);
void lb_accesslog_close(void);
int lb_accesslog_enabled(void);

struct lb_access {
    const char *client; /* "ip:port" */
    const char *listener, *pool, *server;
    const char *method;
    size_t method_len;
    const char *path;
    size_t path_len;
    int minor_version; /* -1: a TCP session */
    int status;        /* 0 when the client went away first */
    uint64_t bytes_in, bytes_out;
    uint64_t t_connect_us, t_response_us, t_total_us; /* UINT64_MAX: never reached */
    const char *termination;                          /* "" or why it ended early */
    const char *tls_version, *tls_cipher;             /* NULL: plain text */
};

void lb_accesslog_write(struct lb_worker *w, const struct lb_access *a);
/* Writes out what the worker has buffered. */
void lb_accesslog_flush(struct lb_worker *w);
void lb_accesslog_worker_free(struct lb_worker *w);

#endif
