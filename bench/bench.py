#!/usr/bin/env python3
"""Tether's benchmark: the proxy against nginx and HAProxy, and the checker.

Run it through `make bench` (installs the tools, builds the release
binaries, then runs this). Python 3 standard library only.

Part 1, proxies. Three backends (one nginx worker answering a fixed body on
three ports), then Tether (embedded HTTP health checks and sticky sessions
on, access log off), a second identical Tether (the A/A twin, which shows
the noise floor), nginx and HAProxy, each with one worker, round robin over
the three backends with upstream keep-alive. Every proxy runs pinned alone on
one CPU; the backends, the load generators and this script share the other.
All proxies stay up for the whole run and are measured in turn, many short
rounds with the order rotated each round, and only same-round figures are
compared: absolute numbers on a shared machine wander by a third, same-round
ratios by a few per cent.

Per proxy and round: wrk at 64 and at 256 connections (requests/s, p50,
p99, CPU microseconds per request of the proxy process from utime+stime in
/proc, busy share of both CPUs), and oha at a constant 5,000 requests/s
(p50, p99, p99.9 with latency correction). Once per proxy, fresh: RSS, then
RSS holding 10,000 idle keep-alive connections.

Part "burst". Per proxy (Tether, nginx, HAProxy) and protocol (HTTP/1.1,
h2c with prior knowledge), a fresh process serves 300,000 keep-alive
requests on 100 connections (h2load); once the load has closed, the serving
process's RSS is polled until it stays put for 2 s.

Part "idle". Only part 1's memory figures, without its load rounds (and so
without oha): per proxy (Tether, nginx, HAProxy) a fresh process's RSS, then
its RSS holding BENCH_IDLE idle keep-alive connections, each after one
request. Part 1 measures the same on its own processes.

Part "instructions". User-space instructions per request of the three
proxies, counted with valgrind's cachegrind (no hardware counters here):
two fresh processes under valgrind serve N1 and N2 requests (h2load, 16
keep-alive connections) and live equally long, and the figure is
(I(N2) - I(N1)) / (N2 - N1). bench/metrics_ab.sh runs the same method for
two Tether builds (`bench.py --ab BEFORE AFTER`); AB_EXTRA_A and AB_EXTRA_B
append TOML to one side's config, so the same build can be priced with and
without a feature (`[limits]`, say).

Part 2, TLS. The same proxies again, each terminating TLS on its own port
with one self-signed ECDSA P-256 certificate made per run with the openssl
CLI (TLS 1.2 and 1.3, ALPN h2 and http/1.1 offered by all three); the
backends stay plain HTTP. Per proxy and round: wrk over https at 64
keep-alive connections (the handshake is paid once per connection and
amortised over the run: this is the cost of encrypting the traffic), and a
fixed number of sequential new connections, one request each, every one a
full handshake (no session resumption): the cost of a handshake.

Part 3, the checker. tether-bench-ports listens on 10,000 loopback ports;
tether-checker probes them all over TCP every second, pinned alone on one
CPU, with 50 Watch subscribers (tether-bench-watch). It measures the
checker's CPU share and RSS, then closes and reopens ports one at a time
and times each state change's arrival at all 50 subscribers. HAProxy probing
the same pool itself gives the price of the alternative: every one of the
50 proxies probing every target.

Last, a goals table (issue 10): each goal with Tether's, nginx's and
HAProxy's figure from this run, and whether Tether met it or by how much it
missed.

Settings come from the environment:
  BENCH_QUICK=1        smoke run: 2 rounds of 1 s, 1,000 idle connections,
                       500 checker targets (not a measurement)
  BENCH_ROUNDS, BENCH_SECS, BENCH_IDLE, BENCH_TARGETS, BENCH_FLIPS,
  BENCH_WINDOW         override single settings
  BENCH_HANDSHAKES     new TLS connections per proxy and round (default 500,
                       quick 300)
  BENCH_ONLY=proxies|idle|burst|instructions|tls|checker|h2up|balance   run some parts
                       (comma-separated list); the goals table at the end
                       quotes what was run
  BENCH_BURST          requests of part "burst" (default 300,000, quick 30,000)
  BENCH_BURST_PEERS    part "burst" for these proxies only (comma-separated
                       of tether, nginx, haproxy; default all three)
  BENCH_H2UP           requests per run of part "h2up" (default 100,000,
                       quick 10,000)
  BENCH_INS_N1, BENCH_INS_N2, BENCH_INS_REPS, BENCH_HOLD, BENCH_SETTLE
                       part "instructions": the two request counts (2,000
                       and 12,000; quick 500 and 2,500), repetitions (2;
                       quick 1), seconds each process lives at least (20;
                       quick 6) and waits before its load (4; quick 2)
  BENCH_PROXY_CPU, BENCH_LOAD_CPU   the two CPUs (default: the first two
                       this process may run on; the proxy gets the second)
  BENCH_ALLOCS=0       part "instructions" without Tether's allocation count
                       (valgrind's dhat, the same two-count method)
  BENCH_KEEP_CG        a directory: keep part "instructions"' cachegrind outputs
                       there (cg_annotate --diff shows the cost by function)
  BENCH_OUT            where to write the report (default bench/RESULTS.md)
  BENCH_FIGURES        a path: also write the goals table's figures there as
                       JSON (bench/alloc_compare.sh reads them)
  BENCH_TETHER_A       path of the tether-proxy build under test (default
                       target/release/tether-proxy); the report's commit is
                       that of the git work tree the binary sits in
  BENCH_TETHER_B       path of another tether-proxy build to run as the
                       twin instead of the A/A copy (an A/B comparison)
  BENCH_CHECKER        path of the tether-checker build under test (default
                       target/release/tether-checker)
  BENCH_TETHER_ENV     environment for Tether's processes only (proxies and
                       checker, not the peers or the load): whitespace-
                       separated NAME=VALUE words, e.g. `GLIBC_TUNABLES=
                       glibc.malloc.arena_max=2` to price an allocator
                       setting (bench/alloc_compare.sh)
  BENCH_BUILD_DIR      where the binaries not named above are taken from
                       (tether-bench-ports, tether-bench-watch, the defaults;
                       default target/release)
  BENCH_CHECK_KINDS    probe kinds the checker part runs, one pass each
                       (comma-separated, default tcp,http)
  BENCH_CHECK_HAPROXY=0  the checker part without HAProxy probing the same
                       pool (its figures print as nan)
  BENCH_SLOW_MS        part "balance": the slow member's added latency
                       (default 20 ms); BENCH_BALANCE_CONNS its clients (16)
  BENCH_ECHO           path of tether-echo, the part's backends (default
                       target/release/tether-echo, else target/debug's)

Part "balance" (issue 20): three tether-echo members, one slower by
BENCH_SLOW_MS, behind Tether with `balance = "round_robin"` and then
`"least_request"`; wrk's latency percentiles for each, and the ratio of
their p99s. Round robin sends the slow member a third of the requests, so
its p99 is the slow member's latency; least request (power of two choices
by requests in flight) sends it far fewer, though under wrk's closed loop
still about 2 %, so a p99 lands on it too: the part reports the slow
member's share, p50 and throughput beside the p99s.
"""

from __future__ import annotations

import atexit
import datetime as dt
import http.client
import json
import os
import platform
import queue
import random
import re
import resource
import selectors
import shutil
import signal
import socket
import ssl
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# BENCH_BUILD_DIR: another cargo profile's output (bench/alloc_compare.sh
# builds one of its own), for the helpers and the defaults below.
RELEASE = os.environ.get("BENCH_BUILD_DIR") or os.path.join(ROOT, "target", "release")
HZ = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024

# Every wait in this script has a deadline; these are the generous ones.
START_TIMEOUT = 30.0
RUN_SLACK = 30.0

# Open-file limit every child inherits; raised in main() as far as allowed.
NOFILE = resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return int(raw) if raw else default


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return float(raw) if raw else default


PARTS = ("proxies", "idle", "burst", "instructions", "tls", "checker", "h2up", "balance")


@dataclass
class Settings:
    quick: bool
    rounds: int
    secs: float
    idle: int
    targets: int
    flips: int
    window: float
    subscribers: int = 50
    rate: int = 5000
    conns: tuple = (64, 256)
    rate_conns: int = 64
    warmup: float = 1.0
    probe_interval: str = "1s"
    handshakes: int = 500
    only: str = ""
    parts: tuple = PARTS
    check_kinds: tuple = ("tcp", "http")
    # part "burst": RSS after a burst of keep-alive requests, then idle
    burst: int = 300_000
    burst_conns: int = 100
    burst_streams: int = 10  # h2 streams in flight per connection
    h2up: int = 100_000  # requests per run of part "h2up"
    # part "instructions": cachegrind, (I(n2) - I(n1)) / (n2 - n1)
    ins_n1: int = 2000
    ins_n2: int = 12000
    ins_conns: int = 16
    ins_reps: int = 2
    ins_hold: float = 20.0
    ins_settle: float = 4.0
    # part "balance": one slow member among three
    slow_ms: int = 20
    balance_conns: int = 16

    @staticmethod
    def from_env() -> "Settings":
        quick = os.environ.get("BENCH_QUICK", "") not in ("", "0")
        s = Settings(
            quick=quick,
            rounds=env_int("BENCH_ROUNDS", 2 if quick else 15),
            secs=env_float("BENCH_SECS", 1.0 if quick else 2.0),
            idle=env_int("BENCH_IDLE", 1000 if quick else 10000),
            targets=env_int("BENCH_TARGETS", 500 if quick else 10000),
            flips=env_int("BENCH_FLIPS", 3 if quick else 20),
            window=env_float("BENCH_WINDOW", 3.0 if quick else 20.0),
            handshakes=env_int("BENCH_HANDSHAKES", 300 if quick else 500),
            only=os.environ.get("BENCH_ONLY", ""),
            burst=env_int("BENCH_BURST", 30_000 if quick else 300_000),
            h2up=env_int("BENCH_H2UP", 10_000 if quick else 100_000),
            ins_n1=env_int("BENCH_INS_N1", 500 if quick else 2000),
            ins_n2=env_int("BENCH_INS_N2", 2500 if quick else 12000),
            ins_reps=env_int("BENCH_INS_REPS", 1 if quick else 2),
            ins_hold=env_float("BENCH_HOLD", 6.0 if quick else 20.0),
            ins_settle=env_float("BENCH_SETTLE", 2.0 if quick else 4.0),
            slow_ms=env_int("BENCH_SLOW_MS", 20),
            balance_conns=env_int("BENCH_BALANCE_CONNS", 16),
        )
        kinds = tuple(k.strip() for k in os.environ.get("BENCH_CHECK_KINDS", "tcp,http").split(",") if k.strip())
        if not kinds or any(k not in ("tcp", "http") for k in kinds):
            sys.exit("bench: BENCH_CHECK_KINDS takes a comma-separated list of tcp and http")
        s.check_kinds = kinds
        if s.only:
            wanted = [p.strip() for p in s.only.split(",") if p.strip()]
            bad = [p for p in wanted if p not in PARTS]
            if bad or not wanted:
                sys.exit(f"bench: BENCH_ONLY takes a comma-separated list of {', '.join(PARTS)}, not {s.only!r}")
            s.parts = tuple(p for p in PARTS if p in wanted)
        return s


def checker_binary() -> str:
    """The tether-checker under test: BENCH_CHECKER, or this tree's release build."""
    return os.environ.get("BENCH_CHECKER") or os.path.join(RELEASE, "tether-checker")


def sockstat_tw() -> int:
    """TCP sockets in TIME_WAIT on the host (/proc/net/sockstat `tw`)."""
    try:
        with open("/proc/net/sockstat") as f:
            for line in f:
                if line.startswith("TCP:"):
                    words = line.split()
                    return int(words[words.index("tw") + 1])
    except (OSError, ValueError, IndexError):
        pass
    return -1


def active_opens() -> int:
    """Connects the host has made (/proc/net/snmp `Tcp: ActiveOpens`): counts
    probes that a reset closes before the target accepts them, which accepts miss."""
    try:
        with open("/proc/net/snmp") as f:
            rows = [line.split() for line in f if line.startswith("Tcp:")]
        return int(rows[1][rows[0].index("ActiveOpens")])
    except (OSError, ValueError, IndexError):
        return -1


def conntrack_count() -> int:
    try:
        with open("/proc/sys/net/netfilter/nf_conntrack_count") as f:
            return int(f.read())
    except (OSError, ValueError):
        return -1


def tether_env() -> dict[str, str]:
    """The environment of Tether's processes: this one's without TETHER_*
    (the config file decides), plus BENCH_TETHER_ENV's NAME=VALUE words."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    for word in os.environ.get("BENCH_TETHER_ENV", "").split():
        name, eq, value = word.partition("=")
        if not eq or not name:
            sys.exit(f"bench: BENCH_TETHER_ENV takes NAME=VALUE words, not {word!r}")
        env[name] = value
    return env


def tether_binary() -> str:
    """The tether-proxy under test: BENCH_TETHER_A, or this tree's release build."""
    return os.environ.get("BENCH_TETHER_A") or os.path.join(RELEASE, "tether-proxy")


# === processes ===


class Procs:
    """Every process this script starts, stopped at exit whatever happens."""

    def __init__(self) -> None:
        self.live: list[subprocess.Popen] = []
        atexit.register(self.stop_all)

    def start(self, argv: list[str], cpu: int | None, name: str, workdir: str, **kw) -> subprocess.Popen:
        if cpu is not None:
            argv = ["taskset", "-c", str(cpu)] + argv
        files = []
        for stream, suffix in (("stdout", "out"), ("stderr", "err")):
            if stream not in kw:
                kw[stream] = open(os.path.join(workdir, f"{name}.{suffix}"), "wb")
                files.append(kw[stream])
        try:
            p = subprocess.Popen(argv, **kw)
        finally:
            for f in files:
                f.close()  # the child has its own copy
        p.bench_name = name  # type: ignore[attr-defined]
        p.bench_log = os.path.join(workdir, f"{name}.err")  # type: ignore[attr-defined]
        self.live.append(p)
        return p

    def stop(self, p: subprocess.Popen, grace: float = 5.0) -> None:
        if p.poll() is None:
            try:
                p.terminate()
                p.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=grace)
            except ProcessLookupError:
                pass
        if p in self.live:
            self.live.remove(p)

    def stop_all(self) -> None:
        for p in list(reversed(self.live)):
            try:
                if p.stdin:
                    p.stdin.close()
            except OSError:
                pass
            self.stop(p)


def tail(path: str, n: int = 15) -> str:
    try:
        with open(path, "rb") as f:
            lines = f.read().decode(errors="replace").splitlines()
        return "\n".join(lines[-n:])
    except OSError:
        return ""


