#!/usr/bin/env python3
"""The proxy's status page in a real headless browser.

Starts three tether-echo backends and an embedded-mode tether-proxy on free
loopback ports, turns app-2 unhealthy, sends traffic through the proxy, then
loads the admin endpoint's `/` in headless Chromium: the rendered DOM must
show the three members with their states and per-member request counts, and
a screenshot must come out as a real PNG.

    scripts/status_page.py            # CI: screenshot into a temp dir
    scripts/status_page.py --update   # write docs/status-page.png

Chromium is installed from Debian's packages when missing (needs root).
Only the Python 3 standard library is used. Exits non-zero with one
`status-page: FAIL: ...` line on any failure; every process it started is
stopped on the way out.
"""

import argparse
import json
import os
import queue
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
POLICY_RC_D = Path("/usr/sbin/policy-rc.d")
POLICY_DENY = "#!/bin/sh\n# status_page.py: no service may start during its apt-get install\nexit 101\n"
MEMBERS = ("app-1", "app-2", "app-3")
FAILING = "app-2"
REQUESTS = 30
WINDOW = (960, 300)  # the page's table is ~940px wide, ~270px tall
MIN_PNG_BYTES = 4096


class Fail(Exception):
    pass


def log(msg):
    print(f"status-page: {msg}", flush=True)


# --- chromium -------------------------------------------------------------


def find_chromium():
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


def have_fonts():
    return any(Path(d).is_dir() and any(Path(d).rglob("*.[ot]tf"))
               for d in ("/usr/share/fonts", "/usr/local/share/fonts"))


def apt_install(packages):
    """apt-get install with services forbidden to start; `apt-get update`
    only when the install failed for want of package lists."""
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", *packages]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        out = res.stdout + res.stderr
        if re.search(r"Unable to locate package|has no installation candidate", out):
            log("no package lists for it: apt-get update")
            upd = subprocess.run(["apt-get", "update"], env=env,
                                 capture_output=True, text=True)
            if upd.returncode != 0:
                raise Fail(f"apt-get update failed:\n{upd.stderr.strip()}")
            res = subprocess.run(cmd, env=env, capture_output=True, text=True)
            out = res.stdout + res.stderr
        if res.returncode != 0:
            raise Fail(f"{' '.join(cmd)} failed:\n{out.strip()[-2000:]}")


def ensure_chromium():
    path = find_chromium()
    if path:
        return path
    if os.geteuid() != 0:
        raise Fail("chromium is not installed and this is not root: "
                   "apt-get install chromium, or run as root")
    packages = ["chromium"] + ([] if have_fonts() else ["fonts-dejavu-core"])
    # Debian packages may start services on install; a policy-rc.d that
    # exits 101 forbids it. Put ours in place unless one already forbids
    # everything, and restore what was there afterwards.
    saved = None
    ours = False
    existing_denies = False
    if POLICY_RC_D.exists():
        try:
            existing_denies = subprocess.run([str(POLICY_RC_D), "x", "start"],
                                             capture_output=True).returncode == 101
        except OSError:
            existing_denies = False
        if not existing_denies:
            saved = POLICY_RC_D.read_bytes()
    if not existing_denies:
        POLICY_RC_D.write_text(POLICY_DENY)
        POLICY_RC_D.chmod(0o755)
        ours = True
    log(f"installing {' '.join(packages)} (apt-get, services forbidden to start)")
    t0 = time.monotonic()
    try:
        apt_install(packages)
    finally:
        if ours:
            if saved is None:
                POLICY_RC_D.unlink(missing_ok=True)
            else:
                POLICY_RC_D.write_bytes(saved)
    log(f"chromium installed in {time.monotonic() - t0:.1f}s")
    path = find_chromium()
    if not path:
        raise Fail("apt-get install succeeded but no chromium binary is on PATH")
    return path


# --- processes ------------------------------------------------------------


