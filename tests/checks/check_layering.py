#!/usr/bin/env python3
"""The layering rule of the source tree, checked on every #include.

Each library of common/ and each binary may include only the layers below
it (docs: issue 10 point 3; the build gives each target only the include
directories of what it links, this check says *why* a build broke and also
catches includes that a stray include path would let through):

  common/base    the standard library and the OS only
  common/wire    base                        (pure parsers: no third party)
  common/tls     base, wire                  + OpenSSL
  common/config  base, wire, tls             + nlohmann-json
  common/io      base, wire, tls             + libevent
  common/app     every common/ library
  lb/            every common/ library, never node-proxy/
  node-proxy/    every common/ library, never lb/

A quoted include is resolved by file name (names are unique across
common/*, lb/ and node-proxy/); an include it cannot resolve is an error
too, so a new layer or a renamed file cannot slip past. Third-party headers
are recognised by their directory (<openssl/...>, <event2/...>,
<nlohmann/...>); every other angle-bracket header counts as the standard
library or the OS.

usage: check_layering.py [--root DIR]   exit 0 clean, 1 with one line per
                                        violation: file:line: what and why
       check_layering.py --self-test    plants each kind of violation in a
                                        scratch tree and fails unless every
                                        one is reported (and a clean tree
                                        passes)
"""
import argparse
import os
import re
import sys
import tempfile

COMMON = ("base", "wire", "tls", "config", "io", "app")
LAYERS = {
    # layer: (project layers it may include, third-party libraries it may include)
    "base": ({"base"}, set()),
    "wire": ({"base", "wire"}, set()),
    "tls": ({"base", "wire", "tls"}, {"openssl"}),
    "config": ({"base", "wire", "tls", "config"}, {"openssl", "json"}),
    "io": ({"base", "wire", "tls", "io"}, {"openssl", "libevent"}),
    "app": (set(COMMON), {"openssl", "json", "libevent"}),
    "lb": (set(COMMON) | {"lb"}, {"openssl", "json", "libevent"}),
    "node-proxy": (set(COMMON) | {"node-proxy"}, {"openssl", "json", "libevent"}),
}
THIRD_PARTY = {"openssl/": "openssl", "event2/": "libevent", "nlohmann/": "json"}
SOURCE_SUFFIXES = (".h", ".cpp", ".inl", ".h.in")
INCLUDE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]')


def layer_dirs(root):
    """(layer, directory) for every layer present under root."""
    out = []
    for lib in COMMON:
        d = os.path.join(root, "common", lib)
        if os.path.isdir(d):
            out.append((lib, d))
    for binary in ("lb", "node-proxy"):
        d = os.path.join(root, binary)
        if os.path.isdir(d):
            out.append((binary, d))
    return out


def source_files(directory):
    for base, _, files in os.walk(directory):
        for f in sorted(files):
            if f.endswith(SOURCE_SUFFIXES):
                yield os.path.join(base, f)


def index_headers(root):
    """Maps each layer to the file names it holds (a template such as
    version.h.in under the name it generates), and returns the names that
    are generated (included as "edgepin/<name>" from the build tree)."""
    names, generated = {}, set()
    for layer, d in layer_dirs(root):
        names[layer] = set()
        for path in source_files(d):
            name = os.path.basename(path)
            if name.endswith(".in"):
                name = name[:-3]
                generated.add(name)
            names[layer].add(name)
    return names, generated


def resolve(names, layer, name):
    """The layer a quoted include names, as the compiler would find it from
    `layer`: its own directory first (lb/ and node-proxy/ may share a file
    name: neither sees the other), then common/. Returns a layer, "missing",
    or "ambiguous" (a name twice in common/)."""
    if name in names.get(layer, ()):
        return layer
    in_common = [l for l in COMMON if name in names.get(l, ())]
    if len(in_common) > 1:
        return "ambiguous"
    if in_common:
        return in_common[0]
    elsewhere = [l for l in ("lb", "node-proxy") if name in names.get(l, ())]
    return elsewhere[0] if elsewhere else "missing"


