"""What every Edgepin benchmark needs, whatever it compares (stdlib only).

bench_lb.py compares edgepin-lb with HAProxy in `mode tcp`; a later
bench_node_proxy.py compares edgepin-node-proxy with HAProxy terminating
TLS. Both are built from the same parts, all here:

- Contender: one balancer or proxy under test (start, stop, PID, the port
  of each frontend role). A benchmark defines one subclass per product and
  gives them the same topology and the same roles.
- alternate(): runs one measurement for every contender, a few times,
  alternating the order each repetition (A B, B A, A B...) so that a drift
  of the shared machine (another job starting, the CPU warming up) hits
  both sides alike.
- ProcSample: VmRSS and utime+stime of a PID from /proc.
- run_client() / HoldClient: edgepin-bench-client, whose last stdout line is
  one JSON object.
- Report: medians, Edgepin/HAProxy ratios, the printed table and the JSON
  file with every raw number.
- Checks: smoke-mode assertions about correctness (bytes relayed, counts),
  never about speed.

Processes are edgepin_testlib.Proc children (tests/integration): stopped by
PID, and stopped at interpreter exit whatever happens. Every wait has a
deadline.
"""

import abc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(SOURCE_DIR, "tests", "integration"))

import edgepin_testlib as t  # noqa: E402  (path set just above)

CLK_TCK = os.sysconf("SC_CLK_TCK")
MIB = 1024 * 1024
GIB = 1024 * MIB


# ----------------------------------------------------------------- binaries

def find_binary(env_name, build_dir, relative):
    """The path in $env_name (ctest sets it), else build_dir/relative.
    Exports it as $env_name, which edgepin_testlib reads. Raises
    RuntimeError if it is not an executable file."""
    path = os.environ.get(env_name) or os.path.join(build_dir, relative)
    if not os.access(path, os.X_OK):
        raise RuntimeError("%s: %s is not an executable file (build it, or set %s)"
                           % (env_name, path, env_name))
    os.environ[env_name] = path
    return path


def raise_fd_limit():
    """Raises this process's open-file soft limit to the hard limit, for
    itself and every child (1000 held connections take 2000+ descriptors in
    a balancer). Returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return soft


# --------------------------------------------------------------- /proc data

class ProcSample:
    """One reading of a process: rss_kib (VmRSS, resident memory including
    shared pages the process touched) and cpu_s (user + system CPU time of
    all its threads, in seconds, with the kernel's clock-tick resolution,
    usually 10 ms). Raises OSError if the process is gone."""

    def __init__(self, pid):
        self.pid = pid
        self.rss_kib = None
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    self.rss_kib = int(line.split()[1])
                    break
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
        # Fields after "(comm)": comm may hold spaces, so split after the
        # last ')'. utime and stime are fields 14 and 15 of the whole line.
        fields = stat[stat.rindex(")") + 2:].split()
        self.cpu_s = (int(fields[11]) + int(fields[12])) / CLK_TCK
        if self.rss_kib is None:
            raise OSError("no VmRSS for pid %d" % pid)


# ------------------------------------------------------------- contenders

class Contender(abc.ABC):
    """One product under test. Subclasses write their own configuration for
    the shared topology and expose the same frontend roles."""

    #: short key used in the JSON ("edgepin", "haproxy")
    key = None
    #: name for the table
    label = None

    def __init__(self, workdir):
        self.workdir = workdir
        self.proc = None
        #: role -> port, filled by start()
        self.ports = {}

    @abc.abstractmethod
    def start(self):
        """Writes the configuration, starts the process and waits until every
        frontend accepts connections. Raises on failure."""

    def stop(self):
        """Stops the process by PID (SIGTERM, then SIGKILL). Returns its exit
        status (None if it never started)."""
        if self.proc is None:
            return None
        return self.proc.stop(timeout=10)

    @property
    def pid(self):
        return self.proc.pid

    def sample(self):
        """A ProcSample of the running process."""
        if not self.proc.running():
            raise RuntimeError("%s exited\n%s" % (self.label, self.proc.describe()))
        return ProcSample(self.pid)

    def version(self):
        """One line naming the product's version, for the JSON."""
        return "?"


