/*
 * libFuzzer target for the libvirt provider's reading and rewriting of XML
 * (scale/provider_libvirt.c): the template domain's XML (its first disk's
 * source, and the clone's XML made from it), the tern metadata element
 * (the template's port, a domain's group) and a volume's format.
 *
 * The functions are static, so the provider's file is compiled into this
 * target; none of them talks to libvirt. Each input is one NUL-terminated
 * document, given to every reader as scale_lv_create and scale_lv_list do.
 *
 * Invariants (abort() when broken): every value read is a terminated
 * string that fits its buffer; the clone's XML exists exactly when the
 * template has <name>...</name>, has no <mac address.../> left and no
 * <uuid>...</uuid> (unless removing a <mac> formed one), and names the
 * clone when nothing it cuts or rewrites can reach its <name>.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../scale/provider_libvirt.c"
#include "fuzz_common.h"

#define CLONE "web-tern-7"
#define OVERLAY "/var/lib/tern/web-tern-7.qcow2"

/* An element open..close left in s (what remove_all takes out). */
static bool
has_element(const char *s, const char *open, const char *close)
{
    const char *p = strstr(s, open);
    return p != NULL && strstr(p, close) != NULL;
}

static void
fuzz_template(const char *xml)
{
    char path[1024], spool[256], svol[256];
    bool disk = disk_source(xml, path, sizeof(path), spool, svol, sizeof(spool));

    check(fits(path, sizeof(path)) && fits(spool, sizeof(spool)) && fits(svol, sizeof(svol)));
    if (!disk)
        check(path[0] == '\0');

    const char *name = strstr(xml, "<name>");
    bool named = name != NULL && strstr(name, "</name>") != NULL;
    char *x = clone_xml(xml, CLONE, OVERLAY, "tern", CLONE ".qcow2");

    check((x != NULL) == named);
    if (x == NULL)
        return;
    /* <mac> goes last, so what it leaves may join into a <uuid> (as in
     * "<<mac address/>uuid></uuid>"): not a shape libvirt writes. */
    if (strstr(xml, "<mac address") == NULL)
        check(!has_element(x, "<uuid>", "</uuid>"));
    check(!has_element(x, "<mac address", "/>"));
    /* The name stays when nothing cut or rewritten can reach it: no
     * <uuid> or <mac> to remove, and it comes before the first disk. */
    const char *d = strstr(xml, "<disk");
    if (strstr(xml, "<uuid>") == NULL && strstr(xml, "<mac address") == NULL &&
        (d == NULL || name < d))
        check(strstr(x, "<name>" CLONE "</name>") != NULL);
    free(x);
}

/* The metadata element and a volume's XML, as tmpl_port, scale_lv_list
 * and scale_lv_create read them. */
static void
fuzz_metadata(const char *md)
{
    char buf[16], grp[SCALE_NAME_MAX], fmt[32] = "raw";

    if (attr(md, md + strlen(md), "port", buf, sizeof(buf), NULL, NULL))
        check(fits(buf, sizeof(buf)));
    if (attr(md, md + strlen(md), "group", grp, sizeof(grp), NULL, NULL))
        check(fits(grp, sizeof(grp)));
    const char *f = strstr(md, "<format");
    if (f != NULL && strchr(f, '>') != NULL)
        attr(f, strchr(f, '>'), "type", fmt, sizeof(fmt), NULL, NULL);
    check(fits(fmt, sizeof(fmt)));
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *xml = malloc(size + 1);

    if (xml == NULL)
        return 0;
    memcpy(xml, data, size);
    xml[size] = '\0';
    fuzz_template(xml);
    fuzz_metadata(xml);
    free(xml);
    return 0;
}
