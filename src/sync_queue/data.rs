//! What a queued change carries: the sync types, their data, and the strict JSON it is parsed
//! from (size limit, no repeated key, the password rule) — parsed once, at the door.

use super::QueueError;
use serde::{Deserialize, Serialize};

/// Largest sync data accepted as JSON text, in bytes: room for a password of
/// [`crate::password::MAX_PASSWORD_BYTES`] written entirely as `\uXXXX` escapes, and no more.
pub const MAX_SYNC_DATA_BYTES: usize = 8 * 1024;

/// The kinds of change the queue knows how to replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncType {
    /// Set the user's Keycloak password. Data: `{"new_password": "…"}` (the original design's
    /// key; `{"password": "…"}` is accepted as an alias).
    PasswordChange,
    /// Create the user in Keycloak (enabled, with this password) unless it is there already.
    /// Data: `{"password": "…", "email": "…", "first_name": "…", "last_name": "…"}`, the
    /// three profile fields optional.
    UserCreate,
    /// Disable the user in Keycloak. Data: `{}`.
    UserDisable,
    /// Enable the user in Keycloak. Data: `{}`.
    UserEnable,
    /// Delete the user from Keycloak (done when it is not there). Data: `{}`.
    UserDelete,
}

impl SyncType {
    /// Every type, in [`SyncType::ALL`]'s order.
    pub const EVERY: [SyncType; 5] = [
        SyncType::PasswordChange,
        SyncType::UserCreate,
        SyncType::UserDisable,
        SyncType::UserEnable,
        SyncType::UserDelete,
    ];

    /// Every known type, for error messages and `--help`.
    pub const ALL: &'static [&'static str] = &[
        "password_change",
        "user_create",
        "user_disable",
        "user_enable",
        "user_delete",
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            SyncType::PasswordChange => "password_change",
            SyncType::UserCreate => "user_create",
            SyncType::UserDisable => "user_disable",
            SyncType::UserEnable => "user_enable",
            SyncType::UserDelete => "user_delete",
        }
    }
}

impl std::str::FromStr for SyncType {
    type Err = QueueError;
    fn from_str(s: &str) -> Result<Self, QueueError> {
        match s {
            "password_change" => Ok(SyncType::PasswordChange),
            "user_create" => Ok(SyncType::UserCreate),
            "user_disable" => Ok(SyncType::UserDisable),
            "user_enable" => Ok(SyncType::UserEnable),
            "user_delete" => Ok(SyncType::UserDelete),
            other => Err(QueueError::UnknownType(other.to_string())),
        }
    }
}

/// A user to create in Keycloak: the password (a secret: sealed at rest like a password
/// change's) and the profile fields the realm's user profile may require. `Debug` leaves out
/// the password.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewUser {
    password: String,
    /// The email address.
    pub email: Option<String>,
    /// The first name.
    pub first_name: Option<String>,
    /// The last name.
    pub last_name: Option<String>,
}

/// The longest profile field accepted (Keycloak's own limit for names and email is 255).
const MAX_PROFILE_FIELD: usize = 255;

impl NewUser {
    /// A user with `password` (the rule `login` applies) and the profile fields given (each at
    /// most 255 characters, no control characters).
    ///
    /// # Errors
    ///
    /// [`QueueError::BadData`] naming the field, never quoting the password.
    pub fn new(
        password: String,
        email: Option<String>,
        first_name: Option<String>,
        last_name: Option<String>,
    ) -> Result<NewUser, QueueError> {
        let bad = |reason: String| QueueError::BadData {
            sync_type: SyncType::UserCreate.as_str(),
            reason,
        };
        crate::password::check_password("password", &password).map_err(bad)?;
        for (name, value) in [
            ("email", &email),
            ("first_name", &first_name),
            ("last_name", &last_name),
        ] {
            if let Some(v) = value {
                if v.trim().is_empty()
                    || v.chars().count() > MAX_PROFILE_FIELD
                    || v.chars().any(char::is_control)
                {
                    return Err(bad(format!(
                        "field `{name}` must be 1 to {MAX_PROFILE_FIELD} characters, no control characters"
                    )));
                }
            }
        }
        Ok(NewUser {
            password,
            email,
            first_name,
            last_name,
        })
    }

    /// The initial password.
    pub fn password(&self) -> &str {
        &self.password
    }
}

impl std::fmt::Debug for NewUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewUser")
            .field("email", &self.email)
            .field("first_name", &self.first_name)
            .field("last_name", &self.last_name)
            .finish_non_exhaustive()
    }
}

/// The validated data of an item (secrets inside; never logged). Only built through a check
/// ([`PasswordChange::new`], [`SyncData::from_json`]), so data in hand is valid data: the queue
/// does not check it again.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordChange {
    /// The new password.
    password: String,
}

impl PasswordChange {
    /// A password change to `password`, which follows [`crate::password::check_password`] (the
    /// rule `login` applies).
    ///
    /// # Errors
    ///
    /// [`QueueError::BadData`] saying what is wrong, never quoting the password.
    pub fn new(password: String) -> Result<PasswordChange, QueueError> {
        crate::password::check_password("new password", &password).map_err(|reason| {
            QueueError::BadData {
                sync_type: SyncType::PasswordChange.as_str(),
                reason,
            }
        })?;
        Ok(PasswordChange { password })
    }

