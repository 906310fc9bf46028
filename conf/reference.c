/*
 * The markdown reference generated from schema tables (see schema.h).
 *
 * One section per top-level key, one table row per key below it, in table
 * order. Everything printed comes from the rows: kind, bounds, enum names,
 * default text and doc line, so the page cannot say something the parser
 * does not do.
 */
#include <inttypes.h>
#include <string.h>

#include "conf/schema.h"

static void
md_cell(FILE *out, const char *s)
{
    for (; *s != '\0'; s++) {
        if (*s == '|')
            fputs("\\|", out);
        else if (*s == '\n')
            fputc(' ', out);
        else
            fputc(*s, out);
    }
}

static void
type_text(char *buf, size_t size, const struct conf_field *f, enum conf_kind kind, bool in_list)
{
    char lo[32], hi[32];
    size_t len;

    if (f->type_doc != NULL && !in_list) {
        snprintf(buf, size, "%s", f->type_doc);
        return;
    }
    switch (kind) {
    case CONF_STRING:
        if (f->flags & CONF_F_PATH)
            snprintf(buf, size, "file (relative to the config file that names it)");
        else
            snprintf(buf, size, in_list ? "strings" : "string");
        return;
    case CONF_BOOL:
        snprintf(buf, size, "bool");
        return;
    case CONF_DOUBLE:
        snprintf(buf, size, "number");
        return;
    case CONF_ENUM:
    case CONF_CHOICE:
        snprintf(buf, size, "one of ");
        len = strlen(buf);
        for (size_t i = 0; f->names[i] != NULL && len < size; i++) {
            int n = snprintf(buf + len, size - len, "%s`%s`", i ? ", " : "", f->names[i]);

            if (n < 0)
                break;
            len += (size_t)n;
        }
        return;
    case CONF_ADDR:
        snprintf(buf, size, in_list ? "host:port addresses" : "address (host:port)");
        return;
    case CONF_IP:
        snprintf(buf, size, in_list ? "IP addresses" : "IP address");
        return;
    case CONF_CIDR:
        snprintf(buf, size, in_list ? "CIDRs (address/prefix)" : "CIDR (address/prefix)");
        return;
    case CONF_LIST:
        snprintf(buf, size, "list of ");
        len = strlen(buf);
        type_text(buf + len, size - len, f, f->elem, true);
        len = strlen(buf);
        if (f->min > 0)
            snprintf(buf + len, size - len, ", at least %" PRId64, f->min);
        return;
    case CONF_STRUCT:
        snprintf(buf, size, "mapping");
        return;
    case CONF_SEQ:
        snprintf(buf, size, "list of mappings");
        return;
    case CONF_MAP:
        snprintf(buf, size, "mapping of name to mapping");
        return;
    case CONF_CUSTOM:
        snprintf(buf, size, "value");
        return;
    case CONF_INT:
    case CONF_UINT:
        snprintf(buf, size, "integer");
        break;
    case CONF_DURATION:
        snprintf(buf, size, "duration");
        break;
    case CONF_SIZE:
        snprintf(buf, size, "size");
        break;
    }
    len = strlen(buf);
    conf__fmt_bound(lo, sizeof(lo), kind, f->min);
    conf__fmt_bound(hi, sizeof(hi), kind, f->max);
    if (f->max != 0)
        snprintf(buf + len, size - len, ", %s..%s", lo, hi);
    else if (f->min != 0)
        snprintf(buf + len, size - len, ", at least %s", lo);
}

static void
write_rows(FILE *out, const struct conf_field *f, const char *prefix)
{
    char path[256], type[512];
    const char *suffix = f->kind == CONF_SEQ ? "[]" : f->kind == CONF_MAP ? ".<name>" : "";

    snprintf(path, sizeof(path), "%s%s%s", prefix, f->key, suffix);
    type_text(type, sizeof(type), f, f->kind, false);
    fprintf(out, "| `%s` | ", path);
    md_cell(out, type);
    fputs(" | ", out);
    if (f->def_doc != NULL)
        md_cell(out, f->def_doc);
    else if (f->flags & CONF_F_REQUIRED)
        fputs("required", out);
    else if (f->def != NULL)
        fprintf(out, "`%s`", f->def);
    else
        fputs("-", out);
    fprintf(out, " | %s | ", (f->flags & CONF_F_RESTART) ? "restart" : "yes");
    md_cell(out, f->doc != NULL ? f->doc : "");
    fputs(" |\n", out);
    if (f->sub != NULL) {
        char child[sizeof(path) + 1];

        snprintf(child, sizeof(child), "%s.", path);
        for (const struct conf_field *c = f->sub->fields; c->key != NULL; c++)
            write_rows(out, c, child);
    }
}

void
conf_schema_write_reference(FILE *out, const struct conf_schema *root)
{
    for (const struct conf_field *f = root->fields; f->key != NULL; f++) {
        fprintf(out, "## `%s`\n\n", f->key);
        if (f->sub != NULL && f->sub->doc != NULL)
            fprintf(out, "%s\n\n", f->sub->doc);
        fputs("| key | type | default | reload | meaning |\n", out);
        fputs("| --- | --- | --- | --- | --- |\n", out);
        write_rows(out, f, "");
        fputs("\n", out);
    }
}
