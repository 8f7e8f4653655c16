#!/usr/bin/env python3
"""The compose stack for real: docker-compose.yml with real containers.

Builds the local base image (deploy/compose/base-image.sh) and the image
from binaries built on the host (--bin-dir), starts the stack under a
project name of its own with free host ports, and checks, through both
proxies: round robin over the backends, stickiness across proxies, a backend
failing its health check and one stopping (no failed request, traffic gone
within interval x fall + 1 s), both checkers stopping and coming back (fail
static), one checker cut off the backend network only (it says it is
impaired; the proxies follow the other, which still takes out a backend that
really fails, and the one killed after it) and then cut off every network,
each with 0 failed requests, also after it comes back, scaling the backends
3 -> 4, Prometheus (every proxy and checker scraped and `up`,
`tether_requests_total` counting exactly the requests sent, and
TetherNoHealthyMember firing in /api/v1/alerts once every backend fails its
health check), and `down -v` leaving nothing behind. The stack is always
torn down.

    python3 deploy/compose/test.py [--bin-dir target/debug] [--skip STEP,..]

Python 3 standard library only. Every wait has a deadline; the host reaches
the backends' container addresses directly (Linux bridge networking) to
switch their health.
"""

import argparse
import datetime
import http.client
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
from urllib.parse import quote

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN_STAGE = os.path.join(ROOT, "deploy", "compose", ".bin")
BINARIES = ("tether-checker", "tether-proxy", "tetherctl", "tether-echo")
IMAGE = "tether:latest"

# deploy/compose/checker.toml
INTERVAL = 1.0
FALL = 2
LEAVE_BOUND = INTERVAL * FALL + 1.0  # traffic leaves a failed backend within this
BACKEND_PORT = 8080
REQUEST_TIMEOUT = 5.0

# deploy/prometheus/prometheus.yml: the jobs and what they scrape.
PROM_TARGETS = {
    ("tether-proxy", "proxy-a:9901"),
    ("tether-proxy", "proxy-b:9901"),
    ("tether-checker", "checker-a:9902"),
    ("tether-checker", "checker-b:9902"),
}
# deploy/prometheus/rules/tether-alerts.yml: TetherNoHealthyMember's `for`.
NO_HEALTHY_FOR = 30.0
CONTAINERS = 9  # 3 backends, 2 checkers, 2 proxies, proxy-grpc, Prometheus

STEPS = (
    "pool-names",
    "round-robin",
    "prometheus",
    "grpc-proxy",
    "sticky",
    "backend-fail",
    "backend-stop",
    "checker-restart",
    "checker-backend-cut",
    "checker-partition",
    "scale",
    "alert",
    "down",
)

T0 = time.monotonic()


def log(message):
    print(f"[{time.monotonic() - T0:6.1f}s] {message}", flush=True)


class TestFailure(Exception):
    pass


def check(condition, message):
    if not condition:
        raise TestFailure(message)


def run(cmd, *, timeout=120, env=None, check_rc=True, quiet=False):
    """Runs a command; returns its stdout. Output goes to the transcript only
    on failure."""
    proc = subprocess.run(
        cmd,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        timeout=timeout,
    )
    if check_rc and proc.returncode != 0:
        if not quiet:
            sys.stdout.write(proc.stdout[-3000:])
            sys.stdout.write(proc.stderr[-3000:])
        raise TestFailure(f"`{shlex.join(cmd)}` exited with {proc.returncode}")
    return proc.stdout


def wait_for(what, predicate, deadline_s, poll=0.2):
    """Polls predicate() until it returns a true value or the deadline passes;
    returns (value, seconds taken)."""
    start = time.monotonic()
    last_error = None
    while True:
        try:
            value = predicate()
            if value:
                return value, time.monotonic() - start
        except (TestFailure, OSError, ValueError, subprocess.TimeoutExpired) as e:
            last_error = e
        if time.monotonic() - start > deadline_s:
            detail = f" (last error: {last_error})" if last_error else ""
            raise TestFailure(f"timed out after {deadline_s:.0f}s waiting for {what}{detail}")
        time.sleep(poll)


def free_ports(n):
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


# ---------------------------------------------------------------- HTTP


class Answer:
    __slots__ = ("t", "port", "status", "target", "last_use", "error")

    def __init__(self, t, port, status, target, last_use, error):
        self.t, self.port, self.status = t, port, status
        self.target, self.last_use, self.error = target, last_use, error

    @property
    def ok(self):
        return self.status == 200