class Proc:
    """A child whose stdout and stderr lines are collected by threads, so
    neither pipe can fill up, and can be waited on for a line."""

    def __init__(self, name, argv):
        self.name = name
        self.lines = queue.Queue()
        self.all = []
        try:
            self.p = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True, errors="replace")
        except OSError as e:
            raise Fail(f"cannot start {name} ({argv[0]}): {e}") from e
        for stream in (self.p.stdout, self.p.stderr):
            threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream):
        for line in stream:
            line = line.rstrip("\n")
            self.all.append(line)
            self.lines.put(line)

    def wait_for(self, pattern, deadline, what):
        rx = re.compile(pattern)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Fail(f"{self.name}: no {what} in time; output:\n{self.tail()}")
            try:
                line = self.lines.get(timeout=min(left, 0.2))
            except queue.Empty:
                if self.p.poll() is not None and self.lines.empty():
                    raise Fail(f"{self.name} exited ({self.p.returncode}) before {what}; "
                               f"output:\n{self.tail()}")
                continue
            m = rx.search(line)
            if m:
                return m

    def tail(self, n=20):
        return "\n".join("    " + l for l in self.all[-n:]) or "    (nothing)"

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()


# --- HTTP and the page ----------------------------------------------------


def http(method, url, timeout=2.0):
    """(status, headers, body text); (None, None, error) when unreachable."""
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.headers, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError) as e:
        return None, None, str(e)


class Rows(HTMLParser):
    """Every row's cells of the page's first table (the members; a proxy's
    page has a checkers table below it) as text (th and td), in order."""

    def __init__(self):
        super().__init__()
        self.rows = []
        self.row = None
        self.cell = None
        self.tables = 0

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables += 1
        elif tag == "tr" and self.tables == 1:
            self.row = []
        elif tag in ("td", "th") and self.row is not None:
            self.cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self.cell is not None:
            self.row.append(" ".join("".join(self.cell).split()))
            self.cell = None
        elif tag == "tr" and self.row is not None:
            self.rows.append(self.row)
            self.row = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell.append(data)


def members(html):
    """{member name: {column: value}} from the status page's table."""
    p = Rows()
    p.feed(html)
    if p.tables == 0 or not p.rows:
        raise Fail(f"no table on the page:\n{html[:1500]}")
    header, *body = p.rows
    out = {}
    for row in body:
        if len(row) != len(header):
            raise Fail(f"row {row} does not match the header {header}")
        rec = dict(zip(header, row))
        out[rec.get("member", row[0])] = rec
    return out


def check_members(html, where):
    """Asserts the three members, their states and traffic; returns the table."""
    table = members(html)
    if not re.search(r"<p>(<span[^>]*>)?ready(</span>)? (&middot;|\u00b7)", html) or f"{len(MEMBERS) - 1}/{len(MEMBERS)} members healthy" not in html:
        raise Fail(f"{where}: the summary line does not say ready, "
                   f"{len(MEMBERS) - 1}/{len(MEMBERS)} members healthy:\n{html[:1500]}")
    for col in ("member", "state", "requests"):
        if table and col not in next(iter(table.values())):
            raise Fail(f"{where}: the table has no '{col}' column: {table}")
    if sorted(table) != sorted(MEMBERS):
        raise Fail(f"{where}: members are {sorted(table)}, want {list(MEMBERS)}")
    for name, rec in table.items():
        want = "unhealthy" if name == FAILING else "healthy"
        if rec["state"] != want:
            raise Fail(f"{where}: {name} is '{rec['state']}', want '{want}'")
        try:
            count = int(rec["requests"])
        except ValueError:
            raise Fail(f"{where}: {name}'s requests is not a number: {rec['requests']!r}")
        if want == "healthy" and count <= 0:
            raise Fail(f"{where}: healthy {name} shows {count} requests, want > 0")
    return table


def poll(what, deadline, probe):
    """Calls probe() until it returns something truthy; the last reason on
    timeout. probe returns (value, reason)."""
    reason = "never tried"
    while time.monotonic() < deadline:
        value, reason = probe()
        if value:
            return value
        time.sleep(0.1)  # poll interval, not synchronisation
    raise Fail(f"timed out waiting for {what}: {reason}")


# --- chromium runs --------------------------------------------------------


def run_chromium(chromium, profile, args, timeout):
    argv = [chromium, "--headless=new", "--no-sandbox", "--disable-gpu",
            "--no-first-run", "--no-default-browser-check", "--disable-extensions",
            "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio",
            "--force-device-scale-factor=1", f"--user-data-dir={profile}", *args]
    # Its own process group, so a hung browser goes with all its helpers.
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, errors="replace",
                         start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        raise Fail(f"chromium {' '.join(args)} did not finish in {timeout}s")
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    if p.returncode != 0:
        raise Fail(f"chromium {' '.join(args)} exited {p.returncode}:\n{err.strip()[-2000:]}")
    return out, err


