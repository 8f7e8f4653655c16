#!/usr/bin/env python3
"""Differential check: the same raw HTTP/1 bytes through Tether, nginx and
HAProxy, each in front of its own recording backend; a table of who
rejected, forwarded as is, normalised, or dropped what (issue 9, item 5).

    python3 scripts/differential.py            # run, print the table
    python3 scripts/differential.py --update   # ... and write docs/RELIABILITY.md
    python3 scripts/differential.py --only 1,c2 --verbose

Cases: scripts/differential_cases.json (the malformed-request table of
crates/proxy/tests/malformed.rs, extracted by scripts/differential_extract.py,
plus request-smuggling classics). nginx and HAProxy come from Debian and
are installed if missing (root, a policy-rc.d so no service starts). Every
process runs from a temporary directory on free loopback ports and is
stopped at the end. Python 3 standard library only.

Per case and proxy: a fresh client connection gets the bytes; the answer is
read until the proxy closes, 2.5 s pass, or 0.3 s of silence follow a
complete response. Then what that proxy's backend received (complete
requests, and any head whose body never completed) is compared with what
the client sent. Outcomes:
  rej NNN        the proxy answered NNN and nothing reached the backend
  fwd            forwarded as is (request line, end-to-end headers, body)
  norm: ...      forwarded changed (what changed; framing, dropped headers)
  part NNN       a head reached the backend, its body never completed
  closed/timeout no answer, nothing upstream
Proxy-owned and hop-by-hop fields (Host, Connection, Keep-Alive, TE,
Upgrade, Expect, X-Forwarded-*, Forwarded, X-Real-IP, Via) and the HTTP
version are not compared; framing (Content-Length / Transfer-Encoding) is
compared as "how the body was delimited", the body by its decoded bytes.
"""

import argparse
import datetime
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASES = os.path.join(ROOT, "scripts/differential_cases.json")
DOC = os.path.join(ROOT, "docs/RELIABILITY.md")
BEGIN, END = "<!-- differential:begin -->", "<!-- differential:end -->"

DEADLINE = 2.5  # longest wait for an answer
QUIET = 0.3  # silence after a complete response that ends the read
SETTLE = 0.15  # backend quiet time before its log is read

# Fields a proxy owns or must strip; not compared.
IGNORED = {
    b"host", b"connection", b"keep-alive", b"proxy-connection", b"te", b"upgrade",
    b"expect", b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host",
    b"x-forwarded-port", b"forwarded", b"x-real-ip", b"via",
}
FRAMING = {b"content-length", b"transfer-encoding"}

PROXIES = ("tether", "nginx", "haproxy")


# === setup ===

def ensure_tools() -> None:
    """nginx and HAProxy from Debian, as bench/setup.sh installs them."""
    need = [p for p in ("nginx", "haproxy") if shutil.which(p) is None and not os.path.exists(f"/usr/sbin/{p}")]
    if not need:
        return
    if os.geteuid() != 0:
        sys.exit(f"differential: need root to install {' '.join(need)} (or install them yourself)")
    print(f"differential: installing {' '.join(need)}", flush=True)
    policy = "/usr/sbin/policy-rc.d"
    made = False
    if not os.path.exists(policy):
        with open(policy, "w") as f:
            f.write("#!/bin/sh\n# scripts/differential.py: no service may start during the install\nexit 101\n")
        os.chmod(policy, 0o755)
        made = True
    try:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *need],
                       check=True, env=env, stdout=subprocess.DEVNULL)
        for svc in ("nginx", "haproxy"):
            if shutil.which("systemctl") and os.path.isdir("/run/systemd/system"):
                subprocess.run(["systemctl", "disable", "--now", svc], capture_output=True)
            elif os.path.exists(f"/etc/init.d/{svc}"):
                subprocess.run([f"/etc/init.d/{svc}", "stop"], capture_output=True)
    finally:
        if made:
            os.remove(policy)