def free_ports(n: int) -> list[int]:
    """Ports the kernel hands out now; held together so they are distinct."""
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def wait_port(port: int, p: subprocess.Popen, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if p.poll() is not None:
            raise RuntimeError(f"{p.bench_name} exited with {p.returncode}:\n{tail(p.bench_log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{p.bench_name} did not listen on {port} within {timeout:.0f}s")


def client_tls(alpn: list[str] | None = None) -> ssl.SSLContext:
    """A client context that takes the bench's self-signed certificate."""
    c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    c.check_hostname = False
    c.verify_mode = ssl.CERT_NONE
    if alpn:
        c.set_alpn_protocols(alpn)
    return c


def http_get(port: int, path: str = "/", tls: bool = False) -> int:
    if tls:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=2, context=client_tls(["http/1.1"]))
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def wait_serving(port: int, p: subprocess.Popen, timeout: float = START_TIMEOUT, tls: bool = False) -> None:
    """Until a run of requests all answer 200 (health known, pool usable)."""
    wait_port(port, p, timeout)
    deadline = time.monotonic() + timeout
    good = 0
    while time.monotonic() < deadline:
        try:
            good = good + 1 if http_get(port, tls=tls) == 200 else 0
        except OSError:
            good = 0
        if good >= 6:
            return
        time.sleep(0.02 if good else 0.1)
    raise RuntimeError(f"{p.bench_name} on {port} does not answer 200 within {timeout:.0f}s")


# === /proc ===


def children(pid: int) -> list[int]:
    kids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
            kids.append(int(entry))
    return kids


def cpu_ticks(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total


def cpu_ns(pids: list[int]) -> int:
    """CPU time of every thread of pids in ns (schedstat: finer than the
    10 ms ticks of /proc/<pid>/stat, for runs of a few hundred ms)."""
    total = 0
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                pass
    return total


def rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE_KIB
    except OSError:
        return 0


def threads(pid: int) -> list[str]:
    names = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/comm") as f:
                    names.append(f.read().strip())
            except OSError:
                pass
    except OSError:
        pass
    return sorted(names)


def cpu_times() -> dict[int, tuple[int, int]]:
    """Per CPU: (busy, total) jiffies since boot."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            m = re.match(r"cpu(\d+) (.*)", line)
            if m:
                v = [int(x) for x in m.group(2).split()]
                idle = v[3] + v[4]
                total = sum(v[:8])
                out[int(m.group(1))] = (total - idle, total)
    return out


def busy_share(before: dict, after: dict, cpu: int) -> float:
    db = after[cpu][0] - before[cpu][0]
    dt_ = after[cpu][1] - before[cpu][1]
    return db / dt_ if dt_ > 0 else 0.0


# === the processes under test ===


@dataclass
class Entry:
    key: str
    label: str
    port: int
    proc: subprocess.Popen | None
    is_proxy: bool = True
    serving: list[int] = field(default_factory=list)  # pids whose RSS counts
    master: int | None = None
    scheme: str = "http"

    def pids(self) -> list[int]:
        if self.proc is None:
            return []
        return [self.proc.pid] + children(self.proc.pid)


def nginx_conf(workdir: str, name: str, http_block: str, master: bool = True) -> str:
    """An nginx config; master=False runs the one worker in the process
    started (no fork), so valgrind counts the process that serves."""
    tmp = os.path.join(workdir, f"{name}-tmp")
    os.makedirs(tmp, exist_ok=True)
    path = os.path.join(workdir, f"{name}.conf")
    with open(path, "w") as f:
        f.write(
            f"""# generated by bench/bench.py
worker_processes 1;
daemon off;
master_process {"on" if master else "off"};
pid {workdir}/{name}.pid;
error_log {workdir}/{name}.log warn;
worker_rlimit_nofile {NOFILE};
events {{ worker_connections {NOFILE - 64}; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/body;
  proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fastcgi;
  uwsgi_temp_path {tmp}/uwsgi;
  scgi_temp_path {tmp}/scgi;
  keepalive_requests 1000000;
  keepalive_timeout 60s;
{http_block}
}}
"""
        )
    return path


def start_nginx(procs: Procs, workdir: str, name: str, conf: str, cpu: int,
                wrap: list[str] | None = None) -> subprocess.Popen:
    return procs.start(
        (wrap or []) + ["nginx", "-p", workdir, "-e", os.path.join(workdir, f"{name}-early.log"), "-c", conf],
        cpu,
        name,
        workdir,
    )


def start_backends(procs: Procs, workdir: str, ports: list[int], cpu: int) -> subprocess.Popen:
    servers = "\n".join(
        f"""  server {{
    listen 127.0.0.1:{port} backlog=4096;
    default_type text/plain;
    location / {{ return 200 "app-{i + 1}\\n"; }}
  }}"""
        for i, port in enumerate(ports)
    )
    conf = nginx_conf(workdir, "backends", servers)
    p = start_nginx(procs, workdir, "backends", conf, cpu)
    for port in ports:
        wait_serving(port, p)
    return p


def start_tether(procs: Procs, workdir: str, name: str, port: int, backends: list[int], cpu: str,
                 binary: str | None = None, tls: tuple[str, str] | None = None,
                 wrap: list[str] | None = None, protocol: str | None = None,
                 proxy_extra: str = "", admin: str = "127.0.0.1:0",
                 extra: str = "") -> subprocess.Popen:
    # protocol: the targets' (part "h2up": "h2c", probed by TCP, since an
    # h2c-only backend takes no HTTP/1.1 probe); proxy_extra: lines in
    # [proxy]; extra: TOML appended at the end (--ab's AB_EXTRA_A/B)
    proto_line = f'protocol = "{protocol}"\n' if protocol else ""
    targets = "\n".join(
        f'[[targets]]\nurl = "http://127.0.0.1:{b}"\nname = "app-{i + 1}"\n{proto_line}'
        for i, b in enumerate(backends)
    )
    health = 'kind = "tcp"' if protocol else 'kind = "http"\npath = "/health"'
    tls_block = f'[proxy.tls]\ncert = "{tls[0]}"\nkey = "{tls[1]}"\n\n' if tls else ""
    path = os.path.join(workdir, f"{name}.toml")
    with open(path, "w") as f:
        f.write(
            f"""# generated by bench/bench.py: embedded checker (no [health_source])
[proxy]
listen = "127.0.0.1:{port}"
# the same keep-alive gap as the peers' 60 s, so idle connections stay open
header_read_timeout = "60s"
{proxy_extra}
{tls_block}[admin]
listen = "{admin}"

[health]
{health}
interval = "1s"
timeout = "1s"

{targets}
[sticky]
enabled = true

[log]
level = "warn"
[log.loggers]
access = "off"
{extra}"""
        )
    env = tether_env()
    binary = binary or tether_binary()
    argv = (wrap or []) + [binary, "--config", path]
    return procs.start(["taskset", "-c", cpu] + argv, None, name, workdir, env=env)


def start_nginx_proxy(procs: Procs, workdir: str, port: int, backends: list[int], cpu: int,
                      name: str = "nginx", tls: tuple[str, str] | None = None, h2c: bool = False,
                      master: bool = True, wrap: list[str] | None = None) -> subprocess.Popen:
    # nginx 1.22 serves h2c (prior knowledge) only on a port that speaks
    # nothing else, so h2c gets its own listener.
    listen = f"listen 127.0.0.1:{port}{' http2' if h2c else ''} backlog=4096;"
    if tls:
        listen = f"""listen 127.0.0.1:{port} ssl http2 backlog=4096;
    ssl_certificate {tls[0]};
    ssl_certificate_key {tls[1]};
    ssl_protocols TLSv1.2 TLSv1.3;"""
    upstream = "\n".join(f"    server 127.0.0.1:{b};" for b in backends)
    block = f"""  upstream pool {{
{upstream}
    keepalive 256;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
  }}
  server {{
    {listen}
    location / {{
      proxy_pass http://pool;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $host;
    }}
  }}"""
    conf = nginx_conf(workdir, name, block, master)
    return start_nginx(procs, workdir, name, conf, cpu, wrap)


def start_haproxy(procs: Procs, workdir: str, port: int, backends: list[int], cpu: int, maxconn: int,
                  name: str = "haproxy", tls_pem: str | None = None,
                  wrap: list[str] | None = None) -> subprocess.Popen:
    servers = "\n".join(
        f"  server app-{i + 1} 127.0.0.1:{b} check inter 1s" for i, b in enumerate(backends)
    )
    bind = f"bind 127.0.0.1:{port}"
    if tls_pem:
        bind += f" ssl crt {tls_pem} alpn h2,http/1.1 ssl-min-ver TLSv1.2"
    path = os.path.join(workdir, f"{name}.cfg")
    with open(path, "w") as f:
        f.write(
            f"""# generated by bench/bench.py
global
  nbthread 1
  maxconn {maxconn}
  # idle client connections need one descriptor, not the two HAProxy
  # reserves per connection: start even when the limit looks short
  no strict-limits

defaults
  mode http
  maxconn {maxconn}
  timeout connect 2s
  timeout client 60s
  timeout server 30s
  timeout http-request 60s
  timeout http-keep-alive 60s
  option http-keep-alive
  option forwardfor
  http-reuse safe

frontend fe
  {bind}
  http-request set-header X-Forwarded-Proto {"https" if tls_pem else "http"}
  default_backend pool

backend pool
  balance roundrobin
  option httpchk GET /health
{servers}
"""
        )
    return procs.start((wrap or []) + ["haproxy", "-db", "-f", path], cpu, name, workdir)


PEERS = ("tether", "nginx", "haproxy")


def launch(ctx: "Ctx", key: str, name: str, port: int, h2c: bool = False, wrap: list[str] | None = None,
           binary: str | None = None) -> subprocess.Popen:
    """A fresh proxy of part 1's config on the proxy CPU, the process that
    serves started directly under `wrap` (nginx without a master process).
    HAProxy and Tether take h2c prior knowledge on their one port; nginx
    gets an h2c-only listener when h2c is asked for."""
    b_ports, _ = ensure_backends(ctx)
    cpu = ctx.proxy_cpu
    if key == "tether":
        return start_tether(ctx.procs, ctx.workdir, name, port, b_ports, str(cpu), binary, wrap=wrap,
                            extra=ctx.tether_extra)
    if key == "nginx":
        return start_nginx_proxy(ctx.procs, ctx.workdir, port, b_ports, cpu, name=name, h2c=h2c,
                                 master=wrap is None, wrap=wrap)
    if key == "haproxy":
        # part 1's maxconn, but a small one under valgrind: HAProxy sizes its
        # tables by it, and filling them under valgrind takes seconds
        maxconn = 4096 if wrap else ctx.settings.idle + 2000
        return start_haproxy(ctx.procs, ctx.workdir, port, b_ports, cpu, maxconn, name=name, wrap=wrap)
    raise ValueError(key)


# === load generators ===


def parse_duration_s(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if not m:
        raise ValueError(f"bad duration {text!r}")
    scale = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}[m.group(2)]
    return float(m.group(1)) * scale


def parse_wrk(out: str) -> dict:
    res: dict = {}
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+),", out)
    if not m:
        raise RuntimeError(f"cannot read wrk's output:\n{out}")
    res["requests"] = int(m.group(1))
    res["elapsed"] = parse_duration_s(m.group(2) + m.group(3))
    for pct, key in (("50", "p50"), ("90", "p90"), ("99", "p99")):
        m = re.search(rf"^\s+{pct}%\s+(\S+)", out, re.M)
        res[key] = parse_duration_s(m.group(1)) if m else float("nan")
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    res["non2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    res["sock_errors"] = sum(int(x) for x in m.groups()) if m else 0
    return res


def run_measured(entry: Entry, argv: list[str], timeout: float, proxy_cpu: int, load_cpu: int) -> tuple[str, dict]:
    pids = entry.pids()
    t0 = cpu_ticks(pids)
    c0 = cpu_times()
    w0 = time.monotonic()
    cp = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    wall = time.monotonic() - w0
    c1 = cpu_times()
    t1 = cpu_ticks(pids)
    if cp.returncode != 0:
        raise RuntimeError(f"{argv[3]} failed ({cp.returncode}):\n{cp.stdout}\n{cp.stderr}")
    meta = {
        "proxy_cpu_s": (t1 - t0) / HZ,
        "proxy_core_busy": busy_share(c0, c1, proxy_cpu),
        "load_core_busy": busy_share(c0, c1, load_cpu),
        "wall": wall,
    }
    return cp.stdout, meta


def wrk(entry: Entry, conns: int, secs: float, s: "Ctx") -> dict:
    argv = ["taskset", "-c", str(s.load_cpu), s.tools["wrk"], "-t1", f"-c{conns}", f"-d{secs:g}s",
            "--latency", "--timeout", "2s", f"{entry.scheme}://127.0.0.1:{entry.port}/"]
    out, meta = run_measured(entry, argv, secs + RUN_SLACK, s.proxy_cpu, s.load_cpu)
    res = parse_wrk(out)
    res.update(meta)
    res["rps"] = res["requests"] / res["elapsed"] if res["elapsed"] else 0.0
    res["cpu_us_per_req"] = res["proxy_cpu_s"] * 1e6 / res["requests"] if res["requests"] else float("nan")
    return res


def oha(entry: Entry, rate: int, conns: int, secs: float, s: "Ctx") -> dict:
    argv = ["taskset", "-c", str(s.load_cpu), s.tools["oha"], "-z", f"{secs:g}s", "-q", str(rate),
            "-c", str(conns), "-w", "--latency-correction", "--no-tui", "--output-format", "json",
            f"http://127.0.0.1:{entry.port}/"]
    out, meta = run_measured(entry, argv, secs + RUN_SLACK, s.proxy_cpu, s.load_cpu)
    data = json.loads(out)
    pct = data.get("latencyPercentiles", {})
    codes = data.get("statusCodeDistribution", {})
    ok = sum(v for k, v in codes.items() if str(k).startswith("2"))
    total = sum(codes.values())
    errors = sum(data.get("errorDistribution", {}).values())
    res = {
        "p50": pct.get("p50") or float("nan"),
        "p99": pct.get("p99") or float("nan"),
        "p999": pct.get("p99.9") or float("nan"),
        "requests": total,
        "non2xx": total - ok,
        "errors": errors,
        "rps": data.get("summary", {}).get("requestsPerSec", 0.0),
    }
    res.update(meta)
    res["cpu_share"] = res["proxy_cpu_s"] / res["wall"] if res["wall"] else float("nan")
    return res


def new_connections(entry: Entry, n: int, s: "Ctx") -> dict:
    """n sequential TLS connections, one request each (`Connection: close`),
    every one a full handshake: a fresh client context per connection, so
    no session is ever offered for resumption. Client side: this script
    (OpenSSL via Python's ssl), on the load CPU."""
    req = f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{entry.port}\r\nConnection: close\r\n\r\n".encode()
    pids = entry.pids()
    n0, t0, c0, w0 = cpu_ns(pids), cpu_ticks(pids), cpu_times(), time.monotonic()
    errors = 0
    resumed = 0
    for _ in range(n):
        deadline = time.monotonic() + 5
        try:
            raw = socket.create_connection(("127.0.0.1", entry.port), timeout=5)
            with client_tls(["http/1.1"]).wrap_socket(raw) as c:
                resumed += c.session_reused
                c.sendall(req)
                read_response(c, deadline)
                # the server closes first (Connection: close): its TIME_WAIT, not ours
                try:
                    while recv_until(c, deadline):
                        pass
                except (ConnectionError, ssl.SSLError):
                    pass
        except (OSError, RuntimeError, TimeoutError):
            errors += 1
    wall = time.monotonic() - w0
    n1, t1, c1 = cpu_ns(pids), cpu_ticks(pids), cpu_times()
    done = n - errors
    return {
        "requests": done,
        "errors": errors,
        "resumed": resumed,
        "wall": wall,
        "rps": done / wall if wall else 0.0,
        "proxy_cpu_s": (n1 - n0) / 1e9,
        "proxy_cpu_ticks_s": (t1 - t0) / HZ,
        "cpu_us_per_req": (n1 - n0) / 1e3 / done if done else float("nan"),
        "proxy_core_busy": busy_share(c0, c1, s.proxy_cpu),
        "load_core_busy": busy_share(c0, c1, s.load_cpu),
    }


# === idle keep-alive connections ===


def read_response(sock: socket.socket, deadline: float) -> None:
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = recv_until(sock, deadline)
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    if m:
        need = int(m.group(1))
        while len(body) < need:
            body += recv_until(sock, deadline)
    elif re.search(rb"(?im)^transfer-encoding:\s*chunked", head):
        while not body.endswith(b"0\r\n\r\n"):
            body += recv_until(sock, deadline)
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"idle connection got {head.splitlines()[0]!r}")


def recv_until(sock: socket.socket, deadline: float) -> bytes:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("no response in time")
    sock.settimeout(left)
    chunk = sock.recv(65536)
    if not chunk:
        raise ConnectionError("closed before the response ended")
    return chunk


def open_idle(port: int, n: int, timeout: float) -> list[socket.socket]:
    """n connections, each after one keep-alive request, left open and idle."""
    socks: list[socket.socket] = []
    deadline = time.monotonic() + timeout
    req = f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    batch = 200
    try:
        while len(socks) < n:
            wave = []
            for _ in range(min(batch, n - len(socks))):
                c = socket.create_connection(("127.0.0.1", port), timeout=max(0.1, deadline - time.monotonic()))
                c.sendall(req)
                wave.append(c)
            for c in wave:
                read_response(c, deadline)
            socks.extend(wave)
    except BaseException:
        close_hard(socks)
        raise
    return socks


def still_open(socks: list[socket.socket]) -> int:
    """Idle sockets the server has not closed (readable now means EOF)."""
    sel = selectors.DefaultSelector()
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    ready = sel.select(timeout=0)
    sel.close()
    return len(socks) - len(ready)


def close_hard(socks: list[socket.socket]) -> None:
    # Reset, not FIN: leaves no TIME_WAIT behind on either side.
    linger = struct.pack("ii", 1, 0)
    for s in socks:
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            s.close()
        except OSError:
            pass


def rss_of(entry: Entry) -> int:
    return sum(rss_kib(pid) for pid in entry.serving)


# === context and statistics ===


@dataclass
class Ctx:
    settings: Settings
    procs: Procs
    workdir: str
    proxy_cpu: int
    load_cpu: int
    tools: dict
    report: list = field(default_factory=list)  # lines for RESULTS.md
    backends: tuple | None = None  # (ports, process), shared by the parts
    plain: dict = field(default_factory=dict)  # plain part's medians, for the TLS table
    figures: dict = field(default_factory=dict)  # each part's figures for the goals table
    tether_extra: str = ""  # TOML appended to Tether's config (--ab's AB_EXTRA_A/B)


def med(values: list[float]) -> float:
    vals = [v for v in values if v == v]
    return statistics.median(vals) if vals else float("nan")


def spread(values: list[float]) -> str:
    vals = [v for v in values if v == v]
    if not vals:
        return "-"
    m = statistics.median(vals)
    rel = (max(vals) - min(vals)) / m * 100 if m else 0.0
    return f"{fmt_sig(min(vals))}..{fmt_sig(max(vals))} (±{rel / 2:.0f} %)"


def fmt_sig(v: float) -> str:
    """Three significant digits, without an exponent."""
    if abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.{max(0, 2 - int(f'{abs(v):e}'.split('e')[1]))}f}"


