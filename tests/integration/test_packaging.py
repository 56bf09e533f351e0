"""The deploy files: systemd units, `cmake --install` layout, Debian package.

Run through ctest, which sets:
    EDGEPIN_SOURCE_DIR  the source tree (default: two levels above this file)
    EDGEPIN_BUILD_DIR   a configured build tree where edgepin-lb and
                        edgepin-node-proxy are built (Install and Package only)
    EDGEPIN_CMAKE, EDGEPIN_CPACK  the cmake and cpack that configured it
                        (default: from PATH)

UnitFiles reads the unit files in deploy/systemd/ and needs no build.
Install runs `cmake --install` into temporary DESTDIRs. Package runs
`cpack -G DEB` on the build tree with its output and staging directory in a
temporary directory (the build tree keeps no trace), then inspects the .deb
with dpkg-deb and runs its maintainer scripts against stub commands.
cpack first runs the tree's "preinstall" step, which builds whatever of
"all" is out of date: under ctest everything is built already, so it builds
nothing. (A tree where only the two binaries are built can be configured
with -DCMAKE_SKIP_INSTALL_ALL_DEPENDENCY=ON to package them as they are.)
Nothing here touches the system outside temporary directories.
"""

import os
import re
import shutil
import stat
import subprocess
import tempfile
import unittest

SOURCE_DIR = os.environ.get("EDGEPIN_SOURCE_DIR") or os.path.abspath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
UNIT_SRC = os.path.join(SOURCE_DIR, "deploy", "systemd")
LB_UNIT = "edgepin-lb.service"
NP_UNIT = "edgepin-node-proxy@.service"
UNITS = (LB_UNIT, NP_UNIT)
# The configuration-push units: a .path watcher and the oneshot it starts,
# per daemon (deploy/README.md, "Configuration pushes").
CONFIG_UNITS = ("edgepin-lb-config.path", "edgepin-lb-config.service",
                "edgepin-node-proxy-config@.path", "edgepin-node-proxy-config@.service")
HA_FILES = ("keepalived.conf", "edgepin-site.conf.example", "edgepin-lb-check",
            "edgepin-vrrp-notify", "99-edgepin-nonlocal-bind.conf")
BINARIES = ("edgepin-lb", "edgepin-node-proxy")
CONFIG_FILES = ("cluster.json", "lb.json", "node-proxy.json", "README.md")
# Every command below is bounded; the package build is the slowest step.
COMMAND_TIMEOUT = 180
CMAKE = os.environ.get("EDGEPIN_CMAKE") or "cmake"
CPACK = os.environ.get("EDGEPIN_CPACK") or "cpack"

# The hardening every unit must carry, with the exact value.
HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "RestrictNamespaces": "yes",
    "LockPersonality": "yes",
    "MemoryDenyWriteExecute": "yes",
    "SystemCallArchitectures": "native",
    "RuntimeDirectory": "edgepin",
    "User": "edgepin",
    "Group": "edgepin",
    "Restart": "on-failure",
}

# The directives these units may use, per section: a misspelt key (which
# systemd only warns about, and then ignores) fails the syntax check.
KNOWN_KEYS = {
    "Unit": {"Description", "Documentation", "Wants", "After"},
    "Service": {
        "Type", "NotifyAccess", "WatchdogSec", "User", "Group", "ExecStartPre", "ExecStart", "ExecReload", "Restart",
        "RestartSec", "TimeoutStopSec", "LimitNOFILE", "RuntimeDirectory",
        "RuntimeDirectoryMode", "RuntimeDirectoryPreserve", "UMask", "AmbientCapabilities",
        "CapabilityBoundingSet", "NoNewPrivileges", "ProtectSystem", "ProtectHome",
        "PrivateTmp", "PrivateDevices", "PrivateMounts", "ProtectKernelTunables",
        "ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups", "ProtectClock",
        "ProtectHostname", "ProtectProc", "RestrictAddressFamilies", "RestrictNamespaces",
        "RestrictRealtime", "RestrictSUIDSGID", "RemoveIPC", "LockPersonality",
        "MemoryDenyWriteExecute", "SystemCallArchitectures", "SystemCallFilter",
        "SystemCallErrorNumber",
    },
    "Install": {"WantedBy"},
}
BOOLEAN_KEYS = {
    "NoNewPrivileges", "ProtectHome", "PrivateTmp", "PrivateDevices", "PrivateMounts",
    "ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs",
    "ProtectControlGroups", "ProtectClock", "ProtectHostname", "RestrictNamespaces",
    "RestrictRealtime", "RestrictSUIDSGID", "RemoveIPC", "LockPersonality",
    "MemoryDenyWriteExecute", "RuntimeDirectoryPreserve",
}


