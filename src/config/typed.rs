//! Typed parsing of one config block, reporting unknown keys and type errors with paths.
//!
//! serde stops at the first error and `deny_unknown_fields` names only the first unknown
//! key; `serde_ignored` lets the whole block deserialize while recording every key the
//! target type did not use, and `serde_path_to_error` names where a type error is.

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{ConfigErrors, join};

/// Deserializes `value` (found at `path`) into `T`; every unknown key and the first type
/// error go into `errors`. `None` when `T` could not be built.
pub fn parse<T: DeserializeOwned>(value: &Value, path: &str, errors: &mut ConfigErrors) -> Option<T> {
    let mut unknown = Vec::new();
    let mut record = |ignored: serde_ignored::Path<'_>| unknown.push(dotted(&ignored));
    let deserializer = serde_ignored::Deserializer::new(value, &mut record);
    let result: Result<T, _> = serde_path_to_error::deserialize(deserializer);
    for key in unknown {
        errors.push(join(path, &key), "unknown key");
    }
    match result {
        Ok(parsed) => Some(parsed),
        Err(error) => {
            let inner = error.path().to_string();
            let at = if inner == "." {
                path.to_owned()
            } else {
                join(path, &inner)
            };
            errors.push(at, error.into_inner().to_string());
            None
        }
    }
}

/// `a.b.0.c`: serde_ignored's path without its markers for `Option` and newtypes (which it
/// writes as `?`), as a flow file's reader sees it.
fn dotted(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => join(&dotted(parent), &index.to_string()),
        Path::Map { parent, key } => join(&dotted(parent), key),
        Path::Some { parent } | Path::NewtypeStruct { parent } | Path::NewtypeVariant { parent } => dotted(parent),
    }
}

/// Whether `listen` is `host:port` (a listener's address).
pub fn is_listen_address(listen: &str) -> bool {
    listen
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
}

/// A secret: from the config (usually `${VAR}`) or from a file (`*File` key). Its `Debug`
/// never shows the value, so it cannot end up in a log line.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The secret given inline or read from `file` (trailing newline trimmed); both set is an
    /// error, as is an unreadable file.
    pub fn resolve(
        inline: Option<String>,
        file: Option<&str>,
        path: &str,
        file_key: &str,
        errors: &mut ConfigErrors,
    ) -> Option<Secret> {
        match (inline, file) {
            (Some(_), Some(_)) => {
                errors.push(join(path, file_key), "set either the secret or its file, not both");
                None
            }
            (Some(value), None) => Some(value),
            (None, Some(file)) => match std::fs::read_to_string(file) {
                Ok(text) => Some(text.trim_end_matches(['\n', '\r']).to_owned()),
                Err(error) => {
                    errors.push(join(path, file_key), format!("cannot read {file}: {error}"));
                    return None;
                }
            },
            (None, None) => return None,
        }
        .and_then(|value| {
            if value.is_empty() {
                // An empty secret (an unset `${VAR}` expands to nothing only when set to "")
                // would silently lock everyone out or let everyone in.
                errors.push(join(path, file_key.trim_end_matches("File")), "the secret is empty");
                None
            } else {
                Some(Secret(value))
            }
        })
    }
}

/// A bearer token that guards an endpoint (`bearerToken` / `bearerTokenFile`). Compared in
/// constant time, so the time an answer takes says nothing about how much of a guess was right.
#[derive(Clone, PartialEq, Eq)]
pub struct BearerToken(Secret);

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(***)")
    }
}

impl BearerToken {
    /// `bearerToken` or `bearerTokenFile` of a settings block at `path` (both set, an empty
    /// token or an unreadable file are errors); `None` when neither is set.
    pub fn resolve(
        inline: Option<String>,
        file: Option<&str>,
        path: &str,
        errors: &mut ConfigErrors,
    ) -> Option<BearerToken> {
        Secret::resolve(inline, file, path, "bearerTokenFile", errors).map(BearerToken)
    }

    /// Whether an `Authorization` header value carries this token (`Bearer <token>`; the
    /// scheme name is case-insensitive, RFC 7235).
    pub fn accepts(&self, authorization: Option<&str>) -> bool {
        use subtle::ConstantTimeEq;
        let Some((scheme, given)) = authorization.and_then(|value| value.split_once(' ')) else {
            return false;
        };
        scheme.eq_ignore_ascii_case("bearer") && bool::from(given.trim().as_bytes().ct_eq(self.0.expose().as_bytes()))
    }
}