def fmt_num(v: float, digits: int = 0) -> str:
    if v != v:
        return "-"
    return f"{v:,.{digits}f}"


def fmt_ms(v: float) -> str:
    return "-" if v != v else f"{v * 1e3:.2f}"


def say(msg: str = "") -> None:
    print(msg, flush=True)


def estimate(s: Settings) -> float:
    """Seconds the whole run should take, tools and binaries already built
    (calibrated on smoke runs; a busy machine takes longer)."""
    total = 0.0
    if "tls" in s.parts:
        total += 5  # certificate, start-up
        total += 4 * (s.warmup + 0.1)
        total += s.rounds * 4 * (s.secs + 0.15 + s.handshakes / 700)
    if "proxies" in s.parts:
        runs_per_round = 5 * (len(s.conns) + 1)
        total += 6  # start-up, affinity check
        total += 5 * len(s.conns) * (s.warmup + 0.1)
        total += 4 * (1.6 + s.idle / 4000)
        total += s.rounds * runs_per_round * (s.secs + 0.15)
    if "idle" in s.parts:
        total += 6 + 3 * (1.6 + s.idle / 4000)
    if "burst" in s.parts:
        # per proxy and protocol: start, the burst (~25,000 req/s), settling
        total += 6 * (2 + s.burst / 25000 + 3)
    if "instructions" in s.parts:
        # two processes per proxy and repetition, each living the hold
        # (valgrind's start-up included), plus valgrind's shutdown
        total += 3 * s.ins_reps * 2 * (s.ins_hold + 3)
    if "h2up" in s.parts:
        # three proxies per round at ~20,000 requests/s, plus start-up
        total += 5 + s.rounds * 3 * (s.h2up / 20000 + 0.2)
    if "balance" in s.parts:
        total += 2 * (3 + s.warmup + s.rounds * (s.secs + 0.15))
    if "checker" in s.parts:
        total += 7 + s.targets / 4000 + s.window  # start, wait, steady window
        total += s.flips * 2 * 1.05  # random pause + detection, per change
        total += 6 + s.targets / 4000 + s.window  # HAProxy probing the pool
    return total


# === part 1: proxies ===


def affinity_check(ctx: Ctx, backends: list[int]) -> dict:
    """Tether's worker count follows its CPU affinity: compare 1 CPU with 2."""
    out = {}
    both = f"{ctx.proxy_cpu},{ctx.load_cpu}"
    for label, cpus in (("1 CPU", str(ctx.proxy_cpu)), ("2 CPUs", both)):
        (port,) = free_ports(1)
        p = start_tether(ctx.procs, ctx.workdir, f"tether-affinity-{len(out)}", port, backends, cpus)
        wait_serving(port, p)
        # enough concurrent load that every worker has woken up
        subprocess.run(["taskset", "-c", str(ctx.load_cpu), ctx.tools["wrk"], "-t1", "-c32", "-d0.5s",
                        f"http://127.0.0.1:{port}/"], capture_output=True, timeout=RUN_SLACK)
        names = threads(p.pid)
        out[label] = names
        ctx.procs.stop(p)
    return out


def ensure_backends(ctx: Ctx) -> tuple[list[int], subprocess.Popen]:
    """The three backend ports (one nginx worker), started once per run."""
    if ctx.backends is None:
        b_ports = free_ports(3)
        backends = start_backends(ctx.procs, ctx.workdir, b_ports, ctx.load_cpu)
        say(f"backends: nginx, one worker, ports {', '.join(map(str, b_ports))} (CPU {ctx.load_cpu})")
        ctx.backends = (b_ports, backends)
    return ctx.backends


def run_proxies(ctx: Ctx) -> None:
    s = ctx.settings
    proxy = ctx.proxy_cpu
    b_ports, backends = ensure_backends(ctx)

    aff = affinity_check(ctx, b_ports)
    aff_line = "; ".join(f"{k}: {len(v)} threads ({', '.join(sorted(set(v)))})" for k, v in aff.items())
    say(f"tether threads by affinity: {aff_line}")

    ports = free_ports(4)
    t1 = start_tether(ctx.procs, ctx.workdir, "tether", ports[0], b_ports, str(proxy))
    # BENCH_TETHER_B=path: the twin runs another build (an A/B comparison
    # in the same run) instead of the same one (A/A, the noise floor).
    variant = os.environ.get("BENCH_TETHER_B")
    t2 = start_tether(ctx.procs, ctx.workdir, "tether-aa", ports[1], b_ports, str(proxy), variant)
    ng = start_nginx_proxy(ctx.procs, ctx.workdir, ports[2], b_ports, proxy)
    hp = start_haproxy(ctx.procs, ctx.workdir, ports[3], b_ports, proxy, s.idle + 2000)
    entries = [
        Entry("tether", "tether", ports[0], t1),
        Entry("tether-aa", f"tether B ({os.path.basename(variant)})" if variant else "tether A/A", ports[1], t2),
        Entry("nginx", "nginx", ports[2], ng),
        Entry("haproxy", "haproxy", ports[3], hp),
        Entry("direct", "backends direct", b_ports[0], backends, is_proxy=False),
    ]
    for e in entries:
        wait_serving(e.port, e.proc)
        kids = children(e.proc.pid)
        # nginx: the worker serves; the master only supervises it.
        e.serving = kids if e.key in ("nginx", "direct") and kids else [e.proc.pid]
        e.master = e.proc.pid if e.key in ("nginx", "direct") else None
    say("proxies up: " + ", ".join(f"{e.label} :{e.port}" for e in entries))

    mem = idle_memory(ctx, entries)

    for e in entries:
        for c in s.conns:
            wrk(e, c, s.warmup, ctx)

    # rounds[r][key][kind] = result; kind is "c64", "c256" or "rate"
    rounds: list[dict] = []
    for r in range(s.rounds):
        order = entries[r % len(entries):] + entries[: r % len(entries)]
        this: dict = {}
        for e in order:
            res = {}
            for c in s.conns:
                res[f"c{c}"] = wrk(e, c, s.secs, ctx)
            res["rate"] = oha(e, s.rate, s.rate_conns, s.secs, ctx)
            this[e.key] = res
        rounds.append(this)
        t = this["tether"]
        ratios = "  ".join(
            f"{k}: {t[f'c{s.conns[0]}']['cpu_us_per_req'] / this[k][f'c{s.conns[0]}']['cpu_us_per_req']:.2f}"
            for k in ("tether-aa", "nginx", "haproxy")
        )
        say(f"round {r + 1}/{s.rounds}: tether CPU/req ratio at {s.conns[0]} conns vs {ratios}")

    for e in entries:
        if e.is_proxy:
            mem[e.key]["after_kib"] = rss_of(e)
            mem[e.key]["threads"] = threads(e.serving[0])
    # The TLS part quotes these beside its own; its proxies get the CPU alone.
    kind = f"c{s.conns[0]}"
    ctx.plain = {e.key: {m: med([r[e.key][kind][m] for r in rounds]) for m in ("rps", "cpu_us_per_req")}
                 for e in entries if e.is_proxy}
    for e in entries:
        if e.is_proxy:
            ctx.procs.stop(e.proc)

    report_proxies(ctx, entries, rounds, mem, aff)
    record_proxy_figures(ctx, rounds, mem)


def idle_memory(ctx: Ctx, entries: list["Entry"]) -> dict[str, dict]:
    """Per proxy: RSS fresh, then holding the idle keep-alive connections."""
    s = ctx.settings
    mem: dict[str, dict] = {}
    for e in entries:
        if not e.is_proxy:
            continue
        fresh = rss_of(e)
        socks = open_idle(e.port, s.idle, timeout=60 + s.idle / 100)
        time.sleep(1.0)
        held = rss_of(e)
        alive = still_open(socks)
        close_hard(socks)
        mem[e.key] = {"fresh_kib": fresh, "idle_kib": held, "idle_open": alive}
        if e.master:
            mem[e.key]["master_kib"] = rss_kib(e.master)
        say(f"  {e.label}: RSS fresh {fresh / 1024:.1f} MiB, with {alive:,} idle connections {held / 1024:.1f} MiB")
        time.sleep(0.5)
    return mem


def idle_kib_per_conn(mem: dict) -> dict[str, float]:
    return {k: (mem[k]["idle_kib"] - mem[k]["fresh_kib"]) / mem[k]["idle_open"] for k in PEERS
            if mem.get(k, {}).get("idle_open")}


def run_idle(ctx: Ctx) -> None:
    """Part 1's memory figures alone: fresh processes, no load rounds."""
    s = ctx.settings
    b_ports, _ = ensure_backends(ctx)
    ports = free_ports(3)
    entries = [
        Entry("tether", "tether", ports[0], start_tether(ctx.procs, ctx.workdir, "tether-idle", ports[0], b_ports,
                                                         str(ctx.proxy_cpu), extra=ctx.tether_extra)),
        Entry("nginx", "nginx", ports[1], start_nginx_proxy(ctx.procs, ctx.workdir, ports[1], b_ports, ctx.proxy_cpu)),
        Entry("haproxy", "haproxy", ports[2], start_haproxy(ctx.procs, ctx.workdir, ports[2], b_ports, ctx.proxy_cpu,
                                                            s.idle + 2000)),
    ]
    for e in entries:
        wait_serving(e.port, e.proc)
        kids = children(e.proc.pid)
        e.serving = kids if e.key == "nginx" and kids else [e.proc.pid]
    mem = idle_memory(ctx, entries)
    for e in entries:
        ctx.procs.stop(e.proc)
    per = idle_kib_per_conn(mem)
    ctx.figures["idle_kib_per_conn"] = per
    rows = [
        ("fresh", [f"{mem[k]['fresh_kib'] / 1024:.1f}" for k in PEERS]),
        (f"{s.idle:,} idle keep-alive conns", [
            f"{mem[k]['idle_kib'] / 1024:.1f}" + ("" if mem[k]["idle_open"] == s.idle else f" ({mem[k]['idle_open']} open)")
            for k in PEERS]),
        ("KiB per idle connection", [f"{per[k]:.2f}" if k in per else "-" for k in PEERS]),
    ]
    table = render_table(list(PEERS), rows)
    say(table)
    ctx.report.append("## Idle keep-alive connections (part \"idle\")\n")
    ctx.report.append(
        f"Per proxy, a fresh process of part 1's config alone on CPU {ctx.proxy_cpu}: RSS (MiB), then holding "
        f"{s.idle:,} keep-alive connections, each after one request and then left idle for 1 s (nginx: the "
        "worker).\n")
    ctx.report.append("```\n" + table + "\n```\n")


def record_proxy_figures(ctx: Ctx, rounds: list[dict], mem: dict) -> None:
    """Part 1's figures that the goals table quotes, per proxy."""
    s = ctx.settings
    kind = f"c{s.conns[0]}"
    ctx.figures["idle_kib_per_conn"] = idle_kib_per_conn(mem)
    ctx.figures["cpu_ratio_nginx"] = {k: ratio_stats(rounds, kind, "nginx", of=k)[0] for k in PEERS}
    ctx.figures["p50_rate_ms"] = {k: med([r[k]["rate"]["p50"] for r in rounds]) * 1e3 for k in PEERS}


