//! Mutual TLS on the health channel: a checker with `[checker.tls]` and a
//! client CA refuses clients without a certificate it signed and serves
//! those with one; `tetherctl --ca --cert --key` talks to it; a proxy with
//! `[health_source.tls]` follows it.
//!
//! Certificates are made here with rcgen (a CA, a server certificate for
//! 127.0.0.1 and localhost, client certificates); no key is committed. The
//! binary tests need `cargo build --workspace --bins` first.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::DEADLINE;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tether_checker::CheckerConfig;
use tether_core::{ProbeKind, Target};
use tether_daemon::config::RawServerTls;
use tether_proto::pb;
use tether_proto::pb::health_service_client::HealthServiceClient;
use tether_testkit::{FakeBackend, Proc, TempConfig, eventually, get, run_to_end};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

// === certificates ===

/// A CA and what it signed, written as PEM files in a temp directory
/// (keys mode 600).
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().expect("temp dir");
        let pki = Pki { dir };
        let (ca_pem, ca) = new_ca("tether test CA");
        pki.write("ca.crt", &ca_pem);
        let (cert, key) = leaf(&ca, "checker", ExtendedKeyUsagePurpose::ServerAuth);
        pki.write("checker.crt", &cert);
        pki.write("checker.key", &key);
        let (cert, key) = leaf(&ca, "proxy-1", ExtendedKeyUsagePurpose::ClientAuth);
        pki.write("client.crt", &cert);
        pki.write("client.key", &key);
        // A client certificate from a CA the checker does not trust.
        let (_, rogue) = new_ca("rogue CA");
        let (cert, key) = leaf(&rogue, "intruder", ExtendedKeyUsagePurpose::ClientAuth);
        pki.write("rogue.crt", &cert);
        pki.write("rogue.key", &key);
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn str(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).expect("read pem")
    }

    fn write(&self, name: &str, pem: &str) {
        let path = self.path(name);
        std::fs::write(&path, pem).expect("write pem");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        }
    }

    fn server_tls(&self, client_ca: bool) -> tether_daemon::tls::ServerTls {
        RawServerTls {
            cert: Some(self.path("checker.crt")),
            key: Some(self.path("checker.key")),
            client_ca: client_ca.then(|| self.path("ca.crt")),
        }
        .validate("checker.tls")
        .expect("valid server TLS")
    }

    /// A tonic client TLS config trusting the test CA, presenting the
    /// named certificate (`client`, `rogue`) if any.
    fn client_tls(&self, identity: Option<&str>) -> ClientTlsConfig {
        let config =
            ClientTlsConfig::new().ca_certificate(Certificate::from_pem(self.read("ca.crt")));
        match identity {
            Some(name) => config.identity(Identity::from_pem(
                self.read(&format!("{name}.crt")),
                self.read(&format!("{name}.key")),
            )),
            None => config,
        }
    }
}

fn new_ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let mut params = CertificateParams::new(Vec::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate().expect("CA key");
    let cert = params.self_signed(&key).expect("CA cert");
    (cert.pem(), Issuer::new(params, key))
}

/// A certificate for 127.0.0.1 and localhost signed by `ca`, and its key.
fn leaf(
    ca: &Issuer<'static, KeyPair>,
    name: &str,
    usage: ExtendedKeyUsagePurpose,
) -> (String, String) {
    let mut params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .expect("params");
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().expect("leaf key");
    let cert = params.signed_by(&key, ca).expect("leaf cert");
    (cert.pem(), key.serialize_pem())
}

// === an in-process checker with TLS ===

struct Checker {
    url: String,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), tether_checker::Error>>,
}

impl Checker {
    async fn start(pki: &Pki, client_ca: bool, targets: Vec<Target>) -> Checker {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut config = CheckerConfig::new(addr, targets);
        config.tls = Some(pki.server_tls(client_ca));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(tether_checker::run_on(listener, config, async move {
            let _ = stopped.await;
        }));
        Checker {
            url: format!("https://127.0.0.1:{}", addr.port()),
            stop: Some(stop),
            task,
        }
    }

    async fn list(&self, tls: ClientTlsConfig) -> Result<pb::ListResponse, String> {
        let channel = Endpoint::from_shared(self.url.clone())
            .expect("endpoint")
            .tls_config(tls)
            .expect("tls config")
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(3))
            .connect()
            .await
            .map_err(|e| format!("connect: {e:?}"))?;
        HealthServiceClient::new(channel)
            .list(pb::ListRequest {})
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| format!("list: {s}"))
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(DEADLINE, self.task)
            .await
            .expect("checker stops")
            .expect("checker task")
            .expect("checker ran");
    }
}