def request(host, port, path="/", method="GET", headers=None):
    conn = http.client.HTTPConnection(host, port, timeout=REQUEST_TIMEOUT)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        resp.read()
        return Answer(
            time.monotonic(),
            port,
            resp.status,
            resp.getheader("x-target-server"),
            resp.getheader("x-target-server-last-use"),
            None,
        )
    except (OSError, http.client.HTTPException) as e:
        return Answer(time.monotonic(), port, 0, None, None, f"{type(e).__name__}: {e}")
    finally:
        conn.close()


class Load:
    """Sequential requests alternating over the proxies, paced, in a thread;
    bounded by max_seconds whatever happens."""

    def __init__(self, ports, pace=0.01, max_seconds=90):
        self.ports, self.pace, self.max_seconds = ports, pace, max_seconds
        self.answers = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        end = time.monotonic() + self.max_seconds
        i = 0
        while not self._stop.is_set() and time.monotonic() < end:
            self.answers.append(request("127.0.0.1", self.ports[i % len(self.ports)]))
            i += 1
            self._stop.wait(self.pace)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=REQUEST_TIMEOUT + 5)

    def count_after(self, t):
        return sum(1 for a in list(self.answers) if a.t >= t)

    def failures(self, since=0.0, until=float("inf")):
        return [a for a in list(self.answers) if since <= a.t <= until and not a.ok]


# -------------------------------------------------------------- the stack


class Stack:
    def __init__(self, args):
        self.project = args.project or f"tethertest{os.getpid()}"
        self.down = False
        self.stopped = None  # a backend container the steps left stopped
        self.network = f"{self.project}_default"
        self.backend_network = f"{self.project}_backends"
        *self.ports, self.prometheus_port, self.grpc_port = free_ports(4)
        self.compose = shlex.split(args.compose) + ["-p", self.project, "-f", "docker-compose.yml"]
        for extra in args.override:
            self.compose += ["-f", os.path.abspath(extra)]
        self.env = dict(
            os.environ,
            TETHER_BUILD_TARGET="runtime-host",
            TETHER_BASE_IMAGE=args.base_image,
            TETHER_PORT_A=str(self.ports[0]),
            TETHER_PORT_B=str(self.ports[1]),
            TETHER_PORT_PROMETHEUS=str(self.prometheus_port),
            TETHER_PORT_GRPC=str(self.grpc_port),
        )

    def dc(self, *args, timeout=120, check_rc=True):
        return run(self.compose + list(args), env=self.env, timeout=timeout, check_rc=check_rc)

    def containers(self):
        """service -> list of containers (dicts), by container number."""
        ids = run(
            ["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={self.project}"]
        ).split()
        if not ids:
            return {}
        out = {}
        for c in json.loads(run(["docker", "inspect"] + ids)):
            labels = c["Config"]["Labels"]
            nets = c["NetworkSettings"]["Networks"] or {}
            health = (c["State"].get("Health") or {}).get("Status")
            out.setdefault(labels["com.docker.compose.service"], []).append(
                {
                    "id": c["Id"][:12],
                    "name": c["Name"].lstrip("/"),
                    "number": int(labels.get("com.docker.compose.container-number", "0")),
                    "running": c["State"]["Running"],
                    "health": health,
                    # Backends live on their own network; the host reaches
                    # them there, and the checkers' members are named so.
                    "ip": (nets.get(self.backend_network) or nets.get(self.network) or {}).get(
                        "IPAddress"
                    )
                    or None,
                }
            )
        for cs in out.values():
            cs.sort(key=lambda c: c["number"])
        return out

    def container(self, service, number=1):
        for c in self.containers().get(service, []):
            if c["number"] == number:
                return c
        raise TestFailure(f"no container {service} #{number}")

    def members(self, checker="checker-a"):
        """A checker's pool: name -> target dict."""
        text = self.dc("exec", "-T", checker, "tetherctl", "health", "--json", timeout=20)
        return {t["name"]: t for t in json.loads(text)["targets"]}

    def ready(self, service, port):
        """Whether the service's admin /readyz answers 200."""
        proc = subprocess.run(
            self.compose
            + ["exec", "-T", service, "tetherctl", "ready", f"http://127.0.0.1:{port}/readyz"],
            cwd=ROOT, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=20,
        )
        return proc.returncode == 0

    def all_healthy(self, expected):
        cs = self.containers()
        running = [c for cs_ in cs.values() for c in cs_ if c["running"]]
        return len(running) == expected and all(c["health"] == "healthy" for c in running)


