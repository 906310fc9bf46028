/*
 * tern's command line. Deliberately thin: it parses arguments and hands over
 * to the daemon (lb/daemon.c) or the config checker (conf/).
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf/config.h"
#include "lb/check.h"
#include "lb/ctl.h"
#include "lb/daemon.h"
#include "lb/plugin_host.h"
#include "lb/tls.h"

static void
usage(FILE *out)
{
    fprintf(out, "usage: tern -c FILE          run in the foreground\n"
                 "       tern -t -c FILE       check FILE and exit (0: valid, 1: errors)\n"
                 "       tern --reference      print the configuration reference (markdown)\n"
                 "       tern ctl [-a HOST:PORT] [-T TOKENFILE] COMMAND   (tern ctl --help)\n"
                 "       tern --version | --help\n"
                 "\n"
                 "signals: SIGHUP reload, SIGTERM graceful stop, SIGINT fast stop,\n"
                 "         SIGUSR1 reopen log files\n");
}

int
main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'}, {"test", no_argument, NULL, 't'},
        {"version", no_argument, NULL, 'V'},      {"help", no_argument, NULL, 'h'},
        {"reference", no_argument, NULL, 'R'},    {NULL, 0, NULL, 0},
    };
    const char *path = NULL;
    int test = 0, opt;

    if (argc > 1 && strcmp(argv[1], "ctl") == 0)
        return lb_ctl_main(argc - 1, argv + 1);
    /* Sections of the modules in global.plugins are checked with the file,
     * at -t, start and reload alike. */
    lb_plugin_schemas_init();
    while ((opt = getopt_long(argc, argv, "c:tVh", opts, NULL)) != -1) {
        switch (opt) {
        case 'c':
            path = optarg;
            break;
        case 't':
            test = 1;
            break;
        case 'V':
            printf("tern %s\n", TERN_VERSION);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        case 'R':
            conf_write_reference(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (!path || optind != argc) {
        usage(stderr);
        return 2;
    }
    if (test) {
        struct conf *c = NULL;
        int errors = conf_load(path, stderr, &c);
        if (!errors && c) {
            errors = lb_tls_check(c, stderr); /* certificates, keys, CAs */
            /* log files, admin token, user: what start-up would refuse */
            errors += lb_daemon_check(c, stderr);
        }
        if (errors || !c) {
            fprintf(stderr, "tern: %s: %d error%s\n", path, errors, errors == 1 ? "" : "s");
            conf_free(c);
            return 1;
        }
        conf_free(c);
        printf("tern: %s: configuration is valid\n", path);
        return 0;
    }
    return lb_daemon_run(path);
}
