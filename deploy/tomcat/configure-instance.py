#!/usr/bin/python3
"""Turn a fresh tomcat10-instance-create instance into an Edgepin backend.

Called by make-instance.sh; edits the instance's conf/ in place:

server.xml (parsed and rewritten with xml.etree, never patched as text):
  - exactly one Connector: HTTP/1.1 (NIO) on ADDRESS:PORT; the AJP and TLS
    connectors and any other connector are removed. TLS is the
    node-proxy's job; Tomcat only ever talks to it over loopback.
  - the shutdown port: PORT or -1 (disabled; stop the JVM by signal).
    When enabled it listens on ADDRESS with a random shutdown word.
  - RemoteIpValve first on the Engine, trusting 127.0.0.0/8 and ::1 only,
    with X-Forwarded-For, X-Forwarded-Proto and X-Forwarded-Port.
  - jvmRoute on the Engine when given (JSESSIONID gets ".ROUTE").
  - no user database, realm or APR listener (no logins, no TLS here), no
    auto-deployment scanner; the access log goes to logs/access.log with
    the client address as RemoteIpValve rewrote it.
context.xml: no session persistence across restarts, no class-path jar
  scanning.
catalina.properties: no jar is scanned for TLDs or web fragments.

Each of these removes work from startup or from the request path; see
deploy/tomcat/README.md for the measured effect.
"""

import argparse
import ipaddress
import os
import re
import secrets
import sys
import xml.etree.ElementTree as ET

REMOTE_IP_VALVE = "org.apache.catalina.valves.RemoteIpValve"
ACCESS_LOG_VALVE = "org.apache.catalina.valves.AccessLogValve"

# Tomcat compares internalProxies (a regular expression) with the peer
# address as Java prints it: IPv4 dotted quad, IPv6 in full form
# (0:0:0:0:0:0:0:1); ::1 is listed too in case the short form appears.
INTERNAL_PROXIES = (r"127\.\d{1,3}\.\d{1,3}\.\d{1,3}"
                    r"|0:0:0:0:0:0:0:1|::1")

# The client address as RemoteIpValve set it (%a with
# requestAttributesEnabled), the request, status, bytes, time taken in
# microseconds (%D, Tomcat 10) and the session id: enough to see which
# session hit which node.
ACCESS_LOG_PATTERN = '%a %t "%r" %s %b %D %S'

# Names the JVM and the shell command line can carry without quoting.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# A jvmRoute is appended to JSESSIONID after a '.', so it has none itself.
ROUTE_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

# Java properties: a later definition of a key replaces an earlier one,
# so appending overrides Debian's long jarsToSkip list without editing it.
CATALINA_PROPERTIES_OVERRIDES = """
# --- Edgepin (deploy/tomcat/configure-instance.py) ---
# The demo app has no tag libraries and no web fragments: skip scanning
# every jar for them, which is most of Tomcat's deployment time.
tomcat.util.scan.StandardJarScanFilter.jarsToSkip=*.jar
tomcat.util.scan.StandardJarScanFilter.jarsToScan=
"""

CONTEXT_XML = """<?xml version="1.0" encoding="UTF-8"?>
<!-- Written by Edgepin's deploy/tomcat/configure-instance.py.
     Applies to every web application of this instance. -->
<Context>
    <!-- pathname="": sessions live in memory only and die with the JVM,
         as they do for the legacy applications Edgepin protects; a
         restarted node starts without sessions (and starts faster). -->
    <Manager pathname="" />
    <!-- Nothing on the class path or in manifests holds TLDs or web
         fragments for the demo app. -->
    <JarScanner scanClassPath="false" scanManifest="false" />
</Context>
"""


def fail(message):
    print(f"configure-instance: {message}", file=sys.stderr)
    sys.exit(1)


def parse_port(text, what, allow_disabled=False):
    try:
        port = int(text, 10)
    except ValueError:
        fail(f"{what} '{text}' is not a number")
    if allow_disabled and port == -1:
        return port
    if not 1 <= port <= 65535:
        fail(f"{what} {port} is not a TCP port (1-65535"
             f"{' or -1' if allow_disabled else ''})")
    return port


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="CATALINA_BASE")
    parser.add_argument("--name", required=True, help="node name")
    parser.add_argument("--address", required=True, help="IP to bind")
    parser.add_argument("--port", required=True)
    parser.add_argument("--shutdown-port", required=True)
    parser.add_argument("--jvm-route", default="")
    parser.add_argument("--check-only", action="store_true",
                        help="validate the arguments, change nothing")
    args = parser.parse_args(argv)
    if not NAME_RE.match(args.name):
        fail(f"node name '{args.name}' must match {NAME_RE.pattern}")
    if args.jvm_route and not ROUTE_RE.match(args.jvm_route):
        fail(f"jvmRoute '{args.jvm_route}' must match {ROUTE_RE.pattern}")
    try:
        args.address = str(ipaddress.ip_address(args.address))
    except ValueError:
        fail(f"address '{args.address}' is not an IP address")
    args.port = parse_port(args.port, "HTTP port")
    args.shutdown_port = parse_port(args.shutdown_port, "shutdown port",
                                    allow_disabled=True)
    if args.port == args.shutdown_port:
        fail("HTTP port and shutdown port must differ")
    return args


