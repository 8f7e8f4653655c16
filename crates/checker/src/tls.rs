//! TLS on the health channel, for tonic: the checker's listener
//! (`[checker.tls]`) and the clients that connect to it
//! (`[health_source.tls]`, reports). The files are read each time a
//! config is built, so a rotated certificate is picked up by the next
//! listener or connection.
//!
//! rustls with the ring provider; clients trust only the configured CA.

use tether_daemon::ConfigError;
use tether_daemon::tls::{ClientTls, ServerTls};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// The listener's TLS: its identity, and with a client CA, mutual TLS
/// (a client without a certificate signed by it is refused in the
/// handshake).
pub fn server_config(tls: &ServerTls) -> Result<ServerTlsConfig, ConfigError> {
    let identity = tls.identity.read(&tls.section)?;
    let config = ServerTlsConfig::new().identity(Identity::from_pem(identity.cert, identity.key));
    Ok(match tls.read_client_ca()? {
        Some(ca) => config
            .client_ca_root(Certificate::from_pem(ca))
            .client_auth_optional(false),
        None => config,
    })
}

/// A client's TLS: the configured CA as the only trust anchor (tonic adds
/// no system roots unless asked), the server name from the url's host,
/// and the client's identity when it has one.
pub fn client_config(tls: &ClientTls) -> Result<ClientTlsConfig, ConfigError> {
    let config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(tls.read_ca()?));
    Ok(match &tls.identity {
        Some(identity) => {
            let pem = identity.read(&tls.section)?;
            config.identity(Identity::from_pem(pem.cert, pem.key))
        }
        None => config,
    })
}
