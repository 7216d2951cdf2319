//! Signed stream messages, compatible with Caracal (github.com/Garudex-Labs/caracal
//! `packages/core/go/crypto/streamsig.go`), and the `sign` / `verify` settings that name the
//! key.
//!
//! The signed bytes are the stream name and a newline, then every field except `_sig`, in
//! ascending byte order of the field name, as `<name>=<value>` and a newline. The signature
//! is the lowercase hex HMAC-SHA256 of those bytes, stored in the entry's `_sig` field.
//! Because the stream name is signed, an entry copied onto another stream fails to verify.
//! The same code signs on XADD and verifies on read (constant-time).

use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use serde_json::Value;
use sha2::Sha256;

use crate::config::ConfigErrors;
use crate::config::typed::{self, Secret};

/// The field that carries the signature.
pub const SIGNATURE_FIELD: &str = "_sig";
/// Shortest key accepted, in bytes.
pub const MIN_KEY_BYTES: usize = 32;

type HmacSha256 = Hmac<Sha256>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("the signing key is {0} bytes; at least 32 are required")]
    TooShort(usize),
    #[error("the signing key is not hex: {0}")]
    NotHex(String),
}

/// A signing (or verification) key.
#[derive(Clone)]
pub struct SigningKey(Vec<u8>);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(***)")
    }
}

impl SigningKey {
    /// A key given as hex, as Caracal's `STREAMS_HMAC_KEY` is.
    pub fn from_hex(text: &str) -> Result<SigningKey, KeyError> {
        let bytes = hex::decode(text.trim()).map_err(|e| KeyError::NotHex(e.to_string()))?;
        SigningKey::from_bytes(bytes)
    }

    pub fn from_bytes(bytes: Vec<u8>) -> Result<SigningKey, KeyError> {
        if bytes.len() < MIN_KEY_BYTES {
            return Err(KeyError::TooShort(bytes.len()));
        }
        Ok(SigningKey(bytes))
    }

    fn mac(&self, stream: &str, fields: &[(&str, &[u8])]) -> HmacSha256 {
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        mac.update(&canonical(stream, fields));
        mac
    }

    /// The `_sig` value for an entry with `fields` on `stream`.
    pub fn sign(&self, stream: &str, fields: &[(&str, &[u8])]) -> String {
        hex::encode(self.mac(stream, fields).finalize().into_bytes())
    }

    /// Whether `signature` (lowercase or uppercase hex) signs `fields` on `stream`; compared
    /// in constant time.
    pub fn verify(&self, stream: &str, fields: &[(&str, &[u8])], signature: &str) -> bool {
        match hex::decode(signature) {
            Ok(bytes) => self.mac(stream, fields).verify_slice(&bytes).is_ok(),
            Err(_) => false,
        }
    }
}

/// The canonical bytes: what is signed.
pub fn canonical(stream: &str, fields: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = format!("{stream}\n").into_bytes();
    let mut sorted: Vec<&(&str, &[u8])> = fields.iter().filter(|(name, _)| *name != SIGNATURE_FIELD).collect();
    sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    for (name, value) in sorted {
        out.extend_from_slice(name.as_bytes());
        out.push(b'=');
        out.extend_from_slice(value);
        out.push(b'\n');
    }
    out
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SignOptions {
    /// Hex, at least 32 bytes.
    key: Option<String>,
    key_file: Option<String>,
}

/// `sign = true` (key from `STREAMS_HMAC_KEY` / `STREAMS_HMAC_KEY_FILE`, Caracal's names) or
/// `sign = {key = "...", keyFile = "..."}` (hex).
pub fn signing_key(
    value: &Value,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut ConfigErrors,
) -> Option<SigningKey> {
    let hex = match value {
        Value::Bool(false) => return None,
        Value::Bool(true) => match (env("STREAMS_HMAC_KEY"), env("STREAMS_HMAC_KEY_FILE")) {
            (Some(key), _) => Some(key),
            (None, Some(file)) => match std::fs::read_to_string(&file) {
                Ok(text) => Some(text),
                Err(error) => {
                    errors.push(path, format!("STREAMS_HMAC_KEY_FILE {file}: {error}"));
                    return None;
                }
            },
            (None, None) => {
                errors.push(
                    path,
                    "sign = true needs STREAMS_HMAC_KEY or STREAMS_HMAC_KEY_FILE in the environment",
                );
                return None;
            }
        },
        Value::Object(_) => {
            let options = typed::parse::<SignOptions>(value, path, errors)?;
            Secret::resolve(options.key, options.key_file.as_deref(), path, "keyFile", errors)
                .map(|secret| secret.expose().to_owned())
        }
        _ => {
            errors.push(path, "must be true, false or {key, keyFile}");
            return None;
        }
    }?;
    match SigningKey::from_hex(&hex) {
        Ok(key) => Some(key),
        Err(error) => {
            errors.push(path, error.to_string());
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SigningKey {
        SigningKey::from_hex(&"0123456789abcdef".repeat(4)).unwrap()
    }

    /// Caracal's interoperability vectors (github.com/Garudex-Labs/caracal `packages/core/go/crypto/streamsig.go`). A `null` field is simply absent
    /// from a Redis entry, so the second and third vectors sign the same fields.
    #[test]
    fn caracal_vectors() {
        type Fields<'a> = &'a [(&'a str, &'a [u8])];
        let cases: [(Fields, &str, &str); 4] = [
            (
                &[("action", b"transfer"), ("amount", b"100")],
                "audit:events\naction=transfer\namount=100\n",
                "c06ccc579e026c31a97a04f203981b236a3c88041712e9b46242e8762da23d75",
            ),
            (
                &[("action", b"transfer")],
                "audit:events\naction=transfer\n",
                "93c82e377fc1ff7f1430549aa20cd20971150173b5996308ab84cb48d6f2683d",
            ),
            (
                &[("action", b"transfer"), ("_sig", b"deadbeef")],
                "audit:events\naction=transfer\n",
                "93c82e377fc1ff7f1430549aa20cd20971150173b5996308ab84cb48d6f2683d",
            ),
            (
                &[("name", b""), ("count", b"0"), ("active", b"true")],
                "audit:events\nactive=true\ncount=0\nname=\n",
                "dd36b85d880107b52155410569f95436acd8b5a656bba83e37c4b0196fb32ae1",
            ),
        ];
        for (fields, canonical_form, signature) in cases {
            assert_eq!(
                String::from_utf8(canonical("audit:events", fields)).unwrap(),
                canonical_form
            );
            assert_eq!(key().sign("audit:events", fields), signature);
            assert!(key().verify("audit:events", fields, signature));
        }
    }

    #[test]
    fn verification_fails_for_another_stream_or_a_changed_field() {
        let fields: &[(&str, &[u8])] = &[("event", b"{}")];
        let signature = key().sign("walkeros:events", fields);
        assert!(key().verify("walkeros:events", fields, &signature));
        assert!(!key().verify("walkeros:other", fields, &signature));
        assert!(!key().verify("walkeros:events", &[("event", b"{ }")], &signature));
        assert!(!key().verify("walkeros:events", fields, "not hex"));
    }

    #[test]
    fn short_keys_are_refused() {
        assert_eq!(SigningKey::from_hex("00ff").unwrap_err(), KeyError::TooShort(2));
        assert!(matches!(SigningKey::from_hex("zz"), Err(KeyError::NotHex(_))));
    }
}