def prometheus_get(stack, path):
    """GET from the stack's Prometheus API; the `data` of a success."""
    conn = http.client.HTTPConnection("127.0.0.1", stack.prometheus_port, timeout=REQUEST_TIMEOUT)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = json.loads(resp.read())
    finally:
        conn.close()
    check(resp.status == 200 and body.get("status") == "success", f"GET {path}: {resp.status} {body}")
    return body["data"]


def prometheus_query(stack, expr):
    """An instant query: {frozenset(labels.items()): value}."""
    data = prometheus_get(stack, f"/api/v1/query?query={quote(expr)}")
    return {frozenset(r["metric"].items()): float(r["value"][1]) for r in data["result"]}


def proxies_scraped_since(stack, wall):
    """Whether Prometheus's last scrape of each proxy began after `wall`
    (time.time()) and succeeded."""
    active = prometheus_get(stack, "/api/v1/targets?state=active")["activeTargets"]
    proxies = [t for t in active if t["labels"]["job"] == "tether-proxy"]
    check(len(proxies) == 2, f"Prometheus scrapes {len(proxies)} proxies")
    for t in proxies:
        # RFC 3339 with nanoseconds; Python reads microseconds.
        stamp = re.sub(r"(\.\d{6})\d*", r"\1", t["lastScrape"]).replace("Z", "+00:00")
        if t["health"] != "up" or datetime.datetime.fromisoformat(stamp).timestamp() <= wall:
            return False
    return True


def firing(stack, alertname):
    """The instances for which `alertname` is firing."""
    alerts = prometheus_get(stack, "/api/v1/alerts")["alerts"]
    return {
        a["labels"].get("instance")
        for a in alerts
        if a["labels"].get("alertname") == alertname and a["state"] == "firing"
    }


def is_backend(target, c):
    """Whether a member name/url (x-target-server) is container c."""
    if not target or not c.get("ip"):
        return False
    ip = c["ip"]
    return (
        f"@{ip}:" in target
        or f"//{ip}:" in target
        or f"//{c['name']}:" in target
        or target == c["name"]
    )


def backend_of(target, backends):
    for c in backends:
        if is_backend(target, c):
            return c
    return None


def short(c):
    return f"backend#{c['number']} ({c['ip']})"


def hits(answers, backends):
    counts = {c["number"]: 0 for c in backends}
    for a in answers:
        c = backend_of(a.target, backends)
        if c:
            counts[c["number"]] += 1
    return counts


def proxies_reach(stack, c, rounds=12):
    """Whether a round of requests through each proxy reaches container c."""
    for port in stack.ports:
        answers = [request("127.0.0.1", port) for _ in range(rounds)]
        if not any(a.ok and is_backend(a.target, c) for a in answers):
            return False
    return True


def proxies_avoid(stack, c, rounds=12):
    for port in stack.ports:
        answers = [request("127.0.0.1", port) for _ in range(rounds)]
        if not all(a.ok for a in answers) or any(is_backend(a.target, c) for a in answers):
            return False
    return True


def set_health(c, healthy):
    path = "/_echo/recover" if healthy else "/_echo/fail"
    a = request(c["ip"], BACKEND_PORT, path, method="POST")
    check(a.ok, f"POST {path} to {short(c)}: {a.status} {a.error or ''}")


def member_state(stack, c, checker="checker-a"):
    for name, t in stack.members(checker).items():
        if is_backend(name, c) or is_backend(t["url"], c):
            return t["state"]
    return None


def report_load(load, label):
    answers = list(load.answers)
    bad = [a for a in answers if not a.ok]
    log(f"  {label}: {len(answers)} requests, {len(bad)} failed")
    for a in bad[:5]:
        log(f"    failed: :{a.port} status {a.status} {a.error or ''}")
    return bad


# ------------------------------------------------------------------- steps


def step_pool_names(stack):
    backends = stack.containers()["backend"]
    want = {f"backend@{c['ip']}:{BACKEND_PORT}" for c in backends}

    def pool_is_backends():
        m = stack.members()
        return set(m) == want and all(t["state"] == "healthy" for t in m.values())

    _, took = wait_for(f"the checker's pool to be {sorted(want)}, all healthy", pool_is_backends, 20)
    log(f"  pool is {sorted(want)}, all healthy ({took:.1f}s)")