def ratio_stats(rounds: list[dict], kind: str, peer: str, of: str = "tether") -> tuple[float, list[float]]:
    """The same-round ratios of `of`'s CPU per request to `peer`'s, and their median."""
    vals = []
    for r in rounds:
        a = r[of][kind]["cpu_us_per_req"]
        b = r[peer][kind]["cpu_us_per_req"]
        if a == a and b == b and b > 0:
            vals.append(a / b)
    return med(vals), vals


def bottleneck(results: list[dict]) -> str:
    p = med([x["proxy_core_busy"] for x in results])
    l = med([x["load_core_busy"] for x in results])
    if p >= 0.95 and l >= 0.95:
        who = "both"
    else:
        who = "proxy" if p > l else "load"
    return f"{who} {p * 100:.0f}/{l * 100:.0f}%"


def report_proxies(ctx: Ctx, entries: list[Entry], rounds: list[dict], mem: dict, aff: dict) -> None:
    s = ctx.settings
    cols = [e.key for e in entries]
    heads = [e.label for e in entries]
    rows: list[tuple[str, list[str]]] = []

    def series(key: str, kind: str, metric: str) -> list[float]:
        return [r[key][kind][metric] for r in rounds]

    for c in s.conns:
        kind = f"c{c}"
        rows.append((f"{c} conns, saturated (wrk)", []))
        rows.append(("  requests/s", [fmt_num(med(series(k, kind, "rps"))) for k in cols]))
        rows.append(("  p50 / p99 ms", [f"{fmt_ms(med(series(k, kind, 'p50')))} / {fmt_ms(med(series(k, kind, 'p99')))}" for k in cols]))
        rows.append(("  CPU µs/request", [fmt_num(med(series(k, kind, "cpu_us_per_req")), 2) if k != "direct" else "-" for k in cols]))
        rows.append(("  bottleneck proxy/load busy", [bottleneck([r[k][kind] for r in rounds]) if k != "direct" else "-" for k in cols]))
    rows.append((f"{s.rate:,} requests/s (oha)", []))
    rows.append(("  p50 / p99 / p99.9 ms", [
        f"{fmt_ms(med(series(k, 'rate', 'p50')))} / {fmt_ms(med(series(k, 'rate', 'p99')))} / {fmt_ms(med(series(k, 'rate', 'p999')))}"
        for k in cols]))
    rows.append(("  proxy CPU share", [f"{med(series(k, 'rate', 'cpu_share')) * 100:.0f} %" if k != "direct" else "-" for k in cols]))
    rows.append(("memory (RSS MiB)", []))
    rows.append(("  fresh", [f"{mem[k]['fresh_kib'] / 1024:.1f}" if k in mem else "-" for k in cols]))
    rows.append((f"  {s.idle:,} idle keep-alive conns", [
        f"{mem[k]['idle_kib'] / 1024:.1f}" + ("" if mem[k]["idle_open"] == s.idle else f" ({mem[k]['idle_open']} open)")
        if k in mem else "-" for k in cols]))
    rows.append(("  after the load rounds", [f"{mem[k]['after_kib'] / 1024:.1f}" if k in mem else "-" for k in cols]))
    rows.append(("tether CPU/request ÷ this (median of rounds)", []))
    for c in s.conns:
        cells = []
        for k in cols:
            if k in ("tether", "direct"):
                cells.append("-")
                continue
            m, vals = ratio_stats(rounds, f"c{c}", k)
            cells.append(f"{m:.2f} [{min(vals):.2f}-{max(vals):.2f}]" if vals else "-")
        rows.append((f"  {c} conns [min-max]", cells))

    table = render_table(heads, rows)
    say()
    say(f"Proxies: {s.rounds} rounds x {s.secs:g} s, each proxy alone on CPU {ctx.proxy_cpu}; backends and load on CPU {ctx.load_cpu}")
    say(table)

    errors = []
    for r_i, r in enumerate(rounds):
        for k, res in r.items():
            for kind, x in res.items():
                bad = x.get("non2xx", 0) + x.get("sock_errors", 0) + x.get("errors", 0)
                if bad:
                    errors.append(f"round {r_i + 1} {k} {kind}: {bad} non-2xx or socket errors")
    for line in errors[:10]:
        say(f"warning: {line}")

    # RESULTS.md section
    rep = ctx.report
    rep.append("## Proxies\n")
    rep.append(
        f"{s.rounds} rounds of {s.secs:g} s per proxy and load, order rotated each round. "
        f"Each proxy alone on CPU {ctx.proxy_cpu}; the backends (one nginx worker, three ports), "
        f"wrk (`-t1`), oha and the driver on CPU {ctx.load_cpu}. Medians over the rounds; "
        "ratios are medians of the same-round ratios. `tether A/A` is a second, identical "
        "Tether process: its ratio is the noise floor.\n"
    )
    rep.append("```\n" + table + "\n```\n")
    rep.append(
        "- CPU µs/request: utime+stime of the proxy's processes (nginx: master and worker) from "
        "/proc over the run, divided by the responses wrk counted.\n"
        "- bottleneck: median busy share of the proxy's CPU / the load CPU over the run; "
        "`load` means the backends and load generator ran out first, so requests/s cannot rank the proxies there.\n"
        f"- {s.rate:,} requests/s: oha with {s.rate_conns} connections and latency correction; "
        "proxy CPU share is of one core.\n"
        "- RSS: the serving process (nginx: the worker"
        + (f"; its master adds {mem['nginx'].get('master_kib', 0) / 1024:.1f} MiB" if "nginx" in mem else "")
        + "). Idle connections each carried one request and were then left open for 1 s.\n"
        f"- Tether's threads with its whole runtime pinned: {'; '.join(f'{k}: {len(v)}' for k, v in aff.items())} "
        f"(thread names: {', '.join(sorted(set(aff.get('2 CPUs', []))))}); under the benchmark: "
        f"{len(mem.get('tether', {}).get('threads', []))}.\n"
    )
    if errors:
        rep.append("Errors seen: " + "; ".join(errors[:10]) + "\n")

    rep.append("### Spread over the rounds (min..max, ± half the range relative to the median)\n")
    lines = ["| | " + " | ".join(heads) + " |", "|---" * (len(heads) + 1) + "|"]
    for c in s.conns:
        lines.append(f"| req/s, {c} conns | " + " | ".join(spread(series(k, f"c{c}", "rps")) for k in cols) + " |")
        lines.append(f"| CPU µs/req, {c} conns | " + " | ".join(
            spread(series(k, f"c{c}", "cpu_us_per_req")) if k != "direct" else "-" for k in cols) + " |")
    for c in s.conns:
        cells = []
        for k in cols:
            if k in ("tether", "direct"):
                cells.append("-")
            else:
                cells.append(spread(ratio_stats(rounds, f"c{c}", k)[1]))
        lines.append(f"| tether ÷ this, {c} conns | " + " | ".join(cells) + " |")
    rep.append("\n".join(lines) + "\n")

    rep.append(f"### CPU µs/request per round, {s.conns[0]} conns\n")
    lines = ["| round | " + " | ".join(heads[:-1]) + " |", "|---" * len(heads) + "|"]
    for i, r in enumerate(rounds):
        lines.append(f"| {i + 1} | " + " | ".join(fmt_num(r[k][f"c{s.conns[0]}"]["cpu_us_per_req"], 2) for k in cols[:-1]) + " |")
    rep.append("\n".join(lines) + "\n")

    raw = os.path.join(ctx.workdir, "proxies.json")
    with open(raw, "w") as f:
        json.dump({"rounds": rounds, "memory": mem, "affinity": aff}, f, indent=1)


def render_table(heads: list[str], rows: list[tuple[str, list[str]]]) -> str:
    first = max(len(r[0]) for r in rows)
    widths = [max([len(h)] + [len(r[1][i]) for r in rows if r[1]]) for i, h in enumerate(heads)]
    out = [" " * first + "  " + "  ".join(h.rjust(w) for h, w in zip(heads, widths))]
    for label, cells in rows:
        if not cells:
            out.append(label)
            continue
        out.append(label.ljust(first) + "  " + "  ".join(c.rjust(w) for c, w in zip(cells, widths)))
    return "\n".join(out)


# === h2load: a fixed number of requests ===


def h2load(ctx: "Ctx", port: int, n: int, conns: int, h2: bool = False, streams: int = 1,
           timeout: float = 600.0) -> dict:
    """n keep-alive requests over conns connections from one h2load thread
    on the load CPU: HTTP/1.1, or h2c with prior knowledge (h2=True)."""
    argv = ["taskset", "-c", str(ctx.load_cpu), ctx.tools["h2load"], "-n", str(n), "-c", str(conns), "-t", "1"]
    argv += ["-m", str(streams)] if h2 else ["--h1"]
    cp = subprocess.run(argv + [f"http://127.0.0.1:{port}/"], capture_output=True, text=True, timeout=timeout)
    m = re.search(r"status codes: (\d+) 2xx", cp.stdout)
    ok = int(m.group(1)) if m else 0
    m = re.search(r"finished in ([\d.]+)(\w+),", cp.stdout)
    secs = parse_duration_s(m.group(1) + m.group(2)) if m else float("nan")
    proto = re.search(r"Application protocol: (\S+)", cp.stdout)
    return {"ok": ok, "secs": secs, "proto": proto.group(1) if proto else "?", "out": cp.stdout + cp.stderr}


def wait_h2load(ctx: "Ctx", port: int, p: subprocess.Popen, h2: bool, timeout: float = START_TIMEOUT) -> None:
    """Until a few requests over the protocol under test all answer 2xx."""
    wait_port(port, p, timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if h2load(ctx, port, 6, 1, h2, timeout=timeout)["ok"] == 6:
            return
        if p.poll() is not None:
            raise RuntimeError(f"{p.bench_name} exited with {p.returncode}:\n{tail(p.bench_log)}")
        time.sleep(0.1)
    raise RuntimeError(f"{p.bench_name} on {port} does not answer 2xx within {timeout:.0f}s")


# === part: instructions per request (cachegrind) ===


def cachegrind_total(path: str) -> int:
    """The total instruction count (`summary:` line) of a cachegrind output file."""
    with open(path) as f:
        for line in f:
            if line.startswith("summary:"):
                return int(line.split()[1])
    raise RuntimeError(f"no summary line in {path}")


class NotAllAnswered(RuntimeError):
    """A counted run's load saw errors: its count would not compare."""


def counted_run(ctx: "Ctx", key: str, n: int, hold: float, tag: str, binary: str | None = None,
                tool: str = "cachegrind") -> tuple[int, float]:
    """One fresh proxy under cachegrind serving n requests, living `hold`
    seconds from its start (longer if the load needs it): its instructions
    (`tool` "dhat": its heap allocations), and how long it lived."""
    s = ctx.settings
    if tool == "dhat":
        out = os.path.join(ctx.workdir, f"dhat.{tag}.json")
        wrap = [ctx.tools["valgrind"], "--tool=dhat", f"--dhat-out-file={out}"]
    else:
        out = os.path.join(ctx.workdir, f"cg.{tag}.out")
        wrap = [ctx.tools["valgrind"], "--tool=cachegrind", "--cache-sim=no", f"--cachegrind-out-file={out}"]
    (port,) = free_ports(1)
    t0 = time.monotonic()
    p = launch(ctx, key, f"cg-{tag}", port, wrap=wrap, binary=binary)
    # Health known, every member up, before the load: a run of 200s (a
    # condition, not a guess; start-up under valgrind is slow on a busy
    # machine), then a settle so the first probes' work is behind.
    wait_serving(port, p, START_TIMEOUT * 4)
    time.sleep(s.ins_settle)
    res = h2load(ctx, port, n, s.ins_conns)
    if res["ok"] != n:
        ctx.procs.stop(p, grace=120.0)
        raise NotAllAnswered(f"{tag}: {res['ok']} of {n} requests answered 2xx:\n{res['out'][-1500:]}")
    left = t0 + hold - time.monotonic()
    if left > 0:
        time.sleep(left)
    lived = time.monotonic() - t0
    ctx.procs.stop(p, grace=120.0)
    keep = os.environ.get("BENCH_KEEP_CG")
    if keep:
        # For `cg_annotate --diff`: where the instructions went, by function.
        os.makedirs(keep, exist_ok=True)
        shutil.copy(out, os.path.join(keep, os.path.basename(out)))
    return (dhat_blocks(out) if tool == "dhat" else cachegrind_total(out)), lived


def dhat_blocks(path: str) -> int:
    """Heap blocks allocated over a process's life, from a dhat output file
    (the sum of every allocation site's total blocks)."""
    with open(path) as f:
        return sum(pp["tbk"] for pp in json.load(f)["pps"])


def instructions_per_request(ctx: "Ctx", key: str, tag: str, binary: str | None = None,
                             tool: str = "cachegrind") -> dict:
    """(I(n2) - I(n1)) / (n2 - n1) over two fresh processes that live equally
    long, so start-up, shutdown, the first connects and timers (health
    probes) cancel out. The n2 run goes first: if its load outlasts the
    hold, the n1 run is held as long as the n2 process lived."""
    s = ctx.settings
    for attempt in range(1, 4):
        try:
            i2, lived = counted_run(ctx, key, s.ins_n2, s.ins_hold, f"{tag}-n2", binary, tool)
            i1, lived1 = counted_run(ctx, key, s.ins_n1, lived, f"{tag}-n1", binary, tool)
            break
        except NotAllAnswered as e:
            # Under valgrind on a busy machine a health probe can time out
            # and a request fail; such a pair is measured again.
            if attempt == 3:
                raise
            say(f"instructions: {e.args[0].splitlines()[0]}; measuring the pair again")
    per = (i2 - i1) / (s.ins_n2 - s.ins_n1)
    return {"i1": i1, "i2": i2, "per_request": per, "lived": (lived1, lived)}


def run_instructions(ctx: Ctx) -> None:
    s = ctx.settings
    ensure_backends(ctx)
    runs: dict[str, list[dict]] = {k: [] for k in PEERS}
    for rep in range(1, s.ins_reps + 1):
        for key in PEERS:
            r = instructions_per_request(ctx, key, f"{key}{rep}")
            runs[key].append(r)
            say(f"instructions {key} rep {rep}: I({s.ins_n1:,})={r['i1']:,} I({s.ins_n2:,})={r['i2']:,} "
                f"-> {r['per_request']:,.0f}/request (lived {r['lived'][0]:.1f} s and {r['lived'][1]:.1f} s)")
    per = {k: statistics.mean(r["per_request"] for r in v) for k, v in runs.items()}
    ctx.figures["instructions"] = per
    rows = [(k, [f"{per[k]:,.0f}", ", ".join(f"{r['per_request']:,.0f}" for r in runs[k]),
                 f"{per[k] / per['nginx']:.2f}"]) for k in PEERS]
    table = render_table(["instructions/request", "runs", "÷ nginx"], rows)
    say()
    say(f"Instructions per request (cachegrind, user space): (I({s.ins_n2:,}) - I({s.ins_n1:,})) / {s.ins_n2 - s.ins_n1:,}, "
        f"h2load --h1, {s.ins_conns} keep-alive connections")
    say(table)
    rep_ = ctx.report
    rep_.append("## Instructions per request (cachegrind)\n")
    rep_.append(
        "User-space instructions per proxied request, counted by valgrind's cachegrind "
        "(`--cache-sim=no`; this VM has no hardware counters, and the count repeats to about 0.1 %, "
        "where CPU time swings ±25 %). Per proxy and repetition, two fresh processes with part 1's "
        f"config run under valgrind on CPU {ctx.proxy_cpu}: one serves {s.ins_n1:,}, the other {s.ins_n2:,} "
        f"keep-alive HTTP/1.1 requests (h2load `--h1`, {s.ins_conns} connections, one thread, CPU {ctx.load_cpu}), "
        f"both live the same time (at least {s.ins_hold:g} s, from start to SIGTERM) so start-up, shutdown, "
        "health probes and other timers cancel out, and the figure is (I(n2) - I(n1)) / (n2 - n1). "
        "nginx runs with `master_process off` (the process under valgrind is the one that serves); "
        "HAProxy with `nbthread 1` and `-db`. Mean of the repetitions.\n"
    )
    rep_.append("```\n" + table + "\n```\n")
    if os.environ.get("BENCH_ALLOCS", "1") != "0":
        run_allocations(ctx)


def run_allocations(ctx: Ctx) -> None:
    """Tether's heap allocations per request, by the same two-count method
    under valgrind's dhat (every block malloc'd, whatever its size)."""
    s = ctx.settings
    r = instructions_per_request(ctx, "tether", "tether-alloc", tool="dhat")
    ctx.figures["allocations"] = r["per_request"]
    line = (f"Allocations per request (dhat, tether): (A({s.ins_n2:,}) - A({s.ins_n1:,})) / "
            f"{s.ins_n2 - s.ins_n1:,} = {r['per_request']:.2f} (A({s.ins_n1:,})={r['i1']:,}, "
            f"A({s.ins_n2:,})={r['i2']:,})")
    say(line)
    ctx.report.append("## Heap allocations per request (dhat)\n")
    ctx.report.append(
        "Tether under valgrind's dhat, the same two fresh processes and load as the instruction "
        "count; blocks allocated over each process's life, differenced. `BENCH_ALLOCS=0` skips it.\n\n"
        + line + "\n")


# === part: RSS after a burst, then idle ===


def conns_at(port: int) -> int:
    """Connections at a local port still open or closing on the server side
    (ESTABLISHED or CLOSE_WAIT in /proc/net/tcp)."""
    n = 0
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] in ("01", "08"):
                n += 1
    return n