impl Secret {
    /// A secret from the environment: `name` itself, else the file named by `name_FILE`
    /// (trailing newline trimmed). An unreadable file is an error at `path`.
    pub fn from_environment(
        env: &dyn Fn(&str) -> Option<String>,
        name: &str,
        path: &str,
        errors: &mut ConfigErrors,
    ) -> Option<Secret> {
        if let Some(value) = env(name).filter(|value| !value.is_empty()) {
            return Some(Secret(value));
        }
        let file = env(&format!("{name}_FILE"))?;
        match std::fs::read_to_string(&file) {
            Ok(text) => Some(Secret(text.trim_end_matches(['\n', '\r']).to_owned())),
            Err(error) => {
                errors.push(path, format!("{name}_FILE {file}: {error}"));
                None
            }
        }
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// HTTPS on a listener: `tls = { certFile, keyFile }` (PEM files: the certificate chain,
/// leaf first, and its private key; Optimizely Agent's `server.certFile` / `keyFile`). Read
/// and checked when the flow is loaded, so a reload reads them again. Two are equal when
/// they name the same files.
#[derive(Clone)]
pub struct TlsServer {
    pub cert_file: String,
    pub key_file: String,
    pub config: std::sync::Arc<rustls::ServerConfig>,
}

impl PartialEq for TlsServer {
    fn eq(&self, other: &Self) -> bool {
        (&self.cert_file, &self.key_file) == (&other.cert_file, &other.key_file)
    }
}

impl Eq for TlsServer {}

impl std::fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TlsServer({}, {})", self.cert_file, self.key_file)
    }
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct TlsFiles {
    cert_file: String,
    key_file: String,
}

impl TlsServer {
    /// The `tls` block at `path`; problems (a missing file, no certificate, a key that does
    /// not fit) go into `errors`.
    pub fn parse(value: &Value, path: &str, errors: &mut ConfigErrors) -> Option<TlsServer> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let files = parse::<TlsFiles>(value, path, errors)?;
        let certs: Result<Vec<CertificateDer<'static>>, _> =
            CertificateDer::pem_file_iter(&files.cert_file).and_then(Iterator::collect);
        let certs = match certs {
            Ok(certs) if certs.is_empty() => {
                errors.push(
                    join(path, "certFile"),
                    format!("{}: no certificate in it", files.cert_file),
                );
                return None;
            }
            Ok(certs) => certs,
            Err(error) => {
                errors.push(join(path, "certFile"), format!("{}: {error}", files.cert_file));
                return None;
            }
        };
        let key = match PrivateKeyDer::from_pem_file(&files.key_file) {
            Ok(key) => key,
            Err(error) => {
                errors.push(join(path, "keyFile"), format!("{}: {error}", files.key_file));
                return None;
            }
        };
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let built = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .and_then(|builder| builder.with_no_client_auth().with_single_cert(certs, key));
        match built {
            Ok(mut config) => {
                config.alpn_protocols = vec![b"http/1.1".to_vec()];
                Some(TlsServer {
                    cert_file: files.cert_file,
                    key_file: files.key_file,
                    config: std::sync::Arc::new(config),
                })
            }
            Err(error) => {
                errors.push(
                    join(path, "keyFile"),
                    format!("{} does not go with {}: {error}", files.key_file, files.cert_file),
                );
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Deserialize, Debug)]
    #[serde(rename_all = "camelCase")]
    #[allow(dead_code)]
    struct Settings {
        stream_key: String,
        max_len: Option<u64>,
    }

    #[test]
    fn a_bearer_token_is_accepted_only_whole_with_its_scheme() {
        let mut errors = ConfigErrors::default();
        let token = BearerToken::resolve(Some("s3cret".into()), None, "p", &mut errors).unwrap();
        assert!(token.accepts(Some("Bearer s3cret")));
        assert!(token.accepts(Some("bearer  s3cret ")));
        for wrong in [
            None,
            Some("s3cret"),
            Some("Basic s3cret"),
            Some("Bearer s3cre"),
            Some("Bearer s3cret2"),
            Some("Bearer "),
        ] {
            assert!(!token.accepts(wrong), "{wrong:?}");
        }
        assert!(!format!("{token:?}").contains("s3cret"));
        assert!(BearerToken::resolve(Some(String::new()), None, "p", &mut errors).is_none());
        assert!(
            errors.to_string().contains("p.bearerToken: the secret is empty"),
            "{errors}"
        );
    }

    #[test]
    fn lists_every_unknown_key_with_its_path() {
        let mut errors = ConfigErrors::default();
        let parsed: Option<Settings> = parse(
            &json!({"streamKey": "s", "maxlen": 5, "extra": {"x": 1}}),
            "destinations.r.config.settings",
            &mut errors,
        );
        assert!(parsed.is_some());
        assert_eq!(
            errors.to_string(),
            "destinations.r.config.settings.maxlen: unknown key\ndestinations.r.config.settings.extra: unknown key"
        );
    }

    #[test]
    fn unknown_keys_inside_optional_blocks_are_named_by_their_path() {
        #[derive(Deserialize, Debug)]
        #[allow(dead_code)]
        struct Outer {
            inner: Option<Settings>,
            list: Option<Vec<Settings>>,
        }
        let mut errors = ConfigErrors::default();
        let parsed: Option<Outer> = parse(
            &json!({"inner": {"streamKey": "s", "x": 1}, "list": [{"streamKey": "t", "y": 2}]}),
            "c",
            &mut errors,
        );
        assert!(parsed.is_some());
        assert_eq!(errors.to_string(), "c.inner.x: unknown key\nc.list.0.y: unknown key");
    }

    #[test]
    fn names_the_path_of_a_type_error() {
        let mut errors = ConfigErrors::default();
        let parsed: Option<Settings> = parse(&json!({"streamKey": "s", "maxLen": "many"}), "settings", &mut errors);
        assert!(parsed.is_none());
        assert_eq!(errors.errors[0].path, "settings.maxLen");
        assert!(
            errors.errors[0].message.contains("invalid type"),
            "{}",
            errors.errors[0].message
        );
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        assert_eq!(format!("{:?}", Secret::new("hunter2".into())), "Secret(***)");
    }
}
