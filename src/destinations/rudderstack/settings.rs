//! The RudderStack destination's settings, flat under `settings` as walkerOS has them
//! (walkerOS `packages/server/destinations/rudderstack/src/config.ts`): `writeKey`, `dataPlaneUrl`, the identity paths, destination-level
//! `identify` / `group`, `integrations`, and the Node SDK's options (`path`, `flushAt`,
//! `flushInterval`, `maxQueueSize`, `maxInternalQueueSize`, `logLevel`, `retryCount`,
//! `enable`, `gzip`). weir adds `writeKeyFile`; the key also comes from
//! `RUDDERSTACK_WRITE_KEY` / `RUDDERSTACK_WRITE_KEY_FILE`. It never appears in logs.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::config::typed::{self, Secret};
use crate::config::{ConfigErrors, join};
use crate::mapping::value::ValueSpec;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    write_key: Option<String>,
    write_key_file: Option<String>,
    data_plane_url: Option<String>,
    /// `null` (walkerOS's `undefined`) means the default path.
    user_id: Option<Value>,
    anonymous_id: Option<Value>,
    identify: Option<ValueSpec>,
    group: Option<ValueSpec>,
    integrations: Option<serde_json::Map<String, Value>>,
    path: Option<String>,
    flush_at: Option<u64>,
    flush_interval: Option<u64>,
    max_queue_size: Option<u64>,
    max_internal_queue_size: Option<u64>,
    log_level: Option<String>,
    retry_count: Option<u32>,
    enable: Option<bool>,
    gzip: Option<bool>,
}

/// Checked settings.
#[derive(Debug, Clone)]
pub struct RudderSettings {
    pub write_key: Secret,
    /// `dataPlaneUrl` + `path`, ready to POST to.
    pub endpoint: String,
    pub user_id: ValueSpec,
    pub anonymous_id: ValueSpec,
    pub identify: Option<ValueSpec>,
    pub group: Option<ValueSpec>,
    pub integrations: Option<serde_json::Map<String, Value>>,
    /// Largest batch, in events (each usually one message).
    pub flush_at: usize,
    pub flush_interval: Duration,
    /// Largest request body, in bytes.
    pub max_queue_size: usize,
    /// Events that may wait in the destination's queue.
    pub max_internal_queue_size: usize,
    pub retry_count: u32,
    pub enable: bool,
    pub gzip: bool,
}

/// What a page or screen rule setting is: `true` (a call with an empty name) or a value spec.
#[derive(Debug, Clone)]
pub enum NamedCall {
    Empty,
    Spec(ValueSpec),
}

impl NamedCall {
    fn spec(&self) -> Option<&ValueSpec> {
        match self {
            NamedCall::Empty => None,
            NamedCall::Spec(spec) => Some(spec),
        }
    }
}