def check(root):
    """Returns the violations as 'path:line: message' strings."""
    names, generated = index_headers(root)
    problems = []
    if not any(layer in COMMON for layer in names):
        problems.append("%s: no common/<library>/ directories found" % root)
    for layer, d in layer_dirs(root):
        allowed, allowed_ext = LAYERS[layer]
        for path in source_files(d):
            rel = os.path.relpath(path, root)
            with open(path, encoding="utf-8", errors="replace") as f:
                for lineno, line in enumerate(f, 1):
                    m = INCLUDE.match(line)
                    if not m:
                        continue
                    kind, target = m.groups()
                    where = "%s:%d" % (rel, lineno)
                    if kind == "<":
                        lib = next((v for k, v in THIRD_PARTY.items() if target.startswith(k)), None)
                        if lib and lib not in allowed_ext:
                            problems.append("%s: %s (%s) includes <%s>: %s may use only %s" % (
                                where, layer, lib, target, layer,
                                ", ".join(sorted(allowed_ext)) or "the standard library"))
                        continue
                    name = os.path.basename(target)
                    if "/" in target and not (target == "edgepin/" + name and name in generated):
                        problems.append('%s: "%s": include by file name only (each library is its '
                                        "own include root)" % (where, target))
                    target_layer = resolve(names, layer, name)
                    if target_layer == "missing":
                        problems.append('%s: "%s" is in no layer (unknown header)' % (where, target))
                    elif target_layer == "ambiguous":
                        problems.append('%s: "%s" exists in two common/ libraries (file names must '
                                        "be unique)" % (where, target))
                    elif target_layer not in allowed:
                        problems.append('%s: %s includes "%s" from %s; %s may include only %s' % (
                            where, layer, target, target_layer, layer, ", ".join(sorted(allowed))))
    return problems


def self_test():
    """Plants one violation of each kind and requires each to be reported,
    then requires a clean tree to pass. Returns the failures."""
    failures = []
    clean = {
        "common/base/log.h": "#include <string>\n",
        "common/wire/http1.h": '#include "log.h"\n#include <span>\n',
        "common/tls/ssl_ptr.h": '#include <openssl/ssl.h>\n#include "http1.h"\n',
        "common/config/config.h": '#include <nlohmann/json.hpp>\n#include "ssl_ptr.h"\n',
        "common/io/relay.h": '#include <event2/event.h>\n#include "ssl_ptr.h"\n',
        "common/app/cli.h": '#include "config.h"\n#include "relay.h"\n#include "version.h"\n',
        "common/app/version.h.in": "#define V 1\n",
        "lb/router.h": '#include "cli.h"\n',
        "node-proxy/worker.h": '#include "relay.h"\n',
        "node-proxy/affinity.h": '#include "worker.h"\n',
        "lb/worker.h": '#include "router.h"\n#include "edgepin/version.h"\n',
        "lb/worker.cpp": '#include "worker.h"\n',
    }
    planted = {
        "common/base/bad1.cpp": ('#include "http1.h"\n', "base includes \"http1.h\" from wire"),
        "common/wire/bad2.cpp": ("#include <openssl/ssl.h>\n", "wire (openssl) includes"),
        "common/wire/bad3.cpp": ('#include "relay.h"\n', "wire includes \"relay.h\" from io"),
        "common/tls/bad4.cpp": ('#include "config.h"\n', "tls includes \"config.h\" from config"),
        "common/config/bad5.cpp": ("#include <event2/event.h>\n", "config (libevent)"),
        "common/io/bad6.cpp": ('#include "cli.h"\n', "io includes \"cli.h\" from app"),
        "common/io/bad7.cpp": ('#include "router.h"\n', "io includes \"router.h\" from lb"),
        "common/app/bad8.cpp": ('#include "affinity.h"\n', "app includes \"affinity.h\" from node-proxy"),
        "lb/bad9.cpp": ('#include "affinity.h"\n', "lb includes \"affinity.h\" from node-proxy"),
        "node-proxy/bad10.cpp": ('#include "router.h"\n', "node-proxy includes \"router.h\" from lb"),
        "lb/bad11.cpp": ('#include "common/io/relay.h"\n', "include by file name only"),
        "lb/bad12.cpp": ('#include "nowhere.h"\n', "is in no layer"),
        # Reported where it is included (the compiler would pick either).
        "common/io/log.h": ("#pragma once\n", "exists in two common/ libraries", "common/wire/http1.h"),
    }
    with tempfile.TemporaryDirectory() as tmp:
        for rel, text in clean.items():
            os.makedirs(os.path.dirname(os.path.join(tmp, rel)), exist_ok=True)
            with open(os.path.join(tmp, rel), "w") as f:
                f.write(text)
        got = check(tmp)
        if got:
            failures.append("a clean tree was reported: %s" % got)
        for rel, (text, expect, *where) in planted.items():
            where = where[0] if where else rel
            with open(os.path.join(tmp, rel), "w") as f:
                f.write(text)
            got = check(tmp)
            if len(got) != 1 or not got[0].startswith(where + ":1: ") or expect not in got[0]:
                failures.append("%s (%r): expected one report containing %r, got %s" % (
                    rel, text.strip(), expect, got))
            os.unlink(os.path.join(tmp, rel))
    return failures


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
    parser.add_argument("--self-test", action="store_true")
    args = parser.parse_args()
    if args.self_test:
        failures = self_test()
        for f in failures:
            print("self-test: " + f)
        print("self-test: %s" % ("FAILED" if failures else "every planted violation was reported"))
        return 1 if failures else 0
    problems = check(os.path.abspath(args.root))
    for p in problems:
        print(p)
    print("layering: %d violation(s)" % len(problems))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
