/*
 * `tern ctl ...`: the admin API's command-line client (lb/ctl.c). main()
 * hands it the arguments from "ctl" on.
 */
#ifndef LB_CTL_H
#define LB_CTL_H

/* argv[0] is "ctl". Returns the exit status: 0 ok, 1 refused or
 * unreachable, 2 usage error. */
int lb_ctl_main(int argc, char **argv);

#endif
