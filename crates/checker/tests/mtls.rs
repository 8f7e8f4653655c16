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
use tether_testkit::FakeBackend;
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
    assert!(refused.is_err(), "no client certificate: {refused:?}");
    let rogue = checker.list(pki.client_tls(Some("rogue"))).await;
    assert!(rogue.is_err(), "a certificate from another CA: {rogue:?}");

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
        assert!(answer.is_err(), "plaintext to a TLS listener: {answer:?}");
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
    assert!(checker.list(distrust).await.is_err());
    checker.stop().await;
}
