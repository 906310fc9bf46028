/*
 * The libvirt provider: servers are linked clones of a template domain.
 *
 * create: the template's first disk (a file, or a volume of a pool) is
 * looked up as a volume; a qcow2
 * overlay whose backing store is that volume is created in the group's
 * storage pool (<server>.qcow2); the template's inactive XML becomes the
 * clone's, with the server's name, no <uuid> and no <mac> (libvirt makes
 * fresh ones) and the overlay as its disk; the domain is defined, tagged
 * with metadata in tern's namespace naming its group, and started; its
 * address comes from DHCP leases, then the guest agent, then ARP, polled
 * for up to the group's grace_period. The port is the template's metadata
 * <tern:scale port='8080'/>, or 80. A failed step undoes what the earlier
 * ones made (stop, undefine, delete the overlay).
 * destroy: stop, undefine (with managed save, snapshot metadata and NVRAM)
 * and delete the overlay; what is already gone is not an error.
 * list: every domain whose tern metadata names the group, whatever its
 * state: "name host:port running" for a running one with an address, else
 * "name - <state>" (running without an address yet, or paused, stopping,
 * stopped, crashed, suspended; one whose state libvirt cannot tell is left
 * out), so that the group can replace
 * clones that stopped instead of leaking them.
 *
 * Every function here blocks and runs on a job-pool thread. One connection
 * per group, opened on first use and shared by the group's jobs (libvirt
 * connections are thread-safe; the test driver's custom-file URIs give each
 * connection its own state, so sharing also keeps the tests honest).
 */
#include <errno.h>
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "scale/scale.h"

#define TERN_NS_URI "https://tern.dev/xmlns/scale/1"
#define TERN_NS_PREFIX "tern"

struct scale_lv {
    pthread_mutex_t lock;
    virConnectPtr conn;
    char *uri, *tmpl, *storage, *group;
    double addr_timeout; /* s */
};

static void
seterr(char *err, size_t len, const char *what)
{
    virErrorPtr e = virGetLastError();

    snprintf(err, len, "%s: %s", what, e && e->message ? e->message : "failed");
}

static void
quiet(void *arg, virErrorPtr e)
{
    (void)arg;
    (void)e;
}

struct scale_lv *
scale_lv_new(const char *uri, const char *tmpl, const char *storage, const char *group,
             double addr_timeout)
{
    struct scale_lv *lv = calloc(1, sizeof(*lv));

    if (lv == NULL)
        return NULL;
    pthread_mutex_init(&lv->lock, NULL);
    lv->uri = strdup(uri ? uri : "qemu:///system");
    lv->tmpl = strdup(tmpl ? tmpl : "");
    lv->storage = strdup(storage ? storage : "default");
    lv->group = strdup(group);
    lv->addr_timeout = addr_timeout;
    return lv;
}

void
scale_lv_free(struct scale_lv *lv)
{
    if (lv == NULL)
        return;
    if (lv->conn != NULL)
        virConnectClose(lv->conn);
    pthread_mutex_destroy(&lv->lock);
    free(lv->uri);
    free(lv->tmpl);
    free(lv->storage);
    free(lv->group);
    free(lv);
}

void *
scale_lv_connection(struct scale_lv *lv)
{
    return lv->conn;
}

static virConnectPtr
conn_get(struct scale_lv *lv, char *err, size_t errlen)
{
    virConnectPtr c;

    pthread_mutex_lock(&lv->lock);
    if (lv->conn != NULL && virConnectIsAlive(lv->conn) != 1) {
        virConnectClose(lv->conn);
        lv->conn = NULL;
    }
    if (lv->conn == NULL) {
        virSetErrorFunc(NULL, quiet);
        lv->conn = virConnectOpen(lv->uri);
        if (lv->conn == NULL)
            seterr(err, errlen, lv->uri);
    }
    c = lv->conn;
    if (c != NULL)
        virConnectRef(c);
    pthread_mutex_unlock(&lv->lock);
    return c;
}

/* ---- XML surgery on the template's domain XML ---- */

/* s with [from, to) replaced by with; s is freed. */
static char *
splice(char *s, size_t from, size_t to, const char *with)
{
    size_t len = strlen(s), wl = strlen(with);
    char *n = malloc(len - (to - from) + wl + 1);

    if (n != NULL) {
        memcpy(n, s, from);
        memcpy(n + from, with, wl);
        memcpy(n + from + wl, s + to, len - to + 1);
    }
    free(s);
    return n;
}

