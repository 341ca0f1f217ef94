//! Checking one JWT: its shape and algorithm, its signature against a realm's JWKS, and its
//! claims against what we expect. Pure: the keys and the time are passed in.
//!
//! The signature is checked by `jsonwebtoken` (aws-lc-rs underneath, the crypto rustls
//! already uses here); only RS256, PS256 and ES256 — what Keycloak signs access tokens with —
//! are accepted. `alg: none` and HMAC (a realm's HMAC key never leaves Keycloak, and an HMAC
//! "verified" with a public key is the classic forgery) are refused before any key is
//! looked at, and a key whose own `alg` differs from the token's is never used. The claims
//! are checked here rather than by the crate, so that the time is our clock's and each
//! failure has its one [`Reason`].

use base64::Engine;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// The algorithms a token may be signed with.
pub const ACCEPTED: [Algorithm; 3] = [Algorithm::RS256, Algorithm::PS256, Algorithm::ES256];

/// Longest token looked at (Keycloak's are 1–3 KiB).
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Why a token is not valid: one of these, always.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Past `exp` (with the leeway, and outside any outage grace), or before `nbf`.
    Expired,
    /// The signature does not verify, or the algorithm is not one we accept.
    BadSignature,
    /// No kept key of the realm has the token's `kid` (also after fetching them again).
    UnknownKey,
    /// `iss` is not the issuer of any configured realm.
    WrongIssuer,
    /// Neither `aud` nor `azp` names one of `keycloak.verify.audiences`.
    WrongAudience,
    /// Not a JWT, or a claim we need is missing or of the wrong type.
    Malformed,
    /// The user's local account is disabled (here or by Keycloak).
    AccountDisabled,
}

impl Reason {
    /// The name in answers (`bad_signature`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Expired => "expired",
            Reason::BadSignature => "bad_signature",
            Reason::UnknownKey => "unknown_key",
            Reason::WrongIssuer => "wrong_issuer",
            Reason::WrongAudience => "wrong_audience",
            Reason::Malformed => "malformed",
            Reason::AccountDisabled => "account_disabled",
        }
    }
}

/// A refusal: the reason and a line for humans (never the token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The one reason.
    pub reason: Reason,
    /// What exactly, in words.
    pub detail: String,
}

/// Shorthand for a refusal.
pub fn refuse(reason: Reason, detail: impl Into<String>) -> Refusal {
    Refusal {
        reason,
        detail: detail.into(),
    }
}

/// What the header says, once the algorithm is one we accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The signing algorithm.
    pub alg: Algorithm,
    /// The key id.
    pub kid: String,
}

#[derive(Deserialize)]
struct RawHeader {
    #[serde(default)]
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<Value>,
}

/// The three parts of a compact JWS, each base64url text.
fn parts(token: &str) -> Result<[&str; 3], Refusal> {
    let mut it = token.split('.');
    match (it.next(), it.next(), it.next(), it.next()) {
        (Some(h), Some(p), Some(s), None) if !h.is_empty() && !p.is_empty() => Ok([h, p, s]),
        _ => Err(refuse(
            Reason::Malformed,
            "not a JWT (expected three dot-separated parts)",
        )),
    }
}

fn json_part(part: &str, what: &str) -> Result<Value, Refusal> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|_| refuse(Reason::Malformed, format!("{what} is not base64url")))?;
    serde_json::from_slice(&bytes)
        .map_err(|_| refuse(Reason::Malformed, format!("{what} is not JSON")))
}