def settled_rss(e: Entry, quiet: float = 2.0, limit: float = 15.0) -> tuple[int, float]:
    """RSS once it has not changed for `quiet` seconds (polled), and how long
    that took; `limit` bounds the wait."""
    t0 = time.monotonic()
    last, since = rss_of(e), time.monotonic()
    while time.monotonic() - t0 < limit:
        time.sleep(0.1)
        now = rss_of(e)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
    return last, time.monotonic() - t0


def burst_one(ctx: Ctx, key: str, h2: bool) -> dict:
    """A fresh proxy; its RSS fresh, after `burst` keep-alive requests over
    `burst_conns` connections, and once the load has closed and RSS has
    stayed put for 2 s."""
    s = ctx.settings
    (port,) = free_ports(1)
    name = f"burst-{key}-{'h2' if h2 else 'h1'}"
    p = launch(ctx, key, name, port, h2c=h2)
    e = Entry(key, key, port, p)
    wait_h2load(ctx, port, p, h2)
    kids = children(p.pid)
    e.serving = kids if key == "nginx" and kids else [p.pid]
    fresh = rss_of(e)
    res = h2load(ctx, port, s.burst, s.burst_conns, h2, s.burst_streams)
    if res["ok"] != s.burst:
        raise RuntimeError(f"{name}: {res['ok']} of {s.burst} requests answered 2xx:\n{res['out'][-2000:]}")
    loaded = rss_of(e)
    deadline = time.monotonic() + 10
    while conns_at(port) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = conns_at(port)
    after, waited = settled_rss(e)
    ctx.procs.stop(p)
    return {"fresh_kib": fresh, "loaded_kib": loaded, "after_kib": after, "waited": waited,
            "proto": res["proto"], "rps": s.burst / res["secs"] if res["secs"] else float("nan"), "left_open": left}


def run_burst(ctx: Ctx) -> None:
    s = ctx.settings
    ensure_backends(ctx)
    # BENCH_BURST_PEERS=tether: Tether alone (comparing its builds)
    peers = tuple(k for k in os.environ.get("BENCH_BURST_PEERS", "").split(",") if k in PEERS) or PEERS
    out: dict[str, dict] = {k: {} for k in peers}
    for key in peers:
        for h2 in (False, True):
            r = burst_one(ctx, key, h2)
            out[key]["h2" if h2 else "h1"] = r
            say(f"burst {key} {r['proto']}: RSS fresh {r['fresh_kib'] / 1024:.1f} MiB, after {s.burst:,} requests "
                f"{r['loaded_kib'] / 1024:.1f} MiB ({r['rps']:,.0f} req/s), idle {r['after_kib'] / 1024:.1f} MiB "
                f"(settled {r['waited']:.1f} s after the load closed)")
    ctx.figures["burst"] = {k: {proto: v["after_kib"] for proto, v in d.items()} for k, d in out.items()}
    rows: list[tuple[str, list[str]]] = []
    for proto, title in (("h1", "HTTP/1.1"), ("h2", f"h2c, {s.burst_streams} streams in flight per connection")):
        rows.append((title, []))
        for label, m in (("  fresh", "fresh_kib"), ("  right after the load", "loaded_kib"), ("  idle, settled", "after_kib")):
            rows.append((label, [f"{out[k][proto][m] / 1024:.1f}" for k in peers]))
    table = render_table(list(peers), rows)
    say()
    say(f"RSS (MiB) after {s.burst:,} requests on {s.burst_conns} keep-alive connections, then idle; fresh process each")
    say(table)
    ctx.report.append("## RSS after a burst, then idle\n")
    ctx.report.append(
        f"Per proxy and protocol, a fresh process with part 1's config (alone on CPU {ctx.proxy_cpu}) serves "
        f"{s.burst:,} keep-alive requests on {s.burst_conns} connections (h2load, one thread, CPU {ctx.load_cpu}; "
        f"HTTP/1.1, then h2c with prior knowledge and {s.burst_streams} streams in flight per connection: "
        "Tether and HAProxy on their one port, nginx 1.22 on an `http2` listener, since it cannot serve both "
        "in clear text on one port). Then the load closes its connections; once none is left at the proxy "
        "(/proc/net/tcp) the RSS of the serving process (nginx: the worker) is polled until it has stayed "
        "the same for 2 s. MiB.\n"
    )
    ctx.report.append("```\n" + table + "\n```\n")


# === part "h2up": HTTP/2 to the backends ===


def start_h2_backends(procs: Procs, workdir: str, ports: list[int], cpu: int) -> subprocess.Popen:
    """Three h2c-only (prior knowledge) backends in one nginx worker."""
    servers = "\n".join(
        f"""  server {{
    listen 127.0.0.1:{port} http2 backlog=4096;
    default_type text/plain;
    location / {{ return 200 "app-{i + 1}\\n"; }}
  }}"""
        for i, port in enumerate(ports)
    )
    conf = nginx_conf(workdir, "h2backends", servers)
    p = start_nginx(procs, workdir, "h2backends", conf, cpu)
    for port in ports:
        wait_port(port, p)
    return p


def start_h2up_proxy(ctx: Ctx, key: str, port: int, b_ports: list[int]) -> subprocess.Popen:
    """A proxy taking h2c from clients and speaking HTTP/2 (h2c) to the
    backends: Tether `protocol = "h2c"`, nginx `grpc_pass` (its only
    HTTP/2 upstream), HAProxy `proto h2`. One worker each, on the proxy CPU."""
    cpu = ctx.proxy_cpu
    name = f"h2up-{key}"
    if key == "tether":
        return start_tether(ctx.procs, ctx.workdir, name, port, b_ports, str(cpu), protocol="h2c")
    if key == "nginx":
        upstream = "\n".join(f"    server 127.0.0.1:{b};" for b in b_ports)
        block = f"""  upstream h2pool {{
{upstream}
    keepalive 256;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
  }}
  server {{
    listen 127.0.0.1:{port} http2 backlog=4096;
    location / {{
      grpc_pass grpc://h2pool;
      grpc_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    }}
  }}"""
        return start_nginx(ctx.procs, ctx.workdir, name, nginx_conf(ctx.workdir, name, block), cpu)
    if key == "haproxy":
        servers = "\n".join(
            f"  server app-{i + 1} 127.0.0.1:{b} proto h2 check inter 1s" for i, b in enumerate(b_ports)
        )
        path = os.path.join(ctx.workdir, f"{name}.cfg")
        with open(path, "w") as f:
            f.write(
                f"""# generated by bench/bench.py
global
  nbthread 1
  maxconn 4096

defaults
  mode http
  timeout connect 2s
  timeout client 60s
  timeout server 30s
  timeout http-keep-alive 60s
  option http-keep-alive
  option forwardfor
  http-reuse safe

frontend fe
  bind 127.0.0.1:{port} proto h2
  default_backend pool

backend pool
  balance roundrobin
{servers}
"""
            )
        return ctx.procs.start(["haproxy", "-db", "-f", path], cpu, name, ctx.workdir)
    raise ValueError(key)


def run_h2up(ctx: Ctx) -> None:
    """h2load (h2c) through each proxy to h2c backends: requests/s and the
    proxy's CPU per request, every proxy once per round, order rotated."""
    s = ctx.settings
    b_ports = free_ports(3)
    backends = start_h2_backends(ctx.procs, ctx.workdir, b_ports, ctx.load_cpu)
    say(f"h2up: backends: nginx, one worker, h2c-only ports {', '.join(map(str, b_ports))} (CPU {ctx.load_cpu})")
    entries: list[Entry] = []
    for key in PEERS:
        (port,) = free_ports(1)
        p = start_h2up_proxy(ctx, key, port, b_ports)
        wait_h2load(ctx, port, p, True)
        entries.append(Entry(key, key, port, p))
    conns, streams = 16, 10
    rounds: list[dict[str, dict]] = []
    for r in range(s.rounds):
        got: dict[str, dict] = {}
        for i in range(len(entries)):
            e = entries[(r + i) % len(entries)]
            t0 = cpu_ticks(e.pids())
            res = h2load(ctx, e.port, s.h2up, conns, True, streams)
            t1 = cpu_ticks(e.pids())
            if res["ok"] != s.h2up:
                raise RuntimeError(f"h2up {e.key}: {res['ok']} of {s.h2up} requests answered 2xx:\n"
                                   f"{res['out'][-2000:]}")
            cpu_s = (t1 - t0) / HZ
            got[e.key] = {"rps": s.h2up / res["secs"] if res["secs"] else float("nan"),
                          "cpu_us": cpu_s * 1e6 / s.h2up}
        rounds.append(got)
        say(f"h2up round {r + 1}/{s.rounds}: " + ", ".join(
            f"{k} {v['rps']:,.0f} req/s {v['cpu_us']:.1f} us/req" for k, v in got.items()))
    for e in entries:
        ctx.procs.stop(e.proc)
    ctx.procs.stop(backends)
    rows: list[tuple[str, list[str]]] = [
        ("requests/s (median)", [fmt_num(med([rd[k]["rps"] for rd in rounds])) for k in PEERS]),
        ("proxy CPU us per request (median)", [fmt_num(med([rd[k]["cpu_us"] for rd in rounds]), 1) for k in PEERS]),
    ]
    ratio = {peer: [rd["tether"]["cpu_us"] / rd[peer]["cpu_us"] for rd in rounds if rd[peer]["cpu_us"]]
             for peer in ("nginx", "haproxy")}
    rows.append(("tether's CPU per request / theirs, same round",
                 [""] + [fmt_sig(med(ratio[p])) for p in ("nginx", "haproxy")]))
    rows.append(("  range over rounds", [""] + [spread(ratio[p]) for p in ("nginx", "haproxy")]))
    table = render_table(list(PEERS), rows)
    say()
    say(f"HTTP/2 to the backends: {s.h2up:,} requests per run, h2c, {conns} connections x {streams} streams")
    say(table)
    ctx.figures["h2up"] = {k: med([rd[k]["cpu_us"] for rd in rounds]) for k in PEERS}
    ctx.report.append("## HTTP/2 to the backends\n")
    ctx.report.append(
        f"Three h2c-only backends (one nginx worker, `listen ... http2`, CPU {ctx.load_cpu}). Each proxy takes "
        "h2c from the client and speaks HTTP/2 to the backends, one worker, alone on CPU "
        f"{ctx.proxy_cpu}: Tether with `protocol = \"h2c\"` targets (TCP probes), nginx `grpc_pass` (its only "
        "HTTP/2 upstream; one stream per upstream connection, kept alive), HAProxy `server ... proto h2`. "
        f"Per round every proxy serves {s.h2up:,} requests from h2load (one thread, {conns} connections, "
        f"{streams} streams each, CPU {ctx.load_cpu}), order rotated; {s.rounds} rounds. CPU per request is "
        "the proxy's utime+stime over the run divided by the requests. On this shared machine CPU figures "
        "swing by a third between runs: read the same-round ratios, not the absolute numbers.\n"
    )
    ctx.report.append("```\n" + table + "\n```\n")


# === part 2: TLS ===


def make_cert(workdir: str) -> tuple[str, str, str]:
    """A self-signed ECDSA P-256 certificate for this run: (cert, key, both
    in one file for HAProxy). No key outlives the run's work directory."""
    openssl = shutil.which("openssl")
    if not openssl:
        raise RuntimeError("`openssl` not found; run bench/setup.sh")
    cert, key, both = (os.path.join(workdir, n) for n in ("tls.crt", "tls.key", "tls.pem"))
    cp = subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        capture_output=True, text=True, timeout=30)
    if cp.returncode != 0:
        raise RuntimeError(f"openssl req failed:\n{cp.stderr}")
    os.chmod(key, 0o600)
    with open(both, "w") as out:
        for part in (cert, key):
            with open(part) as f:
                out.write(f.read())
    os.chmod(both, 0o600)
    return cert, key, both


