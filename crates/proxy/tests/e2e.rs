//! End-to-end: the built binaries (`tether-checker`, two `tether-proxy`
//! processes subscribed to it, `tetherctl`) against fake backends.
//!
//! Needs `cargo build --workspace --bins` first; `bin_path` says so if not.
//! Every wait is a poll with a deadline, never a sleep.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tether_testkit::{FakeBackend, Proc, Reply, TempConfig, eventually, get, run_to_end};

/// A process starting and printing its listening line.
const START: Duration = Duration::from_secs(10);
/// A health change reaching both proxies (interval 200 ms, fall 2, rise 1).
const HEALTH_CHANGE: Duration = Duration::from_secs(5);
/// A proxy noticing a broken stream, or resubscribing after the checker came
/// back (reconnect backoff is capped at about 5 s between rounds).
const RESUBSCRIBE: Duration = Duration::from_secs(15);

const X_TARGET_SERVER: &str = "x-target-server";
const X_TARGET_SERVER_LAST_USE: &str = "x-target-server-last-use";
const NO_HEALTHY_BODY: &str = r#"{"error":"No healthy servers available"}"#;
const NAMES: [&str; 3] = ["app-1", "app-2", "app-3"];

fn now_ms() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    u64::try_from(since.as_millis()).expect("epoch ms fit in u64")
}

// === configs ===

/// The checker's config: HTTP probes every 200 ms, down after 2 failures,
/// up after 1 success, one `[[targets]]` per backend named after it.
fn checker_toml(grpc_listen: &str, backends: &[FakeBackend]) -> String {
    let mut toml = format!(
        r#"[checker]
grpc_listen = "{grpc_listen}"

[admin]
listen = "127.0.0.1:0"

[health]
kind = "http"
path = "/health"
interval = "200ms"
timeout = "200ms"
rise = 1
fall = 2

[log]
level = "info"
"#
    );
    for b in backends {
        toml.push_str(&format!(
            "\n[[targets]]\nurl = \"{}\"\nname = \"{}\"\n",
            b.url(),
            b.name()
        ));
    }
    toml
}

/// A proxy's config: health from the checker at `checker`, no pool of its own.
fn proxy_toml(checker: SocketAddr) -> String {
    format!(
        r#"[proxy]
listen = "127.0.0.1:0"

[admin]
listen = "127.0.0.1:0"

[health_source]
checkers = ["http://{checker}"]

[log]
level = "info"
"#
    )
}

// === processes ===

async fn start_checker(config: &TempConfig) -> (Proc, SocketAddr) {
    let proc = Proc::spawn("tether-checker", &["--config", config.path_str()], &[]);
    // "grpc listening": the admin line is on the `grpc` logger too.
    let addr = proc.wait_listening("grpc listening", START).await;
    (proc, addr)
}

/// A running `tether-proxy` and the address it serves HTTP on.
struct ProxyProc {
    label: &'static str,
    proc: Proc,
    addr: SocketAddr,
}

async fn start_proxy(label: &'static str, config: &TempConfig) -> ProxyProc {
    let proc = Proc::spawn("tether-proxy", &["--config", config.path_str()], &[]);
    let addr = proc.wait_listening("http", START).await;
    ProxyProc { label, proc, addr }
}

/// Runs `tetherctl --checker http://<checker> <args>` to its end, off the
/// async workers; returns (exit code, stdout, stderr).
async fn ctl(checker: SocketAddr, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["--checker".to_owned(), format!("http://{checker}")];
    all.extend(args.iter().map(|a| (*a).to_owned()));
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        run_to_end("tetherctl", &refs, &[])
    })
    .await
    .expect("tetherctl runner panicked")
}