def only_child(parent, tag, path):
    found = parent.findall(tag)
    if len(found) != 1:
        fail(f"{path}: expected one <{tag}>, found {len(found)}")
    return found[0]


def remove_all(parent, predicate):
    for child in [c for c in parent if predicate(c)]:
        parent.remove(child)


def is_valve(element, class_name):
    return element.tag == "Valve" and element.get("className") == class_name


def configure_server_xml(path, args):
    # Comments (the commented-out connectors among them) are dropped on
    # purpose: what remains is the configuration that runs.
    tree = ET.parse(path)
    server = tree.getroot()
    if server.tag != "Server":
        fail(f"{path}: root element is <{server.tag}>, not <Server>")

    server.set("port", str(args.shutdown_port))
    if args.shutdown_port == -1:
        server.attrib.pop("address", None)
        server.set("shutdown", "SHUTDOWN")
    else:
        # Bound to the node's own address so that nodes on different
        # loopback addresses can use the same shutdown port; a random word
        # so that another local process cannot stop this one
        # (catalina.sh stop reads it from this file).
        server.set("address", args.address)
        server.set("shutdown", secrets.token_hex(16))

    # The version banner stays; the 30 lines of JVM arguments go (they are
    # in bin/setenv.sh) so that a failed start's log tail shows the error.
    for listener in server.findall("Listener"):
        if listener.get("className") == "org.apache.catalina.startup.VersionLoggerListener":
            listener.set("logArgs", "false")

    # No TLS inside Tomcat (APR/OpenSSL unused); no user database without
    # a realm that reads it.
    remove_all(server, lambda e: e.tag == "Listener" and e.get("className") in (
        "org.apache.catalina.core.AprLifecycleListener",
        "org.apache.catalina.mbeans.GlobalResourcesLifecycleListener"))
    remove_all(server, lambda e: e.tag == "GlobalNamingResources")

    service = only_child(server, "Service", path)
    remove_all(service, lambda e: e.tag in ("Connector", "Executor"))
    connector = ET.Element("Connector", {
        "protocol": "HTTP/1.1",
        "address": args.address,
        "port": str(args.port),
        "connectionTimeout": "20000",
        "maxParameterCount": "1000",
    })
    # A Service's Connectors must precede its Engine.
    engine = only_child(service, "Engine", path)
    service.insert(list(service).index(engine), connector)

    if args.jvm_route:
        engine.set("jvmRoute", args.jvm_route)
    else:
        engine.attrib.pop("jvmRoute", None)
    remove_all(engine, lambda e: e.tag == "Realm")
    remove_all(engine, lambda e: is_valve(e, REMOTE_IP_VALVE))
    # First in the Engine, so that every Host, valve and application sees
    # the client's address, scheme and port, not the node-proxy's.
    engine.insert(0, ET.Element("Valve", {
        "className": REMOTE_IP_VALVE,
        "remoteIpHeader": "X-Forwarded-For",
        "protocolHeader": "X-Forwarded-Proto",
        "protocolHeaderHttpsValue": "https",
        "portHeader": "X-Forwarded-Port",
        "internalProxies": INTERNAL_PROXIES,
    }))

    host = only_child(engine, "Host", path)
    # Deployment happens once, at startup; nothing is hot-deployed.
    host.set("autoDeploy", "false")
    host.set("deployOnStartup", "true")
    host.set("unpackWARs", "false")
    remove_all(host, lambda e: is_valve(e, ACCESS_LOG_VALVE))
    host.append(ET.Element("Valve", {
        "className": ACCESS_LOG_VALVE,
        "directory": "logs",
        "prefix": "access",
        "suffix": ".log",
        "rotatable": "false",
        # Written per request so a test can read it right after a request.
        "buffered": "false",
        "requestAttributesEnabled": "true",
        "pattern": ACCESS_LOG_PATTERN,
    }))

    ET.indent(tree, space="  ")
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        tree.write(f, encoding="UTF-8", xml_declaration=True)
        f.write(b"\n")
    os.replace(tmp, path)


def write_file(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def main(argv):
    args = parse_args(argv)
    if args.check_only:
        return 0
    conf = os.path.join(args.base, "conf")
    if not os.path.isfile(os.path.join(conf, "server.xml")):
        fail(f"{conf}/server.xml not found: not a Tomcat instance")
    configure_server_xml(os.path.join(conf, "server.xml"), args)
    write_file(os.path.join(conf, "context.xml"), CONTEXT_XML)
    properties = os.path.join(conf, "catalina.properties")
    with open(properties, encoding="utf-8") as f:
        text = f.read()
    if CATALINA_PROPERTIES_OVERRIDES not in text:
        write_file(properties, text.rstrip("\n") + "\n" + CATALINA_PROPERTIES_OVERRIDES)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