def negotiated(port: int) -> str:
    """What an OpenSSL client offering h2 and http/1.1 gets: version, cipher, ALPN."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with client_tls(["h2", "http/1.1"]).wrap_socket(raw) as c:
            return f"{c.version()} {c.cipher()[0]} ALPN {c.selected_alpn_protocol()}"


def run_tls(ctx: Ctx) -> None:
    s = ctx.settings
    proxy = ctx.proxy_cpu
    b_ports, _ = ensure_backends(ctx)
    cert, key, both = make_cert(ctx.workdir)
    ports = free_ports(4)
    variant = os.environ.get("BENCH_TETHER_B")
    t1 = start_tether(ctx.procs, ctx.workdir, "tether-tls", ports[0], b_ports, str(proxy), tls=(cert, key))
    t2 = start_tether(ctx.procs, ctx.workdir, "tether-tls-aa", ports[1], b_ports, str(proxy), variant, tls=(cert, key))
    ng = start_nginx_proxy(ctx.procs, ctx.workdir, ports[2], b_ports, proxy, name="nginx-tls", tls=(cert, key))
    hp = start_haproxy(ctx.procs, ctx.workdir, ports[3], b_ports, proxy, 4096, name="haproxy-tls", tls_pem=both)
    entries = [
        Entry("tether", "tether", ports[0], t1, scheme="https"),
        Entry("tether-aa", f"tether B ({os.path.basename(variant)})" if variant else "tether A/A", ports[1], t2,
              scheme="https"),
        Entry("nginx", "nginx", ports[2], ng, scheme="https"),
        Entry("haproxy", "haproxy", ports[3], hp, scheme="https"),
    ]
    agreed = {}
    for e in entries:
        wait_serving(e.port, e.proc, tls=True)
        agreed[e.key] = negotiated(e.port)
    say("TLS proxies up: " + ", ".join(f"{e.label} :{e.port} ({agreed[e.key]})" for e in entries))

    c = s.conns[0]
    for e in entries:
        wrk(e, c, s.warmup, ctx)
        new_connections(e, min(50, s.handshakes), ctx)

    rounds: list[dict] = []
    for r in range(s.rounds):
        order = entries[r % len(entries):] + entries[: r % len(entries)]
        this: dict = {}
        for e in order:
            res = {f"c{c}": wrk(e, c, s.secs, ctx)}
            if s.handshakes > 0:
                res["new"] = new_connections(e, s.handshakes, ctx)
            this[e.key] = res
        rounds.append(this)
        kinds = [f"c{c}"] + (["new"] if s.handshakes > 0 else [])
        ratios = "; ".join(
            f"{kind}: " + "  ".join(f"{k} {this['tether'][kind]['cpu_us_per_req'] / this[k][kind]['cpu_us_per_req']:.2f}"
                                   for k in ("tether-aa", "nginx", "haproxy"))
            for kind in kinds)
        say(f"TLS round {r + 1}/{s.rounds}: tether CPU/req ratio, {ratios}")

    report_tls(ctx, entries, rounds, agreed)
    for e in entries:
        ctx.procs.stop(e.proc)


def report_tls(ctx: Ctx, entries: list[Entry], rounds: list[dict], agreed: dict) -> None:
    s = ctx.settings
    c = s.conns[0]
    cols = [e.key for e in entries]
    heads = [e.label for e in entries]
    kinds = [(f"c{c}", f"{c} conns keep-alive over TLS, saturated (wrk)")]
    if s.handshakes > 0:
        kinds.append(("new", f"new TLS connection per request ({s.handshakes:,} sequential, full handshakes)"))

    def series(key: str, kind: str, metric: str) -> list[float]:
        return [r[key][kind][metric] for r in rounds]

    rows: list[tuple[str, list[str]]] = []
    for kind, title in kinds:
        rows.append((title, []))
        if kind == "new":
            rows.append(("  connections/s (client-bound)", [fmt_num(med(series(k, kind, "rps"))) for k in cols]))
            rows.append(("  CPU µs/connection", [fmt_num(med(series(k, kind, "cpu_us_per_req")), 1) for k in cols]))
        else:
            rows.append(("  requests/s", [fmt_num(med(series(k, kind, "rps"))) for k in cols]))
            rows.append(("  p50 / p99 ms", [f"{fmt_ms(med(series(k, kind, 'p50')))} / {fmt_ms(med(series(k, kind, 'p99')))}" for k in cols]))
            rows.append(("  CPU µs/request", [fmt_num(med(series(k, kind, "cpu_us_per_req")), 2) for k in cols]))
            if ctx.plain:
                rows.append((f"  plain HTTP, part 1 of this run", [fmt_num(ctx.plain[k]["cpu_us_per_req"], 2) if k in ctx.plain else "-" for k in cols]))
        rows.append(("  bottleneck proxy/load busy", [bottleneck([r[k][kind] for r in rounds]) for k in cols]))
    rows.append(("tether CPU/request ÷ this (median of rounds)", []))
    for kind, title in kinds:
        cells = []
        for k in cols:
            if k == "tether":
                cells.append("-")
                continue
            m, vals = ratio_stats(rounds, kind, k)
            cells.append(f"{m:.2f} [{min(vals):.2f}-{max(vals):.2f}]" if vals else "-")
        rows.append((f"  {'keep-alive' if kind != 'new' else 'new connection'} [min-max]", cells))
    table = render_table(heads, rows)
    say()
    say(f"TLS: {s.rounds} rounds, each proxy alone on CPU {ctx.proxy_cpu}; backends (plain HTTP) and load on CPU {ctx.load_cpu}")
    say(table)

    errors = []
    for r_i, r in enumerate(rounds):
        for k, res in r.items():
            for kind, x in res.items():
                bad = x.get("non2xx", 0) + x.get("sock_errors", 0) + x.get("errors", 0)
                if bad:
                    errors.append(f"round {r_i + 1} {k} {kind}: {bad} non-2xx or socket errors")
                if x.get("resumed"):
                    errors.append(f"round {r_i + 1} {k} {kind}: {x['resumed']} resumed sessions")
    for line in errors[:10]:
        say(f"warning: {line}")

    rep = ctx.report
    rep.append("## TLS\n")
    rep.append(
        f"The proxies of part 1 again, each terminating TLS on its own port with the same self-signed "
        f"ECDSA P-256 certificate (made per run with `openssl req`), TLS 1.2 and 1.3 only, ALPN h2 and "
        f"http/1.1 offered; the backends stay plain HTTP. Tether: its part-1 config plus `[proxy.tls]` "
        f"(rustls, ring); nginx: `listen ... ssl http2`, `ssl_protocols TLSv1.2 TLSv1.3`, default ciphers "
        f"and session settings; HAProxy: `bind ... ssl crt <pem> alpn h2,http/1.1 ssl-min-ver TLSv1.2`. "
        f"{s.rounds} rounds, order rotated each round, same CPUs as part 1.\n\n"
        f"- keep-alive: wrk (`-t1`, OpenSSL client, HTTP/1.1) at {c} connections for {s.secs:g} s: each "
        "connection does its handshake once and then carries thousands of requests, so the handshake is "
        "amortised away and the figure is the cost of encrypting and decrypting the traffic. CPU µs/request "
        "as in part 1 (utime+stime from /proc).\n"
        f"- new connection per request: {s.handshakes:,} sequential connections from this script (Python "
        "ssl, OpenSSL), each a full handshake (a fresh client context, so no session is offered for "
        "resumption; resumed sessions are counted and would be reported below) and one request with "
        "`Connection: close`. CPU µs/connection from the proxy's threads' schedstat (ns), since a "
        "run is only a few hundred ms of proxy CPU; it includes accept, the handshake, one proxied request "
        "and the close. Connections/s is bounded by the single-threaded client.\n"
        "- negotiated with an OpenSSL 3 client offering h2 and http/1.1: "
        + "; ".join(f"{e.label}: {agreed[e.key]}" for e in entries) + ".\n"
    )
    rep.append("```\n" + table + "\n```\n")
    if errors:
        rep.append("Errors seen: " + "; ".join(errors[:10]) + "\n")
    rep.append("### TLS: spread over the rounds (min..max, ± half the range relative to the median)\n")
    lines = ["| | " + " | ".join(heads) + " |", "|---" * (len(heads) + 1) + "|"]
    for kind, title in kinds:
        name = "keep-alive" if kind != "new" else "new connection"
        lines.append(f"| CPU µs, {name} | " + " | ".join(spread(series(k, kind, "cpu_us_per_req")) for k in cols) + " |")
        lines.append(f"| tether ÷ this, {name} | " + " | ".join(
            "-" if k == "tether" else spread(ratio_stats(rounds, kind, k)[1]) for k in cols) + " |")
    rep.append("\n".join(lines) + "\n")
    with open(os.path.join(ctx.workdir, "tls.json"), "w") as f:
        json.dump({"rounds": rounds, "negotiated": agreed}, f, indent=1)


# === part 3: the checker ===


class LineReader:
    """Lines of a child's stdout, on a queue, read by a thread."""

    def __init__(self, p: subprocess.Popen) -> None:
        self.q: queue.Queue = queue.Queue()
        self.t = threading.Thread(target=self._pump, args=(p,), daemon=True)
        self.t.start()

    def _pump(self, p: subprocess.Popen) -> None:
        for line in p.stdout:
            self.q.put(line.rstrip("\n"))
        self.q.put(None)

    def get(self, deadline: float) -> str | None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        try:
            line = self.q.get(timeout=left)
        except queue.Empty:
            raise TimeoutError from None
        if line is None:
            raise EOFError
        return line


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    v = sorted(values)
    i = min(len(v) - 1, max(0, round(q * (len(v) - 1))))
    return v[i]


def measure_share(pid: int, window: float) -> tuple[float, int]:
    t0 = cpu_ticks([pid])
    w0 = time.monotonic()
    time.sleep(window)
    t1 = cpu_ticks([pid])
    return (t1 - t0) / HZ / (time.monotonic() - w0), rss_kib(pid)