/// The header, checked: an accepted algorithm, a `kid`, no critical extensions.
///
/// # Errors
///
/// [`Reason::Malformed`] for a token that is not a JWT; [`Reason::BadSignature`] for `none`,
/// HMAC or any other algorithm we do not accept; [`Reason::UnknownKey`] without a `kid`.
pub fn header(token: &str) -> Result<Header, Refusal> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(refuse(
            Reason::Malformed,
            format!("longer than {MAX_TOKEN_BYTES} bytes"),
        ));
    }
    let [h, _, signature] = parts(token)?;
    let raw: RawHeader = serde_json::from_value(json_part(h, "header")?)
        .map_err(|_| refuse(Reason::Malformed, "header has fields of the wrong type"))?;
    if raw.crit.is_some() {
        return Err(refuse(
            Reason::Malformed,
            "header has critical extensions (crit)",
        ));
    }
    let alg = match raw.alg.as_str() {
        "none" | "" => {
            return Err(refuse(
                Reason::BadSignature,
                "unsigned token (alg none) refused",
            ))
        }
        a if a.starts_with("HS") => {
            return Err(refuse(
                Reason::BadSignature,
                format!("HMAC-signed token ({a}) refused: only RS256, PS256, ES256"),
            ))
        }
        a => a
            .parse::<Algorithm>()
            .ok()
            .filter(|alg| ACCEPTED.contains(alg))
            .ok_or_else(|| {
                refuse(
                    Reason::BadSignature,
                    format!("algorithm {a:?} not accepted: only RS256, PS256, ES256"),
                )
            })?,
    };
    if signature.is_empty() {
        return Err(refuse(Reason::BadSignature, "token has no signature"));
    }
    let kid = raw
        .kid
        .filter(|k| !k.is_empty())
        .ok_or_else(|| refuse(Reason::UnknownKey, "token names no key (kid)"))?;
    Ok(Header { alg, kid })
}

/// The claims, unverified: only to find which realm's keys to verify them with.
///
/// # Errors
///
/// [`Reason::Malformed`] when the payload is not a JSON object.
pub fn unverified_claims(token: &str) -> Result<Value, Refusal> {
    let [_, payload, _] = parts(token)?;
    let claims = json_part(payload, "payload")?;
    if !claims.is_object() {
        return Err(refuse(Reason::Malformed, "payload is not a JSON object"));
    }
    Ok(claims)
}

/// The signing key `kid` in `jwks` (JSON text of a JWKS), if it is there: `enc` keys are
/// never signing keys.
pub fn find_key(jwks: &str, kid: &str) -> Option<Value> {
    let set: Value = serde_json::from_str(jwks).ok()?;
    set.get("keys")?
        .as_array()?
        .iter()
        .find(|k| {
            k.get("kid").and_then(Value::as_str) == Some(kid)
                && k.get("use").and_then(Value::as_str) != Some("enc")
        })
        .cloned()
}

/// Verifies the signature of `token` with `key` (a JWK from [`find_key`]) and returns its
/// claims. Nothing but the signature is checked here.
///
/// # Errors
///
/// [`Reason::BadSignature`] when it does not verify or the key is for another algorithm;
/// [`Reason::UnknownKey`] when the key cannot be read; [`Reason::Malformed`] for a payload
/// that does not decode.
pub fn check_signature(token: &str, header: &Header, key: &Value) -> Result<Value, Refusal> {
    let jwk: Jwk = serde_json::from_value(key.clone()).map_err(|_| {
        refuse(
            Reason::UnknownKey,
            format!("key {} is unreadable", header.kid),
        )
    })?;
    if let Some(key_alg) = key.get("alg").and_then(Value::as_str) {
        if key_alg != alg_name(header.alg) {
            return Err(refuse(
                Reason::BadSignature,
                format!(
                    "token says {} but key {} is for {key_alg}",
                    alg_name(header.alg),
                    header.kid
                ),
            ));
        }
    }
    let decoding = DecodingKey::from_jwk(&jwk).map_err(|_| {
        refuse(
            Reason::UnknownKey,
            format!("key {} is unusable", header.kid),
        )
    })?;
    let mut validation = Validation::new(header.alg);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    match jsonwebtoken::decode::<Value>(token, &decoding, &validation) {
        Ok(data) => Ok(data.claims),
        Err(e) => {
            use jsonwebtoken::errors::ErrorKind as K;
            Err(match e.kind() {
                K::InvalidToken | K::Base64(_) | K::Json(_) | K::Utf8(_) => {
                    refuse(Reason::Malformed, "payload does not decode")
                }
                _ => refuse(
                    Reason::BadSignature,
                    format!("signature does not verify with key {}", header.kid),
                ),
            })
        }
    }
}

/// The JOSE name of an accepted algorithm.
fn alg_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::RS256 => "RS256",
        Algorithm::PS256 => "PS256",
        Algorithm::ES256 => "ES256",
        _ => "another algorithm",
    }
}

