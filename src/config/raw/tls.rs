//! `keycloak.tls.ca_file`: the certificate authority that signed Keycloak's certificate, when
//! it is a private one. Read and checked when the config is loaded, so that a wrong path or a
//! file with no certificate is a config error naming the key, not an outage found at the first
//! login.

use super::super::{ConfigError, TlsCa};
use super::Validator;
use serde::Deserialize;
use std::io::Read;
use std::path::PathBuf;

/// Largest CA file read (a bundle of a few hundred certificates fits).
const MAX_CA_BYTES: u64 = 1024 * 1024;

/// `keycloak.tls`, as written.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    ca_file: Option<PathBuf>,
}

impl RawTls {
    /// The CA, read: one or more PEM certificates, trusted besides the system's roots.
    pub(super) fn build(self, v: &Validator<'_>) -> Result<Option<TlsCa>, ConfigError> {
        let Some(path) = self.ca_file else {
            return Ok(None);
        };
        let key = "keycloak.tls.ca_file";
        let what = |e: String| v.invalid(key, format!("{}: {e}", path.display()));
        let file = std::fs::File::open(&path).map_err(|e| what(e.to_string()))?;
        let meta = file.metadata().map_err(|e| what(e.to_string()))?;
        if !meta.is_file() {
            return Err(what("not a regular file".into()));
        }
        let mut pem = Vec::new();
        file.take(MAX_CA_BYTES + 1)
            .read_to_end(&mut pem)
            .map_err(|e| what(e.to_string()))?;
        if pem.len() as u64 > MAX_CA_BYTES {
            return Err(what(format!("larger than {MAX_CA_BYTES} bytes")));
        }
        match reqwest::Certificate::from_pem_bundle(&pem) {
            Ok(certs) if !certs.is_empty() => Ok(Some(TlsCa { path, pem })),
            Ok(_) => Err(what("no PEM certificate in it".into())),
            Err(e) => Err(what(format!("not PEM certificates ({e})"))),
        }
    }
}
