#!/usr/bin/env python3
"""Regenerates the malformed-table part of scripts/differential_cases.json
from crates/proxy/tests/malformed.rs, byte for byte.

The table in malformed.rs is Rust code (byte literals plus helpers such as
`te()`, `cl()`, `get_with()`, `many_headers()`), so the bytes are not
copied by hand: this script cuts the table's source text out of
malformed.rs (the helpers, `catalogue()`, `body_framing_rows()`, the
`cases` arrays of the pipelining and "request behind an invalid one"
tests, and the two inputs of `inputs_the_parser_tolerates_are_normalised`),
wraps it in a tiny stand-alone Rust program with stub types, compiles it
with `rustc` and runs it; the program prints every row's bytes as JSON.
So the bytes are exactly what the Rust test sends. Values that depend on
the test's run time are fixed: the decoy address is 127.0.0.1:9 and
`now_ms()` is the extraction time.

The cases this script does not own (group "classic", the request-smuggling
classics added for the differential check) are kept as they are.

    python3 scripts/differential_extract.py   # rewrites the JSON
"""

import json
import os
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(ROOT, "crates/proxy/tests/malformed.rs")
OUT = os.path.join(ROOT, "scripts/differential_cases.json")
DECOY = "127.0.0.1:9"


def cut(text: str, start: str, end: str) -> str:
    """The text from the line starting with `start` up to (not including) `end`."""
    i = text.index(start)
    j = text.index(end, i)
    return text[i:j]


def array(text: str, opener: str) -> str:
    """`[ ... ]` of a `let cases: ... = [` array (up to the `];` that closes it)."""
    i = text.index(opener) + len(opener) - 1  # at '['
    j = text.index("\n    ];", i)
    return text[i : j + len("\n    ]")]