    /// The new password.
    pub fn password(&self) -> &str {
        &self.password
    }
}

impl std::fmt::Debug for PasswordChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordChange { password: *** }")
    }
}

/// The data of an item, by type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncData {
    /// See [`PasswordChange`].
    PasswordChange(PasswordChange),
    /// See [`NewUser`].
    UserCreate(NewUser),
    /// See [`SyncType::UserDisable`].
    UserDisable,
    /// See [`SyncType::UserEnable`].
    UserEnable,
    /// See [`SyncType::UserDelete`].
    UserDelete,
}

/// The keys `user_create` data may use.
const NEW_USER_KEYS: [&str; 4] = ["password", "email", "first_name", "last_name"];

/// The keys `password_change` data may use: the documented one first, then its alias.
pub(super) const PASSWORD_KEYS: [&str; 2] = ["new_password", "password"];

impl SyncData {
    /// Validates JSON `data` against `sync_type`.
    ///
    /// `password_change` wants `{"new_password": "…"}` (the original design's key) or the alias
    /// `{"password": "…"}` — not both; the password follows
    /// [`crate::password::check_password`] (the rule `login` applies).
    ///
    /// # Errors
    ///
    /// [`QueueError::BadData`], naming the field and never quoting a value.
    pub fn from_json(
        sync_type: SyncType,
        data: &serde_json::Value,
    ) -> Result<SyncData, QueueError> {
        match sync_type {
            SyncType::PasswordChange => {
                // Checked by hand rather than through serde: serde's messages quote the value
                // they choke on, and here the value is a password.
                let bad = |reason: &str| QueueError::BadData {
                    sync_type: sync_type.as_str(),
                    reason: reason.to_string(),
                };
                let obj = data
                    .as_object()
                    .ok_or_else(|| bad("expected a JSON object like {\"new_password\": \"…\"}"))?;
                if obj.keys().any(|k| !PASSWORD_KEYS.contains(&k.as_str())) {
                    return Err(bad(
                        "unknown field (expected only `new_password`, or its alias `password`)",
                    ));
                }
                let (key, value) = match (obj.get("new_password"), obj.get("password")) {
                    (Some(_), Some(_)) => {
                        return Err(bad(
                            "both `new_password` and its alias `password` are given (use one)",
                        ))
                    }
                    (Some(v), None) => ("new_password", v),
                    (None, Some(v)) => ("password", v),
                    (None, None) => return Err(bad("missing field `new_password`")),
                };
                let serde_json::Value::String(password) = value else {
                    return Err(bad(&format!("field `{key}` must be a string")));
                };
                crate::password::check_password(&format!("field `{key}`"), password)
                    .map_err(|reason| bad(&reason))?;
                let pc = PasswordChange {
                    password: password.clone(),
                };
                Ok(SyncData::PasswordChange(pc))
            }
            SyncType::UserCreate => {
                let bad = |reason: &str| QueueError::BadData {
                    sync_type: sync_type.as_str(),
                    reason: reason.to_string(),
                };
                let obj = data.as_object().ok_or_else(|| {
                    bad("expected a JSON object like {\"password\": \"…\", \"email\": \"…\"}")
                })?;
                if obj.keys().any(|k| !NEW_USER_KEYS.contains(&k.as_str())) {
                    return Err(bad(
                        "unknown field (expected `password`, and optionally `email`, `first_name`, `last_name`)",
                    ));
                }
                let Some(serde_json::Value::String(password)) = obj.get("password") else {
                    return Err(bad("field `password` must be given, as a string"));
                };
                let text = |key: &str| match obj.get(key) {
                    None | Some(serde_json::Value::Null) => Ok(None),
                    Some(serde_json::Value::String(v)) => Ok(Some(v.clone())),
                    Some(_) => Err(bad(&format!("field `{key}` must be a string"))),
                };
                let user = NewUser::new(
                    password.clone(),
                    text("email")?,
                    text("first_name")?,
                    text("last_name")?,
                )?;
                Ok(SyncData::UserCreate(user))
            }
            SyncType::UserDisable | SyncType::UserEnable | SyncType::UserDelete => {
                if !data.as_object().is_some_and(|o| o.is_empty()) {
                    return Err(QueueError::BadData {
                        sync_type: sync_type.as_str(),
                        reason: "takes no data: give {}".to_string(),
                    });
                }
                Ok(match sync_type {
                    SyncType::UserDisable => SyncData::UserDisable,
                    SyncType::UserEnable => SyncData::UserEnable,
                    _ => SyncData::UserDelete,
                })
            }
        }
    }