def alternate(contenders, reps, measure, log=None):
    """Runs measure(contender, rep) reps times for every contender; the
    order flips every repetition. Returns {contender.key: [result, ...]}."""
    results = {c.key: [] for c in contenders}
    for rep in range(reps):
        order = contenders if rep % 2 == 0 else list(reversed(contenders))
        for c in order:
            r = measure(c, rep)
            results[c.key].append(r)
            if log:
                log("  %-8s rep %d: %s" % (c.key, rep + 1, r.get("summary", "")))
    return results


# ----------------------------------------------------------------- client

def run_client(binary, mode, args, workdir, name, timeout):
    """Runs `edgepin-bench-client MODE ARGS` to completion (killed after
    `timeout` seconds). Returns its JSON result (the last stdout line) with
    "exit" added: 0 no failure, 1 some connections failed (see "failures").
    Raises RuntimeError on bad usage, a crash or a missing result."""
    proc = t.Proc([binary, mode] + [str(a) for a in args], name, workdir)
    try:
        proc.popen.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise RuntimeError("%s did not finish in %.0fs\n%s" % (name, timeout, proc.describe()))
    finally:
        proc.stop()
    lines = [l for l in proc.stdout_text().splitlines() if l.startswith("{")]
    if proc.returncode not in (0, 1) or not lines:
        raise RuntimeError("%s failed (exit %s)\n%s" % (name, proc.returncode, proc.describe()))
    result = json.loads(lines[-1])
    result["exit"] = proc.returncode
    return result


class HoldClient:
    """edgepin-bench-client hold: opens `connections` connections, waits
    until each has echoed a byte, then holds them until release(). Use as a
    context manager; the process is stopped by PID whatever happens."""

    def __init__(self, binary, port, connections, workdir, name, hold_s=120, setup_timeout_s=60):
        self.name = name
        self.stdout_path = os.path.join(workdir, name + ".stdout")
        self.stderr_path = os.path.join(workdir, name + ".stderr")
        argv = [binary, "hold", "--connect", "127.0.0.1:%d" % port, "--connections", str(connections),
                "--hold-ms", str(int(hold_s * 1000)), "--timeout-ms", str(int(setup_timeout_s * 1000))]
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.popen = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=out, stderr=err, close_fds=True)
        self.setup_timeout_s = setup_timeout_s

    def _lines(self):
        with open(self.stdout_path) as f:
            return [l for l in f.read().splitlines() if l.startswith("{")]

    def wait_ready(self):
        """Waits for the ready line. Returns its JSON ({"ready": N, ...}).
        Raises RuntimeError if the client exits first or takes longer than
        its own setup timeout plus 10 s."""
        deadline = time.monotonic() + self.setup_timeout_s + 10
        while time.monotonic() < deadline:
            lines = self._lines()
            if lines:
                return json.loads(lines[0])
            if self.popen.poll() is not None:
                raise RuntimeError("%s exited %s before it was ready: %s"
                                   % (self.name, self.popen.returncode, open(self.stderr_path).read()[-2000:]))
            time.sleep(0.05)
        raise RuntimeError("%s: not ready after %.0fs" % (self.name, self.setup_timeout_s + 10))

    def release(self, timeout=30):
        """Closes the client's stdin (it closes every connection and exits).
        Returns its final JSON with "exit" added."""
        try:
            self.popen.stdin.close()
        except OSError:
            pass
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
            raise RuntimeError("%s did not exit after release" % self.name)
        lines = self._lines()
        if len(lines) < 2:
            raise RuntimeError("%s: no final result (exit %s): %s"
                               % (self.name, self.popen.returncode, open(self.stderr_path).read()[-2000:]))
        result = json.loads(lines[-1])
        result["exit"] = self.popen.returncode
        return result

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait()
        return False


# ---------------------------------------------------------------- results

def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


class Metric:
    """How to read and judge one number of a measurement."""

    def __init__(self, key, unit, better, fmt="%.1f"):
        self.key = key
        self.unit = unit
        self.better = better  # "higher" or "lower"
        self.fmt = fmt


