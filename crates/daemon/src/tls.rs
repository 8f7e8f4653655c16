//! TLS files named in the config (`[checker.tls]`, `[health_source.tls]`,
//! `[upstream_tls]` and the targets' `tls_ca`): validated into paths, and
//! read into checked PEM for whoever builds the TLS connection.
//!
//! Validation reads every file, so `--check-config` and a SIGHUP refuse a
//! missing file, a file that is not PEM, or a key that does not belong to
//! its certificate, naming the key (`checker.tls.key`). The config keeps
//! paths only: a private key is read when a connection needs it and never
//! sits in a value that derives `Debug`, so no log line can carry it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::{RawClientTls, RawServerTls};
use crate::error::ConfigError;

/// A certificate chain and the private key that goes with it (PEM files).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A TLS server's settings: its identity and, for mutual TLS, the CA whose
/// certificates clients must present.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerTls {
    /// The config section, for messages (`checker.tls`).
    pub section: String,
    pub identity: Identity,
    /// `Some`: clients without a certificate signed by this CA are refused.
    pub client_ca: Option<PathBuf>,
}

/// A TLS client's settings: the only CA it trusts (no system roots: the
/// health channel decides where traffic goes, so only the operator's own
/// CA may vouch for a checker) and, for mutual TLS, its own identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientTls {
    /// The config section, for messages (`health_source.tls`).
    pub section: String,
    pub ca: PathBuf,
    pub identity: Option<Identity>,
}

/// An identity read from its files: the certificate chain and key as PEM,
/// checked to parse and to belong together. `Debug` leaves the key out.
#[derive(Clone)]
pub struct IdentityPem {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
}

impl fmt::Debug for IdentityPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentityPem")
            .field("cert", &format_args!("{} bytes", self.cert.len()))
            .field("key", &"<redacted>")
            .finish()
    }
}

/// Whom TLS to targets trusts besides the system roots: `[upstream_tls]
/// ca` for every `https://` target, and a target's own `tls_ca` for it
/// alone, as PEM read (and checked) when the config was validated.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TargetTrust {
    /// `[upstream_tls] ca`.
    pub ca: Option<Vec<u8>>,
    /// Each target's own `tls_ca`, by the `host:port` its certificate is
    /// for (a DNS entry's template host, not a member's address).
    pub targets: BTreeMap<String, Vec<Vec<u8>>>,
}

impl fmt::Debug for TargetTrust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TargetTrust")
            .field("ca", &self.ca.as_ref().map(|_| "set"))
            .field("targets", &self.targets.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl TargetTrust {
    /// The client config for a target whose certificate is for
    /// `authority` (`host:port`): system roots, `[upstream_tls] ca`, and
    /// that target's own `tls_ca`.
    pub fn client_config(&self, authority: &str) -> rustls::ClientConfig {
        let own = self.targets.get(authority).into_iter().flatten();
        target_client_config(self.ca.iter().chain(own).map(Vec::as_slice))
    }

    /// One line for `--check-config`.
    pub fn summary(&self) -> String {
        let ca = if self.ca.is_some() { "set" } else { "unset" };
        format!(
            "upstream_tls: system roots, ca {ca}, {} target(s) with their own tls_ca",
            self.targets.len()
        )
    }
}

/// A TLS client config for targets: the system roots plus `cas` (PEM that
/// [`read_ca`] accepted), ALPN `http/1.1` (what the proxy and probes
/// speak upstream), ring. There is deliberately no way to skip
/// verification.
pub fn target_client_config<'a>(cas: impl IntoIterator<Item = &'a [u8]>) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(system_roots().iter().cloned());
    for pem in cas {
        // Checked by read_ca when the config was validated.
        roots.add_parsable_certificates(CertificateDer::pem_slice_iter(pem).flatten());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

/// The system's trusted roots (the platform store via
/// `rustls-native-certs`), read once per process: the store rarely
/// changes, and reading it costs a directory walk. Certificates it cannot
/// parse are skipped; none at all (a minimal container) leaves only the
/// configured CAs.
pub fn system_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            log::debug!("system roots: {e}");
        }
        found.certs
    })
}

// === validation ===

impl RawServerTls {
    /// Validates `[<section>]`: `cert` and `key` required and matching,
    /// `client_ca` optional.
    pub fn validate(&self, section: &str) -> Result<ServerTls, ConfigError> {
        let required = |name: &str, value: &Option<PathBuf>| {
            value.clone().ok_or_else(|| {
                ConfigError::new(format!("{section}.{name}"), "required when TLS is set")
            })
        };
        let tls = ServerTls {
            section: section.to_owned(),
            identity: Identity {
                cert: required("cert", &self.cert)?,
                key: required("key", &self.key)?,
            },
            client_ca: self.client_ca.clone(),
        };
        tls.identity.read(section)?;
        if let Some(ca) = &tls.client_ca {
            read_ca(&format!("{section}.client_ca"), ca)?;
        }
        Ok(tls)
    }
}