    /// Parses and validates sync data given as JSON text: at most [`MAX_SYNC_DATA_BYTES`],
    /// a key given twice refused (a JSON object keeps only the last one silently), then
    /// [`SyncData::from_json`].
    ///
    /// # Errors
    ///
    /// [`QueueError::BadData`] for data that is too large, not JSON, has a duplicate key or does
    /// not fit the type; messages give positions and key names, never values.
    pub fn from_json_text(sync_type: SyncType, text: &[u8]) -> Result<SyncData, QueueError> {
        let bad = |reason: String| QueueError::BadData {
            sync_type: sync_type.as_str(),
            reason,
        };
        if text.len() > MAX_SYNC_DATA_BYTES {
            return Err(bad(format!(
                "larger than {MAX_SYNC_DATA_BYTES} bytes (the limit for sync data)"
            )));
        }
        let StrictValue(value) =
            serde_json::from_slice(text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        Self::from_json(sync_type, &value)
    }

    /// The data as JSON in its documented form (`{"new_password": "…"}`), for a request that
    /// carries it on (the control socket's `queue-sync`).
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            SyncData::PasswordChange(pc) => serde_json::json!({ "new_password": pc.password }),
            SyncData::UserCreate(u) => serde_json::json!({
                "password": u.password,
                "email": u.email,
                "first_name": u.first_name,
                "last_name": u.last_name,
            }),
            SyncData::UserDisable | SyncData::UserEnable | SyncData::UserDelete => {
                serde_json::json!({})
            }
        }
    }

    /// The type this data is for.
    pub fn sync_type(&self) -> SyncType {
        match self {
            SyncData::PasswordChange(_) => SyncType::PasswordChange,
            SyncData::UserCreate(_) => SyncType::UserCreate,
            SyncData::UserDisable => SyncType::UserDisable,
            SyncData::UserEnable => SyncType::UserEnable,
            SyncData::UserDelete => SyncType::UserDelete,
        }
    }

    /// Parses `sync_type` (a wire name) and then `data` by it: what the original design's
    /// `queue_sync(…, sync_type, sync_data, …)` takes.
    ///
    /// # Errors
    ///
    /// [`QueueError::UnknownType`]; as [`SyncData::from_json`].
    pub fn parse(sync_type: &str, data: &serde_json::Value) -> Result<SyncData, QueueError> {
        Self::from_json(sync_type.parse()?, data)
    }

    pub(super) fn to_bytes(&self) -> Vec<u8> {
        match self {
            SyncData::PasswordChange(pc) => pc.password.as_bytes().to_vec(),
            // A plain struct of strings: serde_json cannot fail on it.
            SyncData::UserCreate(u) => serde_json::to_vec(u).unwrap_or_default(),
            SyncData::UserDisable | SyncData::UserEnable | SyncData::UserDelete => Vec::new(),
        }
    }

    pub(super) fn from_bytes(sync_type: SyncType, bytes: Vec<u8>) -> Result<SyncData, QueueError> {
        match sync_type {
            SyncType::PasswordChange => Ok(SyncData::PasswordChange(PasswordChange {
                password: String::from_utf8(bytes)
                    .map_err(|_| QueueError::Corrupt("password is not UTF-8".into()))?,
            })),
            SyncType::UserCreate => serde_json::from_slice(&bytes)
                .map(SyncData::UserCreate)
                .map_err(|_| QueueError::Corrupt("user_create data does not decode".into())),
            SyncType::UserDisable => Ok(SyncData::UserDisable),
            SyncType::UserEnable => Ok(SyncData::UserEnable),
            SyncType::UserDelete => Ok(SyncData::UserDelete),
        }
    }
}

/// Parses JSON text into a value, refusing an object that repeats a key (which
/// `serde_json::Value` would silently collapse to its last occurrence).
///
/// # Errors
///
/// serde_json's error: a position and the duplicate key's name, never a value.
pub fn parse_strict_json(text: &[u8]) -> Result<serde_json::Value, serde_json::Error> {
    serde_json::from_slice::<StrictValue>(text).map(|StrictValue(v)| v)
}

/// A JSON value whose objects may not repeat a key: `serde_json::Value` keeps the last of
/// two, so `{"new_password": "a", "new_password": "b"}` would queue a password nobody saw.
pub(super) struct StrictValue(serde_json::Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

pub(super) struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = serde_json::Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(StrictValue(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(serde_json::Value::Array(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut obj = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if obj.contains_key(&key) {
                // Only a known key is named: an unknown one might be a password typed in the
                // wrong place.
                let msg = if PASSWORD_KEYS.contains(&key.as_str()) {
                    format!("key `{key}` appears twice")
                } else {
                    "a key appears twice".to_string()
                };
                return Err(serde::de::Error::custom(msg));
            }
            let StrictValue(value) = map.next_value()?;
            obj.insert(key, value);
        }
        Ok(serde_json::Value::Object(obj))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bad_data_errors_never_quote_the_value() {
        for data in [
            json!("hunter2-secret"),
            json!({"password": 12345678}),
            json!({"password": ["hunter2-secret"]}),
            json!({"password": "x", "hunter2-secret": 1}),
        ] {
            let err = SyncData::from_json(SyncType::PasswordChange, &data)
                .unwrap_err()
                .to_string();
            assert!(
                !err.contains("hunter2") && !err.contains("12345678"),
                "{err}"
            );
        }
    }
}