def step_round_robin(stack):
    backends = stack.containers()["backend"]
    check(len(backends) == 3, f"expected 3 backends, found {len(backends)}")
    _, took = wait_for(
        "both proxies to reach all three backends",
        lambda: all(proxies_reach(stack, c) for c in backends),
        20,
    )
    log(f"  both proxies reach all three backends ({took:.1f}s)")
    for port in stack.ports:
        answers = [request("127.0.0.1", port) for _ in range(12)]
        check(all(a.ok for a in answers), f"proxy :{port}: failed requests {answers}")
        counts = hits(answers, backends)
        check(
            sorted(counts.values()) == [4, 4, 4],
            f"proxy :{port}: 12 requests spread {counts}, want 4 each "
            f"(targets {[a.target for a in answers]})",
        )
        log(f"  proxy :{port}: 12 requests -> {counts} (round robin)")


def step_grpc_proxy(stack):
    """gRPC through Tether: proxy-grpc's members are the checkers' gRPC API
    (h2c), probed with grpc.health.v1. Its own view has both checkers
    healthy by those probes, and the pool read through it (tetherctl's
    List call, from another container: nothing but the proxy listens on
    proxy-grpc:8080) is the pool a checker gives directly."""

    def both_serving():
        text = stack.dc("exec", "-T", "proxy-grpc", "tetherctl", "checkers",
                        "http://127.0.0.1:9901", "--json", timeout=20)
        merged = {m["name"]: m for m in json.loads(text)["merged"]}
        return set(merged) == {"checker-a", "checker-b"} and all(
            m["healthy"] for m in merged.values())

    _, took = wait_for("proxy-grpc to find both checkers SERVING", both_serving, 20)
    log(f"  proxy-grpc: both checkers SERVING by gRPC probe ({took:.1f}s)")
    direct = {name: t["state"] for name, t in stack.members().items()}
    for _ in range(4):
        text = stack.dc("exec", "-T", "checker-a", "tetherctl", "--checker",
                        "http://proxy-grpc:8080", "health", "--json", timeout=20)
        through = {t["name"]: t["state"] for t in json.loads(text)["targets"]}
        check(through == direct, f"through proxy-grpc {through}, from checker-a {direct}")
    log(f"  4 List calls through proxy-grpc: {len(direct)} members, as checker-a says")


def step_sticky(stack):
    a_port, b_port = stack.ports
    for first, second in ((a_port, b_port), (b_port, a_port)):
        pin = request("127.0.0.1", first)
        check(pin.ok and pin.target and pin.last_use, f"no sticky headers from :{first}")
        seen = []
        for _ in range(6):
            a = request(
                "127.0.0.1",
                second,
                headers={"x-target-server": pin.target, "x-target-server-last-use": pin.last_use},
            )
            check(a.ok, f"sticky request to :{second}: {a.status} {a.error}")
            seen.append(a.target)
        check(set(seen) == {pin.target}, f":{first} pinned {pin.target}, :{second} answered {seen}")
        log(f"  pinned by :{first} to {pin.target}: 6/6 on :{second}")


def step_prometheus(stack):
    """Prometheus scrapes every proxy and checker, and tether_requests_total
    counts exactly the requests sent through each proxy."""
    def all_up():
        active = prometheus_get(stack, "/api/v1/targets?state=active")["activeTargets"]
        seen = {(t["labels"]["job"], t["labels"]["instance"]): t["health"] for t in active}
        missing = PROM_TARGETS - set(seen)
        check(not missing, f"Prometheus does not scrape {sorted(missing)}")
        return all(seen[t] == "up" for t in PROM_TARGETS) and seen

    _, took = wait_for("every proxy and checker to be up in Prometheus", all_up, 30, poll=0.5)
    log(f"  Prometheus scrapes {sorted(i for _, i in PROM_TARGETS)}, all up ({took:.1f}s)")

    expr = 'sum by (instance) (tether_requests_total{job="tether-proxy"})'
    # Nothing else sends requests through the proxies: a scrape taken after
    # this moment and before the requests below is the baseline.
    mark = time.time()
    wait_for("a scrape of both proxies", lambda: proxies_scraped_since(stack, mark), 20, poll=0.5)
    before = prometheus_query(stack, expr)
    check(len(before) == 2, f"{expr}: {before}")
    per_proxy = 25
    for port in stack.ports:
        answers = [request("127.0.0.1", port) for _ in range(per_proxy)]
        check(all(a.ok for a in answers), f"proxy :{port}: failed requests")
    sent = time.time()

    def counted():
        if not proxies_scraped_since(stack, sent):
            return False
        now = prometheus_query(stack, expr)
        return all(now.get(k, 0) >= before[k] + per_proxy for k in before) and now

    after, took = wait_for("a scrape of both proxies that counts the requests", counted, 20, poll=0.5)
    for k in sorted(before, key=sorted):
        instance = dict(k)["instance"]
        delta = after[k] - before[k]
        check(delta == per_proxy, f"{instance}: tether_requests_total moved by {delta}, sent {per_proxy}")
        log(f"  {instance}: tether_requests_total {before[k]:.0f} -> {after[k]:.0f} (+{per_proxy}, as sent; {took:.1f}s)")