def rust_program(src: str) -> str:
    consts = "\n".join(
        line for line in src.splitlines() if re.match(r"const (MAX_BODY|BACKEND|NEXT):", line)
    )
    table = cut(src, "/// What the backend must have received", "/// Runs one row on a fresh connection")
    framing = cut(src, "fn body_framing_rows()", "#[tokio::test")
    pipelined_type = cut(src, "type Pipelined = (", "/// Row 22")
    pipelined = array(src, "let cases: [Pipelined; 3] = [")
    behind = array(src, "let cases: [(&str, &[u8], u16, Option<&str>); 4] = [")
    tolerated = re.findall(
        r"through\(\s*addr,\s*&mut upstream,\s*(.*?),\s*\)\s*\.await", src, re.S
    )
    # The first two are fixed inputs; a third (16i, a 40 KiB chunked body
    # built in the test) pins the streamed re-chunking and is not a case here.
    if len(tolerated) < 2:
        sys.exit(f"expected 2 inputs in inputs_the_parser_tolerates_are_normalised, found {len(tolerated)}")
    tolerated = tolerated[:2]
    now = int(time.time() * 1000)
    return f"""
#![allow(dead_code, unused)]
use std::net::SocketAddr;
use std::time::Duration;

struct RecordedRequest {{ method: String, uri: String, headers: Vec<(String, String)>, body_len: usize }}
impl RecordedRequest {{ fn header(&self, _name: &str) -> Option<&str> {{ None }} }}
fn now_ms() -> u64 {{ {now} }}

{consts}

{table}

{framing}

{pipelined_type}

fn pipelined() -> Vec<Pipelined> {{
    let cases: [Pipelined; 3] = {pipelined};
    cases.to_vec()
}}

fn behind() -> Vec<(&'static str, &'static [u8], u16, Option<&'static str>)> {{
    let cases: [(&'static str, &'static [u8], u16, Option<&'static str>); 4] = {behind};
    cases.to_vec()
}}

fn js(bytes: &[u8]) -> String {{
    let mut s = String::from("\\"");
    for &b in bytes {{
        match b {{
            b'"' => s.push_str("\\\\\\""),
            b'\\\\' => s.push_str("\\\\\\\\"),
            0x20..=0x7e => s.push(b as char),
            _ => s.push_str(&format!("\\\\u{{:04x}}", b)),
        }}
    }}
    s.push('"');
    s
}}

fn row(out: &mut Vec<String>, group: &str, id: &str, name: &str, bytes: &[u8], status: &str, close: bool, backend: &str) {{
    out.push(format!(
        "{{{{\\"id\\": {{}}, \\"group\\": {{}}, \\"name\\": {{}}, \\"bytes\\": {{}}, \\"tether_expect\\": {{{{\\"status\\": {{}}, \\"close\\": {{}}, \\"backend\\": {{}}}}}}}}}}",
        js(id.as_bytes()), js(group.as_bytes()), js(name.as_bytes()), js(bytes), js(status.as_bytes()), close, js(backend.as_bytes())
    ));
}}

fn main() {{
    let decoy: SocketAddr = "{DECOY}".parse().unwrap();
    let mut out = Vec::new();
    for (group, rows) in [("catalogue", catalogue(decoy)), ("chunked-body", body_framing_rows())] {{
        for r in rows {{
            let backend = match r.backend {{
                Backend::Nothing => "nothing",
                Backend::Forwarded(_) => "forwarded",
                Backend::Aborted => "aborted",
            }};
            row(&mut out, group, r.id, r.name, &r.bytes, &r.status.to_string(), r.close, backend);
        }}
    }}
    for (i, (name, bytes, statuses, paths)) in pipelined().into_iter().enumerate() {{
        let st = format!("{{}},{{}}", statuses[0], statuses[1]);
        row(&mut out, "pipelined", &format!("22-{{}}", i + 1), name, bytes, &st, false, &paths.join(","));
    }}
    for (i, (name, bytes, status, fwd)) in behind().into_iter().enumerate() {{
        row(&mut out, "behind-invalid", &format!("23-{{}}", i + 1), name, bytes, &status.to_string(), true, fwd.unwrap_or("nothing"));
    }}
    let tolerated: [(&str, &str, Vec<u8>); 2] = [
        ("27d", "#fragment in the target (hyper drops it)", ({tolerated[0]}).to_vec()),
        ("16h", "chunk size with trailing SP (hyper re-chunks)", ({tolerated[1]}).to_vec()),
    ];
    for (id, name, bytes) in tolerated {{
        row(&mut out, "tolerated", id, name, &bytes, "200", false, "normalised");
    }}
    println!("[\\n{{}}\\n]", out.join(",\\n"));
}}
"""


def main() -> None:
    with open(SRC, encoding="utf-8") as f:
        src = f.read()
    prog = rust_program(src)
    with tempfile.TemporaryDirectory(prefix="tether-extract-") as tmp:
        rs = os.path.join(tmp, "extract.rs")
        with open(rs, "w") as f:
            f.write(prog)
        exe = os.path.join(tmp, "extract")
        r = subprocess.run(["rustc", "--edition", "2024", "-O", "-o", exe, rs], capture_output=True, text=True)
        if r.returncode != 0:
            sys.stderr.write(r.stderr)
            sys.exit("rustc failed on the extracted table (did malformed.rs change shape?)")
        rows = json.loads(subprocess.run([exe], check=True, capture_output=True, text=True).stdout)
    for r in rows:
        r["source"] = "malformed.rs"
    kept = []
    if os.path.exists(OUT):
        with open(OUT, encoding="utf-8") as f:
            kept = [c for c in json.load(f)["cases"] if c.get("source") != "malformed.rs"]
    doc = {
        "about": "Raw HTTP/1 requests for scripts/differential.py. Rows with source "
        "'malformed.rs' are generated by scripts/differential_extract.py from "
        "crates/proxy/tests/malformed.rs (bytes are latin-1: each char is one byte); "
        "the others are added by hand.",
        "decoy": DECOY,
        "cases": rows + kept,
    }
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1, ensure_ascii=True)
        f.write("\n")
    print(f"{OUT}: {len(rows)} rows from malformed.rs, {len(kept)} kept")


if __name__ == "__main__":
    main()