/* Removes every element from open up to the end of close (or "/>"). */
static char *
remove_all(char *s, const char *open, const char *close)
{
    char *p;

    while (s != NULL && (p = strstr(s, open)) != NULL) {
        char *e = strstr(p, close);

        if (e == NULL)
            break;
        s = splice(s, (size_t)(p - s), (size_t)(e - s) + strlen(close), "");
    }
    return s;
}

/* The value of attr='...' or attr="..." within [p, end), into buf. */
static bool
attr(const char *p, const char *end, const char *name, char *buf, size_t len, size_t *off,
     size_t *vlen)
{
    size_t nl = strlen(name);

    for (const char *q = p; q + nl + 2 < end; q++) {
        if (strncmp(q, name, nl) == 0 && q[nl] == '=' && (q[nl + 1] == '\'' || q[nl + 1] == '"') &&
            (q == p || q[-1] == ' ' || q[-1] == '\t' || q[-1] == '\n')) {
            char quote = q[nl + 1];
            const char *v = q + nl + 2, *ve = strchr(v, quote);

            if (ve == NULL || ve > end)
                return false;
            snprintf(buf, len, "%.*s", (int)(ve - v), v);
            if (off != NULL)
                *off = (size_t)(v - p);
            if (vlen != NULL)
                *vlen = (size_t)(ve - v);
            return true;
        }
    }
    return false;
}

/* The first <disk type='file'|'volume' device='disk'> element's span. */
static bool
first_disk(const char *xml, const char **start, const char **end)
{
    const char *p = xml;

    while ((p = strstr(p, "<disk")) != NULL) {
        const char *e = strstr(p, "</disk>");
        const char *tag_end = strchr(p, '>');
        char type[32], dev[32];

        if (e == NULL || tag_end == NULL)
            return false;
        if (attr(p, tag_end, "type", type, sizeof(type), NULL, NULL) &&
            (strcmp(type, "file") == 0 || strcmp(type, "volume") == 0) &&
            (!attr(p, tag_end, "device", dev, sizeof(dev), NULL, NULL) ||
             strcmp(dev, "disk") == 0)) {
            *start = p;
            *end = e;
            return true;
        }
        p = e;
    }
    return false;
}

/* The first disk's source: a file (path set) or a volume of a pool (pool
 * and vol set, path empty). */
static bool
disk_source(const char *xml, char *path, size_t plen, char *pool, char *vol, size_t len)
{
    const char *s, *e, *src;

    path[0] = pool[0] = vol[0] = '\0';
    if (!first_disk(xml, &s, &e))
        return false;
    src = strstr(s, "<source");
    if (src == NULL || src > e)
        return false;
    if (attr(src, e, "file", path, plen, NULL, NULL))
        return true;
    return attr(src, e, "pool", pool, len, NULL, NULL) &&
           attr(src, e, "volume", vol, len, NULL, NULL);
}

/* Replaces the value of attribute name in the first disk's <source>. */
static char *
set_source_attr(char *x, const char *name, const char *value)
{
    const char *ds, *de, *src;
    char old[1024];
    size_t off, vlen;

    if (x == NULL || !first_disk(x, &ds, &de))
        return x;
    src = strstr(ds, "<source");
    if (src != NULL && src < de && attr(src, de, name, old, sizeof(old), &off, &vlen)) {
        size_t at = (size_t)(src - x) + off;

        x = splice(x, at, at + vlen, value);
    }
    return x;
}

/* The template's XML made the clone's: its name, no <uuid> and no <mac>
 * (libvirt makes fresh ones), the overlay as its first disk (a file path,
 * or pool and volume for a volume disk) in qcow2. */
