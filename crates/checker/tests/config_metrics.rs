//! What a real `tether-checker` says about its own config on `/metrics`:
//! the expiry of the certificate it serves gRPC with, and a SIGHUP reload
//! that was refused, until one applies (the alerts in deploy/prometheus/
//! read both).

use std::time::Duration;

use tether_testkit::{FakeBackend, Proc, TempConfig, eventually, get};

const START: Duration = Duration::from_secs(20);
const DEADLINE: Duration = Duration::from_secs(10);
/// 2031-03-15T00:00:00Z, the test certificate's notAfter.
const NOT_AFTER: i64 = 1_931_299_200;

fn toml(backend: &FakeBackend, dir: &std::path::Path) -> String {
    format!(
        "[checker]\ngrpc_listen = \"127.0.0.1:0\"\n\
         [checker.tls]\ncert = \"{dir}/c.crt\"\nkey = \"{dir}/c.key\"\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n\
         [health]\nkind = \"http\"\npath = \"/health\"\ninterval = \"200ms\"\ntimeout = \"200ms\"\n\
         [[targets]]\nurl = \"{}\"\nname = \"app-1\"\n",
        backend.url(),
        dir = dir.display(),
    )
}

fn write_private(path: &std::path::Path, contents: &str) {
    std::fs::write(path, contents).expect("write");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_expiry_and_a_refused_reload_show_in_metrics() {
    let backend = FakeBackend::start("app-1").await;
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
    params.not_after = rcgen::date_time_ymd(2031, 3, 15);
    let cert = params.self_signed(&key).expect("cert");
    let config = TempConfig::new("");
    write_private(&config.dir().join("c.crt"), &cert.pem());
    write_private(&config.dir().join("c.key"), &key.serialize_pem());
    let good = toml(&backend, config.dir());
    std::fs::write(config.path(), &good).expect("write");

    let proc = Proc::spawn("tether-checker", &["--config", config.path_str()], &[]);
    let admin = proc.wait_listening("admin", START).await;
    let metrics = || async move { get(admin, "/metrics", &[]).await.ok().map(|r| r.body) };

    let body = metrics().await.expect("metrics");
    let expiry = format!(
        "tether_tls_certificate_expiry_timestamp_seconds{{section=\"checker.tls\"}} {NOT_AFTER}\n"
    );
    assert!(body.contains(&expiry), "{body}");
    assert!(
        body.contains("tether_config_last_reload_successful 1\n"),
        "{body}"
    );

    std::fs::write(config.path(), "[health]\nrise = 0\n").expect("write");
    let mark = proc.line_count();
    proc.reload();
    proc.wait_for_line_after(mark, "reload #1 refused", DEADLINE)
        .await;
    eventually("the refused reload in /metrics", DEADLINE, || async {
        let body = metrics().await?;
        (body.contains("tether_config_last_reload_successful 0\n")
            && body.contains("tether_config_reload_failures_total 1\n"))
        .then_some(())
    })
    .await;

    std::fs::write(config.path(), &good).expect("write");
    let mark = proc.line_count();
    proc.reload();
    proc.wait_for_line_after(mark, "reload #2 applied", DEADLINE)
        .await;
    eventually("the applied reload in /metrics", DEADLINE, || async {
        let body = metrics().await?;
        (body.contains("tether_config_last_reload_successful 1\n")
            && body.contains("tether_config_reloads_total 2\n")
            && body.contains("tether_config_reload_failures_total 1\n"))
        .then_some(())
    })
    .await;
    drop(proc);
    backend.stop().await;
}