def step_alert(stack):
    """Every backend fails its health check: TetherNoHealthyMember fires
    for both proxies in Prometheus, after its `for`, and clears when they
    recover."""
    backends = [c for c in stack.containers()["backend"] if c["running"]]
    want = {"proxy-a:9901", "proxy-b:9901"}
    check(not firing(stack, "TetherNoHealthyMember"), "TetherNoHealthyMember fires before the test")
    t = time.monotonic()
    for c in backends:
        set_health(c, False)
    _, took = wait_for(
        "both proxies to answer 503 (no healthy member)",
        lambda: all(request("127.0.0.1", p).status == 503 for p in stack.ports),
        15,
    )
    log(f"  every backend failing; both proxies answer 503 after {took:.1f}s")
    _, took = wait_for(
        "TetherNoHealthyMember firing for both proxies in /api/v1/alerts",
        lambda: firing(stack, "TetherNoHealthyMember") >= want,
        NO_HEALTHY_FOR + 30,
        poll=0.5,
    )
    took = time.monotonic() - t
    log(f"  TetherNoHealthyMember firing for {sorted(want)} {took:.1f}s after the failure (for: {NO_HEALTHY_FOR:.0f}s)")
    check(took >= NO_HEALTHY_FOR, f"fired after {took:.1f}s, before its for: {NO_HEALTHY_FOR}s")
    for c in backends:
        set_health(c, True)
    _, took = wait_for(
        "TetherNoHealthyMember to clear",
        lambda: not firing(stack, "TetherNoHealthyMember"),
        30,
        poll=0.5,
    )
    log(f"  backends recovered; the alert cleared after {took:.1f}s")


def step_backend_fail(stack):
    backends = stack.containers()["backend"]
    y = backends[1]
    with Load(stack.ports) as load:
        wait_for("load to start", lambda: len(load.answers) >= 20, 10)
        t_fail = time.monotonic()
        set_health(y, False)
        state, took = wait_for(
            f"the checker to see {short(y)} unhealthy",
            lambda: member_state(stack, y) == "unhealthy",
            10,
        )
        log(f"  {short(y)} /health -> 503; checker says unhealthy after {took:.1f}s")
        wait_for("load to run past the bound", lambda: time.monotonic() > t_fail + LEAVE_BOUND + 1, 10)
        load.stop()
    bad = report_load(load, "load during the failure")
    last = max((a.t for a in load.answers if is_backend(a.target, y) and a.t >= t_fail), default=t_fail)
    left = last - t_fail
    log(f"  traffic left {short(y)} {left:.2f}s after it failed (bound {LEAVE_BOUND:.1f}s)")
    check(not bad, f"{len(bad)} failed requests while a backend failed its health check")
    check(left <= LEAVE_BOUND, f"traffic still reached {short(y)} {left:.2f}s after it failed")
    set_health(y, True)
    _, took = wait_for(f"both proxies to reach {short(y)} again", lambda: proxies_reach(stack, y), 15)
    log(f"  {short(y)} recovered; both proxies reach it again after {took:.1f}s")