impl RawClientTls {
    /// Validates `[<section>]`: `ca` required (it is the only trust
    /// anchor), `cert` and `key` together or not at all.
    pub fn validate(&self, section: &str) -> Result<ClientTls, ConfigError> {
        let ca = self.ca.clone().ok_or_else(|| {
            ConfigError::new(
                format!("{section}.ca"),
                "required: the CA that signed the checkers' certificates (system roots are not trusted here)",
            )
        })?;
        let identity = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => Some(Identity {
                cert: cert.clone(),
                key: key.clone(),
            }),
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::new(
                    format!("{section}.key"),
                    "required when cert is set",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    format!("{section}.cert"),
                    "required when key is set",
                ));
            }
        };
        let tls = ClientTls {
            section: section.to_owned(),
            ca,
            identity,
        };
        tls.read_ca()?;
        if let Some(identity) = &tls.identity {
            identity.read(section)?;
        }
        Ok(tls)
    }
}

// === reading ===

impl Identity {
    /// Reads both files and checks that the certificate chain parses, the
    /// key is a private key of a supported type, and it is the key of the
    /// first certificate. Errors name `<section>.cert` or `<section>.key`.
    pub fn read(&self, section: &str) -> Result<IdentityPem, ConfigError> {
        let cert_key = format!("{section}.cert");
        let key_key = format!("{section}.key");
        let cert = read_file(&cert_key, &self.cert)?;
        let chain = certificates(&cert_key, &self.cert, &cert)?;
        let key = read_file(&key_key, &self.key)?;
        // The parser's message names the PEM problem, never the key's bytes.
        let parsed = PrivateKeyDer::from_pem_slice(&key).map_err(|e| {
            ConfigError::new(
                &key_key,
                format!("{}: not a PEM private key ({e})", self.key.display()),
            )
        })?;
        let signer = rustls::crypto::ring::sign::any_supported_type(&parsed).map_err(|e| {
            ConfigError::new(
                &key_key,
                format!("{}: unsupported private key: {e}", self.key.display()),
            )
        })?;
        CertifiedKey::new(chain, signer).keys_match().map_err(|_| {
            ConfigError::new(
                &key_key,
                format!(
                    "{}: not the key of the certificate in {} ({cert_key})",
                    self.key.display(),
                    self.cert.display()
                ),
            )
        })?;
        Ok(IdentityPem { cert, key })
    }
}

impl ServerTls {
    /// The CA clients' certificates must chain to, read and checked.
    pub fn read_client_ca(&self) -> Result<Option<Vec<u8>>, ConfigError> {
        self.client_ca
            .as_ref()
            .map(|ca| read_ca(&format!("{}.client_ca", self.section), ca))
            .transpose()
    }

    /// Lines an operator should see: a private key others can read.
    pub fn warnings(&self) -> Vec<String> {
        key_file_warning(&format!("{}.key", self.section), &self.identity.key)
            .into_iter()
            .collect()
    }

    /// One line for `--check-config`: which files are set, never their
    /// contents or the key's path.
    pub fn summary(&self) -> String {
        let client = if self.client_ca.is_some() {
            "set (clients must present a certificate)"
        } else {
            "unset (no client certificates)"
        };
        format!("{}: cert set, key set, client_ca {client}", self.section)
    }
}

impl ClientTls {
    /// The trusted CA, read and checked.
    pub fn read_ca(&self) -> Result<Vec<u8>, ConfigError> {
        read_ca(&format!("{}.ca", self.section), &self.ca)
    }

    /// Lines an operator should see: a private key others can read.
    pub fn warnings(&self) -> Vec<String> {
        self.identity
            .as_ref()
            .and_then(|i| key_file_warning(&format!("{}.key", self.section), &i.key))
            .into_iter()
            .collect()
    }

    /// One line for `--check-config`.
    pub fn summary(&self) -> String {
        let set = if self.identity.is_some() {
            "set"
        } else {
            "unset"
        };
        format!("{}: ca set, cert {set}, key {set}", self.section)
    }
}

/// Reads a CA file: at least one certificate, each usable as a trust
/// anchor.
pub fn read_ca(key: &str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    let pem = read_file(key, path)?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in certificates(key, path, &pem)? {
        roots.add(cert).map_err(|e| {
            ConfigError::new(
                key,
                format!("{}: not a usable CA certificate: {e}", path.display()),
            )
        })?;
    }
    Ok(pem)
}

/// A warning when a private key file can be read by its group or by
/// others (`mode & 0o077 != 0`); `None` when it is private or cannot be
/// inspected.
pub fn key_file_warning(key: &str, path: &Path) -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(path).ok()?.permissions().mode();
        (mode & 0o077 != 0).then(|| {
            // The config key names the file; its path is not repeated, so
            // --check-config shows key files as set or unset only.
            format!(
                "{key}: the private key file is readable by group or others (mode {:o}); chmod 600 it",
                mode & 0o777
            )
        })
    }
    #[cfg(not(unix))]
    {
        let _ = (key, path);
        None
    }
}

fn read_file(key: &str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|e| {
        let reason = if e.kind() == std::io::ErrorKind::NotFound {
            "no such file".to_owned()
        } else {
            e.to_string()
        };
        ConfigError::new(key, format!("{}: {reason}", path.display()))
    })
}