class Ports:
    """The targets: tether-bench-ports processes, each serving its share of the ports.

    With `--http` every target holds a listener and a kept-alive connection,
    two descriptors, and the open-file limit is per process: so several
    processes, each well under it.
    """

    def __init__(self, ctx: Ctx, n: int, kind: str) -> None:
        per = NOFILE // 2 - 1024 if kind == "http" else n
        shards = max(1, -(-n // max(per, 1)))
        self.procs: list[subprocess.Popen] = []
        self.readers: list[LineReader] = []
        self.ports: list[int] = []
        self.owner: dict[int, int] = {}
        for i in range(shards):
            count = n // shards + (1 if i < n % shards else 0)
            argv = [os.path.join(RELEASE, "tether-bench-ports"), "--count", str(count)]
            if kind == "http":
                argv.append("--http")
            p = ctx.procs.start(argv, ctx.load_cpu, f"bench-ports-{kind}-{i}", ctx.workdir,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
            r = LineReader(p)
            line = r.get(time.monotonic() + START_TIMEOUT + count / 500)
            if not line.startswith("ports "):
                raise RuntimeError(f"tether-bench-ports said {line!r}")
            for port in (int(x) for x in line.split()[1].split(",")):
                self.ports.append(port)
                self.owner[port] = i
            self.procs.append(p)
            self.readers.append(r)

    def command(self, cmd: str, port: int) -> str:
        i = self.owner[port]
        self.procs[i].stdin.write(f"{cmd} {port}\n")
        self.procs[i].stdin.flush()
        return self.readers[i].get(time.monotonic() + 10)

    def accepts(self) -> tuple[int, float]:
        """Connections accepted so far on every port, and when (s)."""
        total, at = 0, 0.0
        for p, r in zip(self.procs, self.readers):
            p.stdin.write("stats\n")
            p.stdin.flush()
            deadline = time.monotonic() + 10
            while True:
                line = r.get(deadline)
                if line.startswith("stats "):
                    _, accepts, at_us = line.split()
                    total += int(accepts)
                    at = max(at, int(at_us) / 1e6)
                    break
        return total, at

    def stop(self, ctx: Ctx) -> None:
        for p in self.procs:
            p.stdin.close()
            ctx.procs.stop(p)


def run_checker(ctx: Ctx, kind: str) -> None:
    s = ctx.settings
    n = s.targets
    targets = Ports(ctx, n, kind)
    ports = targets.ports
    say(f"checker ({kind}): {n:,} targets listening (tether-bench-ports, CPU {ctx.load_cpu})")

    (grpc,) = free_ports(1)
    cfg = os.path.join(ctx.workdir, f"checker-{kind}.toml")
    with open(cfg, "w") as f:
        f.write(
            f"""# generated by bench/bench.py
[checker]
grpc_listen = "127.0.0.1:{grpc}"

[admin]
listen = "127.0.0.1:0"

[health]
kind = "{kind}"
path = "/"
interval = "{s.probe_interval}"
timeout = "1s"
# one probe decides, so a closed port is news within one interval
rise = 1
fall = 1

[log]
level = "warn"

"""
        )
        for i, port in enumerate(ports):
            f.write(f'[[targets]]\nurl = "http://127.0.0.1:{port}"\nname = "t{i}"\n')
    env = tether_env()
    started = time.monotonic()
    checker = ctx.procs.start([checker_binary(), "--config", cfg], ctx.proxy_cpu,
                              f"checker-{kind}", ctx.workdir, env=env)
    wait_port(grpc, checker, START_TIMEOUT + n / 500)
    # Every target has had its first probe within the first second; this is
    # the pool's own memory, before any subscriber holds a stream.
    time.sleep(parse_duration_s(s.probe_interval) + 2.0)
    rss_alone = rss_kib(checker.pid)
    watch = ctx.procs.start(
        [os.path.join(RELEASE, "tether-bench-watch"), "--checker", f"http://127.0.0.1:{grpc}",
         "--subscribers", str(s.subscribers)], ctx.load_cpu, f"bench-watch-{kind}", ctx.workdir,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
    watch_r = LineReader(watch)
    ready: set[int] = set()
    deadline = time.monotonic() + START_TIMEOUT + n / 500
    while len(ready) < s.subscribers:
        try:
            line = watch_r.get(deadline)
        except TimeoutError:
            raise RuntimeError(f"only {len(ready)} of {s.subscribers} subscribers saw every target healthy:"
                               f"\n{tail(checker.bench_log)}\n{tail(watch.bench_log)}") from None
        if line.startswith("ready "):
            ready.add(int(line.split()[1]))
        elif line.startswith("error "):
            raise RuntimeError(f"tether-bench-watch: {line}")
    say(f"checker: all {n:,} targets healthy at all {s.subscribers} subscribers "
        f"{time.monotonic() - started:.1f} s after start")

    time.sleep(2.0)
    acc0, at0 = targets.accepts()
    ao0 = active_opens()
    share, rss = measure_share(checker.pid, s.window)
    ao1 = active_opens()
    acc1, at1 = targets.accepts()
    opened = (acc1 - acc0) / (at1 - at0)
    connects = (ao1 - ao0) / (at1 - at0)
    tw, ct = sockstat_tw(), conntrack_count()
    nthreads = len(threads(checker.pid))
    say(f"checker ({kind}): CPU {share * 100:.1f} % of one core, RSS {rss / 1024:.1f} MiB, {nthreads} threads, "
        f"{opened:,.0f} connections accepted/s, host connects/s {connects:,.0f}; host TIME_WAIT {tw:,}, conntrack entries {ct:,}")

    # Flip ports one at a time; each change must reach every subscriber.
    rng = random.Random(7)
    e2e: list[float] = []  # port closed/opened -> arrival, ms
    prop: list[float] = []  # checker's last_change -> arrival, ms
    fanout: list[float] = []  # first to last subscriber, per change, ms
    missing = 0
    spurious = 0
    interval_s = parse_duration_s(s.probe_interval)
    for flip in range(s.flips):
        idx = rng.randrange(n)
        port, name = ports[idx], f"t{idx}"
        for cmd, want in (("close", "unhealthy"), ("open", "healthy")):
            # A change arrives right after the target's probe; acting at once
            # would put every reopen exactly one interval before the next
            # probe. A random pause makes the detection delay uniform.
            time.sleep(rng.uniform(0, interval_s))
            ack = targets.command(cmd, port)
            t0_us = int(ack.split()[2])
            got: set[int] = set()
            arrivals: list[int] = []
            deadline = time.monotonic() + 5 + 3 * 1.0
            while len(got) < s.subscribers:
                try:
                    line = watch_r.get(deadline)
                except TimeoutError:
                    missing += s.subscribers - len(got)
                    break
                parts = line.split()
                if parts[0] != "change":
                    continue
                _, sub, tname, state, _version, last_ms, at_us = parts
                if tname != name:
                    spurious += 1
                    continue
                if state != want:
                    continue
                got.add(int(sub))
                arrivals.append(int(at_us))
                e2e.append((int(at_us) - t0_us) / 1e3)
                prop.append((int(at_us) - int(last_ms) * 1000) / 1e3)
            if arrivals:
                fanout.append((max(arrivals) - min(arrivals)) / 1e3)
    # anything the subscribers still have queued
    try:
        while True:
            line = watch_r.get(time.monotonic() + 0.5)
            if line.startswith("change "):
                spurious += 1
    except (TimeoutError, EOFError):
        pass
    rss_after = rss_kib(checker.pid)
    watch.stdin.close()
    ctx.procs.stop(watch)
    ctx.procs.stop(checker)
    changes = s.flips * 2
    say(f"checker: {changes} state changes x {s.subscribers} subscribers: "
        f"propagation p50 {pct(prop, 0.5):.2f} ms p99 {pct(prop, 0.99):.2f} ms; "
        f"from the port's close/open p50 {pct(e2e, 0.5):.0f} ms p99 {pct(e2e, 0.99):.0f} ms; "
        f"missing {missing}, other changes {spurious}")

    # The alternative: every proxy probes every target. HAProxy does it here.
    # BENCH_CHECK_HAPROXY=0 skips it (runs that compare checker builds only;
    # it also spares the host's conntrack table 10,000 new connections a second).
    h_share = h_rss = h_opened = h_connects = float("nan")
    if os.environ.get("BENCH_CHECK_HAPROXY", "1") != "0":
        hcfg = os.path.join(ctx.workdir, "haproxy-checks.cfg")
        (hport,) = free_ports(1)
        with open(hcfg, "w") as f:
            f.write(
                f"""# generated by bench/bench.py
global
  nbthread 1
  maxconn 1000
  no strict-limits

defaults
  mode tcp
  timeout connect 1s
  timeout client 60s
  timeout server 60s
  default-server inter {s.probe_interval} rise 1 fall 1
  {'option httpchk GET /' if kind == 'http' else ''}

frontend fe
  bind 127.0.0.1:{hport}
  default_backend pool

backend pool
  balance roundrobin
"""
            )
            for i, port in enumerate(ports):
                f.write(f"  server t{i} 127.0.0.1:{port} check\n")
        hp = ctx.procs.start(["haproxy", "-db", "-f", hcfg], ctx.proxy_cpu, f"haproxy-checks-{kind}", ctx.workdir)
        wait_port(hport, hp, START_TIMEOUT + n / 500)
        time.sleep(3.0)
        hacc0, hat0 = targets.accepts()
        hao0 = active_opens()
        h_share, h_rss = measure_share(hp.pid, s.window)
        hao1 = active_opens()
        hacc1, hat1 = targets.accepts()
        h_opened = (hacc1 - hacc0) / (hat1 - hat0)
        h_connects = (hao1 - hao0) / (hat1 - hat0)
        ctx.procs.stop(hp)
        say(f"haproxy probing the pool itself: CPU {h_share * 100:.1f} % of one core, RSS {h_rss / 1024:.1f} MiB")
    targets.stop(ctx)

    subs = s.subscribers
    rows = [
        ("", ["CPU (cores)", "RSS MiB", "probes/s at the targets", "accepted/s", "host connects/s"]),
        (f"tether-checker, one for all {subs} proxies",
         [f"{share:.3f}", f"{rss_after / 1024:.1f}", f"{n / interval_s:,.0f}", f"{opened:,.0f}", f"{connects:,.0f}"]),
        ("  the same before any subscriber", ["", f"{rss_alone / 1024:.1f}", "", "", ""]),
        ("haproxy probing the pool, one proxy",
         [f"{h_share:.3f}", f"{h_rss / 1024:.1f}", f"{n / interval_s:,.0f}", f"{h_opened:,.0f}", f"{h_connects:,.0f}"]),
        (f"{subs} proxies each probing (haproxy x {subs})",
         [f"{h_share * subs:.2f}", f"{h_rss * subs / 1024:,.0f}", f"{n * subs / interval_s:,.0f}",
          f"{h_opened * subs:,.0f}", f"{h_connects * subs:,.0f}"]),
    ]
    table = "\n".join(label.ljust(44) + "".join(c.rjust(26 if i == 2 else 13 if i < 2 else 18)
                                                 for i, c in enumerate(cells))
                      for label, cells in rows)
    lat = (f"a state change reaching all {subs} subscribers ({changes} changes, {len(prop):,} arrivals):\n"
           f"  from the checker's recorded change (last_change_unix_ms, 1 ms resolution, so up to 1 ms high): "
           f"p50 {pct(prop, 0.5):.1f} ms, p99 {pct(prop, 0.99):.1f} ms\n"
           f"  first to last of the {subs} subscribers, per change: "
           f"p50 {pct(fanout, 0.5):.2f} ms, max {max(fanout, default=float('nan')):.2f} ms\n"
           f"  from the port's close or reopen (detection within one {s.probe_interval} interval + propagation): "
           f"p50 {pct(e2e, 0.5):.0f} ms, p99 {pct(e2e, 0.99):.0f} ms\n"
           f"  arrivals missing after 8 s: {missing}; changes of other targets (flaps): {spurious}\n"
           f"  host during the checker's window: {tw:,} sockets in TIME_WAIT, {ct:,} conntrack entries "
           f"(-1: not readable)")
    say()
    say(f"Checker: {n:,} targets over {kind.upper()} every {s.probe_interval}, {subs} Watch subscribers; "
        f"checker alone on CPU {ctx.proxy_cpu}")
    say(table)
    say(lat)

    rep = ctx.report
    rep.append(f"## Checker, {kind.upper()} probes\n")
    rep.append(
        f"{n:,} loopback ports (tether-bench-ports{' --http: `200 OK` to every request, keep-alive' if kind == 'http' else ''}) "
        f"probed over {kind.upper()} every {s.probe_interval} by one "
        f"tether-checker (rise 1, fall 1) alone on CPU {ctx.proxy_cpu}, with {subs} Watch subscribers "
        f"(tether-bench-watch, one connection each). CPU share and RSS over {s.window:g} s of steady "
        f"probing; the checker ran {nthreads} threads. Then {s.flips} ports were closed and reopened one "
        "at a time, and every arrival of the change at every subscriber was timed. The alternative is "
        f"measured with HAProxy (one thread) probing the same pool with `check inter {s.probe_interval}`"
        f"{' and `option httpchk GET /`' if kind == 'http' else ''} "
        f"and multiplied by {subs}: that is what the pool costs when each proxy probes every target "
        "itself, as HAProxy does (nginx's open-source build has no active checks at all). Connections "
        "opened per second: the accepts tether-bench-ports counted over the same window, and the host's "
        "`Tcp: ActiveOpens` (/proc/net/snmp; host-wide, so other work adds to it), which also counts "
        "connects reset before the target accepted them (TCP probes closed with SO_LINGER 0, as "
        "HAProxy's and Tether's are). conntrack's table limit was raised for the run (see below).\n"
    )
    rep.append("```\n" + table + "\n\n" + lat + "\n```\n")
    with open(os.path.join(ctx.workdir, f"checker-{kind}.json"), "w") as f:
        json.dump({"kind": kind, "opened_per_s": opened, "host_connects_per_s": connects,
                   "haproxy_host_connects_per_s": h_connects, "haproxy_opened_per_s": h_opened, "time_wait": tw,
                   "conntrack": ct, "share": share, "rss_kib": rss_after, "rss_alone_kib": rss_alone, "haproxy_share": h_share, "haproxy_rss_kib": h_rss,
                   "prop_ms": prop, "e2e_ms": e2e, "fanout_ms": fanout, "missing": missing, "spurious": spurious}, f)
    ctx.figures.setdefault("checker", {})[kind] = {
        "rss_kib": rss_after, "rss_alone_kib": rss_alone, "opened_per_s": opened, "haproxy_rss_kib": h_rss,
        "haproxy_opened_per_s": h_opened}


# === the goals table ===


@dataclass
class Goal:
    label: str
    values: dict  # proxy key -> figure (nan or absent: not measured)
    goal: str  # as the issue states it
    bound: float  # Tether's figure must stay at or under it (below it if strict)
    digits: int
    unit: str
    strict: bool = False


def goal_rows(ctx: Ctx) -> list[Goal]:
    """Every row of issue 10's table, from the figures the parts recorded."""
    s, f = ctx.settings, ctx.figures
    nan = float("nan")
    ins = f.get("instructions", {})
    p50 = f.get("p50_rate_ms", {})
    burst = f.get("burst", {})
    rows = [
        Goal(f"RSS per idle keep-alive client connection ({s.idle:,} idle)", f.get("idle_kib_per_conn", {}),
             "<= 1 KiB", 1.0, 2, "KiB"),
        Goal(f"CPU per request ÷ nginx's, {s.conns[0]} conns, median of same-round ratios",
             f.get("cpu_ratio_nginx", {}), "<= 0.90", 0.90, 2, ""),
        Goal("user-space instructions per request (cachegrind)", ins, "below nginx's", ins.get("nginx", nan), 0, "",
             strict=True),
        Goal(f"p50 at {s.rate:,} req/s", p50, "no higher than nginx", p50.get("nginx", nan), 2, "ms"),
    ]
    for proto, title in (("h1", "HTTP/1.1"), ("h2", "h2c")):
        rows.append(Goal(f"RSS after {s.burst:,} requests on {s.burst_conns} conns, then idle ({title})",
                         {k: v[proto] / 1024 for k, v in burst.items() if proto in v}, "<= 20 MiB", 20.0, 1, "MiB"))
    checker = f.get("checker", {})
    for kind in ("tcp", "http"):
        c = checker.get(kind)
        if c or kind == "http":
            c = c or {}
            rows.append(Goal(f"checker RSS, {s.targets:,} targets, {s.subscribers} subscribers ({kind.upper()})",
                             {"tether": c.get("rss_kib", nan) / 1024, "haproxy": c.get("haproxy_rss_kib", nan) / 1024},
                             "<= 64 MiB", 64.0, 1, "MiB"))
    c = checker.get("http", {})
    rows.append(Goal(f"checker connections opened/s, {s.targets:,} HTTP targets at {s.probe_interval}",
                     {"tether": c.get("opened_per_s", nan), "haproxy": c.get("haproxy_opened_per_s", nan)},
                     "< 100", 100.0, 0, "/s", strict=True))
    return rows


def fmt_fig(v: float | None, digits: int) -> str:
    return "-" if v is None or v != v else f"{v:,.{digits}f}"


def verdict(g: Goal) -> str:
    v = g.values.get("tether")
    if v is None or v != v or g.bound != g.bound:
        return "not measured"
    ok = v < g.bound if g.strict else v <= g.bound
    if ok:
        return "met"
    over = v - g.bound
    rel = f" (+{over / g.bound * 100:.0f} %)" if g.bound else ""
    return f"missed by {fmt_fig(over, g.digits)}{(' ' + g.unit) if g.unit else ''}{rel}"


def report_goals(ctx: Ctx) -> None:
    """Issue 10's table: Tether's figure, nginx's and HAProxy's from this
    run, the goal, and whether Tether met it or by how much it missed."""
    rows = [(g.label, [fmt_fig(g.values.get(k), g.digits) for k in PEERS] + [g.goal, verdict(g)])
            for g in goal_rows(ctx)]
    table = render_table(list(PEERS) + ["goal", "Tether: met?"], rows)
    say()
    say("Goals (issue 10)" + (" — QUICK run: smaller counts than the goals name" if ctx.settings.quick else ""))
    say(table)
    ctx.report.append("## Goals\n")
    ctx.report.append(
        "Issue 10's table with this run's figures; \"-\" is a figure the proxy has no counterpart for (nginx's "
        "open-source build has no active checks) or a part not run (`BENCH_ONLY`). The checker rows' HAProxy "
        "column is one HAProxy probing the same pool itself (part \"checker\"), nginx's ratio to itself is 1. "
        "Met or missed is judged on Tether's figure; the goals name full-run counts, so a `BENCH_QUICK` run "
        "only shows the table works.\n"
    )
    ctx.report.append("```\n" + table + "\n```\n")


# === main ===


def find_tool(name: str) -> str:
    path = shutil.which(name)
    if not path:
        cand = os.path.join(os.environ.get("CARGO_HOME", os.path.expanduser("~/.cargo")), "bin", name)
        if os.access(cand, os.X_OK):
            path = cand
    if not path:
        sys.exit(f"bench: `{name}` not found; run bench/setup.sh (or `make bench`)")
    return path


def version(argv: list[str]) -> str:
    try:
        cp = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    text = (cp.stdout + cp.stderr).strip().splitlines()
    return text[0].strip() if text else "?"


def git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
    except OSError:
        return ""


def raise_nofile(need: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(need, soft)
    try:
        top = max(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (top, top))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def main() -> int:
    s = Settings.from_env()
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        sys.exit("bench: needs two CPUs (one for the proxy alone, one for the backends and load)")
    load_cpu = env_int("BENCH_LOAD_CPU", cpus[0])
    proxy_cpu = env_int("BENCH_PROXY_CPU", cpus[1])
    if load_cpu == proxy_cpu:
        sys.exit("bench: BENCH_LOAD_CPU and BENCH_PROXY_CPU must differ")
    tools = {t: find_tool(t) for t in ("nginx", "haproxy", "taskset")}
    if "proxies" in s.parts or "tls" in s.parts or "balance" in s.parts:
        tools["wrk"] = find_tool("wrk")
    if "proxies" in s.parts:
        tools["oha"] = find_tool("oha")
    if "tls" in s.parts:
        tools["openssl"] = find_tool("openssl")
    if "burst" in s.parts or "instructions" in s.parts or "h2up" in s.parts:
        tools["h2load"] = find_tool("h2load")
    if "instructions" in s.parts:
        tools["valgrind"] = find_tool("valgrind")
    if not os.access(tether_binary(), os.X_OK):
        sys.exit(f"bench: {tether_binary()} missing; run `cargo build --release --locked --bins`")
    if "checker" in s.parts:
        if not os.access(checker_binary(), os.X_OK):
            sys.exit(f"bench: {checker_binary()} missing; run `cargo build --release --locked --bins`")
        for b in ("tether-bench-ports", "tether-bench-watch"):
            if not os.access(os.path.join(RELEASE, b), os.X_OK):
                sys.exit(f"bench: target/release/{b} missing; run `cargo build --release --locked --bins`")

    # 10,000 idle connections: this script holds one end, the proxy the other;
    # 10,000 listening ports plus the probes in flight for the checker part.
    global NOFILE
    NOFILE = nofile = raise_nofile(max(s.idle, s.targets) * 2 + 4096)
    # The driver lives with the load, never on the proxy's CPU.
    os.sched_setaffinity(0, {load_cpu})

    est = estimate(s)
    mode = "QUICK smoke run (not a measurement)" if s.quick else "full run"
    say(f"bench: {mode}: {', '.join(s.parts)}; {s.rounds} rounds x {s.secs:g} s, {s.idle:,} idle connections, "
        f"{s.handshakes:,} new TLS connections, {s.targets:,} checker targets; proxy CPU {proxy_cpu}, "
        f"load CPU {load_cpu}; open files {nofile:,}")
    say(f"bench: tether-proxy {tether_binary()}")
    say(f"bench: estimated duration {est / 60:.1f} min (finishes about "
        f"{(dt.datetime.now() + dt.timedelta(seconds=est)).strftime('%H:%M')})")

    started = time.monotonic()
    workdir = tempfile.mkdtemp(prefix="tether-bench-")
    procs = Procs()

    def on_signal(signum, _frame):
        procs.stop_all()
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    ctx = Ctx(s, procs, workdir, proxy_cpu, load_cpu, tools)
    ok = False
    try:
        if "proxies" in s.parts:
            run_proxies(ctx)
        if "idle" in s.parts:
            run_idle(ctx)
        if "burst" in s.parts:
            run_burst(ctx)
        if "instructions" in s.parts:
            run_instructions(ctx)
        if "tls" in s.parts:
            run_tls(ctx)
        if "checker" in s.parts:
            for kind in s.check_kinds:
                run_checker(ctx, kind)
        if "h2up" in s.parts:
            run_h2up(ctx)
        if "balance" in s.parts:
            run_balance(ctx)
        report_goals(ctx)
        if os.environ.get("BENCH_FIGURES"):
            with open(os.environ["BENCH_FIGURES"], "w") as f:
                json.dump(ctx.figures, f, indent=1)
        ok = True
    except (RuntimeError, TimeoutError, EOFError, OSError, subprocess.SubprocessError) as e:
        say(f"bench: failed: {e}")
        say(f"bench: logs kept in {workdir}")
    finally:
        procs.stop_all()
    if not ok:
        return 1

    took = time.monotonic() - started
    write_report(ctx, took, est)
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


# === part "balance": one slow member among three ===


def echo_binary() -> str:
    path = os.environ.get("BENCH_ECHO")
    if path:
        return path
    release = os.path.join(RELEASE, "tether-echo")
    if os.access(release, os.X_OK):
        return release
    return os.path.join(ROOT, "target", "debug", "tether-echo")


def body_of(port: int) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", "/")
        return conn.getresponse().read().decode(errors="replace").strip()
    finally:
        conn.close()


def wait_members(port: int, names: set[str], timeout: float = START_TIMEOUT) -> None:
    """Until every member has answered through the proxy (all healthy)."""
    deadline = time.monotonic() + timeout
    seen: set[str] = set()
    while time.monotonic() < deadline:
        try:
            seen.add(body_of(port))
        except OSError:
            pass
        if names <= seen:
            return
    raise RuntimeError(f"the proxy on {port} served {sorted(seen)}, not all of {sorted(names)}")


def answered_by(admin: int) -> dict[str, int]:
    """Responses per member so far, from the proxy's /metrics."""
    conn = http.client.HTTPConnection("127.0.0.1", admin, timeout=5)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    out: dict[str, int] = {}
    for m in re.finditer(r'^tether_requests_total\{target="([^"]+)",code="[^"]+"\} (\d+)', text, re.M):
        out[m.group(1)] = out.get(m.group(1), 0) + int(m.group(2))
    return out


def run_balance(ctx: Ctx) -> None:
    s = ctx.settings
    ports = free_ports(3)
    names = {f"app-{i + 1}" for i in range(3)}
    for i, port in enumerate(ports):
        argv = [echo_binary(), "--listen", f"127.0.0.1:{port}", "--name", f"app-{i + 1}"]
        if i == 2:
            argv += ["--latency-ms", str(s.slow_ms)]
        p = ctx.procs.start(argv, ctx.load_cpu, f"echo-{i + 1}", ctx.workdir)
        wait_port(port, p)
    say(f"balance: members app-1, app-2 and app-3 (+{s.slow_ms} ms) on CPU {ctx.load_cpu}; "
        f"wrk -c{s.balance_conns}, {s.rounds} rounds x {s.secs:g} s per policy")
    runs: dict[str, list[dict]] = {}
    slow_share: dict[str, float] = {}
    for policy in ("round_robin", "least_request"):
        port, admin = free_ports(2)
        p = start_tether(ctx.procs, ctx.workdir, f"tether-{policy}", port, ports, str(ctx.proxy_cpu),
                         proxy_extra=f'balance = "{policy}"\n', admin=f"127.0.0.1:{admin}")
        wait_members(port, names)
        entry = Entry("tether", policy, port, p)
        wrk(entry, s.balance_conns, s.warmup, ctx)
        before = answered_by(admin)
        runs[policy] = [wrk(entry, s.balance_conns, s.secs, ctx) for _ in range(s.rounds)]
        after = answered_by(admin)
        ctx.procs.stop(p)
        counts = {k: after.get(k, 0) - before.get(k, 0) for k in after}
        slow_share[policy] = counts.get("app-3", 0) / max(1, sum(counts.values()))
        r = runs[policy]
        say(f"  {policy}: p50 {fmt_ms(med([x['p50'] for x in r]))}, p90 {fmt_ms(med([x['p90'] for x in r]))}, "
            f"p99 {fmt_ms(med([x['p99'] for x in r]))}, {fmt_num(med([x['rps'] for x in r]))} req/s, "
            f"slow member's share {slow_share[policy] * 100:.1f} %")
    rr = med([x["p99"] for x in runs["round_robin"]])
    lr = med([x["p99"] for x in runs["least_request"]])
    ratio = rr / lr if lr else float("nan")
    say(f"  p99 round robin / least request: {ratio:.1f}x")
    rows = [("policy", "p50 ms", "p90 ms", "p99 ms (median; range)", "req/s", "app-3's share", "errors")]
    for policy, r in runs.items():
        rows.append((
            policy,
            fmt_ms(med([x["p50"] for x in r])),
            fmt_ms(med([x["p90"] for x in r])),
            f"{fmt_ms(med([x['p99'] for x in r]))} ({spread([x['p99'] * 1000 for x in r])})",
            fmt_num(med([x["rps"] for x in r])),
            f"{slow_share[policy] * 100:.1f} %",
            str(sum(x["non2xx"] + x["sock_errors"] for x in r)),
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    table = "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)
    ctx.report.append("## Balancing: one slow member among three\n")
    ctx.report.append(
        f"Three tether-echo members, app-3 slower by {s.slow_ms} ms, behind one Tether; "
        f"wrk, {s.balance_conns} keep-alive connections, {s.rounds} rounds x {s.secs:g} s per policy. "
        f"p99 of round robin over least request: **{ratio:.1f}x**. app-3's share is of the "
        f"responses the proxy counted per member (`tether_requests_total`) over the measured rounds.\n"
    )
    ctx.report.append("```\n" + table + "\n```\n")
    ctx.figures["balance_p99_ratio"] = ratio


def write_report(ctx: Ctx, took: float, est: float) -> None:
    s = ctx.settings
    # The commit of the work tree the measured binary was built in.
    tree = os.path.dirname(os.path.abspath(tether_binary()))
    commit = git("-C", tree, "rev-parse", "--short=12", "HEAD") or "unknown"
    if git("-C", tree, "status", "--porcelain", "--untracked-files=no"):
        commit += " (with uncommitted changes)"
    if os.environ.get("BENCH_TETHER_A"):
        commit += f" (tether-proxy: {tether_binary()})"
    if os.environ.get("BENCH_TETHER_ENV"):
        commit += f" (Tether's environment adds: {os.environ['BENCH_TETHER_ENV']})"
    cpu_model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    load = os.getloadavg()
    versions = [
        ("tether", version([tether_binary(), "--version"])),
        ("openssl", version(["openssl", "version"])),
        ("nginx", version(["nginx", "-v"])),
        ("haproxy", version(["haproxy", "-v"])),
        ("wrk", version([ctx.tools.get("wrk", "wrk"), "-v"]).split(" Copyright")[0]),
        ("oha", version([ctx.tools.get("oha", "oha"), "--version"])),
        ("h2load", version(["h2load", "--version"])),
        ("valgrind", version(["valgrind", "--version"])),
        ("rustc", version(["rustc", "--version"])),
        ("kernel", platform.release()),
        ("cpu", f"{cpu_model}, {os.cpu_count()} CPUs"),
    ]
    out = ["# Tether benchmark results\n"]
    if s.quick:
        out.append(
            "> **SMOKE RUN ON A BUSY MACHINE — NOT A MEASUREMENT.** Written by `BENCH_QUICK=1 make bench` "
            "(2 rounds of 1 s, fewer idle connections and checker targets) while other builds and tests "
            "ran on the same two cores. It only shows that the harness works end to end and what the "
            "report looks like; run `make bench` on a quiet machine for figures.\n"
        )
    out.append(
        f"- date: {dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}\n"
        f"- commit: {commit}\n"
        + "".join(f"- {k}: {v}\n" for k, v in versions)
        + f"- settings: parts {', '.join(s.parts)}; {s.rounds} rounds x {s.secs:g} s, {s.idle:,} idle connections, "
        f"{s.handshakes:,} new TLS connections, {s.targets:,} checker targets, {s.flips} port flips; took {took / 60:.1f} min (estimated {est / 60:.1f})\n"
        f"- load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}\n"
    )
    out.append(
        "How to read it: only same-run figures compare. Absolute requests/s and CPU figures on a shared "
        "machine swing by a third between runs; the ratio of Tether's CPU per request to a peer's, taken "
        "within each round, is the figure to quote, and the A/A column says how far two identical Tether "
        "processes drift apart in the same run. When the load CPU is the bottleneck, requests/s shows the "
        "load generator's limit, not the proxy's.\n"
    )
    out.extend(ctx.report)
    out.append(
        "## Reproduce\n\n```sh\nmake bench                 # full run, about "
        f"{estimate(full_settings()) / 60:.0f} min after the first install and build\n"
        "BENCH_QUICK=1 make bench   # smoke run, a few minutes\n```\n"
    )
    path = os.environ.get("BENCH_OUT", os.path.join(ROOT, "bench", "RESULTS.md"))
    # The log of what was tried, and what it measured, outlives each run.
    try:
        with open(path) as f:
            previous = f.read()
        if KEPT_MARKER in previous:
            out.append(KEPT_MARKER + previous.split(KEPT_MARKER, 1)[1].rstrip("\n") + "\n")
    except FileNotFoundError:
        pass
    with open(path, "w") as f:
        f.write("\n".join(out))
    shown = os.path.relpath(path, ROOT) if path.startswith(ROOT + os.sep) else path
    say(f"\nbench: wrote {shown} (took {took / 60:.1f} min)")


# Everything after this line in RESULTS.md is kept when a run rewrites it.
KEPT_MARKER = "<!-- kept across runs: the log of what was tried -->"


def full_settings() -> Settings:
    """The settings of a run without BENCH_QUICK or BENCH_ONLY, for the estimate."""
    saved = {k: os.environ.pop(k) for k in ("BENCH_QUICK", "BENCH_ONLY") if k in os.environ}
    try:
        return Settings.from_env()
    finally:
        os.environ.update(saved)


# === A/B of two tether-proxy builds (bench/metrics_ab.sh) ===


def ab_settings() -> Settings:
    """metrics_ab.sh's settings: N1, N2, CONNS, REPS, HOLD, SETTLE."""
    s = Settings.from_env()
    s.ins_n1, s.ins_n2 = env_int("N1", 2000), env_int("N2", 12000)
    s.ins_conns, s.ins_reps = env_int("CONNS", 16), env_int("REPS", 2)
    s.ins_hold, s.ins_settle = env_float("HOLD", 20.0), env_float("SETTLE", 4.0)
    return s


def main_ab(before: str, after: str) -> int:
    """Instructions per request of two tether-proxy builds, alternating A and
    B per repetition, by the method of part "instructions"."""
    s = ab_settings()
    bins = {"A": os.path.realpath(before), "B": os.path.realpath(after)}
    for b in bins.values():
        if not os.access(b, os.X_OK):
            sys.exit(f"metrics_ab: {b} is not an executable")
    tools = {t: find_tool(t) for t in ("nginx", "h2load", "valgrind", "taskset")}
    proxy_cpu, load_cpu = env_int("PROXY_CPU", 1), env_int("LOAD_CPU", 0)
    workdir = tempfile.mkdtemp(prefix="tether-metrics-ab-")
    ctx = Ctx(s, Procs(), workdir, proxy_cpu, load_cpu, tools)

    def on_signal(signum, _frame):
        ctx.procs.stop_all()
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    extras = {side: os.environ.get(f"AB_EXTRA_{side}", "").replace("\\n", "\n") for side in bins}
    for side, extra in extras.items():
        if extra:
            say(f"metrics_ab: {side}'s config adds: {extra!r}")
    say(f"metrics_ab: N1={s.ins_n1} N2={s.ins_n2} CONNS={s.ins_conns} REPS={s.ins_reps} HOLD={s.ins_hold:g}s; "
        f"proxy on CPU {proxy_cpu}, nginx and h2load on CPU {load_cpu}")
    per: dict[str, list[float]] = {"A": [], "B": []}
    try:
        for rep in range(1, s.ins_reps + 1):
            for side, b in bins.items():
                ctx.tether_extra = extras[side]
                r = instructions_per_request(ctx, "tether", f"{side}{rep}", b)
                per[side].append(r["per_request"])
                say(f"metrics_ab: {side} rep {rep}: I({s.ins_n1})={r['i1']} I({s.ins_n2})={r['i2']} -> "
                    f"{r['per_request']:.0f} instructions/request ({b})")
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        say(f"metrics_ab: failed: {e}; logs kept in {workdir}")
        return 1
    finally:
        ctx.procs.stop_all()
    ma, mb = statistics.mean(per["A"]), statistics.mean(per["B"])
    for side, name, m in (("A", "before (A)", ma), ("B", "after  (B)", mb)):
        say(f"{name}: {m:,.0f} instructions/request  (runs: {', '.join(f'{x:,.0f}' for x in per[side])})")
    say(f"difference: {mb - ma:+,.0f} instructions/request, {100 * (mb - ma) / ma:+.2f} %")
    if os.environ.get("KEEP") == "1":
        say(f"metrics_ab: kept {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--ab":
        sys.exit(main_ab(sys.argv[2], sys.argv[3]))
    sys.exit(main())