fn target(name: &str, url: String) -> Target {
    common::target(
        name,
        url,
        ProbeKind::Http,
        Duration::from_millis(100),
        Duration::from_millis(500),
        1,
    )
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused_and_one_with_a_certificate_is_served() {
    let pki = Pki::new();
    let backend = FakeBackend::start("app-1").await;
    let checker = Checker::start(&pki, true, vec![target("app-1", backend.url())]).await;

    let refused = checker.list(pki.client_tls(None)).await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.contains("CertificateRequired")),
        "no client certificate: the server must ask for one: {refused:?}"
    );
    let rogue = checker.list(pki.client_tls(Some("rogue"))).await;
    assert!(
        rogue.as_ref().is_err_and(|e| e.contains("UnknownCA")),
        "a certificate from another CA: the server must refuse its issuer: {rogue:?}"
    );

    let listed = checker
        .list(pki.client_tls(Some("client")))
        .await
        .expect("a client with a certificate is served");
    let names: Vec<_> = listed.targets.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["app-1"]);

    // Plain HTTP/2 to a TLS listener gets nothing either.
    let plain = Endpoint::from_shared(checker.url.replace("https://", "http://"))
        .expect("endpoint")
        .timeout(Duration::from_secs(3))
        .connect()
        .await;
    if let Ok(channel) = plain {
        let answer = HealthServiceClient::new(channel)
            .list(pb::ListRequest {})
            .await;
        // The TLS listener reads the HTTP/2 preface as a bad handshake and
        // hangs up: no gRPC status ever comes back.
        assert!(
            answer.as_ref().is_err_and(
                |s| s.code() == tonic::Code::Unknown && s.message() == "transport error"
            ),
            "plaintext to a TLS listener: {answer:?}"
        );
    }
    checker.stop().await;
}

#[tokio::test]
async fn without_a_client_ca_any_client_that_trusts_the_server_is_served() {
    let pki = Pki::new();
    let backend = FakeBackend::start("app-1").await;
    let checker = Checker::start(&pki, false, vec![target("app-1", backend.url())]).await;
    checker
        .list(pki.client_tls(None))
        .await
        .expect("plain TLS needs no client certificate");
    // A client that trusts another CA does not accept the checker.
    let (other_ca, _) = new_ca("other CA");
    let distrust = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(other_ca));
    let distrusted = checker.list(distrust).await;
    assert!(
        distrusted
            .as_ref()
            .is_err_and(|e| e.contains("UnknownIssuer")),
        "the client must refuse the checker's issuer: {distrusted:?}"
    );
    checker.stop().await;
}

// === the binaries ===

/// A process starting and printing its listening line.
const START: Duration = Duration::from_secs(10);

/// Runs `tetherctl` to its end off the async workers: (exit code, stdout,
/// stderr).
async fn ctl(args: Vec<String>) -> (i32, String, String) {
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        run_to_end("tetherctl", &refs, &[])
    })
    .await
    .expect("tetherctl runner")
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|a| (*a).to_owned()).collect()
}

#[tokio::test]
async fn tetherctl_with_a_client_certificate_queries_a_mutual_tls_checker() {
    let pki = Pki::new();
    let backend = FakeBackend::start("app-1").await;
    let checker = Checker::start(&pki, true, vec![target("app-1", backend.url())]).await;
    let (ca, cert, key) = (
        pki.str("ca.crt"),
        pki.str("client.crt"),
        pki.str("client.key"),
    );
    let url = checker.url.as_str();

    let mtls = |tail: &[&str]| {
        let mut all = args(&[
            "--checker",
            url,
            "--ca",
            &ca,
            "--cert",
            &cert,
            "--key",
            &key,
        ]);
        all.extend(args(tail));
        all
    };
    let (code, out, err) = ctl(mtls(&["health", "--json"])).await;
    assert_eq!(code, 0, "tetherctl health failed:\n{out}\n{err}");
    assert!(out.contains("\"app-1\""), "{out}");
    eventually("tetherctl serving says SERVING", DEADLINE, || async {
        let (code, out, _) = ctl(mtls(&["serving"])).await;
        (code == 0 && out.trim() == "SERVING").then_some(())
    })
    .await;

    // Without a client certificate the checker refuses the connection.
    let (code, out, err) = ctl(args(&["--checker", url, "--ca", &ca, "health"])).await;
    assert_eq!(code, 1, "no client certificate:\n{out}\n{err}");
    assert!(
        err.contains("cannot reach checker") || err.contains("failed"),
        "{err}"
    );
    // https without --ca is a usage error, not a silent fallback.
    let (code, _, err) = ctl(args(&["--checker", url, "health"])).await;
    assert_eq!(code, 2, "{err}");
    checker.stop().await;
}

