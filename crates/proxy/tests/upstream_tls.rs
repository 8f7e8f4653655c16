//! TLS to targets: `https://` members reached over TLS and verified against
//! `[upstream_tls] ca` and a target's own `tls_ca`; their HTTP probes use
//! TLS too; a member whose certificate no trusted CA signed is refused
//! (probe failure naming the TLS error, 502 after retries, and no request
//! ever reaches it); plain http members beside them are unchanged.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::{DEADLINE, Running, config};
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tether_checker::probe::Prober;
use tether_core::{HealthState, HealthUpdate, ProbeKind, ProbeOutcome, ProbeSpec, Target};
use tether_daemon::config::{RawFile, RawHealth, RawTarget, RawUpstreamTls};
use tether_daemon::tls::TargetTrust;
use tether_proxy::config::{HealthSource, ProxyConfig};
use tether_proxy::upstream::Trust;
use tether_testkit::{FakeBackend, FakeChecker, Issued, TestCa, eventually, get, status};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

/// An HTTPS backend: answers every path with 200 and its name, counting
/// the requests that reached it (after a completed handshake).
struct HttpsBackend {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl HttpsBackend {
    async fn start(name: &str, cert: &Issued) -> HttpsBackend {
        let chain = CertificateDer::pem_file_iter(&cert.cert)
            .expect("cert file")
            .collect::<Result<Vec<_>, _>>()
            .expect("certs");
        let key = PrivateKeyDer::from_pem_file(&cert.key).expect("key");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server config");
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(tls));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let hits = Arc::new(AtomicUsize::new(0));
        let (counter, body) = (hits.clone(), name.to_owned());
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, counter, body) = (acceptor.clone(), counter.clone(), body.clone());
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = service_fn(move |_req: Request<Incoming>| {
                        counter.fetch_add(1, Ordering::SeqCst);
                        let body = body.clone();
                        async move { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body)))) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        HttpsBackend { addr, hits, task }
    }

    fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for HttpsBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn raw_target(name: &str, url: String, tls_ca: Option<&Path>) -> RawTarget {
    RawTarget {
        url,
        name: Some(name.to_owned()),
        tls_ca: tls_ca.map(Path::to_owned),
        ..RawTarget::default()
    }
}

fn fast_http_health() -> RawHealth {
    RawHealth {
        kind: Some("http".into()),
        path: Some("/health".into()),
        interval: Some("100ms".into()),
        timeout: Some("1s".into()),
        rise: Some(1),
        fall: Some(1),
        ..RawHealth::default()
    }
}

/// Who answered each of `n` requests through the proxy
/// (`x-target-server`), or the status when it was not a 200.
async fn served_by(proxy: SocketAddr, n: usize) -> Vec<String> {
    let mut names = Vec::new();
    for _ in 0..n {
        let reply = get(proxy, "/", &[]).await.expect("reply");
        names.push(match reply.status {
            200 => reply.header("x-target-server").unwrap_or("").to_owned(),
            status => status.to_string(),
        });
    }
    names
}

#[tokio::test]
async fn https_targets_are_verified_probed_and_served_beside_plain_ones() {
    let shared = TestCa::new("tether upstream CA");
    let own = TestCa::new("one target's own CA");
    let good = HttpsBackend::start(
        "tls-shared",
        &shared.issue("shared", &["127.0.0.1", "localhost"]),
    )
    .await;
    let owned = HttpsBackend::start("tls-own", &own.issue("own", &["127.0.0.1"])).await;
    // Signed by a CA that is trusted, but for another target only.
    let wrong = HttpsBackend::start("tls-wrong", &own.issue("wrong", &["127.0.0.1"])).await;
    let plain = FakeBackend::start("plain").await;
    let mut dns = raw_target(
        "tls-dns",
        format!("https://localhost:{}", good.addr.port()),
        None,
    );
    dns.expand = Some("dns".into());
    let file = RawFile {
        health: fast_http_health(),
        upstream_tls: RawUpstreamTls {
            ca: Some(shared.ca_path()),
        },
        targets: vec![
            raw_target("tls-shared", good.url(), None),
            raw_target("tls-own", owned.url(), Some(&own.ca_path())),
            raw_target("tls-wrong", wrong.url(), None),
            raw_target("plain", plain.url(), None),
            dns,
        ],
        ..RawFile::default()
    };
    let mut c = ProxyConfig::from_file(&file).expect("valid config");
    let tuned = config(c.source.clone());
    c.listen = tuned.listen;
    c.admin_listen = None;
    c.connect_timeout = tuned.connect_timeout;
    let HealthSource::Embedded { targets, .. } = &c.source else {
        panic!("embedded mode");
    };
    // The probes the embedded checker runs, one by one.
    for entry in targets.iter().filter(|e| !e.is_dns()) {
        let r = Prober::new(&entry.target).probe().await;
        if entry.target.name == "tls-wrong" {
            assert!(r.outcome.is_failure());
            let error = r.error.unwrap_or_default();
            assert!(
                error.starts_with("TLS: ") && error.contains("UnknownIssuer"),
                "{error}"
            );
        } else {
            assert_eq!(
                r.outcome,
                ProbeOutcome::Success,
                "{}: {:?}",
                entry.target.name,
                r.error
            );
        }
    }
    let proxy = Running::start(c).await;
    let dns_member = format!("tls-dns@127.0.0.1:{}", good.addr.port());
    let want = ["plain", dns_member.as_str(), "tls-own", "tls-shared"];
    eventually("every verified member serves", DEADLINE, || async {
        let mut seen = served_by(proxy.addr, 16).await;
        seen.sort();
        seen.dedup();
        (seen == want).then_some(())
    })
    .await;
    assert_eq!(wrong.hits(), 0, "no request may reach an unverified target");
    assert!(owned.hits() > 0 && good.hits() > 0 && plain.hits() > 0);
}