/// The claims a caller needs, read from a verified token.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TokenClaims {
    /// `iss`.
    pub issuer: String,
    /// `sub`: Keycloak's user id.
    pub sub: String,
    /// `preferred_username`, when the token has it.
    pub preferred_username: Option<String>,
    /// `exp`, epoch seconds.
    pub exp: i64,
    /// `nbf`, epoch seconds, when present.
    pub nbf: Option<i64>,
    /// `azp`: the client the token was issued to.
    pub azp: Option<String>,
    /// `aud`, as a list (a single string becomes one entry).
    pub aud: Vec<String>,
    /// `realm_access.roles`.
    pub realm_roles: Vec<String>,
    /// `resource_access.<client>.roles`, per client.
    pub client_roles: BTreeMap<String, Vec<String>>,
}

fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

fn seconds(claims: &Value, name: &str) -> Result<Option<i64>, Refusal> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_i64()
            .or_else(|| v.as_f64().map(|f| f as i64))
            .map(Some)
            .ok_or_else(|| refuse(Reason::Malformed, format!("{name} is not a number"))),
    }
}

/// Reads the claims we need from a verified token's payload.
///
/// # Errors
///
/// [`Reason::Malformed`] without `iss`, `sub` or `exp`, or with one of the wrong type.
pub fn claims(v: &Value) -> Result<TokenClaims, Refusal> {
    let text = |name: &str| v.get(name).and_then(Value::as_str).map(str::to_string);
    let issuer = text("iss").ok_or_else(|| refuse(Reason::Malformed, "no iss claim"))?;
    let sub = text("sub").ok_or_else(|| refuse(Reason::Malformed, "no sub claim"))?;
    let exp = seconds(v, "exp")?.ok_or_else(|| refuse(Reason::Malformed, "no exp claim"))?;
    let client_roles = v
        .get("resource_access")
        .and_then(Value::as_object)
        .map(|clients| {
            clients
                .iter()
                .map(|(client, access)| (client.clone(), strings(access.get("roles"))))
                .collect()
        })
        .unwrap_or_default();
    Ok(TokenClaims {
        issuer,
        sub,
        preferred_username: text("preferred_username"),
        exp,
        nbf: seconds(v, "nbf")?,
        azp: text("azp"),
        aud: strings(v.get("aud")),
        realm_roles: strings(v.get("realm_access").and_then(|r| r.get("roles"))),
        client_roles,
    })
}

/// Is the token for us? Its `aud` names one of `audiences`, or its `azp` is one (Keycloak's
/// access tokens for a login client carry no `aud`, only `azp`).
///
/// # Errors
///
/// [`Reason::WrongAudience`].
pub fn check_audience(c: &TokenClaims, audiences: &[String]) -> Result<(), Refusal> {
    let ours = |name: &String| audiences.contains(name);
    if c.aud.iter().any(ours) || c.azp.as_ref().is_some_and(ours) {
        return Ok(());
    }
    Err(refuse(
        Reason::WrongAudience,
        format!(
            "issued to {} (aud {:?}), not to one of {:?}",
            c.azp.as_deref().unwrap_or("no azp"),
            c.aud,
            audiences
        ),
    ))
}

