//! Signed stream messages, compatible with Caracal (github.com/Garudex-Labs/caracal), in
//! both of its schemes, and the `sign` / `verify` settings that choose one and name the key.
//!
//! - **stream** (`packages/core/go/crypto/streamsig.go`, key `STREAMS_HMAC_KEY`): the signed
//!   bytes are the stream name and a newline, then every field except `_sig`, in ascending
//!   byte order of the field name, as `<name>=<value>` and a newline; the lowercase hex
//!   HMAC-SHA256 of those bytes goes in the entry's `_sig` field. Because the stream name is
//!   signed, an entry copied onto another stream fails to verify.
//! - **audit** (`packages/core/go/audit/client.go`, key `AUDIT_HMAC_KEY`): the lowercase hex
//!   HMAC-SHA256 of the raw `data` field alone, in the field `sig`; the stream is not bound,
//!   so Caracal's audit dead-letter replay can move an entry back unchanged.
//!
//! The same code signs on XADD and verifies on read (constant-time).

use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use serde_json::Value;
use sha2::Sha256;

use crate::config::typed::{self, Secret};
use crate::config::{ConfigErrors, join};

/// The field that carries a stream-scheme signature.
pub const SIGNATURE_FIELD: &str = "_sig";
/// The field that carries an audit-scheme signature.
pub const AUDIT_SIGNATURE_FIELD: &str = "sig";
/// The one field the audit scheme signs.
pub const AUDIT_SIGNED_FIELD: &str = "data";
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

/// Which of Caracal's two signatures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `_sig` over the stream name and every field (`STREAMS_HMAC_KEY`).
    Stream,
    /// `sig` over the raw `data` field (`AUDIT_HMAC_KEY`).
    Audit,
}

impl Scheme {
    /// The field the signature is stored in.
    pub fn field(self) -> &'static str {
        match self {
            Scheme::Stream => SIGNATURE_FIELD,
            Scheme::Audit => AUDIT_SIGNATURE_FIELD,
        }
    }

    /// The environment variable Caracal reads the key from (and its `_FILE` twin).
    fn key_variable(self) -> &'static str {
        match self {
            Scheme::Stream => "STREAMS_HMAC_KEY",
            Scheme::Audit => "AUDIT_HMAC_KEY",
        }
    }
}

/// An entry cannot be signed in the audit scheme without the field it signs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit signing signs the entry's `data` field, and this entry has none")]
pub struct NoDataField;

/// A key and the scheme it signs with.
#[derive(Debug, Clone)]
pub struct Signer {
    pub key: SigningKey,
    pub scheme: Scheme,
}

impl Signer {
    /// The field the signature goes in.
    pub fn field(&self) -> &'static str {
        self.scheme.field()
    }

    /// The signature of an entry with `fields` (any old signature among them is ignored) on
    /// `stream`.
    pub fn sign(&self, stream: &str, fields: &[(&str, &[u8])]) -> Result<String, NoDataField> {
        match self.scheme {
            Scheme::Stream => Ok(self.key.sign(stream, fields)),
            Scheme::Audit => {
                let data = audit_data(fields).ok_or(NoDataField)?;
                Ok(hex::encode(self.key.raw_mac(data).finalize().into_bytes()))
            }
        }
    }

    /// Whether an entry read from `stream` carries a valid signature of this scheme (a
    /// missing, empty or non-hex one is invalid).
    pub fn verify_entry(&self, stream: &str, fields: &[(&str, &[u8])]) -> bool {
        let field = self.field();
        let Some(signature) = fields.iter().find(|(name, _)| *name == field).map(|(_, value)| *value) else {
            return false;
        };
        let Ok(signature) = hex::decode(signature) else {
            return false;
        };
        match self.scheme {
            Scheme::Stream => {
                let unsigned: Vec<(&str, &[u8])> = fields.iter().copied().filter(|(name, _)| *name != field).collect();
                self.key.mac(stream, &unsigned).verify_slice(&signature).is_ok()
            }
            Scheme::Audit => {
                audit_data(fields).is_some_and(|data| self.key.raw_mac(data).verify_slice(&signature).is_ok())
            }
        }
    }
}