#[tokio::test]
async fn a_member_with_an_unverified_certificate_is_a_connect_failure() {
    let trusted = TestCa::new("trusted");
    let other = TestCa::new("someone else");
    let wrong = HttpsBackend::start("wrong", &other.issue("wrong", &["127.0.0.1"])).await;
    let good = HttpsBackend::start("good", &trusted.issue("good", &["127.0.0.1"])).await;
    let checker = FakeChecker::start().await;
    let pem = std::fs::read(trusted.ca_path()).expect("ca");
    let mut c = common::checker_config(&checker);
    c.upstream_tls = Trust::new(TargetTrust {
        ca: Some(pem),
        ..TargetTrust::default()
    });
    c.retries = 1;
    // The checker vouches for the wrong one: the proxy still verifies.
    checker.set_snapshot(1, vec![status("wrong", &wrong.url(), HealthState::Healthy)]);
    let proxy = Running::start(c).await;
    let reply = eventually("a 502 from the unverified member", DEADLINE, || async {
        let reply = get(proxy.addr, "/", &[]).await.ok()?;
        (reply.status != 503).then_some(reply)
    })
    .await;
    assert_eq!(reply.status, 502, "{}", reply.body);
    assert_eq!(wrong.hits(), 0);
    // With a verified member beside it, the request is retried there.
    checker.send(HealthUpdate::snapshot(
        2,
        vec![
            status("wrong", &wrong.url(), HealthState::Healthy),
            status("good", &good.url(), HealthState::Healthy),
        ],
    ));
    eventually("the verified member answers", DEADLINE, || async {
        let names = served_by(proxy.addr, 4).await;
        names.iter().all(|n| n == "good").then_some(())
    })
    .await;
    assert_eq!(wrong.hits(), 0);
    assert!(good.hits() > 0);
}

#[tokio::test]
async fn a_probe_verifies_a_dns_member_for_its_entrys_host() {
    let ca = TestCa::new("dns CA");
    // A certificate for the name only, not the address.
    let backend = HttpsBackend::start("named", &ca.issue("named", &["backend.test"])).await;
    let target = |ca_files: Vec<std::path::PathBuf>| Target {
        name: "named".into(),
        url: backend.url(),
        probe: ProbeSpec {
            kind: ProbeKind::Http,
            timeout: Duration::from_secs(2),
            ..ProbeSpec::default()
        },
        tls_ca: ca_files,
    };
    let ok = Prober::new(&target(vec![ca.ca_path()]))
        .with_host("backend.test:443")
        .probe()
        .await;
    assert_eq!(ok.outcome, ProbeOutcome::Success, "{:?}", ok.error);
    // By its address, the same certificate does not match.
    let by_ip = Prober::new(&target(vec![ca.ca_path()])).probe().await;
    assert!(by_ip.outcome.is_failure());
    assert!(
        by_ip
            .error
            .as_deref()
            .is_some_and(|e| e.starts_with("TLS: ")),
        "{:?}",
        by_ip.error
    );
    // A TCP probe of an https target stays a plain connect.
    let mut tcp = target(Vec::new());
    tcp.probe.kind = ProbeKind::Tcp;
    assert_eq!(
        Prober::new(&tcp).probe().await.outcome,
        ProbeOutcome::Success
    );
    assert_eq!(backend.hits(), 1);
}