/// `tetherctl health --json` as name -> (state, url); panics unless it
/// exits 0 with the documented JSON shape.
async fn ctl_states(checker: SocketAddr) -> BTreeMap<String, (String, String)> {
    let (code, out, err) = ctl(checker, &["health", "--json"]).await;
    assert_eq!(code, 0, "tetherctl health --json failed:\n{out}\n{err}");
    let json: Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("tetherctl health --json printed no JSON ({e}):\n{out}"));
    assert!(json["version"].is_u64(), "no numeric version in:\n{out}");
    let targets = json["targets"]
        .as_array()
        .unwrap_or_else(|| panic!("no targets array in:\n{out}"));
    targets
        .iter()
        .map(|t| {
            let field = |k: &str| {
                t[k].as_str()
                    .unwrap_or_else(|| panic!("target without string {k:?} in:\n{out}"))
                    .to_owned()
            };
            (field("name"), (field("state"), field("url")))
        })
        .collect()
}

// === requests ===

async fn call(addr: SocketAddr, headers: &[(&str, &str)]) -> Reply {
    match get(addr, "/", headers).await {
        Ok(reply) => reply,
        Err(e) => panic!("GET / through {addr} failed: {e}"),
    }
}

/// The target that served a 200 answer, or `None` for any other status.
/// Checks the answer's contract on the way: the header names the backend
/// that really answered (a fake answers with its name), and the last-use
/// stamp is now.
fn served_by(reply: &Reply) -> Option<String> {
    if reply.status != 200 {
        return None;
    }
    let name = reply
        .header(X_TARGET_SERVER)
        .unwrap_or_else(|| panic!("200 answer without {X_TARGET_SERVER}: {reply:?}"));
    assert_eq!(
        reply.body, name,
        "{X_TARGET_SERVER} names another backend than the one that answered"
    );
    let last_use: u64 = reply
        .header(X_TARGET_SERVER_LAST_USE)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no epoch-ms {X_TARGET_SERVER_LAST_USE}: {reply:?}"));
    assert!(
        now_ms().abs_diff(last_use) < 5_000,
        "{X_TARGET_SERVER_LAST_USE} {last_use} is not now ({})",
        now_ms()
    );
    Some(name.to_owned())
}

/// `n` plain requests through `addr`; how many each target served, or
/// the status of the first answer that was not a 200.
async fn try_spread(addr: SocketAddr, n: usize) -> Result<BTreeMap<String, usize>, u16> {
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        let reply = call(addr, &[]).await;
        let name = served_by(&reply).ok_or(reply.status)?;
        *counts.entry(name).or_insert(0) += 1;
    }
    Ok(counts)
}

/// Like [`try_spread`], but every answer must be a 200.
async fn spread(p: &ProxyProc, n: usize) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        let reply = call(p.addr, &[]).await;
        let Some(name) = served_by(&reply) else {
            panic!("proxy {} answered {reply:?}", p.label);
        };
        *counts.entry(name).or_insert(0) += 1;
    }
    counts
}

fn hits(backends: &[FakeBackend]) -> Vec<usize> {
    backends.iter().map(FakeBackend::hits).collect()
}

/// Asserts `counts` (from `n` requests) spreads evenly over exactly the
/// targets in `expected`: n / len ± 1 each.
fn assert_even(label: &str, counts: &BTreeMap<String, usize>, n: usize, expected: &[&str]) {
    let names: Vec<&str> = counts.keys().map(String::as_str).collect();
    assert_eq!(names, expected, "proxy {label}: served by {counts:?}");
    let fair = n / expected.len();
    for (name, &c) in counts {
        assert!(
            c.abs_diff(fair) <= 1,
            "proxy {label}: {name} served {c} of {n}, expected {fair} ± 1 ({counts:?})"
        );
    }
}

/// A non-200 answer seen while waiting: which proxy, what status, and
/// when (since the wait began).
#[derive(Debug)]
struct Refusal {
    proxy: &'static str,
    status: u16,
    at: Duration,
}