def step_backend_stop(stack):
    x = stack.container("backend", 1)
    stack.stopped = x
    with Load(stack.ports) as load:
        wait_for("load to start", lambda: len(load.answers) >= 20, 10)
        t_stop = time.monotonic()
        run(["docker", "stop", x["id"]], timeout=30)
        stop_took = time.monotonic() - t_stop
        wait_for("load to run past the bound", lambda: time.monotonic() > t_stop + LEAVE_BOUND + 1, 15)
        load.stop()
    log(f"  docker stop {short(x)} took {stop_took:.1f}s")
    bad = report_load(load, "load during the stop")
    last = max((a.t for a in load.answers if is_backend(a.target, x) and a.t >= t_stop), default=t_stop)
    left = last - t_stop
    log(f"  traffic left {short(x)} {left:.2f}s after `docker stop` began (bound {LEAVE_BOUND:.1f}s)")
    check(not bad, f"{len(bad)} failed requests while a backend stopped")
    check(left <= LEAVE_BOUND, f"traffic still reached {short(x)} {left:.2f}s after it stopped")
    # Docker's DNS drops a stopped container at once, so a DNS-expanded pool
    # may remove the member rather than keep it as unhealthy.
    def down_or_gone():
        state = member_state(stack, x)
        return {"unhealthy": "unhealthy", None: "gone from the pool"}.get(state)

    state, took = wait_for(f"tetherctl health to show {short(x)} unhealthy", down_or_gone, 10)
    table = stack.dc("exec", "-T", "checker-a", "tetherctl", "health", timeout=20)
    log(f"  tetherctl health: {short(x)} is {state} after {took:.1f}s")
    for line in table.strip().splitlines():
        log(f"    {line}")


def step_checker_restart(stack):
    x = stack.stopped
    backends = [c for c in stack.containers()["backend"] if c["running"]]
    checkers = [stack.container("checker-a"), stack.container("checker-b")]
    with Load(stack.ports) as load:
        wait_for("load to start", lambda: len(load.answers) >= 20, 10)
        t = time.monotonic()
        stack.dc("stop", "checker-a", "checker-b", timeout=60)
        log(f"  both checkers stopped ({time.monotonic() - t:.1f}s)")
        mark = time.monotonic()
        wait_for("3s of load without a checker", lambda: time.monotonic() > mark + 3, 10)
        load.stop()
    bad = report_load(load, "load with no checker")
    check(not bad, f"{len(bad)} failed requests with no checker")
    counts = hits([a for a in load.answers if a.t >= mark], backends)
    check(all(n > 0 for n in counts.values()), f"traffic without a checker: {counts}")
    log(f"  spread without a checker: {counts}")

    t = time.monotonic()
    stack.dc("start", "checker-a", "checker-b", timeout=60)
    for name in ("checker-a", "checker-b"):
        wait_for(f"{name} to be healthy", lambda: stack.container(name)["health"] == "healthy", 30)
    log(f"  checkers started and healthy after {time.monotonic() - t:.1f}s")
    for old in checkers:
        check(
            any(c["id"] == old["id"] for cs in stack.containers().values() for c in cs),
            "a checker was recreated",
        )

    # A change the proxies can only learn from the new streams.
    if x is None:
        x = backends[0]
        set_health(x, False)
        _, took = wait_for(f"both proxies to avoid {short(x)}", lambda: proxies_avoid(stack, x), 15)
        log(f"  after the restart both proxies follow {short(x)} failing ({took:.1f}s)")
        set_health(x, True)
        return
    t = time.monotonic()
    run(["docker", "start", x["id"]], timeout=30)
    x = stack.container("backend", x["number"])
    _, took = wait_for(
        f"both proxies to reach {short(x)} again", lambda: proxies_reach(stack, x), 20
    )
    log(f"  restarted {short(x)}; both proxies reach it after {time.monotonic() - t:.1f}s (resubscribed)")
    stack.stopped = None


