//! What a daemon says on `/metrics` about its own configuration: whether
//! the last SIGHUP reload was applied whole, and when each certificate it
//! serves or presents expires. Both are what an operator alerts on
//! (deploy/prometheus/rules/) and neither belongs to the request path.
//!
//! The reload task records outcomes, whoever loads a certificate records
//! its expiry; the admin endpoint writes both at scrape time.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::metrics::{Counter, Kind, Text};

/// A daemon's reload outcomes and certificate expiries.
#[derive(Debug)]
pub struct ConfigState {
    reloads: Counter,
    failures: Counter,
    /// False from a reload that was refused or applied only in part until
    /// one is applied whole. True at start: the config in use was valid.
    last_ok: AtomicBool,
    /// Config section (`proxy.tls`) -> the leaf's `notAfter`, Unix seconds.
    certificates: Mutex<BTreeMap<String, i64>>,
}

impl Default for ConfigState {
    fn default() -> ConfigState {
        ConfigState {
            reloads: Counter::default(),
            failures: Counter::default(),
            last_ok: AtomicBool::new(true),
            certificates: Mutex::new(BTreeMap::new()),
        }
    }
}

impl ConfigState {
    /// One reload done: `ok` when everything in it was applied; false when
    /// it was refused or a part of it failed (a certificate that did not
    /// load keeps the old one running, which is a failure to rotate).
    pub fn reloaded(&self, ok: bool) {
        self.reloads.inc();
        if !ok {
            self.failures.inc();
        }
        self.last_ok.store(ok, Ordering::Relaxed);
    }

    /// The certificate (PEM chain, leaf first) now in use for `section`;
    /// nothing is shown for it when its date cannot be read.
    pub fn certificate(&self, section: &str, pem: &[u8]) {
        let Some(not_after) = crate::cert_expiry::pem_not_after(pem) else {
            log::debug!("{section}: the certificate's notAfter could not be read");
            return;
        };
        let mut certs = self
            .certificates
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        certs.insert(section.to_owned(), not_after);
    }

    /// The certificate file for `section` as it is now on disk.
    pub fn certificate_file(&self, section: &str, path: &std::path::Path) {
        match std::fs::read(path) {
            Ok(pem) => self.certificate(section, &pem),
            Err(e) => log::debug!("{section}: {}: {e}", path.display()),
        }
    }

    /// The families, for a daemon's `/metrics`.
    pub fn write_metrics(&self, out: &mut Text) {
        out.family(
            "tether_config_reloads_total",
            Kind::Counter,
            "SIGHUP reloads done, applied or not.",
        )
        .sample("tether_config_reloads_total", &[], self.reloads.get());
        out.family(
            "tether_config_reload_failures_total",
            Kind::Counter,
            "Reloads refused (the config did not validate) or applied only in part (a certificate or log file that did not load).",
        )
        .sample("tether_config_reload_failures_total", &[], self.failures.get());
        out.family(
            "tether_config_last_reload_successful",
            Kind::Gauge,
            "0 from a failed reload until one is applied whole; 1 otherwise (and at start).",
        )
        .sample(
            "tether_config_last_reload_successful",
            &[],
            u8::from(self.last_ok.load(Ordering::Relaxed)),
        );
        let certs = self
            .certificates
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if certs.is_empty() {
            return;
        }
        out.family(
            "tether_tls_certificate_expiry_timestamp_seconds",
            Kind::Gauge,
            "notAfter of the certificate in use, by config section, in Unix seconds.",
        );
        for (section, not_after) in certs.iter() {
            out.sample(
                "tether_tls_certificate_expiry_timestamp_seconds",
                &[("section", section)],
                not_after,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_reload_shows_until_one_applies() {
        let state = ConfigState::default();
        let text = |s: &ConfigState| {
            let mut t = Text::new();
            s.write_metrics(&mut t);
            t.into_string()
        };
        assert!(text(&state).contains("tether_config_last_reload_successful 1\n"));
        state.reloaded(false);
        let out = text(&state);
        assert!(
            out.contains("tether_config_last_reload_successful 0\n"),
            "{out}"
        );
        assert!(
            out.contains("tether_config_reload_failures_total 1\n"),
            "{out}"
        );
        state.reloaded(true);
        let out = text(&state);
        assert!(
            out.contains("tether_config_last_reload_successful 1\n"),
            "{out}"
        );
        assert!(out.contains("tether_config_reloads_total 2\n"), "{out}");
        assert!(!out.contains("tether_tls_certificate"), "{out}");
    }

    #[test]
    fn certificates_show_by_section() {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
        params.not_after = rcgen::date_time_ymd(2031, 3, 15);
        let cert = params.self_signed(&key).expect("cert");
        let state = ConfigState::default();
        state.certificate("proxy.tls", cert.pem().as_bytes());
        state.certificate("checker.tls", b"not a certificate");
        let mut t = Text::new();
        state.write_metrics(&mut t);
        let out = t.into_string();
        assert!(
            out.contains(
                "tether_tls_certificate_expiry_timestamp_seconds{section=\"proxy.tls\"} 1931299200\n"
            ),
            "{out}"
        );
        assert!(!out.contains("checker.tls"), "{out}");
    }
}
