/*
 * What `tern -t` checks beyond the file itself: the resources that start-up
 * opens and refuses to start without, so that a configuration -t accepts is
 * one `tern -c` can start with (as nginx -t opens its log files). Each check
 * lives with the code that uses the resource at start, and says why in the
 * same words.
 */
#ifndef LB_CHECK_H
#define LB_CHECK_H

#include <stddef.h>
#include <stdio.h>

struct conf;

/* Checks every such resource of c and writes one line per problem to err, as
 * "FILE:LINE:COL: section.key: message" (the key's position; the file is the
 * one that sets it, an included file too). Returns the number of problems. */
int lb_daemon_check(const struct conf *c, FILE *err);

/* admin.c: admin.token_file, when the admin section is present, can be read
 * and holds a usable token. 0, or -1 with the reason in why. */
int lb_admin_check_token(const struct conf *c, char *why, size_t whysize);

/* privs.c: global.user, when set, names a user the system knows. 0, or -1
 * with the reason in why. */
int lb_privs_check_user(const struct conf *c, char *why, size_t whysize);

#endif