def check_png(path):
    if not path.is_file():
        raise Fail(f"no screenshot at {path}")
    data = path.read_bytes()
    if not data.startswith(b"\x89PNG\r\n\x1a\n") or data[12:16] != b"IHDR":
        raise Fail(f"{path} is not a PNG (starts {data[:16]!r})")
    if len(data) < MIN_PNG_BYTES:
        raise Fail(f"{path} is only {len(data)} bytes; a blank page?")
    width, height = struct.unpack(">II", data[16:24])
    return len(data), width, height


# --- main -----------------------------------------------------------------


PROM_CLIENT = "prometheus-client==0.21.1"
VENV = ROOT / "target" / "venv-tools"


def prometheus_parser():
    """The reference Prometheus text parser (prometheus_client, from PyPI),
    installed into target/venv-tools on first use."""
    py = VENV / "bin" / "python3"
    ok = py.exists() and subprocess.run(
        [str(py), "-c", "import prometheus_client.parser"], capture_output=True).returncode == 0
    if not ok:
        log(f"installing {PROM_CLIENT} into {VENV}")
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", PROM_CLIENT], check=True)
    return py


PARSE = """
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        out.append([fam.name, fam.type, s.name, s.labels, s.value])
print(json.dumps(out))
"""


def check_metrics(admin, served):
    """/metrics parsed by prometheus_client agrees with the traffic sent."""
    code, _, text = http("GET", f"http://{admin}/metrics")
    if code != 200:
        raise Fail(f"/metrics answered {code}")
    parsed = subprocess.run([str(prometheus_parser()), "-c", PARSE], input=text,
                            capture_output=True, text=True)
    if parsed.returncode != 0:
        raise Fail(f"prometheus_client cannot parse /metrics: {parsed.stderr.strip()[-500:]}")
    samples = json.loads(parsed.stdout)
    requests = {}
    for fam, kind, name, labels, value in samples:
        if fam == "tether_requests" and kind == "counter" and name == "tether_requests_total":
            requests[(labels["target"], labels["code"])] = value
    for member in MEMBERS:
        want = served.get(member, 0)
        got = requests.get((member, "2xx"))
        if got != want:
            raise Fail(f"tether_requests_total{{target={member},code=2xx}} is {got}, sent {want}")
    count = [v for f, k, n, l, v in samples if n == "tether_request_duration_seconds_count"]
    if count != [sum(served.values())]:
        raise Fail(f"tether_request_duration_seconds_count is {count}, sent {sum(served.values())}")
    log(f"/metrics: {len(samples)} samples parsed by prometheus_client; requests per member agree")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--update", action="store_true",
                    help="write the screenshot to docs/status-page.png")
    ap.add_argument("--bin-dir", default=str(ROOT / "target" / "debug"),
                    help="where tether-proxy and tether-echo are (default target/debug)")
    ap.add_argument("--timeout", type=float, default=30.0,
                    help="seconds for each wait (default 30)")
    args = ap.parse_args()
    bins = Path(args.bin_dir)
    for b in ("tether-proxy", "tether-echo"):
        if not os.access(bins / b, os.X_OK):
            raise Fail(f"{bins / b} missing: cargo build --workspace --bins first")

    t_start = time.monotonic()
    chromium = ensure_chromium()
    version = subprocess.run([chromium, "--version"], capture_output=True,
                             text=True).stdout.strip()
    log(f"using {chromium} ({version})")

    procs = []
    tmp = tempfile.TemporaryDirectory(prefix="tether-status-page-")
    try:
        work = Path(tmp.name)
        # Backends.
        backends = {}
        for name in MEMBERS:
            p = Proc(name, [str(bins / "tether-echo"), "--listen", "127.0.0.1:0",
                            "--name", name])
            procs.append(p)
        for p in procs:
            m = p.wait_for(r"listening on (\S+)", time.monotonic() + args.timeout,
                           "'listening on' line")
            backends[p.name] = m.group(1)
        # The proxy, probing them itself.
        cfg = work / "proxy.toml"
        cfg.write_text(
            '[proxy]\nlisten = "127.0.0.1:0"\n\n'
            '[admin]\nlisten = "127.0.0.1:0"\n\n'
            '[health]\nkind = "http"\npath = "/health"\ninterval = "200ms"\n'
            'timeout = "200ms"\nrise = 1\nfall = 1\n'
            + "".join(f'\n[[targets]]\nurl = "http://{backends[n]}"\nname = "{n}"\n'
                      for n in MEMBERS))
        proxy = Proc("tether-proxy", [str(bins / "tether-proxy"), "--config", str(cfg)])
        procs.append(proxy)
        # The two lines may come in either order.
        addrs = {}
        deadline = time.monotonic() + args.timeout
        while len(addrs) < 2:
            m = proxy.wait_for(r"\b(http|admin) listening on (\S+)", deadline,
                               "'http/admin listening on' lines")
            addrs[m.group(1)] = m.group(2)
        front, admin = addrs["http"], addrs["admin"]
        log(f"backends {backends}; proxy {front}; admin {admin}")

        deadline = time.monotonic() + args.timeout

        def ready():
            code, _, body = http("GET", f"http://{admin}/readyz")
            return code == 200, f"/readyz {code}: {body.strip()}"
        poll("/readyz 200", deadline, ready)

        code, _, body = http("POST", f"http://{backends[FAILING]}/_echo/fail")
        if code != 200:
            raise Fail(f"POST /_echo/fail on {FAILING}: {code} {body.strip()}")

        def failing_seen():
            code, _, body = http("GET", f"http://{admin}/")
            if code != 200:
                return False, f"/ answered {code}: {body[:200]}"
            table = members(body)
            states = {n: r.get("state") for n, r in table.items()}
            want = {n: "unhealthy" if n == FAILING else "healthy" for n in MEMBERS}
            return states == want, f"states {states}"
        poll(f"{FAILING} unhealthy on the page", deadline, failing_seen)

        served = {}
        for i in range(REQUESTS):
            code, headers, body = http("GET", f"http://{front}/req/{i}")
            if code != 200:
                raise Fail(f"request {i} through the proxy: {code} {body[:200]}")
            who = headers.get("x-backend", "?")
            served[who] = served.get(who, 0) + 1
        if FAILING in served or set(served) != set(MEMBERS) - {FAILING}:
            raise Fail(f"traffic went to {served}; want only the healthy members")
        log(f"{REQUESTS} requests through the proxy: {served}")

        check_metrics(admin, served)

        def ready_again():
            code, _, body = http("GET", f"http://{admin}/readyz")
            return code == 200, f"/readyz {code}: {body.strip()}"
        poll("/readyz 200", deadline, ready_again)

        # The page as a browser renders it.
        url = f"http://{admin}/"
        t0 = time.monotonic()
        dom, _ = run_chromium(chromium, work / "profile-dom", ["--dump-dom", url], 60)
        t_dom = time.monotonic() - t0
        table = check_members(dom, "chromium --dump-dom")
        log("DOM: " + "; ".join(f"{n} {r['state']} {r['requests']} requests"
                               for n, r in sorted(table.items())))

        shot_dir = ROOT / "docs" if args.update else work
        shot = shot_dir / "status-page.png"
        shot_dir.mkdir(parents=True, exist_ok=True)
        tmp_shot = work / "shot.png"
        t0 = time.monotonic()
        run_chromium(chromium, work / "profile-shot",
                     [f"--screenshot={tmp_shot}", f"--window-size={WINDOW[0]},{WINDOW[1]}", url],
                     60)
        t_shot = time.monotonic() - t0
        size, w, h = check_png(tmp_shot)
        if (w, h) != WINDOW:
            raise Fail(f"screenshot is {w}x{h}, want {WINDOW[0]}x{WINDOW[1]}")
        if shot != tmp_shot:
            shutil.copyfile(tmp_shot, shot)
        log(f"screenshot {shot} ({w}x{h}, {size} bytes)")
        log(f"ok: dump-dom {t_dom:.1f}s, screenshot {t_shot:.1f}s, "
            f"total {time.monotonic() - t_start:.1f}s")
    finally:
        for p in reversed(procs):
            p.stop()
        tmp.cleanup()


if __name__ == "__main__":
    try:
        main()
    except Fail as e:
        print(f"status-page: FAIL: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
    except KeyboardInterrupt:
        print("status-page: interrupted", file=sys.stderr, flush=True)
        sys.exit(130)
