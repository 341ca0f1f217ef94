//! The fake Keycloak's realm keys: real RSA key pairs, RS256-signed JWTs and the JWKS that
//! verifies them.
//!
//! Keycloak signs access and ID tokens with the realm's active `rsa-generated` key (RS256) and
//! publishes every enabled key at `jwks_uri`, next to an `rsa-enc-generated` key (`use: enc`,
//! `RSA-OAEP`) a verifier must skip. A key added with a higher priority signs every later
//! token; the older keys stay published (and keep verifying old tokens) until removed. The
//! fake does the same, so token verification can be tested against it for real.
//!
//! Generating an RSA-2048 key pair takes tens of milliseconds: the realm's initial keys are
//! made once per test process and shared by every fake server; keys added later are new.

use std::sync::{Arc, OnceLock};

use aws_lc_rs::digest::{digest, SHA256};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{KeyPair, RsaKeyPair, RSA_PKCS1_SHA256};
use serde_json::{json, Value};

use super::base64url;

/// Priority of the realm's initial `rsa-generated` and `rsa-enc-generated` keys (Keycloak's
/// default for generated keys).
const DEFAULT_KEY_PRIORITY: i64 = 100;

/// One RSA key of the realm.
pub(super) struct RealmKey {
    /// `kid`: base64url SHA-256 of the public key, 43 characters like Keycloak's.
    pub kid: String,
    /// Among signing keys the highest priority signs; ties go to the key added first.
    pub priority: i64,
    /// The private key.
    pair: Arc<RsaKeyPair>,
    /// Modulus, big-endian, no leading zero.
    n: Vec<u8>,
    /// Public exponent, big-endian, no leading zero.
    e: Vec<u8>,
}

impl RealmKey {
    /// A new key pair.
    ///
    /// # Panics
    ///
    /// If the crypto library cannot generate an RSA key (a broken build, not a test failure).
    pub fn generate(priority: i64) -> RealmKey {
        RealmKey::from_pair(Arc::new(new_pair()), priority)
    }

    /// The realm's initial signing key, the same in every fake of this process.
    pub fn initial_signing() -> RealmKey {
        static PAIR: OnceLock<Arc<RsaKeyPair>> = OnceLock::new();
        let pair = PAIR.get_or_init(|| Arc::new(new_pair()));
        RealmKey::from_pair(Arc::clone(pair), DEFAULT_KEY_PRIORITY)
    }

    /// The realm's encryption key (`rsa-enc-generated`), the same in every fake of this process.
    pub fn initial_encryption() -> RealmKey {
        static PAIR: OnceLock<Arc<RsaKeyPair>> = OnceLock::new();
        let pair = PAIR.get_or_init(|| Arc::new(new_pair()));
        RealmKey::from_pair(Arc::clone(pair), DEFAULT_KEY_PRIORITY)
    }

    fn from_pair(pair: Arc<RsaKeyPair>, priority: i64) -> RealmKey {
        let der = pair.public_key().as_ref().to_vec();
        let (n, e) = rsa_public_key_parts(&der).expect("fake keycloak: RSAPublicKey DER");
        let kid = base64url(digest(&SHA256, &der).as_ref());
        RealmKey {
            kid,
            priority,
            pair,
            n,
            e,
        }
    }

    /// `header.claims.signature`, RS256 (RSASSA-PKCS1-v1_5 with SHA-256) with this key, the
    /// header as Keycloak writes it: `{"alg":"RS256","typ":"JWT","kid":...}`.
    pub fn sign_jwt(&self, claims: &Value) -> String {
        let header = json!({ "alg": "RS256", "typ": "JWT", "kid": self.kid });
        let signing_input = format!(
            "{}.{}",
            base64url(header.to_string().as_bytes()),
            base64url(claims.to_string().as_bytes())
        );
        let mut signature = vec![0u8; self.pair.public_modulus_len()];
        self.pair
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                signing_input.as_bytes(),
                &mut signature,
            )
            .expect("fake keycloak: RSA signing");
        format!("{signing_input}.{}", base64url(&signature))
    }

    /// The key's JWKS entry: `use` `sig` (alg RS256) or `enc` (alg RSA-OAEP), with `n` and
    /// `e`. Keycloak also sends `x5c`, `x5t` and `x5t#S256` (a self-signed certificate),
    /// which the fake leaves out.
    pub fn jwk(&self, usage: &str) -> Value {
        let alg = if usage == "enc" { "RSA-OAEP" } else { "RS256" };
        json!({
            "kid": self.kid,
            "kty": "RSA",
            "alg": alg,
            "use": usage,
            "n": base64url(&self.n),
            "e": base64url(&self.e),
        })
    }
}

fn new_pair() -> RsaKeyPair {
    RsaKeyPair::generate(KeySize::Rsa2048).expect("fake keycloak: generate an RSA-2048 key")
}

/// `(n, e)` of a DER `RSAPublicKey` (RFC 8017: `SEQUENCE { INTEGER n, INTEGER e }`), leading
/// zero bytes stripped as JWK wants them.
fn rsa_public_key_parts(der: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let (tag, body, _) = der_item(der)?;
    if tag != 0x30 {
        return None;
    }
    let (tag_n, n, rest) = der_item(body)?;
    let (tag_e, e, _) = der_item(rest)?;
    if tag_n != 0x02 || tag_e != 0x02 {
        return None;
    }
    let strip = |v: &[u8]| {
        let start = v.iter().position(|&b| b != 0).unwrap_or(v.len());
        v[start..].to_vec()
    };
    Some((strip(n), strip(e)))
}

/// One DER item: (tag, contents, what follows).
fn der_item(data: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = data.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let (bytes, after) = rest.split_at(count);
        rest = after;
        bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b))
    };
    if rest.len() < len {
        return None;
    }
    let (contents, after) = rest.split_at(len);
    Some((tag, contents, after))
}