def parse_unit(text, name="unit"):
    """Parses systemd unit text into {section: [(key, value), ...]}, keeping
    repeated keys in order. Raises ValueError on a line that is neither a
    comment, a section header nor Key=Value, or on a key outside a section."""
    sections = {}
    current = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.endswith("\\"):
            raise ValueError("%s:%d: line continuation is not used here" % (name, number))
        m = re.fullmatch(r"\[([A-Za-z]+)\]", line)
        if m:
            current = sections.setdefault(m.group(1), [])
            continue
        m = re.fullmatch(r"([A-Za-z][A-Za-z0-9]*)=(.*)", line)
        if not m:
            raise ValueError("%s:%d: not a Key=Value line: %r" % (name, number, raw))
        if current is None:
            raise ValueError("%s:%d: %s outside a section" % (name, number, m.group(1)))
        current.append((m.group(1), m.group(2).strip()))
    return sections


def values(unit, section, key):
    """Every value of `key` in `section`, in order."""
    return [v for k, v in unit.get(section, []) if k == key]


def one(unit, section, key):
    """The single value of `key`; AssertionError if it is missing or repeated."""
    found = values(unit, section, key)
    if len(found) != 1:
        raise AssertionError("%s= appears %d times in [%s], expected once" % (key, len(found), section))
    return found[0]


def read_unit(path):
    with open(path, encoding="utf-8") as f:
        return parse_unit(f.read(), os.path.basename(path))


def run(argv, **kwargs):
    """subprocess.run with a timeout, text output, and the command and its
    output in the error when it fails."""
    kwargs.setdefault("timeout", COMMAND_TIMEOUT)
    result = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)
    if result.returncode != 0:
        raise AssertionError("%s exited %d\nstdout:\n%s\nstderr:\n%s" % (
            " ".join(argv), result.returncode, result.stdout[-4000:], result.stderr[-4000:]))
    return result


def build_dir():
    path = os.environ.get("EDGEPIN_BUILD_DIR")
    if not path:
        raise RuntimeError("EDGEPIN_BUILD_DIR is not set: run this test through ctest, or export "
                           "EDGEPIN_BUILD_DIR=/path/to/a/build/tree with the binaries built")
    for sub, name in (("lb", "edgepin-lb"), ("node-proxy", "edgepin-node-proxy")):
        if not os.access(os.path.join(path, sub, name), os.X_OK):
            raise RuntimeError("%s/%s/%s is not built" % (path, sub, name))
    return path


def cmake_install(destdir, prefix):
    """`cmake --install` of the build tree into DESTDIR with `prefix`."""
    env = dict(os.environ, DESTDIR=destdir)
    return run([CMAKE, "--install", build_dir(), "--prefix", prefix], env=env)


def tree(root):
    """Every file and symlink under root, as paths relative to it."""
    out = set()
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            out.add(os.path.relpath(os.path.join(dirpath, f), root))
    return out


def exec_argv(value):
    """The argv of an Exec*= value (these units use no quoting or prefixes)."""
    return value.split()