def tool(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# === the recording backend ===

def find_head_end(buf: bytes):
    """(end of head, start of body) or None; CRLF CRLF, or LF LF."""
    ends = [(i, i + 4) for i in [buf.find(b"\r\n\r\n")] if i >= 0]
    ends += [(i, i + 2) for i in [buf.find(b"\n\n")] if i >= 0]
    return min(ends) if ends else None


def parse_head(head: bytes):
    """(request line, [(name, value)]) leniently: names as sent (lowercased for
    comparison by callers), values without surrounding SP/HTAB."""
    lines = re.split(rb"\r?\n", head)
    fields = []
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t") and fields:
            # obs-fold: joined to the previous field with one SP (RFC 9112 5.2)
            n, v = fields[-1]
            fields[-1] = (n, (v + b" " + line.strip(b" \t")).strip(b" "))
            fields.append((b"<obs-fold>", b""))
            continue
        name, sep, value = line.partition(b":")
        fields.append((name if sep else b"<no-colon>", value.strip(b" \t") if sep else line))
    return lines[0], fields


def field_values(fields, name: bytes):
    return [v for n, v in fields if n.lower() == name]


def dechunk(data: bytes, lenient: bool = False):
    """(body, bytes used) of a chunked body, or None if incomplete/invalid.
    `lenient`: bare LF line ends too (to read what a client meant)."""
    nl = rb"\r?\n" if lenient else rb"\r\n"
    pos, out = 0, b""
    while True:
        m = re.compile(rb"([0-9a-fA-F]+)[ \t]*(;[^\r\n]*)?" + nl).match(data, pos)
        if not m:
            return None
        size = int(m.group(1), 16)
        if size == 0:
            t = re.compile(rb"(?:[^\r\n]+" + nl + rb")*" + nl).match(data, m.end())  # trailers
            return (out, t.end()) if t else None
        d = re.compile(rb"(?s)(.{%d})" % size + nl).match(data, m.end())
        if not d:
            return None
        out += d.group(1)
        pos = d.end()


def framing(fields):
    """How a head delimits its body: ('chunked',), ('cl', n) or ('none',)."""
    te = b",".join(field_values(fields, b"transfer-encoding")).lower()
    if te and te.replace(b" ", b"").split(b",")[-1].strip() == b"chunked":
        return ("chunked",)
    cls = field_values(fields, b"content-length")
    if cls and cls[0].isdigit():
        return ("cl", int(cls[0]))
    return ("none",)


def split_request(buf: bytes, lenient: bool = False):
    """(head, body, used) of the first request in `buf`, or None."""
    he = find_head_end(buf)
    if he is None:
        return None
    head = buf[:he[0]]
    _, fields = parse_head(head)
    fr = framing(fields)
    rest = buf[he[1]:]
    if fr[0] == "chunked":
        got = dechunk(rest, lenient)
        if got is None:
            return None
        return head, got[0], he[1] + got[1]
    n = fr[1] if fr[0] == "cl" else 0
    if len(rest) < n:
        return None
    return head, rest[:n], he[1] + n


class Backend:
    """Records every request it gets and answers 200 with keep-alive."""

    def __init__(self, name: str):
        self.name = name
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        self.log = []  # (conn id, head, body)
        self.pending = {}  # conn id -> unparsed bytes
        self.closed = set()  # conn ids the proxy closed
        self.last_activity = time.monotonic()
        self.conns = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.conns += 1
                cid = self.conns
            threading.Thread(target=self._serve, args=(c, cid), daemon=True).start()

    def _serve(self, c: socket.socket, cid: int):
        with c:
            while True:
                try:
                    data = c.recv(65536)
                except OSError:
                    data = b""
                with self.lock:
                    self.last_activity = time.monotonic()
                    if not data:
                        self.closed.add(cid)
                        return
                    buf = self.pending.get(cid, b"") + data
                    answers = 0
                    while True:
                        got = split_request(buf)
                        if got is None:
                            break
                        head, body, used = got
                        self.log.append((cid, head, body))
                        buf = buf[used:]
                        answers += 1
                    self.pending[cid] = buf
                try:
                    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" * answers)
                except OSError:
                    return

    def mark(self):
        with self.lock:
            return len(self.log), {k: len(v) for k, v in self.pending.items()}

    def since(self, mark):
        """Complete requests since `mark`, plus bytes left pending (a head
        whose body never completed: (conn, bytes, whether the proxy closed
        that connection)), which are then dropped."""
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            with self.lock:
                if time.monotonic() - self.last_activity >= SETTLE:
                    break
            time.sleep(0.03)
        n, _ = mark
        with self.lock:
            reqs = self.log[n:]
            partial = [(cid, b, cid in self.closed) for cid, b in self.pending.items() if b]
            for cid, _, _ in partial:
                self.pending[cid] = b""
        return reqs, partial


# === the proxies ===

class Procs:
    def __init__(self):
        self.procs = []

    def start(self, name, argv, workdir):
        log = open(os.path.join(workdir, f"{name}.out"), "wb")
        p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=workdir,
                             stdin=subprocess.DEVNULL, start_new_session=True)
        self.procs.append((name, p))
        return p

    def stop(self):
        for _, p in self.procs:
            if p.poll() is None:
                p.terminate()
        for _, p in self.procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()