class Report:
    """Collects every measurement's raw results and prints/writes them.
    The ratio is first contender / second contender (Edgepin / HAProxy):
    above 1 is better when higher is better, below 1 when lower is."""

    def __init__(self, contenders, meta):
        self.contenders = contenders
        self.meta = meta
        self.sections = []  # (name, description, metrics, {key: [results]})

    def add(self, name, description, metrics, results):
        self.sections.append((name, description, metrics, results))

    def rows(self):
        out = []
        a, b = self.contenders[0].key, self.contenders[1].key
        for name, _, metrics, results in self.sections:
            for m in metrics:
                ma = median([r.get(m.key) for r in results.get(a, [])])
                mb = median([r.get(m.key) for r in results.get(b, [])])
                ratio = (ma / mb) if (ma is not None and mb) else None
                out.append({"measurement": name, "metric": m.key, "unit": m.unit, "better": m.better,
                            "median": {a: ma, b: mb}, "ratio": ratio,
                            "runs": len(results.get(a, [])), "fmt": m.fmt})
        return out

    def table(self):
        """The results as a Markdown table (also readable on a terminal)."""
        a, b = self.contenders
        head = "| measurement | metric | unit | %s | %s | %s/%s | better |" % (a.label, b.label, a.label, b.label)
        lines = [head, "|" + " --- |" * 7]
        for r in self.rows():
            va, vb = r["median"][a.key], r["median"][b.key]
            lines.append("| %s | %s | %s | %s | %s | %s | %s |" % (
                r["measurement"], r["metric"], r["unit"],
                "-" if va is None else r["fmt"] % va,
                "-" if vb is None else r["fmt"] % vb,
                "-" if r["ratio"] is None else "%.2f" % r["ratio"],
                r["better"]))
        return "\n".join(lines)

    def write_json(self, path, checks):
        doc = {"meta": self.meta, "contenders": {c.key: {"label": c.label, "version": c.version()}
                                                 for c in self.contenders},
               "summary": [{k: v for k, v in r.items() if k != "fmt"} for r in self.rows()],
               "measurements": {name: {"description": desc, "results": results}
                                for name, desc, _, results in self.sections},
               "checks": checks.as_list()}
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(doc, f, indent=1, sort_keys=False)
            f.write("\n")
        os.replace(tmp, path)


class Checks:
    """Correctness checks (bytes relayed, counts that add up; never a
    speed). A failed check makes the run exit 1, smoke or full; the table
    and the JSON are written first."""

    def __init__(self):
        self.items = []  # (ok, what)

    def check(self, ok, what):
        self.items.append((bool(ok), what))
        return bool(ok)

    def failures(self):
        return [w for ok, w in self.items if not ok]

    def as_list(self):
        return [{"ok": ok, "what": w} for ok, w in self.items]


# ------------------------------------------------------------ environment

def host_meta(build_dir):
    """What a reader needs to interpret the numbers: machine, load, build."""
    meta = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "cpus": os.cpu_count(),
            "kernel": platform.release(), "loadavg_start": os.getloadavg(),
            "python": platform.python_version()}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    meta["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    cache = os.path.join(build_dir, "CMakeCache.txt")
    if os.path.exists(cache):
        with open(cache) as f:
            for line in f:
                for key in ("CMAKE_BUILD_TYPE", "CMAKE_CXX_FLAGS", "CMAKE_CXX_FLAGS_RELEASE", "EDGEPIN_SANITIZE"):
                    if line.startswith(key + ":"):
                        meta[key] = line.split("=", 1)[1].strip()
    try:
        meta["git_commit"] = subprocess.run(["git", "-C", SOURCE_DIR, "rev-parse", "--short", "HEAD"],
                                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                            timeout=10).stdout.decode().strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    return meta


def wait_until(predicate, timeout, what, step=0.05):
    """Returns predicate()'s first truthy value; TimeoutError after
    `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise TimeoutError("timed out after %.1fs waiting for %s" % (timeout, what))