static char *
clone_xml(const char *tmpl_xml, const char *name, const char *path, const char *pool,
          const char *vol)
{
    char *x = strdup(tmpl_xml), *p, *q;
    const char *ds, *de;

    if (x == NULL)
        return NULL;
    p = strstr(x, "<name>");
    q = p ? strstr(p, "</name>") : NULL;
    if (p == NULL || q == NULL) {
        free(x);
        return NULL;
    }
    x = splice(x, (size_t)(p - x) + 6, (size_t)(q - x), name);
    x = remove_all(x, "<uuid>", "</uuid>");
    x = remove_all(x, "<mac address", "/>");
    x = set_source_attr(x, "file", path);
    x = set_source_attr(x, "pool", pool);
    x = set_source_attr(x, "volume", vol);
    if (x != NULL && first_disk(x, &ds, &de)) {
        const char *drv = strstr(ds, "<driver");
        char type[32];
        size_t off, vlen;

        if (drv != NULL && drv < de &&
            attr(drv, strchr(drv, '>'), "type", type, sizeof(type), &off, &vlen)) {
            size_t at = (size_t)(drv - x) + off;

            x = splice(x, at, at + vlen, "qcow2");
        }
    }
    return x;
}

/* ---- steps ---- */

/* Undefines with everything a domain may carry; drivers that do not know
 * a flag (the test driver and NVRAM) get the call again without it. */
static int
undefine(virDomainPtr d)
{
    unsigned flags = VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA |
                     VIR_DOMAIN_UNDEFINE_NVRAM;

    if (virDomainUndefineFlags(d, flags) == 0)
        return 0;
    if (virDomainUndefineFlags(d, flags & ~VIR_DOMAIN_UNDEFINE_NVRAM) == 0)
        return 0;
    return virDomainUndefine(d);
}

static int
tmpl_port(virDomainPtr t)
{
    char *md =
        virDomainGetMetadata(t, VIR_DOMAIN_METADATA_ELEMENT, TERN_NS_URI, VIR_DOMAIN_AFFECT_CONFIG);
    char buf[16];
    int port = 80;

    if (md != NULL && attr(md, md + strlen(md), "port", buf, sizeof(buf), NULL, NULL))
        port = atoi(buf);
    free(md);
    return port > 0 && port < 65536 ? port : 80;
}

static bool
domain_address(virDomainPtr d, char *buf, size_t len)
{
    static const unsigned srcs[] = {VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE,
                                    VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT,
                                    VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_ARP};
    bool found = false;

    for (size_t k = 0; k < 3 && !found; k++) {
        virDomainInterfacePtr *ifs = NULL;
        int n = virDomainInterfaceAddresses(d, &ifs, srcs[k], 0);

        for (int i = 0; i < n; i++) {
            for (unsigned a = 0; a < ifs[i]->naddrs && !found; a++) {
                if (ifs[i]->addrs[a].type == VIR_IP_ADDR_TYPE_IPV4 &&
                    ifs[i]->addrs[a].addr != NULL) {
                    snprintf(buf, len, "%s", ifs[i]->addrs[a].addr);
                    found = true;
                }
            }
            virDomainInterfaceFree(ifs[i]);
        }
        free(ifs);
    }
    return found;
}