fn audit_data<'a>(fields: &[(&str, &'a [u8])]) -> Option<&'a [u8]> {
    fields
        .iter()
        .find(|(name, _)| *name == AUDIT_SIGNED_FIELD)
        .map(|(_, value)| *value)
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

    fn raw_mac(&self, bytes: &[u8]) -> HmacSha256 {
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        mac.update(bytes);
        mac
    }

    fn mac(&self, stream: &str, fields: &[(&str, &[u8])]) -> HmacSha256 {
        self.raw_mac(&canonical(stream, fields))
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
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SignOptions {
    /// Hex, at least 32 bytes.
    key: Option<String>,
    key_file: Option<String>,
    /// `stream` (default) or `audit`.
    scheme: Option<String>,
}

fn scheme_named(name: &str) -> Option<Scheme> {
    match name {
        "stream" => Some(Scheme::Stream),
        "audit" => Some(Scheme::Audit),
        _ => None,
    }
}

/// `sign = true` or `"stream"` (key from `STREAMS_HMAC_KEY` / `STREAMS_HMAC_KEY_FILE`,
/// Caracal's names), `sign = "audit"` (`AUDIT_HMAC_KEY` / `AUDIT_HMAC_KEY_FILE`), or
/// `sign = {key = "...", keyFile = "...", scheme = "stream" | "audit"}` (hex).
pub fn signing_key(
    value: &Value,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut ConfigErrors,
) -> Option<Signer> {
    let from_env = |scheme: Scheme, errors: &mut ConfigErrors| {
        let variable = scheme.key_variable();
        match (env(variable), env(&format!("{variable}_FILE"))) {
            (Some(key), _) => Some(key),
            (None, Some(file)) => match std::fs::read_to_string(&file) {
                Ok(text) => Some(text),
                Err(error) => {
                    errors.push(path, format!("{variable}_FILE {file}: {error}"));
                    None
                }
            },
            (None, None) => {
                errors.push(
                    path,
                    format!("this scheme takes its key from {variable} or {variable}_FILE in the environment; set one, or give {{key}} or {{keyFile}}"),
                );
                None
            }
        }
    };
    let (hex, scheme) = match value {
        Value::Bool(false) => return None,
        Value::Bool(true) => (from_env(Scheme::Stream, errors)?, Scheme::Stream),
        Value::String(name) => {
            let Some(scheme) = scheme_named(name) else {
                errors.push(
                    path,
                    format!("\"{name}\" is not a scheme: use \"stream\" (_sig) or \"audit\" (sig)"),
                );
                return None;
            };
            (from_env(scheme, errors)?, scheme)
        }
        Value::Object(_) => {
            let options = typed::parse::<SignOptions>(value, path, errors)?;
            let scheme = match options.scheme.as_deref() {
                None => Scheme::Stream,
                Some(name) => match scheme_named(name) {
                    Some(scheme) => scheme,
                    None => {
                        errors.push(
                            join(path, "scheme"),
                            format!("\"{name}\" is not a scheme: use \"stream\" (_sig) or \"audit\" (sig)"),
                        );
                        return None;
                    }
                },
            };
            if options.key.is_none() && options.key_file.is_none() {
                errors.push(path, "give the key: {key = \"<hex>\"} or {keyFile = \"<path>\"}");
                return None;
            }
            let secret = Secret::resolve(options.key, options.key_file.as_deref(), path, "keyFile", errors)?;
            (secret.expose().to_owned(), scheme)
        }
        _ => {
            errors.push(
                path,
                "must be true, false, \"stream\", \"audit\" or {key, keyFile, scheme}",
            );
            return None;
        }
    };
    match SigningKey::from_hex(&hex) {
        Ok(key) => Some(Signer { key, scheme }),
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

    /// The audit scheme signs the raw `data` field alone, not the stream or other fields, as
    /// Caracal's audit client does (HMAC-SHA256 of `data`, checked here with the hmac crate's
    /// own one-shot MAC so the test does not lean on the code it tests).
    #[test]
    fn the_audit_scheme_signs_data_alone() {
        let signer = Signer {
            key: key(),
            scheme: Scheme::Audit,
        };
        let data: &[u8] = br#"{"id":"a1","zone_id":"z"}"#;
        let fields: &[(&str, &[u8])] = &[("id", b"a1"), ("data", data)];
        let mut mac =
            <HmacSha256 as KeyInit>::new_from_slice(&hex::decode("0123456789abcdef".repeat(4)).unwrap()).unwrap();
        mac.update(data);
        let expected = hex::encode(mac.finalize().into_bytes());
        assert_eq!(signer.sign("caracal.audit.events", fields).unwrap(), expected);
        assert_eq!(signer.field(), "sig");
        let signed: &[(&str, &[u8])] = &[("id", b"other"), ("data", data), ("sig", expected.as_bytes())];
        // Another stream, another id: still valid (neither is signed).
        assert!(signer.verify_entry("caracal.audit.events.dlq", signed));
        let changed: &[(&str, &[u8])] = &[("data", b"{}"), ("sig", expected.as_bytes())];
        assert!(!signer.verify_entry("caracal.audit.events", changed));
        assert!(!signer.verify_entry("caracal.audit.events", &[("data", data)]));
        assert!(!signer.verify_entry("caracal.audit.events", &[("data", data), ("_sig", expected.as_bytes())]));
        assert_eq!(signer.sign("s", &[("event", b"{}")]), Err(NoDataField));
    }

    #[test]
    fn the_stream_scheme_verifies_whole_entries() {
        let signer = Signer {
            key: key(),
            scheme: Scheme::Stream,
        };
        let fields: &[(&str, &[u8])] = &[("action", b"transfer"), ("amount", b"100")];
        let signature = signer.sign("audit:events", fields).unwrap();
        assert_eq!(
            signature,
            "c06ccc579e026c31a97a04f203981b236a3c88041712e9b46242e8762da23d75"
        );
        let signed = [fields[0], fields[1], ("_sig", signature.as_bytes())];
        assert!(signer.verify_entry("audit:events", &signed));
        assert!(!signer.verify_entry("audit:other", &signed));
        assert!(!signer.verify_entry("audit:events", fields));
    }

    #[test]
    fn settings_choose_the_scheme_and_its_key() {
        let hex_key = "0123456789abcdef".repeat(4);
        let env = |name: &str| match name {
            "STREAMS_HMAC_KEY" => Some("ab".repeat(32)),
            "AUDIT_HMAC_KEY" => Some("cd".repeat(32)),
            _ => None,
        };
        let parse = |value: Value| {
            let mut errors = ConfigErrors::default();
            let signer = signing_key(&value, "s.sign", &env, &mut errors);
            (signer, errors.to_string())
        };
        let (signer, _) = parse(Value::Bool(true));
        let signer = signer.unwrap();
        assert_eq!((signer.scheme, signer.key.0.clone()), (Scheme::Stream, vec![0xab; 32]));
        let signer = parse(Value::from("audit")).0.unwrap();
        assert_eq!((signer.scheme, signer.key.0.clone()), (Scheme::Audit, vec![0xcd; 32]));
        let signer = parse(serde_json::json!({"key": hex_key, "scheme": "audit"})).0.unwrap();
        assert_eq!(signer.scheme, Scheme::Audit);
        let (none, message) = parse(Value::from("bogus"));
        assert!(none.is_none());
        assert!(message.contains("s.sign: \"bogus\" is not a scheme"), "{message}");
        let (none, message) = parse(serde_json::json!({"scheme": "audit"}));
        assert!(none.is_none());
        assert!(message.contains("give the key"), "{message}");
        let (none, message) = parse(Value::from("audit"));
        assert!(none.is_some(), "{message}");
        let nothing = |_: &str| None;
        let mut errors = ConfigErrors::default();
        assert!(signing_key(&Value::from("audit"), "s.sign", &nothing, &mut errors).is_none());
        assert!(
            errors.to_string().contains("AUDIT_HMAC_KEY or AUDIT_HMAC_KEY_FILE"),
            "{errors}"
        );
    }

    #[test]
    fn short_keys_are_refused() {
        assert_eq!(SigningKey::from_hex("00ff").unwrap_err(), KeyError::TooShort(2));
        assert!(matches!(SigningKey::from_hex("zz"), Err(KeyError::NotHex(_))));
    }
}
