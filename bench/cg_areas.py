#!/usr/bin/env python3
"""Instructions per request by area, from two cachegrind runs of part
"instructions" (`BENCH_KEEP_CG=DIR`):

    cg_diff DIR/cg.tether1-n1.out DIR/cg.tether1-n2.out > diff.out
    python3 bench/cg_areas.py diff.out 10000     # N2 - N1 requests

Fat LTO inlines the request's phases into a few functions, so cost is
attributed by the source file of the (possibly inlined) code for the
proxy's own files and for third-party crates, and by the function it ran
in for inlined standard-library code. The areas are therefore approximate:
a HeaderMap insert made by the rewrite counts under HeaderMap, not under
the rewrite. Prints a Markdown table.
"""
import collections
import re
import sys

path,n=sys.argv[1],float(sys.argv[2])
AREAS=[
 ("malloc/free", r"malloc\.c|vgpreload|/malloc/|__rust_alloc|__rust_dealloc"),
 ("memcpy/memmove/memset", r"memmove|memcpy|memset"),
 ("HeaderMap: hash, insert, append, get, remove, drop", r"http-[0-9.]+/src/header/map\.rs|HeaderMap|header::map"),
 ("parse heads, both roles (httparse, head.rs, raw.rs, header names/values)", r"httparse|http1/head\.rs|http1::head|http1/raw\.rs|http1::raw|http-[0-9.]+/src/header/(name|value)\.rs|HeaderName|HeaderValue"),
 ("validate", r"validate\.rs|validate::"),
 ("route: sticky read, pick (route.rs, sticky, table, core)", r"forward/route\.rs|/sticky/|sticky::|table\.rs|tether-core|crates/core|tether_core"),
 ("rewrite heads (rewrite.rs, headers.rs)", r"forward/rewrite\.rs|src/headers\.rs|headers::|rewrite::"),
 ("write upstream, read response (client.rs, upstream pool)", r"http1/client\.rs|http1::client|upstream/|upstream::"),
 ("write back (write.rs)", r"http1/write\.rs|http1::write"),
 ("server loop (http1/server.rs, server.rs, body, pool)", r"http1/server\.rs|http1::server|src/server\.rs|server::Plain|http1/pool|http1/body|http1::body"),
 ("forward/handle (mod.rs: phases inlined by LTO)", r"forward/mod\.rs|forward::"),
 ("tokio runtime, timers, I/O", r"tokio|mio"),
 ("libc: syscalls, clock", r"sysdeps|libc|clock_gettime|Timespec"),
 ("bytes", r"bytes-[0-9.]+|bytes::"),
]
OTHER="other"
def classify(fl,fn):
    ours='/crates/' in fl
    third='/.cargo/registry/' in fl
    key=fl if (ours or third) else fn
    if re.search(r"malloc|vgpreload|memmove|memcpy|memset",fl): key=fl
    for name,rx in AREAS:
        if re.search(rx,key): return name
    return OTHER
tot=collections.Counter(); total=0; fl=fn=None
for line in open(path):
    if line.startswith("fl="): fl=line[3:].strip(); continue
    if line.startswith("fn="): fn=line[3:].strip(); continue
    m=re.match(r"^\d+ (-?\d+)",line)
    if m and fl is not None:
        v=int(m.group(1)); total+=v; tot[classify(fl,fn)]+=v
for name,_ in AREAS+[(OTHER,"")]:
    print(f"| {name} | {tot[name]/n:,.0f} |")
print(f"| total | {total/n:,.0f} |")