def step_checker_backend_cut(stack):
    """checker-a loses the backends but not the proxies: it must say it is
    impaired (not ready), and no request may fail, while checker-b still
    takes out a backend that really fails, and the one killed after it."""
    a = stack.container("checker-a")
    backends = [c for c in stack.containers()["backend"] if c["running"]]
    y = backends[-1]
    with Load(stack.ports) as load:
        wait_for("load to start", lambda: len(load.answers) >= 20, 10)
        run(["docker", "network", "disconnect", stack.backend_network, a["id"]], timeout=30)
        cut = time.monotonic()
        log("  checker-a disconnected from the backend network")
        _, took = wait_for("checker-a to say it is not ready", lambda: not stack.ready("checker-a", 9902), 15)
        log(f"  checker-a /readyz not 200 after {took:.1f}s (impaired)")
        wait_for("6s of load with checker-a cut off", lambda: time.monotonic() > cut + 6, 15)
        t_fail = time.monotonic()
        set_health(y, False)
        wait_for("load to run past the bound", lambda: time.monotonic() > t_fail + LEAVE_BOUND + 1, 10)
        gone = [a_ for a_ in load.answers if a_.t >= t_fail + LEAVE_BOUND]
        check(not any(is_backend(a_.target, y) for a_ in gone),
              f"traffic still reached {short(y)} {LEAVE_BOUND:.1f}s after it failed its health check")
        log(f"  {short(y)} failing its health check: out of rotation within {LEAVE_BOUND:.1f}s (checker-b)")
        t_kill = time.monotonic()
        run(["docker", "kill", y["id"]], timeout=30)
        wait_for("3s of load after the kill", lambda: time.monotonic() > t_kill + 3, 10)
        run(["docker", "network", "connect", stack.backend_network, a["id"]], timeout=30)
        back = time.monotonic()
        log("  checker-a reconnected to the backend network")
        _, took = wait_for("checker-a to be ready again", lambda: stack.ready("checker-a", 9902), 30)
        log(f"  checker-a ready again after {took:.1f}s")
        wait_for("3s of load after the reconnect", lambda: time.monotonic() > back + 3, 10)
        load.stop()
    bad = report_load(load, "load through the cut, a failing backend, its kill and the reconnect")
    check(not bad, f"{len(bad)} failed requests while checker-a was cut off the backends")
    run(["docker", "start", y["id"]], timeout=30)
    y = stack.container("backend", y["number"])
    set_health(y, True)
    _, took = wait_for(f"both proxies to reach {short(y)} again", lambda: proxies_reach(stack, y), 30)
    log(f"  {short(y)} back; both proxies reach it after {took:.1f}s")


def step_checker_partition(stack):
    """checker-a cut off every network and back: 0 failed requests, also
    after it returns (it re-probes before it publishes anything new)."""
    a = stack.container("checker-a")
    backends = [c for c in stack.containers()["backend"] if c["running"]]
    with Load(stack.ports) as load:
        wait_for("load to start", lambda: len(load.answers) >= 20, 10)
        for net in (stack.network, stack.backend_network):
            run(["docker", "network", "disconnect", net, a["id"]], timeout=30)
        mark = time.monotonic()
        log("  checker-a disconnected from every network")
        wait_for("6s of load with checker-a cut off", lambda: time.monotonic() > mark + 6, 15)
        run(["docker", "network", "connect", "--alias", "hc-a", stack.network, a["id"]], timeout=30)
        run(["docker", "network", "connect", stack.backend_network, a["id"]], timeout=30)
        reconnect = time.monotonic()
        log("  checker-a reconnected (alias hc-a)")
        _, took = wait_for(
            "checker-a to see every backend healthy again",
            lambda: all(member_state(stack, c) == "healthy" for c in backends),
            30,
        )
        log(f"  checker-a sees every backend healthy again after {took:.1f}s")
        wait_for("3s of load after the reconnect", lambda: time.monotonic() > reconnect + 3, 10)
        load.stop()
    cut = [x for x in load.answers if mark <= x.t < reconnect]
    log(f"  while cut off: {len(cut)} requests; spread {hits(cut, backends)}")
    bad = report_load(load, "load through the partition and after it healed")
    check(not bad, f"{len(bad)} failed requests around a checker partition "
                   f"({len(load.failures(since=reconnect))} after the reconnect)")

    y = backends[-1]
    set_health(y, False)
    _, took = wait_for(f"both proxies to avoid {short(y)}", lambda: proxies_avoid(stack, y), 15)
    log(f"  both proxies follow {short(y)} failing ({took:.1f}s)")
    set_health(y, True)
    _, took = wait_for(f"both proxies to reach {short(y)} again", lambda: proxies_reach(stack, y), 15)


def step_scale(stack):
    t = time.monotonic()
    stack.dc("up", "-d", "--scale", "backend=4", "--no-recreate", timeout=120)
    cs = stack.containers()["backend"]
    check(len(cs) == 4, f"expected 4 backends after scaling, found {len(cs)}")
    new = cs[-1]
    log(f"  scaled to 4 ({time.monotonic() - t:.1f}s): new {short(new)}")
    _, took = wait_for(f"both proxies to reach {short(new)}", lambda: proxies_reach(stack, new), 20)
    log(f"  both proxies reach {short(new)} after {time.monotonic() - t:.1f}s")