class UnitFiles(unittest.TestCase):
    """The unit files as written in deploy/systemd/ (the Debian layout)."""

    def setUp(self):
        self.units = {u: read_unit(os.path.join(UNIT_SRC, u)) for u in UNITS}

    def test_syntax_uses_only_known_keys_and_valid_booleans(self):
        for name, unit in self.units.items():
            self.assertEqual(set(unit), {"Unit", "Service", "Install"}, name)
            for section, entries in unit.items():
                for key, value in entries:
                    self.assertIn(key, KNOWN_KEYS[section], "%s: unknown key [%s] %s" % (name, section, key))
                    if key in BOOLEAN_KEYS:
                        self.assertIn(value, ("yes", "no"), "%s: %s=%s" % (name, key, value))
            self.assertEqual(one(unit, "Install", "WantedBy"), "multi-user.target", name)

    def test_hardening_keys_present(self):
        for name, unit in self.units.items():
            for key, expected in HARDENING.items():
                self.assertEqual(one(unit, "Service", key), expected, "%s: %s" % (name, key))
            families = " ".join(values(unit, "Service", "RestrictAddressFamilies")).split()
            self.assertEqual(sorted(families), ["AF_INET", "AF_INET6", "AF_UNIX"], name)
            filters = values(unit, "Service", "SystemCallFilter")
            self.assertEqual(filters[0], "@system-service", name)
            # Later lines may only take calls away (a "~" deny list).
            for extra in filters[1:]:
                self.assertTrue(extra.startswith("~"), "%s: SystemCallFilter=%s" % (name, extra))
            self.assertGreaterEqual(int(one(unit, "Service", "LimitNOFILE")), 65536, name)
            # Shared by the lb and every node-proxy instance on a host, and
            # systemd does not reference-count it: it must outlive a stop.
            self.assertEqual(one(unit, "Service", "RuntimeDirectoryPreserve"), "yes", name)

    def test_capabilities_lb_binds_low_ports_node_proxy_has_none(self):
        lb = self.units[LB_UNIT]
        self.assertEqual(one(lb, "Service", "AmbientCapabilities"), "CAP_NET_BIND_SERVICE")
        self.assertEqual(one(lb, "Service", "CapabilityBoundingSet"), "CAP_NET_BIND_SERVICE")
        np = self.units[NP_UNIT]
        self.assertEqual(values(np, "Service", "AmbientCapabilities"), [])
        self.assertEqual(one(np, "Service", "CapabilityBoundingSet"), "")

    def test_commands_check_run_in_foreground_and_reload_by_sighup(self):
        expected = {
            LB_UNIT: ["/usr/bin/edgepin-lb", "--config-dir", "/etc/edgepin"],
            NP_UNIT: ["/usr/bin/edgepin-node-proxy", "--config-dir", "/etc/edgepin", "--node", "%i"],
        }
        for name, unit in self.units.items():
            start = exec_argv(one(unit, "Service", "ExecStart"))
            self.assertEqual(start, expected[name], name)
            self.assertEqual(exec_argv(one(unit, "Service", "ExecStartPre")), start + ["--check"], name)
            reload = [exec_argv(v) for v in values(unit, "Service", "ExecReload")]
            self.assertEqual(reload, [start + ["--check"], ["/bin/kill", "-HUP", "$MAINPID"]], name)
            # Foreground, and it says when it is ready (sd_notify); only the
            # main process may notify, and the watchdog is on.
            self.assertEqual(one(unit, "Service", "Type"), "notify", name)
            self.assertEqual(one(unit, "Service", "NotifyAccess"), "main", name)
            self.assertEqual(one(unit, "Service", "WatchdogSec"), "10s", name)

    def test_config_push_units_check_before_they_reload(self):
        for daemon, node in (("edgepin-lb", ""), ("edgepin-node-proxy", "@")):
            inst = "%i" if node else ""
            path = read_unit(os.path.join(UNIT_SRC, "%s-config%s.path" % (daemon, node)))
            self.assertIn("/etc/edgepin", values(path, "Path", "PathChanged"), daemon)
            self.assertEqual(one(path, "Path", "Unit"),
                             "%s-config%s.service" % (daemon, "@%i" if node else ""), daemon)
            service = read_unit(os.path.join(UNIT_SRC, "%s-config%s.service" % (daemon, node)))
            self.assertEqual(one(service, "Service", "Type"), "oneshot", daemon)
            self.assertEqual(one(service, "Service", "User"), "edgepin", daemon)
            starts = [exec_argv(v) for v in values(service, "Service", "ExecStart")]
            check = ["/usr/bin/" + daemon, "--config-dir", "/etc/edgepin"]
            check += ["--node", "%i"] if node else []
            # The check first: a failing command ends a oneshot, so a broken
            # push never reaches the reload.
            self.assertEqual(starts, [check + ["--check"],
                                      ["+/bin/systemctl", "try-reload-or-restart",
                                       "%s%s.service" % (daemon, "@%i" if node else "")]], daemon)

    def test_sysusers_file_declares_the_edgepin_system_user(self):
        with open(os.path.join(UNIT_SRC, "edgepin.sysusers.conf"), encoding="utf-8") as f:
            lines = [l.split() for l in f if l.strip() and not l.startswith("#")]
        self.assertEqual(len(lines), 1)
        self.assertEqual(lines[0][:3], ["u", "edgepin", "-"])