def start_tether(procs, work, port, backend):
    cfg = os.path.join(work, "tether.toml")
    with open(cfg, "w") as f:
        f.write(f"""# scripts/differential.py: embedded checker, one target, admin off.
# Limits as in crates/proxy/tests/malformed.rs (max_body_bytes 1024).
[proxy]
listen = "127.0.0.1:{port}"
header_read_timeout = "2s"
max_body_bytes = 1024

[admin]
listen = ""

[health]
kind = "tcp"
interval = "1s"
timeout = "1s"
rise = 1
fall = 3

[[targets]]
url = "http://127.0.0.1:{backend}"
name = "app-1"

[log]
level = "warn"
[log.loggers]
access = "off"
""")
    binary = os.environ.get("TETHER_PROXY", os.path.join(ROOT, "target/debug/tether-proxy"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    log = open(os.path.join(work, "tether.out"), "wb")
    p = subprocess.Popen([binary, "--config", cfg], stdout=log, stderr=subprocess.STDOUT, cwd=work,
                         env=env, stdin=subprocess.DEVNULL, start_new_session=True)
    procs.procs.append(("tether", p))


def start_nginx(procs, work, port, backend):
    d = os.path.join(work, "nginx")
    os.makedirs(os.path.join(d, "logs"), exist_ok=True)
    cfg = os.path.join(d, "nginx.conf")
    with open(cfg, "w") as f:
        f.write(f"""# scripts/differential.py: nginx defaults, HTTP/1.1 upstream.
daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/logs/error.log info;
events {{ worker_connections 256; }}
http {{
  access_log off;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://127.0.0.1:{backend};
      proxy_http_version 1.1;
    }}
  }}
}}
""")
    procs.start("nginx", [tool("nginx"), "-p", d + "/", "-c", cfg], work)


def start_haproxy(procs, work, port, backend):
    cfg = os.path.join(work, "haproxy.cfg")
    with open(cfg, "w") as f:
        f.write(f"""# scripts/differential.py: HAProxy defaults, mode http, no check.
global
  log stderr format short local0 warning
defaults
  mode http
  log global
  timeout connect 2s
  timeout client 5s
  timeout server 5s
frontend fe
  bind 127.0.0.1:{port}
  default_backend be
backend be
  server s1 127.0.0.1:{backend}
""")
    procs.start("haproxy", [tool("haproxy"), "-db", "-f", cfg], work)


# === the client ===

def parse_responses(buf: bytes):
    """Statuses of the complete responses at the start of `buf`."""
    out, pos = [], 0
    while True:
        he = find_head_end(buf[pos:])
        if he is None:
            return out, False
        head = buf[pos:pos + he[0]]
        m = re.match(rb"HTTP/\d\.\d (\d{3})", head)
        if not m:
            return out, False
        status = int(m.group(1))
        _, fields = parse_head(head)
        fr = framing(fields)
        body = buf[pos + he[1]:]
        if 100 <= status < 200 or status in (204, 304):
            used = 0
        elif fr[0] == "chunked":
            got = dechunk(body)
            if got is None:
                return out, True
            used = got[1]
        elif fr[0] == "cl":
            if len(body) < fr[1]:
                return out, True
            used = fr[1]
        else:
            return out + [status], True  # delimited by close
        if not 100 <= status < 200:
            out.append(status)
        pos += he[1] + used


def exchange(port: int, data: bytes):
    """Sends `data` on a fresh connection: (statuses, closed, raw answer)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf, closed = b"", False
    start = time.monotonic()
    try:
        try:
            s.sendall(data)
        except OSError:
            pass
        done_at = None
        n_done = 0
        while True:
            now = time.monotonic()
            limit = start + DEADLINE
            if done_at is not None:
                limit = min(limit, done_at + QUIET)
            if now >= limit:
                break
            s.settimeout(limit - now)
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            except OSError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            buf += chunk
            statuses, _ = parse_responses(buf)
            if len(statuses) > n_done:
                n_done = len(statuses)
                done_at = time.monotonic()
    finally:
        s.close()
    statuses, _ = parse_responses(buf)
    return statuses, closed, buf


# === comparison ===

def client_requests(data: bytes):
    """The requests a lenient reader finds in the client's bytes."""
    out = []
    while data:
        got = split_request(data, lenient=True)
        if got is None:
            he = find_head_end(data)
            if he is None:
                break
            out.append((data[:he[0]], data[he[1]:]))
            break
        head, body, used = got
        out.append((head, body))
        data = data[used:]
    return out


def target_key(line: bytes):
    parts = re.split(rb"[ \t]+", line)
    method = parts[0]
    target = parts[1] if len(parts) > 1 else b""
    target = re.sub(rb"^[a-zA-Z]+://[^/]*", b"", target) or target
    return method, target


def compare(client, upstream):
    """What changed between a client request and what went upstream."""
    (chead, cbody), (uhead, ubody) = client, upstream
    cline, cfields = parse_head(chead)
    uline, ufields = parse_head(uhead)
    diffs = []
    cm, ct = target_key(cline)
    um, ut = uline.split(b" ")[0], (uline.split(b" ") + [b""])[1]
    if cm != um:
        diffs.append(f"method {show(cm)}→{show(um)}")
    if ct != ut:
        diffs.append(f"target {show(ct)}→{show(ut)}")
    if b" ".join(re.split(rb"[ \t]+", cline)) != cline:
        diffs.append("request line re-spaced")
    if any(n == b"<obs-fold>" for n, _ in cfields) and not any(n == b"<obs-fold>" for n, _ in ufields):
        diffs.append("obs-fold unfolded")
        cfields = [f for f in cfields if f[0] != b"<obs-fold>"]
    keep = lambda fs: sorted((n.lower().strip(), v) for n, v in fs
                             if n.lower().strip() not in IGNORED | FRAMING)
    ck, uk = keep(cfields), keep(ufields)
    dropped = [f for f in ck if f not in uk]
    added = [f for f in uk if f not in ck]
    for n, v in dropped:
        same = [u for u in added if u[0] == n]
        if same:
            added.remove(same[0])
            diffs.append(f"{show(n)} changed")
        else:
            diffs.append(f"{show(n)} dropped")
    for n, v in added:
        diffs.append(f"+{show(n)}")
    cf = (b",".join(field_values(cfields, b"transfer-encoding")), field_values(cfields, b"content-length"))
    uf = (b",".join(field_values(ufields, b"transfer-encoding")), field_values(ufields, b"content-length"))
    if cf != uf:
        diffs.append(f"framing {fr_text(cf)}→{fr_text(uf)}")
    if cbody != ubody:
        diffs.append(f"body {len(cbody)}B→{len(ubody)}B")
    return diffs


def fr_text(fr):
    te, cls = fr
    parts = []
    if te:
        parts.append("TE " + show(te))
    if cls:
        parts.append("CL " + ",".join(show(c) for c in cls))
    return "+".join(parts) or "none"


def show(b: bytes) -> str:
    s = b.decode("latin-1")
    s = "".join(c if 0x20 <= ord(c) < 0x7f else f"\\x{ord(c):02x}" for c in s)
    return s if len(s) <= 24 else s[:21] + "..."


def classify(data: bytes, statuses, closed, reqs, partial):
    """(kind, cell text, upstream count)."""
    st = "+".join(str(s) for s in statuses)
    n_up = len(reqs)
    if not reqs and not partial:
        if statuses:
            return ("rejected" if statuses[0] >= 400 else "answered"), f"rej {st}", 0
        return ("closed" if closed else "timeout"), ("closed" if closed else "timeout"), 0
    sent = client_requests(data)
    diffs, used = [], set()
    for cid, head, body in reqs:
        key = target_key(head.split(b"\r\n")[0])
        idx = next((i for i, c in enumerate(sent) if i not in used
                    and target_key(re.split(rb"\r?\n", c[0])[0])[1] == key[1]), None)
        if idx is None:
            idx = next((i for i in range(len(sent)) if i not in used), None)
        if idx is None:
            diffs.append(f"EXTRA request {show(head.split(b' ')[1] if b' ' in head else head)}")
            continue
        used.add(idx)
        diffs += compare(sent[idx], (head, body))
    if len(sent) > 1 and len(used) < len(sent):
        diffs.append(f"{len(sent) - len(used)} of {len(sent)} requests not forwarded")
    if partial:
        open_ = any(not closed for _, _, closed in partial)
        diffs.append(("head only, body incomplete" if not reqs else "+ a head with an incomplete body")
                     + ("; upstream conn LEFT OPEN" if open_ else "; upstream conn closed"))
    suffix = f" {st}" if st else (" closed" if closed else " timeout")
    if partial and not reqs:
        return "partial", f"part{suffix}: " + diffs[-1], n_up
    if diffs:
        # Deduplicate, keep order.
        seen = []
        for d in diffs:
            if d not in seen:
                seen.append(d)
        return "normalised", f"norm{suffix}: " + "; ".join(seen), n_up
    return "accepted", f"fwd{suffix}", n_up


# === the run ===

def wait_ready(name, port, proc, backend, deadline=20.0):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if proc.poll() is not None:
            sys.exit(f"differential: {name} exited with {proc.returncode} (see its log)")
        try:
            m = backend.mark()
            statuses, _, _ = exchange(port, b"GET /ready HTTP/1.1\r\nHost: t\r\n\r\n")
            backend.since(m)
            if statuses == [200]:
                return
        except OSError:
            pass
        time.sleep(0.2)
    sys.exit(f"differential: {name} on :{port} not forwarding after {deadline:.0f} s")


def run_case(case, port, backend):
    data = case["bytes"].encode("latin-1")
    m = backend.mark()
    try:
        statuses, closed, _ = exchange(port, data)
    except OSError as e:
        statuses, closed = [], True
        print(f"  {case['id']}: connect failed: {e}", file=sys.stderr)
    reqs, partial = backend.since(m)
    kind, cell, n_up = classify(data, statuses, closed, reqs, partial)
    return {"kind": kind, "cell": cell, "statuses": statuses, "closed": closed,
            "upstream": n_up, "partial": len(partial),
            "raw": [(h + b"\r\n\r\n" + b).decode("latin-1") for _, h, b in reqs]
            + [("PARTIAL " + ("closed: " if c else "open: ") + b.decode("latin-1")) for _, b, c in partial]}


def forwards(r):
    return r["upstream"] > 0


def md_cell(s: str) -> str:
    return s.replace("|", "\\|").replace("`", "'")


def render(cases, results, meta):
    lines = [
        f"Run {meta['date']} at commit `{meta['commit']}` ({meta['versions']}); "
        f"{len(cases)} cases, {meta['seconds']:.0f} s. Regenerate with `make differential` "
        "(scripts/differential.py; cases in scripts/differential_cases.json, rows `c*` are "
        "smuggling classics added for this check, the rest come from "
        "crates/proxy/tests/malformed.rs).",
        "",
        "Outcomes: `rej NNN` answered NNN, nothing upstream; `fwd` forwarded as is; `norm: …` "
        "forwarded changed (framing is how the body was delimited: CL/TE values); `part` a head "
        "went upstream but its body never completed; `closed`/`timeout` no answer. Tether runs "
        "with `max_body_bytes = 1024` as in malformed.rs; nginx and HAProxy with their defaults "
        "(nginx: `proxy_http_version 1.1`; HAProxy: `mode http`). Tether streams request "
        "bodies, so for a chunked body that breaks after its head (rows 15-18) whether the head "
        "reached the backend before the 400 (`part`) or not (`rej`) depends on scheduling and "
        "can differ between runs.",
        "",
    ]
    counts = {p: {} for p in PROXIES}
    for c, r in zip(cases, results):
        for p in PROXIES:
            counts[p][r[p]["kind"]] = counts[p].get(r[p]["kind"], 0) + 1
    kinds = ["rejected", "accepted", "normalised", "partial", "closed", "timeout", "answered"]
    lines.append("| proxy | " + " | ".join(kinds) + " |")
    lines.append("|---|" + "---|" * len(kinds))
    for p in PROXIES:
        lines.append(f"| {p} | " + " | ".join(str(counts[p].get(k, 0)) for k in kinds) + " |")
    lines.append("")
    bugs = [(c, r) for c, r in zip(cases, results)
            if forwards(r["tether"]) and not forwards(r["nginx"]) and not forwards(r["haproxy"])]
    strict = [(c, r) for c, r in zip(cases, results)
              if not forwards(r["tether"]) and forwards(r["nginx"]) and forwards(r["haproxy"])]
    lines.append(f"**Tether forwards, nginx and HAProxy both refuse ({len(bugs)}):** "
                 + (", ".join(f"{c['id']} ({md_cell(c['name'])})" for c, _ in bugs) or "none") + ".")
    lines.append("")
    heads = [(c, r) for c, r in zip(cases, results)
             if r["tether"]["kind"] == "partial" and not forwards(r["nginx"]) and not forwards(r["haproxy"])
             and not r["nginx"]["partial"] and not r["haproxy"]["partial"]]
    left_open = [c["id"] for c, r in heads if "LEFT OPEN" in r["tether"]["cell"]]
    lines.append(f"**Tether sent only a head upstream (body then refused; upstream connection "
                 + (f"LEFT OPEN in {', '.join(left_open)}" if left_open else "closed each time")
                 + f"), nginx and HAProxy refuse before forwarding ({len(heads)}):** "
                 + (", ".join(f"{c['id']} ({md_cell(c['name'])})" for c, _ in heads) or "none") + ".")
    lines.append("")
    lines.append(f"**Tether refuses, nginx and HAProxy both forward ({len(strict)}):** "
                 + (", ".join(f"{c['id']} ({md_cell(c['name'])})" for c, _ in strict) or "none") + ".")
    lines.append("")
    lines.append("| case | description | Tether | nginx | HAProxy |")
    lines.append("|---|---|---|---|---|")
    for c, r in zip(cases, results):
        lines.append(f"| {c['id']} | {md_cell(c['name'])} | "
                     + " | ".join(md_cell(r[p]["cell"]) for p in PROXIES) + " |")
    return "\n".join(lines) + "\n", bugs, strict


def write_doc(text: str):
    with open(DOC, encoding="utf-8") as f:
        doc = f.read()
    i, j = doc.index(BEGIN) + len(BEGIN), doc.index(END)
    with open(DOC, "w", encoding="utf-8") as f:
        f.write(doc[:i] + "\n" + text + doc[j:])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--update", action="store_true", help="write the table into docs/RELIABILITY.md")
    ap.add_argument("--only", help="comma-separated case ids")
    ap.add_argument("--verbose", action="store_true", help="print each result as it comes")
    ap.add_argument("--json", help="also write the raw results here")
    ap.add_argument("--raw", action="store_true", help="print what each backend received")
    args = ap.parse_args()

    ensure_tools()
    binary = os.environ.get("TETHER_PROXY", os.path.join(ROOT, "target/debug/tether-proxy"))
    if not os.path.exists(binary):
        subprocess.run(["cargo", "build", "--locked", "-p", "tether-proxy", "--bin", "tether-proxy"],
                       cwd=ROOT, check=True)
    with open(CASES, encoding="utf-8") as f:
        cases = json.load(f)["cases"]
    if args.only:
        want = args.only.split(",")
        cases = [c for c in cases if c["id"] in want]

    started = time.monotonic()
    work = tempfile.mkdtemp(prefix="tether-differential-")
    procs = Procs()
    backends = {p: Backend(p) for p in PROXIES}
    ports = {p: free_port() for p in PROXIES}
    try:
        start_tether(procs, work, ports["tether"], backends["tether"].port)
        start_nginx(procs, work, ports["nginx"], backends["nginx"].port)
        start_haproxy(procs, work, ports["haproxy"], backends["haproxy"].port)
        by_name = dict((n, p) for n, p in procs.procs)
        for p in PROXIES:
            wait_ready(p, ports[p], by_name[p], backends[p])
        results = []
        for case in cases:
            row = {}
            threads = [threading.Thread(target=lambda p=p: row.__setitem__(p, run_case(case, ports[p], backends[p])))
                       for p in PROXIES]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            results.append(row)
            if args.verbose:
                print(f"{case['id']:>5} {case['name'][:50]:50} | " + " | ".join(row[p]["cell"][:40] for p in PROXIES),
                      flush=True)
            if args.raw:
                for p in PROXIES:
                    for r in row[p]["raw"]:
                        print(f"      {p} upstream: {r[:400]!r}", flush=True)
    finally:
        procs.stop()
    seconds = time.monotonic() - started

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip() or "unknown"
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "crates/*/src"], cwd=ROOT,
                           capture_output=True, text=True).stdout.strip()
    versions = "; ".join([
        subprocess.run([tool("nginx"), "-v"], capture_output=True, text=True).stderr.strip().replace("nginx version: ", ""),
        "HAProxy " + subprocess.run([tool("haproxy"), "-v"], capture_output=True, text=True).stdout.split()[2],
        "tether-proxy debug build",
    ])
    meta = {"date": datetime.date.today().isoformat(), "commit": commit + ("+dirty" if dirty else ""),
            "versions": versions, "seconds": seconds}
    text, bugs, strict = render(cases, results, meta)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump([{"id": c["id"], "name": c["name"], **r} for c, r in zip(cases, results)], f, indent=1)
    if args.update and not args.only:
        write_doc(text)
        print(f"differential: wrote {os.path.relpath(DOC, ROOT)}")
    shutil.rmtree(work, ignore_errors=True)
    print(f"differential: {len(cases)} cases in {seconds:.0f} s; "
          f"{len(bugs)} forwarded by Tether only, {len(strict)} refused by Tether only", file=sys.stderr)


if __name__ == "__main__":
    main()