impl<'de> Deserialize<'de> for NamedCall {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        match value {
            Value::Bool(true) => Ok(NamedCall::Empty),
            other => ValueSpec::deserialize(other)
                .map(NamedCall::Spec)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// Per-rule settings: `mapping.<entity>.<action>.settings`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RudderRuleSettings {
    pub identify: Option<ValueSpec>,
    pub group: Option<ValueSpec>,
    pub page: Option<NamedCall>,
    pub screen: Option<NamedCall>,
    pub alias: Option<ValueSpec>,
    /// The event members a push under this rule reads (see
    /// [`RudderSettings::event_members`]), worked out on first use.
    #[serde(skip)]
    pub members: std::sync::OnceLock<Option<Vec<String>>>,
}

impl RudderSettings {
    /// The top-level event members walkerOS's push reads with these settings and `rule`'s:
    /// `timestamp`, `name` and what the identity, identify and group specs (and the rule's
    /// specs) name; `None` when a spec may read more (see [`ValueSpec::event_members`]).
    pub fn event_members(&self, rule: Option<&RudderRuleSettings>) -> Option<Vec<String>> {
        let mut members = vec!["timestamp".to_owned(), "name".to_owned()];
        // A rule's identify and group replace the destination's (calls.rs, steps 4 and 5).
        let identify = rule.and_then(|rule| rule.identify.as_ref()).or(self.identify.as_ref());
        let group = rule.and_then(|rule| rule.group.as_ref()).or(self.group.as_ref());
        let rule_only = rule.map_or([None; 3], |rule| {
            [
                rule.alias.as_ref(),
                rule.page.as_ref().and_then(NamedCall::spec),
                rule.screen.as_ref().and_then(NamedCall::spec),
            ]
        });
        [Some(&self.user_id), Some(&self.anonymous_id), identify, group]
            .into_iter()
            .chain(rule_only)
            .flatten()
            .all(|spec| spec.event_members(&mut members))
            .then_some(members)
    }
}

impl crate::mapping::RuleSettings for RudderRuleSettings {
    /// A spec that yields nothing (`alias = true`...) makes no call, as in walkerOS: said.
    fn check(&self, path: &str, errors: &mut ConfigErrors) {
        let specs = [
            ("identify", self.identify.as_ref()),
            ("group", self.group.as_ref()),
            ("alias", self.alias.as_ref()),
            ("page", self.page.as_ref().and_then(NamedCall::spec)),
            ("screen", self.screen.as_ref().and_then(NamedCall::spec)),
        ];
        for (key, spec) in specs {
            if let Some(spec) = spec {
                spec.warn_ignored(&join(path, key), errors);
            }
        }
    }
}

/// The Node SDK's defaults.
pub const DEFAULT_PATH: &str = "/v1/batch";
pub const DEFAULT_FLUSH_AT: usize = 20;
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_millis(10_000);
pub const DEFAULT_MAX_QUEUE_SIZE: usize = 460_800;
pub const DEFAULT_MAX_INTERNAL_QUEUE_SIZE: usize = 20_000;
pub const DEFAULT_RETRY_COUNT: u32 = 3;

const LOG_LEVELS: [&str; 5] = ["debug", "info", "warn", "error", "none"];

impl RudderSettings {
    /// Checks `settings` (the destination's `settings` block, at `path`); `env` looks up
    /// environment variables.
    pub fn parse(
        settings: Option<&Value>,
        path: &str,
        env: &dyn Fn(&str) -> Option<String>,
        errors: &mut ConfigErrors,
    ) -> Option<RudderSettings> {
        let Some(settings) = settings else {
            errors.push(
                path,
                "the rudderstack destination needs settings with writeKey and dataPlaneUrl",
            );
            return None;
        };
        let raw = typed::parse::<Raw>(settings, path, errors)?;
        for (key, spec) in [("identify", &raw.identify), ("group", &raw.group)] {
            if let Some(spec) = spec {
                spec.warn_ignored(&join(path, key), errors);
            }
        }
        let write_key = Secret::resolve(
            raw.write_key.clone().filter(|key| !key.is_empty()),
            raw.write_key_file.as_deref(),
            path,
            "writeKeyFile",
            errors,
        )
        .or_else(|| Secret::from_environment(env, "RUDDERSTACK_WRITE_KEY", path, errors));
        if write_key.is_none() {
            // walkerOS's message, and where else the key may come from.
            errors.push(
                join(path, "writeKey"),
                "Config settings writeKey missing (or set writeKeyFile, or RUDDERSTACK_WRITE_KEY)",
            );
        }
        let endpoint = match raw.data_plane_url.as_deref() {
            None | Some("") => {
                errors.push(join(path, "dataPlaneUrl"), "Config settings dataPlaneUrl missing");
                None
            }
            Some(url) => match reqwest::Url::parse(url) {
                Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.host().is_some() => {
                    let base = url.trim_end_matches('/');
                    let request_path = raw.path.as_deref().unwrap_or(DEFAULT_PATH);
                    let endpoint = if request_path.starts_with('/') {
                        format!("{base}{request_path}")
                    } else {
                        format!("{base}/{request_path}")
                    };
                    Some(endpoint)
                }
                _ => {
                    errors.push(
                        join(path, "dataPlaneUrl"),
                        format!("\"{url}\" is not an http:// or https:// URL"),
                    );
                    None
                }
            },
        };
        let user_id = identity_path(raw.user_id.as_ref(), "user.id", &join(path, "userId"), errors);
        let anonymous_id = identity_path(
            raw.anonymous_id.as_ref(),
            "user.session",
            &join(path, "anonymousId"),
            errors,
        );
        let positive = |value: Option<u64>, key: &str, default: usize, errors: &mut ConfigErrors| match value {
            None => default,
            Some(0) => {
                errors.push(join(path, key), "must be a positive number");
                default
            }
            Some(n) => n as usize,
        };
        let flush_at = positive(raw.flush_at, "flushAt", DEFAULT_FLUSH_AT, errors);
        let max_queue_size = positive(raw.max_queue_size, "maxQueueSize", DEFAULT_MAX_QUEUE_SIZE, errors);
        let max_internal_queue_size = positive(
            raw.max_internal_queue_size,
            "maxInternalQueueSize",
            DEFAULT_MAX_INTERNAL_QUEUE_SIZE,
            errors,
        );
        let flush_interval = match raw.flush_interval {
            None | Some(0) => DEFAULT_FLUSH_INTERVAL,
            Some(ms) => Duration::from_millis(ms),
        };
        if let Some(level) = &raw.log_level
            && !LOG_LEVELS.contains(&level.as_str())
        {
            errors.push(
                join(path, "logLevel"),
                format!("\"{level}\" is not one of {}", LOG_LEVELS.join(", ")),
            );
        }
        Some(RudderSettings {
            write_key: write_key?,
            endpoint: endpoint?,
            user_id: user_id?,
            anonymous_id: anonymous_id?,
            identify: raw.identify,
            group: raw.group,
            integrations: raw.integrations,
            flush_at,
            flush_interval,
            max_queue_size,
            max_internal_queue_size,
            retry_count: raw.retry_count.unwrap_or(DEFAULT_RETRY_COUNT),
            enable: raw.enable.unwrap_or(true),
            gzip: raw.gzip.unwrap_or(true),
        })
    }
}

/// `userId` / `anonymousId`: a value spec, or the default path when unset or `null`.
fn identity_path(value: Option<&Value>, default: &str, path: &str, errors: &mut ConfigErrors) -> Option<ValueSpec> {
    match value {
        None | Some(Value::Null) => Some(ValueSpec::Key(default.to_owned())),
        Some(value) => ValueSpec::parse(value, path, errors),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(settings: Value, env: &[(&str, &str)]) -> (Option<RudderSettings>, String) {
        let mut errors = ConfigErrors::default();
        let lookup = |name: &str| env.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned());
        let parsed = RudderSettings::parse(Some(&settings), "d.config.settings", &lookup, &mut errors);
        (parsed, errors.to_string())
    }

    #[test]
    fn a_push_reads_the_members_its_specs_name_and_a_rules_spec_replaces_the_destinations() {
        let (parsed, errors) = parse(
            json!({"writeKey": "k", "dataPlaneUrl": "https://dp.example/",
                "identify": {"fn": "$code:(event) => ({traits: event.globals})"},
                "group": {"map": {"groupId": "globals.company"}}}),
            &[],
        );
        assert_eq!(errors, "");
        let settings = parsed.unwrap();
        let rule = |value: Value| serde_json::from_value::<RudderRuleSettings>(value).unwrap();
        // The destination's identify is a function: it may read anything.
        assert_eq!(settings.event_members(None), None);
        let members = |rule_value: Value| settings.event_members(Some(&rule(rule_value)));
        // A rule's own identify replaces it; the rule's page is read too.
        assert_eq!(
            members(
                json!({"identify": {"map": {"traits": {"map": {"email": "data.email"}}}},
                "page": {"map": {"name": "context.page", "properties": "custom"}}})
            ),
            Some(
                ["timestamp", "name", "user", "data", "globals", "context", "custom"]
                    .map(String::from)
                    .to_vec()
            )
        );
        assert_eq!(
            members(json!({"identify": "user", "alias": {"fn": "$code:() => 1"}})),
            None
        );
    }

    #[test]
    fn defaults_are_the_node_sdks() {
        let (parsed, errors) = parse(json!({"writeKey": "k", "dataPlaneUrl": "https://dp.example/"}), &[]);
        assert_eq!(errors, "");
        let settings = parsed.unwrap();
        assert_eq!(settings.endpoint, "https://dp.example/v1/batch");
        assert_eq!(settings.user_id, ValueSpec::Key("user.id".into()));
        assert_eq!(settings.anonymous_id, ValueSpec::Key("user.session".into()));
        assert_eq!(
            (settings.flush_at, settings.flush_interval, settings.max_queue_size),
            (20, Duration::from_secs(10), 460_800)
        );
        assert_eq!(
            (
                settings.max_internal_queue_size,
                settings.retry_count,
                settings.enable,
                settings.gzip
            ),
            (20_000, 3, true, true)
        );
    }

    #[test]
    fn missing_keys_give_walkeros_messages_and_bad_values_name_their_path() {
        let (parsed, errors) = parse(json!({"flushAt": 0, "logLevel": "loud", "userId": 5, "extra": 1}), &[]);
        assert!(parsed.is_none());
        for expected in [
            "d.config.settings.extra: unknown key",
            "d.config.settings.writeKey: Config settings writeKey missing",
            "d.config.settings.dataPlaneUrl: Config settings dataPlaneUrl missing",
            "d.config.settings.flushAt: must be a positive number",
            "d.config.settings.logLevel: \"loud\" is not one of",
        ] {
            assert!(errors.contains(expected), "{expected} not in:\n{errors}");
        }
        // A number where a path belongs yields nothing, as in walkerOS: it loads, with a warning.
        let mut warned = ConfigErrors::default();
        let lookup = |_: &str| None;
        let parsed = RudderSettings::parse(
            Some(&json!({"writeKey": "k", "dataPlaneUrl": "http://x", "userId": 5, "identify": true})),
            "d.config.settings",
            &lookup,
            &mut warned,
        );
        assert!(parsed.is_some() && warned.is_empty(), "{warned}");
        let warnings: Vec<String> = warned.warnings.iter().map(ToString::to_string).collect();
        assert_eq!(
            warnings,
            [
                "d.config.settings.identify: a boolean is not a mapping value and yields nothing, as in walkerOS (use a path string, an object or a list)",
                "d.config.settings.userId: a number is not a mapping value and yields nothing, as in walkerOS (use a path string, an object or a list)",
            ]
        );
        let (_, errors) = parse(json!({"writeKey": "k", "dataPlaneUrl": "ftp://x"}), &[]);
        assert!(
            errors.contains("\"ftp://x\" is not an http:// or https:// URL"),
            "{errors}"
        );
    }

    #[test]
    fn the_write_key_comes_from_a_file_or_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("key");
        std::fs::write(&file, "from-file\n").unwrap();
        let (parsed, _) = parse(
            json!({"writeKeyFile": file.to_str().unwrap(), "dataPlaneUrl": "http://127.0.0.1:1"}),
            &[],
        );
        assert_eq!(parsed.unwrap().write_key.expose(), "from-file");
        let (parsed, _) = parse(
            json!({"dataPlaneUrl": "http://127.0.0.1:1", "path": "ingest"}),
            &[("RUDDERSTACK_WRITE_KEY", "from-env")],
        );
        let settings = parsed.unwrap();
        assert_eq!(settings.write_key.expose(), "from-env");
        assert_eq!(settings.endpoint, "http://127.0.0.1:1/ingest");
    }

    #[test]
    fn rule_settings_check_their_value_specs() {
        let mut errors = ConfigErrors::default();
        let parsed: Option<RudderRuleSettings> = typed::parse(
            &json!({"page": true, "screen": {"map": {"name": "data.n"}}, "alias": {"fn": "x"}}),
            "rule.settings",
            &mut errors,
        );
        assert!(parsed.is_none());
        assert!(errors.to_string().starts_with("rule.settings.alias: "), "{errors}");
        let parsed: RudderRuleSettings = typed::parse(
            &json!({"page": true, "identify": "data.user"}),
            "rule.settings",
            &mut errors,
        )
        .unwrap();
        assert!(matches!(parsed.page, Some(NamedCall::Empty)));
        assert!(matches!(parsed.identify, Some(ValueSpec::Key(_))));
    }
}
