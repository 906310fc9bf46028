/*
 * Tests of scale/provider_libvirt.c against libvirt's test driver.
 *
 * The node is a custom test-driver file written here: a shut-off template
 * domain whose disk is a qcow2 volume in a dir pool, and a NAT network with
 * DHCP (the driver fabricates lease addresses). A create makes a linked
 * clone (overlay backed by the template's volume, fresh name, UUID and MAC,
 * tern metadata naming the group) and starts it; list finds it, and every
 * other domain of the group with its state (stopped, paused, running
 * without an address); destroy removes domain and overlay, also of a
 * stopped clone. Failures roll back: a clone whose define is
 * refused leaves no overlay behind, a missing template or pool makes
 * nothing. The provider's own connection is inspected (a custom-file URI
 * gives every connection its own copy of the node).
 */
// clang-format off
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
// clang-format on

#include <libvirt/libvirt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "scale/scale.h"

static const char node_xml[] =
    "<node>\n"
    "  <domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>\n"
    "    <name>web-master</name>\n"
    "    <uuid>11111111-2222-3333-4444-555555555555</uuid>\n"
    "    <memory>1048576</memory>\n"
    "    <os><type>hvm</type></os>\n"
    "    <metadata><tern:scale xmlns:tern='https://tern.dev/xmlns/scale/1' port='8080'/>"
    "</metadata>\n"
    "    <devices>\n"
    "      <disk type='file' device='disk'>\n"
    "        <driver name='qemu' type='qcow2'/>\n"
    "        <source file='/pool/web-master.qcow2'/>\n"
    "        <target dev='vda' bus='virtio'/>\n"
    "      </disk>\n"
    "      <interface type='network'>\n"
    "        <mac address='52:54:00:aa:bb:01'/>\n"
    "        <source network='default'/>\n"
    "      </interface>\n"
    "    </devices>\n"
    "    <test:runstate>5</test:runstate>\n"
    "  </domain>\n"
    "  <domain type='test'>\n"
    "    <name>web-master-vol</name>\n"
    "    <memory>1048576</memory>\n"
    "    <os><type>hvm</type></os>\n"
    "    <devices>\n"
    "      <disk type='volume' device='disk'>\n"
    "        <driver name='qemu' type='qcow2'/>\n"
    "        <source pool='default' volume='web-master.qcow2'/>\n"
    "        <target dev='vda' bus='virtio'/>\n"
    "      </disk>\n"
    "      <interface type='network'><source network='default'/></interface>\n"
    "    </devices>\n"
    "    <test:runstate xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>5</test:runstate>\n"
    "  </domain>\n"
    "  <network>\n"
    "    <name>default</name>\n"
    "    <bridge name='virbr0'/>\n"
    "    <forward/>\n"
    "    <ip address='192.168.122.1' netmask='255.255.255.0'>\n"
    "      <dhcp><range start='192.168.122.2' end='192.168.122.254'/></dhcp>\n"
    "    </ip>\n"
    "  </network>\n"
    "  <pool type='dir'>\n"
    "    <name>default</name>\n"
    "    <target><path>/pool</path></target>\n"
    "    <volume type='file'>\n"
    "      <name>web-master.qcow2</name>\n"
    "      <capacity unit='GiB'>10</capacity>\n"
    "      <target><path>/pool/web-master.qcow2</path><format type='qcow2'/></target>\n"
    "    </volume>\n"
    "  </pool>\n"
    "</node>\n";

struct fx {
    char path[64];
    char uri[96];
};

static int
setup(void **state)
{
    struct fx *fx = calloc(1, sizeof(*fx));
    int fd;

    snprintf(fx->path, sizeof(fx->path), "/tmp/tern-lv-XXXXXX.xml");
    fd = mkstemps(fx->path, 4);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, node_xml, strlen(node_xml)), (ssize_t)strlen(node_xml));
    close(fd);
    snprintf(fx->uri, sizeof(fx->uri), "test://%s", fx->path);
    *state = fx;
    return 0;
}

static int
teardown(void **state)
{
    struct fx *fx = *state;

    unlink(fx->path);
    free(fx);
    return 0;
}