class Install(unittest.TestCase):
    """`cmake --install` into a DESTDIR, for the package prefix and another."""

    @classmethod
    def setUpClass(cls):
        cls._tmp = tempfile.TemporaryDirectory(prefix="edgepin-install-")
        cls.destdir = os.path.join(cls._tmp.name, "root")
        cmake_install(cls.destdir, "/usr")

    @classmethod
    def tearDownClass(cls):
        cls._tmp.cleanup()

    def path(self, absolute):
        return os.path.join(self.destdir, absolute.lstrip("/"))

    def test_layout_is_exactly_the_package_layout(self):
        expected = {
            "usr/bin/edgepin-lb",
            "usr/bin/edgepin-node-proxy",
            "usr/lib/systemd/system/" + LB_UNIT,
            "usr/lib/systemd/system/" + NP_UNIT,
            "usr/lib/sysusers.d/edgepin.conf",
            "usr/share/doc/edgepin/README.md",
            "usr/share/doc/edgepin/DEPLOY.md",
        } | {"etc/edgepin/" + f for f in CONFIG_FILES} | {
            "usr/lib/systemd/system/" + u for u in CONFIG_UNITS} | {
            "usr/share/doc/edgepin/ha/" + f for f in HA_FILES}
        # Exact: no pki/ or keys/ from a demo run in the source tree, no
        # test helper binaries.
        self.assertEqual(tree(self.destdir), expected)
        for b in BINARIES:
            mode = os.stat(self.path("/usr/bin/" + b)).st_mode
            self.assertEqual(stat.S_IMODE(mode), 0o755, b)
        for f in CONFIG_FILES:
            installed = self.path("/etc/edgepin/" + f)
            self.assertEqual(stat.S_IMODE(os.stat(installed).st_mode), 0o644, f)
            with open(installed, "rb") as a, open(os.path.join(SOURCE_DIR, "conf", f), "rb") as b:
                self.assertEqual(a.read(), b.read(), f)

    def check_units_match_layout(self, destdir, bindir, confdir, unitdir):
        for name in UNITS:
            unit = read_unit(os.path.join(destdir, unitdir.lstrip("/"), name))
            for key in ("ExecStartPre", "ExecStart", "ExecReload"):
                for value in values(unit, "Service", key):
                    argv = exec_argv(value)
                    if argv[0] == "/bin/kill":
                        continue
                    self.assertEqual(os.path.dirname(argv[0]), bindir, "%s %s" % (name, key))
                    self.assertTrue(os.access(os.path.join(destdir, argv[0].lstrip("/")), os.X_OK),
                                    "%s %s names %s, which is not installed" % (name, key, argv[0]))
                    self.assertEqual(argv[argv.index("--config-dir") + 1], confdir, "%s %s" % (name, key))
            for f in CONFIG_FILES:
                self.assertTrue(os.path.isfile(os.path.join(destdir, confdir.lstrip("/"), f)), f)
        for name in CONFIG_UNITS:
            unit = read_unit(os.path.join(destdir, unitdir.lstrip("/"), name))
            for watched in values(unit, "Path", "PathChanged"):
                self.assertTrue(watched == confdir or watched.startswith(confdir + "/"), (name, watched))
            for value in values(unit, "Service", "ExecStart"):
                argv = exec_argv(value)
                if os.path.basename(argv[0]).startswith("edgepin-"):
                    self.assertEqual(os.path.dirname(argv[0]), bindir, name)
                    self.assertEqual(argv[argv.index("--config-dir") + 1], confdir, name)

    def test_installed_units_name_the_installed_binaries_and_config(self):
        self.check_units_match_layout(self.destdir, "/usr/bin", "/etc/edgepin", "/usr/lib/systemd/system")
        # Apart from those paths, the installed units are the repository's.
        for name in UNITS + CONFIG_UNITS:
            with open(os.path.join(UNIT_SRC, name), encoding="utf-8") as f:
                src = f.read()
            with open(self.path("/usr/lib/systemd/system/" + name), encoding="utf-8") as f:
                self.assertEqual(f.read(), src, name)

    def test_another_prefix_moves_everything_and_units_follow(self):
        with tempfile.TemporaryDirectory(prefix="edgepin-install-") as tmp:
            cmake_install(tmp, "/usr/local")
            self.check_units_match_layout(tmp, "/usr/local/bin", "/usr/local/etc/edgepin",
                                          "/usr/local/lib/systemd/system")
            self.assertFalse(os.path.exists(os.path.join(tmp, "etc")), "nothing outside the prefix")
            with open(os.path.join(tmp, "usr/local/lib/systemd/system", LB_UNIT), encoding="utf-8") as f:
                self.assertIn("file:/usr/local/share/doc/edgepin/DEPLOY.md", f.read())

    def test_reinstall_keeps_an_edited_configuration(self):
        with tempfile.TemporaryDirectory(prefix="edgepin-install-") as tmp:
            cmake_install(tmp, "/usr")
            lb_json = os.path.join(tmp, "etc/edgepin/lb.json")
            with open(lb_json, "a", encoding="utf-8") as f:
                f.write("\n")
            with open(lb_json, encoding="utf-8") as f:
                edited = f.read()
            os.remove(os.path.join(tmp, "etc/edgepin/cluster.json"))
            result = cmake_install(tmp, "/usr")
            with open(lb_json, encoding="utf-8") as f:
                self.assertEqual(f.read(), edited)
            self.assertIn("Keeping existing: %s" % lb_json, result.stdout)
            # A missing file is installed again.
            self.assertTrue(os.path.isfile(os.path.join(tmp, "etc/edgepin/cluster.json")))

    def test_installed_lb_checks_the_example_config_without_any_key(self):
        # The example directory has no pki/ or keys/: the lb needs none,
        # the node-proxy cannot start without its node's files.
        confdir = self.path("/etc/edgepin")
        lb = run([self.path("/usr/bin/edgepin-lb"), "--config-dir", confdir, "--check"], timeout=30)
        self.assertIn("edgepin-lb: configuration valid:", lb.stdout)
        np = subprocess.run([self.path("/usr/bin/edgepin-node-proxy"), "--config-dir", confdir,
                             "--node", "node1", "--check"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=30)
        self.assertEqual(np.returncode, 1, np.stderr)
        self.assertRegex(np.stderr, r"^edgepin-node-proxy: .*(pki|keys)/")

    def test_systemd_analyze_verify_accepts_the_installed_units(self):
        analyze = shutil.which("systemd-analyze")
        with tempfile.TemporaryDirectory(prefix="edgepin-units-") as tmp:
            # systemd-analyze checks that each command exists: point the
            # units at the DESTDIR, and instantiate the templates.
            for name in UNITS + CONFIG_UNITS:
                with open(self.path("/usr/lib/systemd/system/" + name), encoding="utf-8") as f:
                    text = f.read().replace("/usr/bin/", self.path("/usr/bin/"))
                target = name.replace("@.service", "@node1.service")
                with open(os.path.join(tmp, target), "w", encoding="utf-8") as f:
                    f.write(text)
                if "@" in name:
                    os.rename(os.path.join(tmp, target),
                              os.path.join(tmp, name.replace("@.", "@node1.")))
            targets = [os.path.join(tmp, n.replace("@.", "@node1.")) for n in UNITS + CONFIG_UNITS]
            if analyze is None:
                # No systemd on this machine: the strict parse of the daemon
                # units is what is left.
                for t in targets[:len(UNITS)]:
                    unit = read_unit(t)
                    for section, entries in unit.items():
                        for key, _ in entries:
                            self.assertIn(key, KNOWN_KEYS[section], t)
                print("systemd-analyze not installed: checked the unit syntax only")
                return
            for t in targets:
                # Unknown keys and bad values are only warnings (exit 0):
                # any output at all is a failure.
                result = subprocess.run([analyze, "verify", "--man=no", t], stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True, timeout=60)
                self.assertEqual((result.returncode, result.stdout), (0, ""), t)
                if not t.endswith(".service"):
                    continue  # a .path unit runs nothing of its own
                # The offline security review (0.0 best .. 10.0 worst): the
                # hardening keeps every service in systemd's "OK" band or better.
                result = subprocess.run([analyze, "security", "--offline=yes", "--threshold=20", t],
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                        timeout=60)
                self.assertEqual(result.returncode, 0, result.stdout[-3000:])
                self.assertRegex(result.stdout, r"Overall exposure level for \S+: [01]\.\d")


class Package(unittest.TestCase):
    """`cpack -G DEB` in the build tree, output in a temporary directory."""

    @classmethod
    def setUpClass(cls):
        cls._tmp = tempfile.TemporaryDirectory(prefix="edgepin-deb-")
        out = os.path.join(cls._tmp.name, "out")
        build = build_dir()
        run([CPACK, "-G", "DEB", "--config", os.path.join(build, "CPackConfig.cmake"), "-B", out],
            cwd=cls._tmp.name)
        debs = [f for f in os.listdir(out) if f.endswith(".deb")]
        if len(debs) != 1:
            raise AssertionError("expected one .deb in %s, found %s" % (out, os.listdir(out)))
        cls.deb = os.path.join(out, debs[0])
        cls.control = os.path.join(cls._tmp.name, "control")
        run(["dpkg-deb", "--control", cls.deb, cls.control])

    @classmethod
    def tearDownClass(cls):
        cls._tmp.cleanup()

    def field(self, name):
        return run(["dpkg-deb", "--field", self.deb, name]).stdout.strip()

    def test_file_name_and_control_fields(self):
        arch = run(["dpkg", "--print-architecture"]).stdout.strip()
        version = self.field("Version")
        self.assertRegex(version, r"^\d+\.\d+\.\d+-1$")
        self.assertEqual(os.path.basename(self.deb), "edgepin_%s_%s.deb" % (version, arch))
        self.assertEqual(self.field("Package"), "edgepin")
        self.assertEqual(self.field("Architecture"), arch)
        self.assertEqual(self.field("Section"), "net")
        self.assertRegex(self.field("Maintainer"), r"^[^<>]+ <[^<>@\s]+@[^<>\s]+>$")
        description = self.field("Description")
        self.assertIn("edgepin-lb", description)
        self.assertIn("No service is enabled or started on installation.", description)

    def test_dependencies_come_from_shlibdeps_plus_adduser_not_tomcat(self):
        depends = [d.strip().split()[0] for d in self.field("Depends").split(",")]
        for lib in ("libc6", "libssl3", "libstdc++6", "adduser"):
            self.assertIn(lib, depends)
        self.assertTrue([d for d in depends if d.startswith("libevent-")], depends)
        self.assertFalse([d for d in depends if "tomcat" in d], depends)
        self.assertIn("tomcat10", self.field("Suggests"))
        info = run(["dpkg-deb", "--info", self.deb]).stdout
        self.assertIn("Depends: ", info)
        self.assertRegex(info, r"\bconffiles\b")

    def test_contents_binaries_units_and_example_config_owned_by_root(self):
        listing = run(["dpkg-deb", "--contents", self.deb]).stdout.splitlines()
        entries = {}
        for line in listing:
            parts = line.split()
            # -rwxr-xr-x root/root 123 2024-01-01 00:00 ./usr/bin/edgepin-lb
            entries[parts[5]] = (parts[0], parts[1])
        files = {p for p, (mode, _) in entries.items() if mode.startswith("-")}
        expected = {
            "./usr/bin/edgepin-lb", "./usr/bin/edgepin-node-proxy",
            "./usr/lib/systemd/system/" + LB_UNIT, "./usr/lib/systemd/system/" + NP_UNIT,
            "./usr/lib/sysusers.d/edgepin.conf",
            "./usr/share/doc/edgepin/README.md", "./usr/share/doc/edgepin/DEPLOY.md",
        } | {"./etc/edgepin/" + f for f in CONFIG_FILES} | {
            "./usr/lib/systemd/system/" + u for u in CONFIG_UNITS} | {
            "./usr/share/doc/edgepin/ha/" + f for f in HA_FILES}
        self.assertEqual(files, expected)
        for path, (mode, owner) in entries.items():
            self.assertEqual(owner, "root/root", path)
        for b in BINARIES:
            self.assertEqual(entries["./usr/bin/" + b][0], "-rwxr-xr-x", b)
        for f in CONFIG_FILES:
            self.assertEqual(entries["./etc/edgepin/" + f][0], "-rw-r--r--", f)

    def test_packaged_binaries_are_stripped_and_run(self):
        with tempfile.TemporaryDirectory(prefix="edgepin-deb-x-") as tmp:
            run(["dpkg-deb", "--extract", self.deb, tmp])
            lb = os.path.join(tmp, "usr/bin/edgepin-lb")
            self.assertRegex(run([lb, "--version"], timeout=30).stdout, r"^edgepin-lb \d+\.\d+\.\d+ ")
            sections = run(["readelf", "--section-headers", "--wide", lb]).stdout
            self.assertNotIn(".debug_info", sections)
            with open(os.path.join(tmp, "usr/lib/systemd/system", NP_UNIT), encoding="utf-8") as f:
                unit = parse_unit(f.read())
            self.assertEqual(exec_argv(one(unit, "Service", "ExecStart"))[:3],
                             ["/usr/bin/edgepin-node-proxy", "--config-dir", "/etc/edgepin"])

    def test_conffiles_are_the_example_config(self):
        with open(os.path.join(self.control, "conffiles"), encoding="utf-8") as f:
            conffiles = f.read().split()
        self.assertEqual(sorted(conffiles), sorted("/etc/edgepin/" + f for f in CONFIG_FILES))

    def test_maintainer_scripts_are_executable_and_never_start_services(self):
        # The systemctl verbs each script may run (as a command, not in a
        # comment or a message): nothing enables, starts or restarts a unit.
        allowed = {"postinst": {"daemon-reload", "list-units"}, "prerm": {"stop"},
                   "postrm": {"daemon-reload"}}
        for script, verbs in allowed.items():
            path = os.path.join(self.control, script)
            self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o755, script)
            run(["sh", "-n", path])
            used = set()
            with open(path, encoding="utf-8") as f:
                for line in f:
                    code = line.strip()
                    if code.startswith(("#", "echo ", '"')):
                        continue
                    used |= set(re.findall(r"(?:^|[;&|(]\s*)systemctl\s+([a-z-]+)", code))
            self.assertEqual(used, verbs, script)
        with open(os.path.join(self.control, "prerm"), encoding="utf-8") as f:
            text = f.read()
        self.assertRegex(text, r"systemctl stop edgepin-lb\.service 'edgepin-node-proxy@\*\.service'")
        # The push watchers stop first: none may reload a daemon being removed.
        self.assertRegex(text, r"systemctl stop edgepin-lb-config\.path 'edgepin-node-proxy-config@\*\.path'")
        self.assertLess(text.index("edgepin-lb-config.path"), text.index("stop edgepin-lb.service"))

    def run_script(self, script, args, passwd=False, group=False):
        """Runs a maintainer script with getent/adduser/systemctl replaced by
        stubs that log their arguments. Returns (exit code, [logged calls])."""
        with tempfile.TemporaryDirectory(prefix="edgepin-stubs-") as tmp:
            log = os.path.join(tmp, "calls")
            stubs = {
                # getent DB KEY: found only for the databases asked for.
                "getent": 'echo "getent $*" >> "%s"\ncase "$1" in passwd) exit %d;; group) exit %d;; esac\nexit 2\n'
                          % (log, 0 if passwd else 2, 0 if group else 2),
                "adduser": 'echo "adduser $*" >> "%s"\n' % log,
                "systemctl": 'echo "systemctl $*" >> "%s"\n' % log,
            }
            for name, body in stubs.items():
                p = os.path.join(tmp, name)
                with open(p, "w", encoding="utf-8") as f:
                    f.write("#!/bin/sh\n" + body)
                os.chmod(p, 0o755)
            env = dict(os.environ, PATH=tmp + ":/usr/bin:/bin")
            result = subprocess.run(["sh", os.path.join(self.control, script)] + args, env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=30)
            calls = []
            if os.path.exists(log):
                with open(log, encoding="utf-8") as f:
                    calls = f.read().splitlines()
            return result.returncode, calls

    def test_postinst_creates_the_system_user_once(self):
        rc, calls = self.run_script("postinst", ["configure", ""])
        self.assertEqual(rc, 0)
        adds = [c.split() for c in calls if c.startswith("adduser")]
        self.assertEqual(len(adds), 1, calls)
        self.assertIn("--system", adds[0])
        self.assertIn("--group", adds[0])
        self.assertEqual(adds[0][-1], "edgepin")
        self.assertFalse([c for c in calls if re.match(r"systemctl (start|enable|restart)", c)], calls)

        rc, calls = self.run_script("postinst", ["configure", "0.1.0-1"], passwd=True, group=True)
        self.assertEqual(rc, 0)
        self.assertFalse([c for c in calls if c.startswith("adduser")], calls)

        # A group without the user (left behind, or made by hand) is joined.
        rc, calls = self.run_script("postinst", ["configure", ""], passwd=False, group=True)
        self.assertEqual(rc, 0)
        adds = [c.split() for c in calls if c.startswith("adduser")]
        self.assertEqual(len(adds), 1, calls)
        self.assertIn("--ingroup", adds[0])
        self.assertNotIn("--group", adds[0])

    def test_scripts_accept_dpkg_actions_and_refuse_unknown_ones(self):
        for script, actions in (("postinst", ["abort-upgrade"]),
                                ("prerm", ["remove", "upgrade", "deconfigure", "failed-upgrade"]),
                                ("postrm", ["remove", "upgrade", "abort-install", "disappear"])):
            for action in actions:
                rc, calls = self.run_script(script, [action], passwd=True, group=True)
                self.assertEqual(rc, 0, "%s %s" % (script, action))
                self.assertFalse([c for c in calls if c.startswith("adduser")], (script, action, calls))
            rc, _ = self.run_script(script, ["bogus-action"])
            self.assertEqual(rc, 1, script)


if __name__ == "__main__":
    unittest.main()