fn checker_toml(pki: &Pki, backends: &[&FakeBackend], key: &str) -> String {
    let mut toml = format!(
        r#"[checker]
grpc_listen = "127.0.0.1:0"

[checker.tls]
cert = "{}"
key = "{}"
client_ca = "{}"

[admin]
listen = ""

[health]
kind = "http"
path = "/health"
interval = "100ms"
timeout = "500ms"
rise = 1
fall = 1
"#,
        pki.str("checker.crt"),
        pki.str(key),
        pki.str("ca.crt"),
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

fn proxy_toml(pki: &Pki, checker: std::net::SocketAddr, identity: bool) -> String {
    let identity = if identity {
        format!(
            "cert = \"{}\"\nkey = \"{}\"\n",
            pki.str("client.crt"),
            pki.str("client.key")
        )
    } else {
        String::new()
    };
    format!(
        r#"[proxy]
listen = "127.0.0.1:0"

[admin]
listen = ""

[health_source]
checkers = ["https://127.0.0.1:{port}"]

[health_source.tls]
ca = "{ca}"
{identity}"#,
        port = checker.port(),
        ca = pki.str("ca.crt"),
    )
}

/// The names that served `n` requests through `proxy`, or the first
/// status that was not 200.
async fn served(proxy: std::net::SocketAddr, n: usize) -> Result<Vec<String>, u16> {
    let mut names = Vec::new();
    for _ in 0..n {
        let reply = get(proxy, "/", &[]).await.expect("the proxy answers");
        if reply.status != 200 {
            return Err(reply.status);
        }
        names.push(reply.body);
    }
    names.sort();
    names.dedup();
    Ok(names)
}

#[tokio::test]
async fn a_proxy_over_mutual_tls_follows_the_checker() {
    let pki = Pki::new();
    let app1 = FakeBackend::start("app-1").await;
    let app2 = FakeBackend::start("app-2").await;
    let checker_cfg = TempConfig::new(&checker_toml(&pki, &[&app1, &app2], "checker.key"));
    let checker = Proc::spawn("tether-checker", &["--config", checker_cfg.path_str()], &[]);
    let addr = checker.wait_listening("grpc listening", START).await;

    let proxy_cfg = TempConfig::new(&proxy_toml(&pki, addr, true));
    let proxy = Proc::spawn("tether-proxy", &["--config", proxy_cfg.path_str()], &[]);
    let proxy_addr = proxy.wait_listening("http listening", START).await;

    eventually("the proxy routes to both backends", DEADLINE, || async {
        (served(proxy_addr, 6).await == Ok(vec!["app-1".into(), "app-2".into()])).then_some(())
    })
    .await;
    app1.set_healthy(false);
    eventually("the proxy follows app-1 going down", DEADLINE, || async {
        (served(proxy_addr, 6).await == Ok(vec!["app-2".into()])).then_some(())
    })
    .await;
    app1.set_healthy(true);
    eventually("the proxy follows app-1 coming back", DEADLINE, || async {
        (served(proxy_addr, 6).await == Ok(vec!["app-1".into(), "app-2".into()])).then_some(())
    })
    .await;

    // A proxy that trusts the checker but has no client certificate gets
    // no health, so it never routes.
    let anonymous_cfg = TempConfig::new(&proxy_toml(&pki, addr, false));
    let anonymous = Proc::spawn("tether-proxy", &["--config", anonymous_cfg.path_str()], &[]);
    let anonymous_addr = anonymous.wait_listening("http listening", START).await;
    anonymous
        .wait_for_line("keeping the last table", START)
        .await;
    assert_eq!(served(anonymous_addr, 3).await, Err(503));
    drop(checker);
}

#[test]
fn check_config_reports_key_files_as_set_and_warns_about_readable_keys() {
    let pki = Pki::new();
    // A key the group can read.
    pki.write(
        "loose.key",
        &String::from_utf8(pki.read("checker.key")).expect("utf8"),
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(
            pki.path("loose.key"),
            std::fs::Permissions::from_mode(0o640),
        )
        .expect("chmod");
    }
    let toml = checker_toml(&pki, &[], "loose.key").replace(
        "fall = 1\n",
        "fall = 1\n\n[[targets]]\nurl = \"http://127.0.0.1:9\"\n",
    );
    let cfg = TempConfig::new(&toml);
    let (code, out, err) = run_to_end(
        "tether-checker",
        &["--config", cfg.path_str(), "--check-config"],
        &[],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("checker.tls: cert set, key set, client_ca set"),
        "{out}"
    );
    assert!(!out.contains("loose.key"), "no key path printed: {out}");
    #[cfg(unix)]
    assert!(
        out.contains("warning: checker.tls.key: the private key file is readable"),
        "{out}"
    );
    assert!(!out.contains("PRIVATE KEY"), "{out}");

    // A key that is not the certificate's: exit 2, naming the key.
    let toml = toml.replace(&pki.str("loose.key"), &pki.str("client.key"));
    let cfg = TempConfig::new(&toml);
    let (code, _, err) = run_to_end(
        "tether-checker",
        &["--config", cfg.path_str(), "--check-config"],
        &[],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("checker.tls.key"), "{err}");
    assert!(err.contains("not the key of the certificate"), "{err}");

    // The proxy's side: key files as set, never a path to them.
    let proxy = TempConfig::new(&proxy_toml(&pki, app_addr(), true));
    let (code, out, err) = run_to_end(
        "tether-proxy",
        &["--config", proxy.path_str(), "--check-config"],
        &[],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("health_source.tls: ca set, cert set, key set"),
        "{out}"
    );
    assert!(!out.contains("client.key"), "{out}");
}

fn app_addr() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], 50051))
}