def step_down(stack):
    t = time.monotonic()
    stack.dc("down", "-v", "--remove-orphans", timeout=120)
    stack.down = True
    left = run(
        ["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={stack.project}"]
    ).split()
    nets = run(["docker", "network", "ls", "--format", "{{.Name}}"]).split()
    ours = [n for n in nets if n.startswith(f"{stack.project}_")]
    volumes = run(
        ["docker", "volume", "ls", "-q", "--filter", f"label=com.docker.compose.project={stack.project}"]
    ).split()
    check(not left, f"containers left behind: {left}")
    check(not ours, f"networks left behind: {ours}")
    check(not volumes, f"volumes left behind: {volumes}")
    log(f"  down -v in {time.monotonic() - t:.1f}s: no container, network or volume left")


# -------------------------------------------------------------------- main


def build(args, stack):
    t = time.monotonic()
    run([os.path.join(ROOT, "deploy", "compose", "base-image.sh")], timeout=600,
        env=dict(os.environ, TETHER_BASE_IMAGE=args.base_image))
    log(f"base image {args.base_image} ready ({time.monotonic() - t:.1f}s)")
    bin_dir = os.path.abspath(args.bin_dir)
    missing = [b for b in BINARIES if not os.path.isfile(os.path.join(bin_dir, b))]
    check(not missing, f"{bin_dir} lacks {missing}: build them first (cargo build --bins)")
    os.makedirs(BIN_STAGE, exist_ok=True)
    for b in BINARIES:
        shutil.copy2(os.path.join(bin_dir, b), os.path.join(BIN_STAGE, b))
    t = time.monotonic()
    # One service builds the image all services use.
    stack.dc("build", "backend", timeout=600)
    log(f"image {IMAGE} built from {bin_dir} ({time.monotonic() - t:.1f}s)")
    t = time.monotonic()
    # Debian's prometheus package on the same base; cached after the first.
    stack.dc("build", "prometheus", timeout=900)
    log(f"image tether-prometheus:latest built ({time.monotonic() - t:.1f}s)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bin-dir", default=os.path.join(ROOT, "target", "debug"),
                        help="where the host-built binaries are (default target/debug)")
    parser.add_argument("--compose", default=None,
                        help="compose command (default docker-compose, else `docker compose`)")
    parser.add_argument("--base-image", default="tether-base:bookworm")
    parser.add_argument("--override", action="append", default=[],
                        help="an extra compose file (-f), e.g. other configs; repeatable")
    parser.add_argument("--skip", default="", help=f"steps to leave out, comma-separated: {','.join(STEPS)}")
    parser.add_argument("--project", default=None, help="compose project name (default tethertest<pid>)")
    parser.add_argument("--keep", action="store_true", help="leave the stack running at the end")
    args = parser.parse_args()
    if args.compose is None:
        args.compose = "docker-compose" if shutil.which("docker-compose") else "docker compose"
    skip = {s for s in args.skip.split(",") if s}
    unknown = skip - set(STEPS)
    if unknown:
        parser.error(f"unknown steps {sorted(unknown)}; steps are {', '.join(STEPS)}")

    stack = Stack(args)
    log(f"project {stack.project}, proxies on 127.0.0.1:{stack.ports[0]} and :{stack.ports[1]}, "
        f"Prometheus on :{stack.prometheus_port}")
    failed = False
    try:
        build(args, stack)
        t_stack = time.monotonic()
        t = time.monotonic()
        stack.dc("up", "-d", timeout=180)
        log(f"up -d returned ({time.monotonic() - t:.1f}s)")
        _, took = wait_for(
            f"all {CONTAINERS} containers healthy", lambda: stack.all_healthy(CONTAINERS), 60, poll=0.5
        )
        log(f"all {CONTAINERS} containers healthy ({time.monotonic() - t:.1f}s)")
        for name in STEPS:
            if name in skip:
                log(f"{name}: skipped")
                continue
            t = time.monotonic()
            log(f"{name}:")
            globals()["step_" + name.replace("-", "_")](stack)
            log(f"{name}: ok ({time.monotonic() - t:.1f}s)")
        log(f"PASS: the stack part took {time.monotonic() - t_stack:.1f}s")
    except (TestFailure, subprocess.TimeoutExpired) as e:
        failed = True
        log(f"FAIL: {e}")
        if not stack.down:
            logs = stack.dc("logs", "--no-color", "--tail", "25", timeout=60, check_rc=False)
            print(logs[-8000:])
    except KeyboardInterrupt:
        failed = True
        log("interrupted")
    finally:
        if not stack.down:
            if args.keep:
                log(f"kept: {shlex.join(stack.compose)} down -v")
            else:
                stack.dc("down", "-v", "--remove-orphans", timeout=120, check_rc=False)
                log("torn down")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