/// Waits until `n` consecutive requests through every proxy all answer 200
/// and are served by exactly the targets in `expected`. With round robin
/// over the healthy members, `n` >= the pool size means a member still
/// routed to would show up. Returns the non-200 answers seen on the way.
async fn wait_routes(
    what: &str,
    deadline: Duration,
    proxies: &[ProxyProc],
    n: usize,
    expected: &[&str],
) -> Vec<Refusal> {
    let refusals = Mutex::new(Vec::new());
    let refusals_ref = &refusals;
    let start = Instant::now();
    eventually(what, deadline, move || async move {
        for p in proxies {
            let counts = match try_spread(p.addr, n).await {
                Ok(counts) => counts,
                Err(status) => {
                    let refusal = Refusal {
                        proxy: p.label,
                        status,
                        at: start.elapsed(),
                    };
                    refusals_ref.lock().expect("lock").push(refusal);
                    return None;
                }
            };
            let names: Vec<&str> = counts.keys().map(String::as_str).collect();
            if names != expected {
                return None;
            }
        }
        Some(())
    })
    .await;
    refusals.into_inner().expect("lock")
}

// === the tests ===

#[tokio::test(flavor = "multi_thread")]
async fn checker_two_proxies_and_tetherctl() {
    let started = Instant::now();
    let mut backends = Vec::new();
    for name in NAMES {
        backends.push(FakeBackend::start(name).await);
    }
    let checker_config = TempConfig::new(&checker_toml("127.0.0.1:0", &backends));
    let (mut checker, checker_addr) = start_checker(&checker_config).await;
    let proxy_config = TempConfig::new(&proxy_toml(checker_addr));
    let proxies = [
        start_proxy("A", &proxy_config).await,
        start_proxy("B", &proxy_config).await,
    ];
    let [a, b] = &proxies;

    // 1. Both proxies learn the pool and route to all three backends.
    wait_routes(
        "both proxies route to all three backends",
        START,
        &proxies,
        3,
        &NAMES,
    )
    .await;
    eprintln!("e2e: stack up in {:?}", started.elapsed());

    // 2. Round robin: 30 requests through each proxy, 10 ± 1 per backend,
    //    counted by header and by what the backends received.
    for p in &proxies {
        let before = hits(&backends);
        let counts = spread(p, 30).await;
        assert_even(p.label, &counts, 30, &NAMES);
        let after = hits(&backends);
        for (i, name) in NAMES.iter().enumerate() {
            assert_eq!(
                after[i] - before[i],
                counts[*name],
                "proxy {}: {name} received other than the headers say",
                p.label
            );
        }
    }

    // 3. Stickiness across proxies: A's answer, echoed to B, pins B to it.
    let first = call(a.addr, &[]).await;
    let pinned = served_by(&first).expect("proxy A answers 200");
    let last_use = first
        .header(X_TARGET_SERVER_LAST_USE)
        .expect("last-use header")
        .to_owned();
    let pinned_idx = NAMES
        .iter()
        .position(|n| *n == pinned)
        .expect("a pool name");
    let before = backends[pinned_idx].hits();
    for _ in 0..10 {
        let reply = call(
            b.addr,
            &[
                (X_TARGET_SERVER, &pinned),
                (X_TARGET_SERVER_LAST_USE, &last_use),
            ],
        )
        .await;
        assert_eq!(
            served_by(&reply).as_deref(),
            Some(pinned.as_str()),
            "proxy B ignored the sticky hint of proxy A's answer"
        );
    }
    assert_eq!(backends[pinned_idx].hits() - before, 10);
    // The hint may name the member's url too.
    let by_url = backends[2].url();
    for p in &proxies {
        let now = now_ms().to_string();
        for _ in 0..5 {
            let reply = call(
                p.addr,
                &[(X_TARGET_SERVER, &by_url), (X_TARGET_SERVER_LAST_USE, &now)],
            )
            .await;
            assert_eq!(
                served_by(&reply).as_deref(),
                Some("app-3"),
                "proxy {}: sticky hint by url",
                p.label
            );
        }
    }
    // A hint outside the pool is never used as an address (no SSRF).
    let outsider = FakeBackend::start("outsider").await;
    let outsider_url = outsider.url();
    for p in &proxies {
        for hint in [outsider_url.as_str(), "outsider"] {
            let now = now_ms().to_string();
            for _ in 0..5 {
                let reply = call(
                    p.addr,
                    &[(X_TARGET_SERVER, hint), (X_TARGET_SERVER_LAST_USE, &now)],
                )
                .await;
                let name = served_by(&reply)
                    .unwrap_or_else(|| panic!("proxy {}: hint {hint}: {reply:?}", p.label));
                assert!(NAMES.contains(&name.as_str()), "served by {name}");
            }
        }
    }
    assert_eq!(
        outsider.hits(),
        0,
        "a proxy forwarded to an address from a header"
    );

    // 4. A failing HTTP probe takes app-2 out of both proxies, and back in.
    let victim = &backends[1];
    victim.set_healthy(false);
    let t0 = Instant::now();
    wait_routes(
        "both proxies stop sending to app-2",
        HEALTH_CHANGE,
        &proxies,
        3,
        &["app-1", "app-3"],
    )
    .await;
    let failover = t0.elapsed();
    eprintln!(
        "e2e: app-2 failing -> no traffic through either proxy after {failover:?} \
         (interval 200ms x fall 2)"
    );
    let victim_hits = victim.hits();
    for p in &proxies {
        let counts = spread(p, 20).await;
        assert_even(p.label, &counts, 20, &["app-1", "app-3"]);
    }
    assert_eq!(
        victim.hits(),
        victim_hits,
        "app-2 got traffic while failing"
    );
    victim.set_healthy(true);
    let t0 = Instant::now();
    wait_routes(
        "both proxies send to app-2 again",
        HEALTH_CHANGE,
        &proxies,
        3,
        &NAMES,
    )
    .await;
    eprintln!(
        "e2e: app-2 healthy -> traffic again after {:?}",
        t0.elapsed()
    );

    // 5. Checker killed: both proxies notice, keep their last table and go
    //    on serving all three.
    let marks: Vec<usize> = proxies.iter().map(|p| p.proc.line_count()).collect();
    checker.kill();
    for (p, mark) in proxies.iter().zip(&marks) {
        p.proc
            .wait_for_line_after(*mark, "keeping the last table", RESUBSCRIBE)
            .await;
    }
    for p in &proxies {
        let counts = spread(p, 21).await;
        assert_even(p.label, &counts, 21, &NAMES);
    }
    // Back on the same port, with app-3 failing: only a new subscription
    // can take app-3 out of the proxies' tables.
    let restart_config = TempConfig::new(&checker_toml(&checker_addr.to_string(), &backends));
    let t0 = Instant::now();
    let (new_checker, new_addr) = start_checker(&restart_config).await;
    checker = new_checker;
    assert_eq!(new_addr, checker_addr, "the checker came back elsewhere");
    backends[2].set_healthy(false);
    let refusals = wait_routes(
        "both proxies resubscribe and stop sending to app-3",
        RESUBSCRIBE,
        &proxies,
        3,
        &["app-1", "app-2"],
    )
    .await;
    eprintln!(
        "e2e: checker restarted -> both proxies on its new health after {:?}",
        t0.elapsed()
    );
    // The fresh checker's first snapshot has every target `unknown` until
    // its first probes; the proxies keep the health they knew meanwhile, so
    // not one request is refused.
    let seen: Vec<String> = refusals
        .iter()
        .map(|r| format!("{} {} at {:?}", r.proxy, r.status, r.at))
        .collect();
    assert!(
        refusals.is_empty(),
        "{} non-200 answers while resubscribing: {}",
        seen.len(),
        seen.join(", ")
    );
    backends[2].set_healthy(true);
    wait_routes(
        "both proxies send to app-3 again",
        HEALTH_CHANGE,
        &proxies,
        3,
        &NAMES,
    )
    .await;

    // 7. tetherctl shows the pool as the checker sees it.
    backends[1].set_healthy(false);
    let want = |states: [&str; 3]| -> BTreeMap<String, (String, String)> {
        NAMES
            .iter()
            .zip(states)
            .zip(&backends)
            .map(|((name, state), b)| ((*name).to_owned(), (state.to_owned(), b.url())))
            .collect()
    };
    let expected = want(["healthy", "unhealthy", "healthy"]);
    let expected_ref = &expected;
    eventually(
        "tetherctl shows app-2 unhealthy, the others healthy",
        HEALTH_CHANGE,
        move || async move { (ctl_states(checker_addr).await == *expected_ref).then_some(()) },
    )
    .await;
    let (code, out, err) = ctl(checker_addr, &["health", "app-2", "--json"]).await;
    assert_eq!(code, 0, "tetherctl health app-2 --json:\n{out}\n{err}");
    let json: Value = serde_json::from_str(&out).expect("JSON");
    let one = json["targets"].as_array().expect("targets");
    assert_eq!(one.len(), 1, "{out}");
    assert_eq!(one[0]["name"], "app-2");
    assert_eq!(one[0]["state"], "unhealthy");
    let (code, out, err) = ctl(checker_addr, &["health", "no-such-target"]).await;
    assert_ne!(
        code, 0,
        "tetherctl health <unknown> succeeded:\n{out}\n{err}"
    );
    assert!(
        err.contains("no-such-target"),
        "the error does not name the target:\n{err}"
    );

    // 6. Nothing healthy: both proxies answer 503 with the fixed body.
    for b in &backends {
        b.set_healthy(false);
    }
    let proxies_ref = &proxies;
    eventually(
        "both proxies answer 503",
        HEALTH_CHANGE,
        move || async move {
            for p in proxies_ref {
                if call(p.addr, &[]).await.status != 503 {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
    for p in &proxies {
        let reply = call(p.addr, &[]).await;
        assert_eq!(reply.status, 503, "proxy {}: {reply:?}", p.label);
        assert_eq!(reply.header("retry-after"), Some("1"), "proxy {}", p.label);
        assert_eq!(reply.body, NO_HEALTHY_BODY, "proxy {}", p.label);
        assert!(
            reply
                .header("content-type")
                .is_some_and(|v| v.starts_with("application/json")),
            "proxy {}: {reply:?}",
            p.label
        );
    }
    let expected = want(["unhealthy", "unhealthy", "unhealthy"]);
    assert_eq!(ctl_states(checker_addr).await, expected);

    assert_eq!(outsider.hits(), 0);
    checker.kill();
    for b in backends {
        b.stop().await;
    }
    outsider.stop().await;
    eprintln!("e2e: whole run {:?}", started.elapsed());
}

#[test]
fn check_config_accepts_valid_and_names_unknown_keys() {
    let checker = |extra: &str| {
        format!(
            "[checker]\ngrpc_listen = \"127.0.0.1:0\"\n{extra}\n\
             [[targets]]\nurl = \"http://127.0.0.1:1\"\nname = \"app-1\"\n"
        )
    };
    let proxy = |extra: &str| {
        format!(
            "[proxy]\nlisten = \"127.0.0.1:0\"\n{extra}\n\
             [health_source]\ncheckers = [\"http://127.0.0.1:50051\"]\n"
        )
    };
    let cases = [
        ("tether-checker", checker(""), 0, None),
        ("tether-proxy", proxy(""), 0, None),
        (
            "tether-checker",
            checker("bogus = 1"),
            2,
            Some("checker.bogus"),
        ),
        ("tether-proxy", proxy("bogus = 1"), 2, Some("proxy.bogus")),
        (
            "tether-proxy",
            proxy("balance = \"least_request\""),
            0,
            None,
        ),
        (
            "tether-proxy",
            proxy("balance = \"fastest\""),
            2,
            Some("proxy.balance"),
        ),
        (
            "tether-proxy",
            proxy("[health]\nslow_start = \"30s\""),
            0,
            None,
        ),
        (
            "tether-proxy",
            proxy("[health]\nslow_start = \"soon\""),
            2,
            Some("health.slow_start"),
        ),
        // The proxy's key in the shared [health] section: the checker
        // reads past it.
        (
            "tether-checker",
            checker("[health]\nslow_start = \"30s\""),
            0,
            None,
        ),
    ];
    for (bin, toml, want_code, key) in cases {
        let config = TempConfig::new(&toml);
        let (code, out, err) =
            run_to_end(bin, &["--config", config.path_str(), "--check-config"], &[]);
        assert_eq!(
            code, want_code,
            "{bin} --check-config on\n{toml}\nstdout:\n{out}\nstderr:\n{err}"
        );
        if let Some(key) = key {
            assert!(
                err.contains(key),
                "{bin}: the error does not name {key}:\n{err}"
            );
        }
    }
}

/// DESIGN's environment rule: only `TETHER_<SECTION>__<KEY>` and
/// `TETHER_TARGETS` are config. `TETHER_CHECKER` is tetherctl's, and
/// Kubernetes injects `TETHER_<SERVICE>_SERVICE_HOST` and the like into
/// every pod of a namespace with services named `tether-*`.
#[test]
fn other_programs_tether_variables_never_stop_a_daemon() {
    let config = TempConfig::new(
        "[checker]\ngrpc_listen = \"127.0.0.1:0\"\n\
         [proxy]\nlisten = \"127.0.0.1:0\"\n\
         [[targets]]\nurl = \"http://127.0.0.1:1\"\n",
    );
    let env = [
        ("TETHER_CHECKER", "http://127.0.0.1:50051"),
        ("TETHER_PROXY_SERVICE_HOST", "10.0.0.1"),
        ("TETHER_CHECKER_PORT", "tcp://10.0.0.2:50051"),
        ("TETHER_PROXY__RETRIES", "1"),
    ];
    for bin in ["tether-checker", "tether-proxy"] {
        let (code, out, err) = run_to_end(
            bin,
            &["--config", config.path_str(), "--check-config"],
            &env,
        );
        assert_eq!(code, 0, "{bin}:\nstdout:\n{out}\nstderr:\n{err}");
    }
    // A config variable with a typo is still an error naming its key.
    let (code, _, err) = run_to_end(
        "tether-proxy",
        &["--config", config.path_str(), "--check-config"],
        &[("TETHER_PROXY__RETRIS", "1")],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("proxy.retris"), "{err}");
}

/// DESIGN's logging rule: logger names are case-insensitive (`HC`,
/// `PROXY` from the original design), an unknown one is an error naming
/// the key, and `fatal` is a level.
#[test]
fn logger_names_from_the_original_design_work() {
    let base = "[proxy]\nlisten = \"127.0.0.1:0\"\n\
                [[targets]]\nurl = \"http://127.0.0.1:1\"\n";
    let cases = [
        (
            "[log]\nlevel = \"fatal\"\n[log.loggers]\nHC = \"debug\"\nPROXY = \"warn\"\n",
            0,
            None,
        ),
        (
            "[log.loggers]\nhealthcheck = \"debug\"\n",
            2,
            Some("log.loggers.healthcheck"),
        ),
        ("[log]\nlevel = \"loud\"\n", 2, Some("log.level")),
    ];
    for (log, want, key) in cases {
        let config = TempConfig::new(&format!("{base}{log}"));
        for bin in ["tether-checker", "tether-proxy"] {
            let (code, out, err) =
                run_to_end(bin, &["--config", config.path_str(), "--check-config"], &[]);
            assert_eq!(
                code, want,
                "{bin} on {log}:\nstdout:\n{out}\nstderr:\n{err}"
            );
            if let Some(key) = key {
                assert!(err.contains(key), "{bin}: {err}");
            }
        }
    }
}