static int
nvols(virConnectPtr c)
{
    virStoragePoolPtr p = virStoragePoolLookupByName(c, "default");
    int n;

    assert_non_null(p);
    virStoragePoolRefresh(p, 0);
    n = virStoragePoolNumOfVolumes(p);
    virStoragePoolFree(p);
    return n;
}

static char *
list(struct scale_lv *lv)
{
    char err[256], *out = NULL;

    if (scale_lv_list(lv, &out, err, sizeof(err)) != 0)
        fail_msg("list: %s", err);
    assert_non_null(out);
    return out;
}

static void
test_cycle(void **state)
{
    struct fx *fx = *state;
    struct scale_lv *lv = scale_lv_new(fx->uri, "web-master", "default", "web", 5);
    char addr[128], err[256], *out, *xml, *md;
    virConnectPtr c;
    virDomainPtr d;
    virStorageVolPtr v;

    assert_int_equal(scale_lv_create(lv, "web-tern-1", addr, sizeof(addr), err, sizeof(err)), 0);
    assert_true(strncmp(addr, "192.168.", 8) == 0);
    assert_non_null(strstr(addr, ":8080"));
    c = scale_lv_connection(lv);
    assert_non_null(c);

    d = virDomainLookupByName(c, "web-tern-1");
    assert_non_null(d);
    assert_int_equal(virDomainIsActive(d), 1);
    xml = virDomainGetXMLDesc(d, VIR_DOMAIN_XML_INACTIVE);
    assert_non_null(xml);
    assert_null(strstr(xml, "11111111-2222-3333-4444-555555555555"));
    assert_null(strstr(xml, "52:54:00:aa:bb:01"));
    assert_non_null(strstr(xml, "/pool/web-tern-1.qcow2"));
    assert_null(strstr(xml, "/pool/web-master.qcow2"));
    free(xml);
    md = virDomainGetMetadata(d, VIR_DOMAIN_METADATA_ELEMENT, "https://tern.dev/xmlns/scale/1",
                              VIR_DOMAIN_AFFECT_CONFIG);
    assert_non_null(md);
    assert_non_null(strstr(md, "group=\"web\""));
    free(md);
    virDomainFree(d);

    v = virStorageVolLookupByPath(c, "/pool/web-tern-1.qcow2");
    assert_non_null(v);
    xml = virStorageVolGetXMLDesc(v, 0);
    assert_non_null(strstr(xml, "<backingStore>"));
    assert_non_null(strstr(xml, "/pool/web-master.qcow2"));
    free(xml);
    virStorageVolFree(v);

    /* A second clone; list shows both with their addresses. */
    assert_int_equal(scale_lv_create(lv, "web-tern-2", addr, sizeof(addr), err, sizeof(err)), 0);
    out = list(lv);
    assert_non_null(strstr(out, "web-tern-1 192.168."));
    assert_non_null(strstr(out, "web-tern-2 192.168."));
    assert_null(strstr(out, "web-master"));
    free(out);
    assert_int_equal(nvols(c), 3);

    /* Destroy: domain and overlay gone; again is no error. */
    if (scale_lv_destroy(lv, "web-tern-1", err, sizeof(err)) != 0)
        fail_msg("destroy: %s", err);
    assert_null(virDomainLookupByName(c, "web-tern-1"));
    assert_null(virStorageVolLookupByPath(c, "/pool/web-tern-1.qcow2"));
    assert_int_equal(nvols(c), 2);
    assert_int_equal(scale_lv_destroy(lv, "web-tern-1", err, sizeof(err)), 0);
    out = list(lv);
    assert_null(strstr(out, "web-tern-1"));
    assert_non_null(strstr(out, "web-tern-2"));
    free(out);
    assert_int_equal(scale_lv_destroy(lv, "web-tern-2", err, sizeof(err)), 0);
    assert_int_equal(nvols(c), 1);
    scale_lv_free(lv);
}

