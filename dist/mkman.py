#!/usr/bin/env python3
"""Builds a manual page from its template in dist/.

Replaces @NAME@ with the values given as --set NAME=VALUE, and @KEYS@ (if the
template has it) with the key reference converted from conf/REFERENCE.md, so
tern.yaml(5) lists exactly the keys of the schema this build was made from.
Only the per-section tables of REFERENCE.md are used (the sections named like
## `global`); the prose about values, variables and includes is written in
the template itself, in man(7) form.

Fails loudly on a table row it does not understand, or on a placeholder left
unreplaced, rather than installing a page with holes.
"""
import argparse
import re
import sys


def esc(text):
    """Escapes plain text for groff: backslashes, and turns `code` spans
    into bold with hyphens that copy as ASCII hyphen-minus."""
    out = []
    for i, part in enumerate(text.replace("\\", "\\e").split("`")):
        if i % 2:
            out.append("\\fB" + part.replace("-", "\\-") + "\\fR")
        else:
            out.append(part)
    return "".join(out)


def line(text):
    """A text line that groff will not take for a request."""
    return "\\&" + text if text[:1] in (".", "'") else text


def sentence(text):
    text = text.strip()
    return text if text.endswith(".") and not text.endswith("..") else text + "."


def keys_from_reference(md):
    out = []
    section = None
    intro = []
    in_table = False
    for raw in md.splitlines():
        m = re.match(r"^## `([^`]+)`\s*$", raw)
        if m:
            section, intro, in_table = m.group(1), [], False
            out.append(".SS " + section)
            continue
        if raw.startswith("## "):
            section = None  # prose sections: written in the template
            continue
        if section is None:
            continue
        if raw.startswith("|"):
            if not in_table and intro:
                out.append(line(esc(" ".join(intro))))
                intro = []
            in_table = True
            cells = [c.strip() for c in raw.strip().strip("|").split("|")]
            if len(cells) != 5:
                sys.exit(f"mkman: REFERENCE.md: cannot read table row: {raw}")
            key, typ, default, reload_, meaning = cells
            if key == "key" or set(key) <= set("- "):
                continue  # header and separator rows
            key = key.strip("`")
            if key == section and out and not out[-1].startswith(".SS"):
                continue  # the section's own row repeats its introduction
            out.append(".TP")
            out.append(".B " + key.replace("\\", "\\e").replace("-", "\\-"))
            out.append(line(esc(sentence(meaning))))
            out.append(".br")
            facts = ["Type: " + esc(typ) + "."]
            if default == "required":
                facts.append("Required.")
            elif default not in ("-", ""):
                facts.append("Default: " + esc(default) + ".")
            if reload_ == "restart":
                facts.append("A change needs a restart.")
            out.append(line(" ".join(facts)))
        elif raw.strip() and not in_table:
            intro.append(raw.strip())
    if not any(l.startswith(".TP") for l in out):
        sys.exit("mkman: REFERENCE.md: no key tables found")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("template")
    ap.add_argument("output")
    ap.add_argument("--reference", help="conf/REFERENCE.md, for @KEYS@")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    a = ap.parse_args()

    with open(a.template, encoding="utf-8") as f:
        text = f.read()
    values = dict(s.split("=", 1) for s in a.set)
    if "@KEYS@" in text:
        if not a.reference:
            sys.exit("mkman: the template has @KEYS@ but no --reference was given")
        with open(a.reference, encoding="utf-8") as f:
            values["KEYS"] = keys_from_reference(f.read())
    for name, value in values.items():
        text = text.replace("@" + name + "@", value)
    left = re.findall(r"@[A-Z_]+@", text)
    if left:
        sys.exit(f"mkman: {a.template}: no value for {', '.join(sorted(set(left)))}")
    with open(a.output, "w", encoding="utf-8") as f:
        f.write(text)


if __name__ == "__main__":
    main()