fn certificates(
    key: &str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            ConfigError::new(
                key,
                format!("{}: not a PEM certificate ({e})", path.display()),
            )
        })?;
    if certs.is_empty() {
        return Err(ConfigError::new(
            key,
            format!("{}: no CERTIFICATE in the file", path.display()),
        ));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Files {
        dir: tempfile::TempDir,
    }

    impl Files {
        fn new() -> Files {
            Files {
                dir: tempfile::tempdir().expect("temp dir"),
            }
        }

        fn write(&self, name: &str, contents: &str) -> PathBuf {
            let path = self.dir.path().join(name);
            std::fs::write(&path, contents).expect("write");
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt as _;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                    .expect("chmod");
            }
            path
        }
    }

    /// A self-signed certificate and its key, as PEM.
    fn self_signed() -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        (cert.pem(), key.serialize_pem())
    }

    fn server(cert: &Path, key: &Path) -> RawServerTls {
        RawServerTls {
            cert: Some(cert.to_owned()),
            key: Some(key.to_owned()),
            client_ca: None,
        }
    }

    #[test]
    fn a_matching_pair_validates_and_debug_hides_the_key() {
        let files = Files::new();
        let (cert, key) = self_signed();
        let raw = RawServerTls {
            client_ca: Some(files.write("ca.crt", &cert)),
            ..server(&files.write("c.crt", &cert), &files.write("c.key", &key))
        };
        let tls = raw.validate("checker.tls").expect("valid");
        assert!(tls.warnings().is_empty(), "{:?}", tls.warnings());
        let pem = tls.identity.read("checker.tls").expect("reads");
        assert!(!format!("{pem:?}").contains("PRIVATE KEY"));
        assert!(!tls.summary().contains("c.key"), "{}", tls.summary());
        assert!(tls.read_client_ca().expect("ca").is_some());
    }

    #[test]
    fn errors_name_the_key() {
        let files = Files::new();
        let (cert, key) = self_signed();
        let (_, other_key) = self_signed();
        let cert_path = files.write("c.crt", &cert);
        let key_path = files.write("c.key", &key);
        let err = |raw: RawServerTls| raw.validate("checker.tls").expect_err("invalid");

        let e = err(server(&cert_path, &files.dir.path().join("missing.key")));
        assert_eq!(e.key, "checker.tls.key");
        assert!(e.reason.contains("no such file"), "{}", e.reason);

        let e = err(server(&cert_path, &files.write("junk.key", "not a key")));
        assert_eq!(e.key, "checker.tls.key");
        assert!(e.reason.contains("not a PEM private key"), "{}", e.reason);

        let e = err(server(&cert_path, &files.write("other.key", &other_key)));
        assert_eq!(e.key, "checker.tls.key");
        assert!(e.reason.contains("not the key of"), "{}", e.reason);
        assert!(!e.reason.contains("PRIVATE"), "{}", e.reason);

        let e = err(server(&files.write("junk.crt", "hello"), &key_path));
        assert_eq!(e.key, "checker.tls.cert");

        let e = err(RawServerTls {
            client_ca: Some(files.write("ca.crt", "x")),
            ..server(&cert_path, &key_path)
        });
        assert_eq!(e.key, "checker.tls.client_ca");

        let e = err(RawServerTls {
            key: None,
            ..server(&cert_path, &key_path)
        });
        assert_eq!(e.key, "checker.tls.key");
    }

    #[test]
    fn a_client_needs_a_ca_and_both_halves_of_its_identity() {
        let files = Files::new();
        let (cert, key) = self_signed();
        let ca = files.write("ca.crt", &cert);
        let err = |raw: RawClientTls| raw.validate("health_source.tls").expect_err("invalid");
        assert_eq!(err(RawClientTls::default()).key, "health_source.tls.ca");
        let only_cert = RawClientTls {
            ca: Some(ca.clone()),
            cert: Some(files.write("c.crt", &cert)),
            key: None,
        };
        assert_eq!(err(only_cert.clone()).key, "health_source.tls.key");
        let both = RawClientTls {
            key: Some(files.write("c.key", &key)),
            ..only_cert
        };
        let tls = both.validate("health_source.tls").expect("valid");
        assert!(tls.identity.is_some());
        assert_eq!(
            tls.summary(),
            "health_source.tls: ca set, cert set, key set"
        );
        let plain = RawClientTls {
            ca: Some(ca),
            ..RawClientTls::default()
        };
        assert!(
            plain
                .validate("health_source.tls")
                .expect("valid")
                .identity
                .is_none()
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_key_others_can_read_gets_a_warning() {
        use std::os::unix::fs::PermissionsExt as _;
        let files = Files::new();
        let (cert, key) = self_signed();
        let key_path = files.write("c.key", &key);
        let tls = server(&files.write("c.crt", &cert), &key_path)
            .validate("checker.tls")
            .expect("valid");
        assert!(tls.warnings().is_empty());
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        let warnings = tls.warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with("checker.tls.key: "),
            "{}",
            warnings[0]
        );
        assert!(warnings[0].contains("640"), "{}", warnings[0]);
    }
}