static void
test_rollback(void **state)
{
    struct fx *fx = *state;
    struct scale_lv *lv = scale_lv_new(fx->uri, "web-master", "default", "web", 5);
    char addr[128], err[256];
    virConnectPtr c;
    virDomainPtr d;

    /* Open the connection, then take the name the next clone would get. */
    assert_int_equal(scale_lv_create(lv, "web-tern-1", addr, sizeof(addr), err, sizeof(err)), 0);
    c = scale_lv_connection(lv);
    d = virDomainDefineXML(c, "<domain type='test'><name>web-tern-7</name><memory>1024</memory>"
                              "<os><type>hvm</type></os></domain>");
    assert_non_null(d);
    virDomainFree(d);
    assert_int_equal(nvols(c), 2);

    /* Define is refused: the overlay it made is deleted again. */
    assert_int_equal(scale_lv_create(lv, "web-tern-7", addr, sizeof(addr), err, sizeof(err)), -1);
    assert_non_null(strstr(err, "define"));
    assert_null(virStorageVolLookupByPath(c, "/pool/web-tern-7.qcow2"));
    assert_int_equal(nvols(c), 2);
    /* The foreign domain of that name is not ours: not listed, not touched. */
    {
        char *out = list(lv);

        assert_null(strstr(out, "web-tern-7"));
        free(out);
    }
    scale_lv_free(lv);

    /* A missing template or storage pool makes nothing. */
    lv = scale_lv_new(fx->uri, "no-such-template", "default", "web", 5);
    assert_int_equal(scale_lv_create(lv, "web-tern-2", addr, sizeof(addr), err, sizeof(err)), -1);
    assert_non_null(strstr(err, "template"));
    assert_int_equal(nvols(scale_lv_connection(lv)), 1);
    scale_lv_free(lv);
    lv = scale_lv_new(fx->uri, "web-master", "no-such-pool", "web", 5);
    assert_int_equal(scale_lv_create(lv, "web-tern-2", addr, sizeof(addr), err, sizeof(err)), -1);
    assert_non_null(strstr(err, "storage pool"));
    assert_null(virDomainLookupByName(scale_lv_connection(lv), "web-tern-2"));
    scale_lv_free(lv);

    /* An unreachable URI is an error, not a crash. */
    lv = scale_lv_new("test:///nonexistent/node.xml", "web-master", "default", "web", 5);
    assert_int_equal(scale_lv_create(lv, "web-tern-3", addr, sizeof(addr), err, sizeof(err)), -1);
    assert_true(err[0] != '\0');
    scale_lv_free(lv);
}

/* A template whose disk is a volume of a pool: the clone's disk names the
 * overlay volume in the group's pool; the port defaults to 80. */
static void
test_volume_disk(void **state)
{
    struct fx *fx = *state;
    struct scale_lv *lv = scale_lv_new(fx->uri, "web-master-vol", "default", "api", 5);
    char addr[128], err[256], *xml;
    virConnectPtr c;
    virDomainPtr d;

    if (scale_lv_create(lv, "api-tern-1", addr, sizeof(addr), err, sizeof(err)) != 0)
        fail_msg("create: %s", err);
    assert_non_null(strstr(addr, ":80"));
    c = scale_lv_connection(lv);
    d = virDomainLookupByName(c, "api-tern-1");
    assert_non_null(d);
    xml = virDomainGetXMLDesc(d, VIR_DOMAIN_XML_INACTIVE);
    assert_non_null(strstr(xml, "volume='api-tern-1.qcow2'"));
    assert_non_null(strstr(xml, "pool='default'"));
    free(xml);
    virDomainFree(d);
    assert_int_equal(nvols(c), 2);
    assert_int_equal(scale_lv_destroy(lv, "api-tern-1", err, sizeof(err)), 0);
    assert_int_equal(nvols(c), 1);
    scale_lv_free(lv);
}

/* Defines a bare domain of the test driver; group: its tern metadata, or
 * NULL for none. */
