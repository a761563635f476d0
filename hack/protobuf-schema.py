#!/usr/bin/env python3
"""Writes apiserver/src/protobuf/schema.txt, the wire schema the API server decodes
protobuf request bodies with.

Usage: hack/protobuf-schema.py API_DIR APIMACHINERY_DIR > apiserver/src/protobuf/schema.txt

API_DIR and APIMACHINERY_DIR are checkouts of k8s.io/api and k8s.io/apimachinery at the
served release (v0.33.x). The structure (field numbers, types, maps) comes from each
package's generated.proto; what the JSON form needs comes from the Go types beside it:
the JSON name, `,inline`, and whether a zero scalar is still written (a pointer field or
one without `omitempty`).

Output, one item per line:
  message <full.proto.Name> [list]          list: a named Go slice type (JSON array of `items`)
  <number> <jsonName> <type> [flags]        type: a proto scalar, a full message name, or map:<k>:<v>
                                            flags: r repeated, z zero value kept, i inline
"""

import os
import re
import sys

API_PACKAGES = [
    "core/v1", "apps/v1", "batch/v1", "certificates/v1", "coordination/v1", "discovery/v1", "events/v1",
    "autoscaling/v1", "autoscaling/v2", "policy/v1", "networking/v1", "rbac/v1",
    "storage/v1", "scheduling/v1", "authorization/v1", "authentication/v1",
    "admissionregistration/v1",
]
MACHINERY_PACKAGES = [
    "pkg/apis/meta/v1", "pkg/runtime", "pkg/runtime/schema", "pkg/util/intstr", "pkg/api/resource",
]
SCALARS = {"string", "bool", "bytes", "int32", "int64", "uint32", "uint64", "double", "float",
           "sint32", "sint64", "fixed32", "fixed64", "sfixed32", "sfixed64"}
META = "k8s.io.apimachinery.pkg.apis.meta.v1."
EXTRA_ROOTS = [META + "DeleteOptions"]


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def parse_proto(path):
    """{full message name: [(number, proto name, type, repeated)]}"""
    text = strip_comments(open(path).read())
    pkg = re.search(r"^package\s+([\w.]+);", text, re.M).group(1)
    msgs = {}
    for m in re.finditer(r"^message\s+(\w+)\s*\{(.*?)^\}", text, re.M | re.S):
        fields = []
        for line in m.group(2).split(";"):
            line = " ".join(line.split())
            if not line:
                continue
            fm = re.match(r"map<\s*([\w.]+)\s*,\s*([\w.]+)\s*>\s+(\w+)\s*=\s*(\d+)$", line)
            if fm:
                k, v, name, num = fm.groups()
                fields.append((int(num), name, "map:%s:%s" % (k, resolve(v, pkg)), False))
                continue
            fm = re.match(r"(optional|repeated)\s+([\w.]+)\s+(\w+)\s*=\s*(\d+)$", line)
            if not fm:
                raise SystemExit("cannot parse %s: %r" % (path, line))
            label, typ, name, num = fm.groups()
            fields.append((int(num), name, resolve(typ, pkg), label == "repeated"))
        msgs[pkg + "." + m.group(1)] = fields
    return pkg, msgs


def resolve(typ, pkg):
    if typ in SCALARS:
        return typ
    if typ.startswith("."):
        return typ[1:]
    return pkg + "." + typ


def parse_go(directory):
    """({struct: {proto name: (json name, pointer, omitempty, inline)}}, {named slice types})"""
    structs, slices = {}, set()
    for fn in sorted(os.listdir(directory)):
        if not fn.endswith(".go") or fn.endswith("_test.go") or fn.startswith(("generated", "zz_")):
            continue
        src = open(os.path.join(directory, fn)).read()
        for m in re.finditer(r"^type\s+(\w+)\s+\[\]", src, re.M):
            slices.add(m.group(1))
        for m in re.finditer(r"^type\s+(\w+)\s+struct\s*\{(.*?)^\}", src, re.M | re.S):
            fields = {}
            for line in m.group(2).split("\n"):
                line = line.strip()
                tm = re.match(r"([^`]*)`(.*)`", line)
                if not tm or line.startswith("//"):
                    continue
                decl, tags = tm.group(1).split(), tm.group(2)
                pb = re.search(r'protobuf:"([^"]*)"', tags)
                js = re.search(r'json:"([^"]*)"', tags)
                if not pb or pb.group(1) == "-":
                    continue
                gotype = decl[-1] if decl else ""
                names = [p[5:] for p in pb.group(1).split(",") if p.startswith("name=")]
                # An embedded struct without a name= is named after its type.
                base = gotype.lstrip("*").split(".")[-1]
                pname = names[0] if names else base[:1].lower() + base[1:]
                jparts = js.group(1).split(",") if js else [""]
                fields[pname] = (jparts[0], gotype.startswith("*"), "omitempty" in jparts[1:],
                                 "inline" in jparts[1:])
            structs[m.group(1)] = fields
    return structs, slices


def main():
    api, machinery = sys.argv[1], sys.argv[2]
    dirs = [os.path.join(api, p) for p in API_PACKAGES] + \
           [os.path.join(machinery, p) for p in MACHINERY_PACKAGES]
    messages, go = {}, {}
    for d in dirs:
        pkg, msgs = parse_proto(os.path.join(d, "generated.proto"))
        messages.update(msgs)
        go[pkg] = parse_go(d)
    roots = [n for n in messages if n.startswith("k8s.io.api.") and any(
        f[1] == "metadata" and f[2] == META + "ObjectMeta" for f in messages[n])] + EXTRA_ROOTS
    seen, todo = set(), list(roots)
    while todo:
        n = todo.pop()
        if n in seen:
            continue
        seen.add(n)
        for _, _, typ, _ in messages[n]:
            t = typ.split(":")[-1]
            if t not in SCALARS:
                todo.append(t)
    print("# Generated by hack/protobuf-schema.py from k8s.io/api and k8s.io/apimachinery; do not edit.")
    for n in sorted(seen):
        pkg, short = n.rsplit(".", 1)
        structs, slices = go[pkg]
        gofields = structs.get(short, {})
        print("message %s%s" % (n, " list" if short in slices else ""))
        for num, pname, typ, rep in messages[n]:
            jname, pointer, omitempty, inline = gofields.get(pname, (pname, False, True, False))
            if jname == "-":
                jname = pname
            flags = ("r" if rep else "") + ("i" if inline else "") + \
                    ("z" if typ in SCALARS and not rep and (pointer or not omitempty) else "")
            print("%d %s %s%s" % (num, jname or pname, typ, " " + flags if flags else ""))


main()