static double
mono(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void
vol_name(char *buf, size_t len, const char *server)
{
    snprintf(buf, len, "%s.qcow2", server);
}

int
scale_lv_create(struct scale_lv *lv, const char *name, char *address, size_t addrlen, char *err,
                size_t errlen)
{
    virConnectPtr c = conn_get(lv, err, errlen);
    virDomainPtr t = NULL, d = NULL;
    virStoragePoolPtr pool = NULL;
    virStorageVolPtr base = NULL, vol = NULL;
    virStorageVolInfo info;
    char *txml = NULL, *bxml = NULL, *vxml = NULL, *dxml = NULL, *vpath = NULL;
    char path[1024], spool[256], svol[256], *bpath = NULL;
    char fmt[32] = "raw", vname[SCALE_NAME_MAX + 8], md[512], ip[64];
    bool started = false;
    int rc = -1, port;
    double deadline;

    if (c == NULL)
        return -1;
    t = virDomainLookupByName(c, lv->tmpl);
    if (t == NULL) {
        seterr(err, errlen, "template");
        goto out;
    }
    port = tmpl_port(t);
    txml = virDomainGetXMLDesc(t, VIR_DOMAIN_XML_INACTIVE);
    if (txml == NULL || !disk_source(txml, path, sizeof(path), spool, svol, sizeof(spool))) {
        snprintf(err, errlen, "template %s has no file or volume disk", lv->tmpl);
        goto out;
    }
    if (path[0] != '\0') {
        base = virStorageVolLookupByPath(c, path);
    } else {
        virStoragePoolPtr bp = virStoragePoolLookupByName(c, spool);

        base = bp ? virStorageVolLookupByName(bp, svol) : NULL;
        if (bp != NULL)
            virStoragePoolFree(bp);
    }
    if (base == NULL || virStorageVolGetInfo(base, &info) < 0) {
        seterr(err, errlen, "template disk volume");
        goto out;
    }
    bpath = virStorageVolGetPath(base);
    if (bpath == NULL) {
        seterr(err, errlen, "template disk volume path");
        goto out;
    }
    bxml = virStorageVolGetXMLDesc(base, 0);
    if (bxml != NULL) {
        const char *f = strstr(bxml, "<format");

        if (f != NULL)
            attr(f, strchr(f, '>'), "type", fmt, sizeof(fmt), NULL, NULL);
    }
    pool = virStoragePoolLookupByName(c, lv->storage);
    if (pool == NULL) {
        seterr(err, errlen, "storage pool");
        goto out;
    }
    /* 1. the overlay */
    vol_name(vname, sizeof(vname), name);
    if (asprintf(&vxml,
                 "<volume><name>%s</name><capacity unit='bytes'>%llu</capacity>"
                 "<target><format type='qcow2'/></target>"
                 "<backingStore><path>%s</path><format type='%s'/></backingStore></volume>",
                 vname, info.capacity, bpath, fmt) < 0) {
        vxml = NULL;
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    vol = virStorageVolCreateXML(pool, vxml, 0);
    if (vol == NULL || (vpath = virStorageVolGetPath(vol)) == NULL) {
        seterr(err, errlen, "overlay volume");
        goto out;
    }
    /* 2. the domain */
    dxml = clone_xml(txml, name, vpath, lv->storage, vname);
    if (dxml == NULL) {
        snprintf(err, errlen, "cannot rewrite the template's XML");
        goto undo;
    }
    d = virDomainDefineXML(c, dxml);
    if (d == NULL) {
        seterr(err, errlen, "define");
        goto undo;
    }
    snprintf(md, sizeof(md), "<scale group='%s' template='%s'/>", lv->group, lv->tmpl);
    if (virDomainSetMetadata(d, VIR_DOMAIN_METADATA_ELEMENT, md, TERN_NS_PREFIX, TERN_NS_URI,
                             VIR_DOMAIN_AFFECT_CONFIG) < 0) {
        seterr(err, errlen, "metadata");
        goto undo;
    }
    /* 3. start */
    if (virDomainCreate(d) < 0) {
        seterr(err, errlen, "start");
        goto undo;
    }
    started = true;
    /* 4. its address */
    deadline = mono() + lv->addr_timeout;
    while (!domain_address(d, ip, sizeof(ip))) {
        if (mono() >= deadline) {
            snprintf(err, errlen, "no address within %.0f s (leases, agent, ARP)",
                     lv->addr_timeout);
            goto undo;
        }
        usleep(500000);
    }
    snprintf(address, addrlen, "%s:%d", ip, port);
    rc = 0;
    goto out;
undo:
    if (d != NULL) {
        if (started)
            virDomainDestroy(d);
        undefine(d);
    }
    if (vol != NULL)
        virStorageVolDelete(vol, 0);
out:
    if (d != NULL)
        virDomainFree(d);
    if (vol != NULL)
        virStorageVolFree(vol);
    if (base != NULL)
        virStorageVolFree(base);
    if (pool != NULL)
        virStoragePoolFree(pool);
    if (t != NULL)
        virDomainFree(t);
    free(txml);
    free(bxml);
    free(vxml);
    free(dxml);
    free(vpath);
    free(bpath);
    virConnectClose(c);
    return rc;
}

int
scale_lv_destroy(struct scale_lv *lv, const char *name, char *err, size_t errlen)
{
    virConnectPtr c = conn_get(lv, err, errlen);
    virDomainPtr d;
    virStoragePoolPtr pool;
    char vname[SCALE_NAME_MAX + 8];
    int rc = 0;

    if (c == NULL)
        return -1;
    d = virDomainLookupByName(c, name);
    if (d != NULL) {
        if (virDomainIsActive(d) == 1 && virDomainDestroy(d) < 0) {
            seterr(err, errlen, "stop");
            rc = -1;
        } else if (undefine(d) < 0) {
            seterr(err, errlen, "undefine");
            rc = -1;
        }
        virDomainFree(d);
    }
    pool = rc == 0 ? virStoragePoolLookupByName(c, lv->storage) : NULL;
    if (pool != NULL) {
        virStorageVolPtr vol;

        vol_name(vname, sizeof(vname), name);
        vol = virStorageVolLookupByName(pool, vname);
        if (vol != NULL) {
            if (virStorageVolDelete(vol, 0) < 0) {
                seterr(err, errlen, "delete the overlay");
                rc = -1;
            }
            virStorageVolFree(vol);
        }
        virStoragePoolFree(pool);
    }
    virConnectClose(c);
    return rc;
}

/* The word the list gives for a domain's state. Only "running" is one the
 * group keeps (BLOCKED is a running guest waiting on the host). NULL when
 * libvirt cannot tell (the call failed, NOSTATE): such a domain is left out
 * of the list, since a word for it would have the group destroy a clone
 * that may be fine. */
static const char *
state_word(virDomainPtr d)
{
    int st = VIR_DOMAIN_NOSTATE, reason;

    if (virDomainGetState(d, &st, &reason, 0) < 0)
        return NULL;
    switch (st) {
    case VIR_DOMAIN_RUNNING:
    case VIR_DOMAIN_BLOCKED:
        return "running";
    case VIR_DOMAIN_PAUSED:
        return "paused";
    case VIR_DOMAIN_SHUTDOWN:
        return "stopping";
    case VIR_DOMAIN_SHUTOFF:
        return "stopped";
    case VIR_DOMAIN_CRASHED:
        return "crashed";
    case VIR_DOMAIN_PMSUSPENDED:
        return "suspended";
    default:
        return NULL;
    }
}

int
scale_lv_list(struct scale_lv *lv, char **out, char *err, size_t errlen)
{
    virConnectPtr c = conn_get(lv, err, errlen);
    virDomainPtr *doms = NULL;
    char *buf = NULL;
    size_t len = 0;
    FILE *f;
    int n;

    *out = NULL;
    if (c == NULL)
        return -1;
    n = virConnectListAllDomains(c, &doms, 0);
    if (n < 0) {
        seterr(err, errlen, "list domains");
        virConnectClose(c);
        return -1;
    }
    f = open_memstream(&buf, &len);
    for (int i = 0; i < n; i++) {
        char *md = virDomainGetMetadata(doms[i], VIR_DOMAIN_METADATA_ELEMENT, TERN_NS_URI,
                                        VIR_DOMAIN_AFFECT_CONFIG);
        char grp[SCALE_NAME_MAX], ip[64];

        if (md != NULL && attr(md, md + strlen(md), "group", grp, sizeof(grp), NULL, NULL) &&
            strcmp(grp, lv->group) == 0 && f != NULL) {
            virDomainPtr t = virDomainLookupByName(c, lv->tmpl);
            int port = t ? tmpl_port(t) : 80;

            if (t != NULL)
                virDomainFree(t);
            const char *st = state_word(doms[i]);

            if (st != NULL && strcmp(st, "running") == 0 && domain_address(doms[i], ip, sizeof(ip)))
                fprintf(f, "%s %s:%d running\n", virDomainGetName(doms[i]), ip, port);
            else if (st != NULL)
                fprintf(f, "%s - %s\n", virDomainGetName(doms[i]), st);
        }
        free(md);
        virDomainFree(doms[i]);
    }
    free(doms);
    if (f != NULL)
        fclose(f);
    virConnectClose(c);
    if (f == NULL) {
        snprintf(err, errlen, "out of memory");
        free(buf);
        return -1;
    }
    *out = buf;
    return 0;
}

/* ---- the provider table ---- */

static int
lv_create(void *p, const char *group, const char *server, char *address, size_t addrlen, char *err,
          size_t errlen)
{
    return scale_lv_create(p, server, address, addrlen, err, errlen);
}

static int
lv_destroy(void *p, const char *group, const char *server, const char *address, char *err,
           size_t errlen)
{
    return scale_lv_destroy(p, server, err, errlen);
}

static int
lv_list(void *p, const char *group, char **out, char *err, size_t errlen)
{
    return scale_lv_list(p, out, err, errlen);
}

static void
lv_free(void *p)
{
    scale_lv_free(p);
}

const struct scale_provider_ops scale_lv_ops = {
    .name = "libvirt",
    .create = lv_create,
    .destroy = lv_destroy,
    .list = lv_list,
    .free = lv_free,
};