static virDomainPtr
define_tagged(virConnectPtr c, const char *name, const char *group)
{
    char xml[512], md[128];
    virDomainPtr d;

    snprintf(xml, sizeof(xml),
             "<domain type='test'><name>%s</name><memory>1024</memory>"
             "<os><type>hvm</type></os></domain>",
             name);
    d = virDomainDefineXML(c, xml);
    assert_non_null(d);
    if (group != NULL) {
        snprintf(md, sizeof(md), "<scale group='%s' template='web-master'/>", group);
        assert_int_equal(virDomainSetMetadata(d, VIR_DOMAIN_METADATA_ELEMENT, md, "tern",
                                              "https://tern.dev/xmlns/scale/1",
                                              VIR_DOMAIN_AFFECT_CONFIG),
                         0);
    }
    return d;
}

/* Every domain of the group is listed with its state, not only the running
 * ones: a stopped or paused clone is what the group has to replace, and
 * one running without an address yet is named so that its name is not
 * taken again. Domains of another group, or untagged, are not listed. */
static void
test_list_states(void **state)
{
    struct fx *fx = *state;
    struct scale_lv *lv = scale_lv_new(fx->uri, "web-master", "default", "web", 5);
    char addr[128], err[256], *out;
    virConnectPtr c;
    virDomainPtr d;

    assert_int_equal(scale_lv_create(lv, "web-tern-1", addr, sizeof(addr), err, sizeof(err)), 0);
    assert_int_equal(scale_lv_create(lv, "web-tern-2", addr, sizeof(addr), err, sizeof(err)), 0);
    c = scale_lv_connection(lv);

    /* web-tern-2 shut off under the group; web-tern-3 tagged but never
     * started (a create that died between define and start); web-tern-4
     * tagged and running with no network, so no address; another group's
     * clone and an untagged domain, both shut off. */
    d = virDomainLookupByName(c, "web-tern-2");
    assert_non_null(d);
    assert_int_equal(virDomainDestroy(d), 0);
    virDomainFree(d);
    virDomainFree(define_tagged(c, "web-tern-3", "web"));
    d = define_tagged(c, "web-tern-4", "web");
    assert_int_equal(virDomainCreate(d), 0);
    virDomainFree(d);
    virDomainFree(define_tagged(c, "web-tern-5", "api"));
    virDomainFree(define_tagged(c, "web-tern-6", NULL));

    out = list(lv);
    assert_non_null(strstr(out, "web-tern-1 192.168."));
    assert_non_null(strstr(out, ":8080 running\n"));
    assert_non_null(strstr(out, "web-tern-2 - stopped\n"));
    assert_non_null(strstr(out, "web-tern-3 - stopped\n"));
    assert_non_null(strstr(out, "web-tern-4 - running\n"));
    assert_null(strstr(out, "web-tern-5"));
    assert_null(strstr(out, "web-tern-6"));
    assert_null(strstr(out, "web-master"));
    free(out);

    /* Paused is not running either; resumed, it is listed running again. */
    d = virDomainLookupByName(c, "web-tern-1");
    assert_int_equal(virDomainSuspend(d), 0);
    out = list(lv);
    assert_non_null(strstr(out, "web-tern-1 - paused\n"));
    free(out);
    assert_int_equal(virDomainResume(d), 0);
    virDomainFree(d);
    out = list(lv);
    assert_non_null(strstr(out, "web-tern-1 192.168."));
    free(out);

    /* destroy works on a stopped clone: domain and overlay go. */
    assert_int_equal(nvols(c), 3);
    if (scale_lv_destroy(lv, "web-tern-2", err, sizeof(err)) != 0)
        fail_msg("destroy: %s", err);
    assert_null(virDomainLookupByName(c, "web-tern-2"));
    assert_null(virStorageVolLookupByPath(c, "/pool/web-tern-2.qcow2"));
    assert_int_equal(nvols(c), 2);
    if (scale_lv_destroy(lv, "web-tern-3", err, sizeof(err)) != 0)
        fail_msg("destroy: %s", err);
    assert_null(virDomainLookupByName(c, "web-tern-3"));
    out = list(lv);
    assert_null(strstr(out, "web-tern-2"));
    assert_null(strstr(out, "web-tern-3"));
    assert_non_null(strstr(out, "web-tern-1 192.168."));
    free(out);
    scale_lv_free(lv);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_cycle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rollback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_volume_disk, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list_states, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