/// Checks `exp` and `nbf` at `now` (epoch seconds) with `leeway` seconds of clock skew.
/// `grace` seconds (0 when the circuit is closed or the grace is off) past `exp` are still
/// accepted; returns whether the token is in that grace.
///
/// # Errors
///
/// [`Reason::Expired`].
pub fn check_dates(c: &TokenClaims, now: i64, leeway: i64, grace: i64) -> Result<bool, Refusal> {
    if let Some(nbf) = c.nbf {
        if now < nbf.saturating_sub(leeway) {
            return Err(refuse(
                Reason::Expired,
                format!("not valid before {nbf} (now {now})"),
            ));
        }
    }
    if now <= c.exp.saturating_add(leeway) {
        return Ok(false);
    }
    if grace > 0 && now < c.exp.saturating_add(grace.max(leeway)) {
        return Ok(true);
    }
    Err(refuse(
        Reason::Expired,
        format!("expired {} seconds ago", now.saturating_sub(c.exp)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn b64(v: &Value) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    }

    fn token(header: Value, claims: Value, sig: &str) -> String {
        format!("{}.{}.{sig}", b64(&header), b64(&claims))
    }

    #[test]
    fn none_hmac_and_odd_algorithms_are_refused_before_any_key() {
        let claims = json!({"sub": "x"});
        for (alg, want) in [
            ("none", Reason::BadSignature),
            ("HS256", Reason::BadSignature),
            ("HS512", Reason::BadSignature),
            ("RS384", Reason::BadSignature),
            ("EdDSA", Reason::BadSignature),
            ("", Reason::BadSignature),
        ] {
            let t = token(json!({"alg": alg, "kid": "k"}), claims.clone(), "c2ln");
            assert_eq!(header(&t).unwrap_err().reason, want, "{alg}");
        }
        let unsigned = token(json!({"alg": "RS256", "kid": "k"}), claims.clone(), "");
        assert_eq!(header(&unsigned).unwrap_err().reason, Reason::BadSignature);
        for ok in ["RS256", "PS256", "ES256"] {
            let t = token(json!({"alg": ok, "kid": "k"}), claims.clone(), "c2ln");
            assert_eq!(header(&t).unwrap().kid, "k");
        }
        let no_kid = token(json!({"alg": "RS256"}), claims.clone(), "c2ln");
        assert_eq!(header(&no_kid).unwrap_err().reason, Reason::UnknownKey);
        let crit = token(
            json!({"alg": "RS256", "kid": "k", "crit": ["x"]}),
            claims,
            "c2ln",
        );
        assert_eq!(header(&crit).unwrap_err().reason, Reason::Malformed);
    }

    #[test]
    fn shapes_that_are_not_a_jwt_are_malformed() {
        for bad in [
            "",
            "abc",
            "a.b",
            "a.b.c.d",
            "!!.??.x",
            &"a".repeat(MAX_TOKEN_BYTES + 1),
        ] {
            assert_eq!(
                header(bad).unwrap_err().reason,
                Reason::Malformed,
                "{bad:.20}"
            );
        }
    }

    /// The PKCS#1 `RSAPrivateKey` inside a PKCS#8 `PrivateKeyInfo` (`SEQUENCE { INTEGER,
    /// SEQUENCE, OCTET STRING }`): what `jsonwebtoken` takes for an RSA key.
    fn pkcs1_of(pkcs8: &[u8]) -> &[u8] {
        fn item(d: &[u8]) -> (u8, &[u8], &[u8]) {
            let (len, head) = match d[1] {
                n if n < 0x80 => (n as usize, 2),
                n => {
                    let k = (n & 0x7f) as usize;
                    (
                        d[2..2 + k].iter().fold(0, |a, &b| (a << 8) | b as usize),
                        2 + k,
                    )
                }
            };
            (d[0], &d[head..head + len], &d[head + len..])
        }
        let (_, body, _) = item(pkcs8);
        let (_, _, rest) = item(body);
        let (_, _, rest) = item(rest);
        let (tag, key, _) = item(rest);
        assert_eq!(tag, 0x04);
        key
    }

    /// RS256 is what the fake signs with (tests/it/verify.rs); PS256 and ES256 here, with
    /// keys made on the spot, and a key is never used for another algorithm than its own.
    #[test]
    fn ps256_and_es256_verify_and_a_key_serves_only_its_own_algorithm() {
        use aws_lc_rs::encoding::AsDer;
        use aws_lc_rs::signature::{EcdsaKeyPair, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
        use jsonwebtoken::EncodingKey;
        let rsa = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let pkcs8 = rsa.as_der().unwrap();
        let rsa_der = pkcs1_of(pkcs8.as_ref());
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let ec = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let keys = [
            (Algorithm::PS256, EncodingKey::from_rsa_der(rsa_der)),
            (Algorithm::ES256, EncodingKey::from_ec_der(ec.as_ref())),
        ];
        let claims = json!({"iss": "i", "sub": "s", "exp": 1});
        for (alg, signing) in &keys {
            let mut jwk =
                serde_json::to_value(Jwk::from_encoding_key(signing, *alg).unwrap()).unwrap();
            jwk["kid"] = json!("k");
            jwk["use"] = json!("sig");
            let jwks = json!({ "keys": [jwk] }).to_string();
            let mut h = jsonwebtoken::Header::new(*alg);
            h.kid = Some("k".into());
            let t = jsonwebtoken::encode(&h, &claims, signing).unwrap();
            let header = header(&t).unwrap();
            let key = find_key(&jwks, "k").unwrap();
            assert_eq!(check_signature(&t, &header, &key).unwrap()["sub"], "s");
            let mut parts: Vec<String> = t.split('.').map(str::to_string).collect();
            parts[1] = b64(&json!({"iss": "i", "sub": "root", "exp": 1}));
            let forged = parts.join(".");
            assert_eq!(
                check_signature(&forged, &header, &key).unwrap_err().reason,
                Reason::BadSignature,
                "{alg:?}"
            );
        }
        // An RS256 token whose key is published for PS256: refused, not verified.
        let mut h = jsonwebtoken::Header::new(Algorithm::RS256);
        h.kid = Some("k".into());
        let t = jsonwebtoken::encode(&h, &claims, &keys[0].1).unwrap();
        let mut jwk =
            serde_json::to_value(Jwk::from_encoding_key(&keys[0].1, Algorithm::PS256).unwrap())
                .unwrap();
        jwk["kid"] = json!("k");
        let header = header(&t).unwrap();
        assert_eq!(
            check_signature(&t, &header, &jwk).unwrap_err().reason,
            Reason::BadSignature
        );
    }

    #[test]
    fn enc_keys_are_never_signing_keys() {
        let jwks = json!({"keys": [
            {"kid": "a", "use": "enc", "kty": "RSA", "alg": "RSA-OAEP", "n": "x", "e": "AQAB"},
            {"kid": "b", "use": "sig", "kty": "RSA", "alg": "RS256", "n": "x", "e": "AQAB"}
        ]})
        .to_string();
        assert!(find_key(&jwks, "a").is_none());
        assert!(find_key(&jwks, "b").is_some());
        assert!(find_key(&jwks, "c").is_none());
        assert!(find_key("not json", "b").is_none());
    }

    #[test]
    fn audience_is_aud_or_azp() {
        let ours = vec!["webapp".to_string()];
        let mut c = TokenClaims {
            azp: Some("webapp".into()),
            ..TokenClaims::default()
        };
        assert!(check_audience(&c, &ours).is_ok());
        c.azp = Some("other".into());
        assert_eq!(
            check_audience(&c, &ours).unwrap_err().reason,
            Reason::WrongAudience
        );
        c.aud = vec!["account".into(), "webapp".into()];
        assert!(check_audience(&c, &ours).is_ok());
    }

    #[test]
    fn dates_with_leeway_and_grace() {
        let c = TokenClaims {
            exp: 1000,
            nbf: Some(500),
            ..TokenClaims::default()
        };
        assert_eq!(check_dates(&c, 1000, 30, 0), Ok(false));
        assert_eq!(check_dates(&c, 1030, 30, 0), Ok(false));
        assert_eq!(
            check_dates(&c, 1031, 30, 0).unwrap_err().reason,
            Reason::Expired
        );
        assert_eq!(check_dates(&c, 1031, 30, 600), Ok(true));
        assert_eq!(check_dates(&c, 1599, 30, 600), Ok(true));
        assert_eq!(
            check_dates(&c, 1600, 30, 600).unwrap_err().reason,
            Reason::Expired
        );
        assert_eq!(check_dates(&c, 470, 30, 0), Ok(false));
        assert_eq!(
            check_dates(&c, 469, 30, 0).unwrap_err().reason,
            Reason::Expired
        );
    }

    #[test]
    fn claims_need_iss_sub_and_a_numeric_exp() {
        let full = json!({"iss": "i", "sub": "s", "exp": 5, "aud": "a",
            "realm_access": {"roles": ["r1"]},
            "resource_access": {"webapp": {"roles": ["c1", "c2"]}}});
        let c = claims(&full).unwrap();
        assert_eq!(c.aud, vec!["a"]);
        assert_eq!(c.realm_roles, vec!["r1"]);
        assert_eq!(c.client_roles["webapp"], vec!["c1", "c2"]);
        for missing in ["iss", "sub", "exp"] {
            let mut v = full.clone();
            v.as_object_mut().unwrap().remove(missing);
            assert_eq!(
                claims(&v).unwrap_err().reason,
                Reason::Malformed,
                "{missing}"
            );
        }
        let mut v = full;
        v["exp"] = json!("soon");
        assert_eq!(claims(&v).unwrap_err().reason, Reason::Malformed);
    }
}
