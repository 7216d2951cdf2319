//! The flow: named sources, named destinations and the collector's state, as in walkerOS's
//! flow.json (`{"version": 4, "flows": {"<name>": {...}}}`, or the bare flow object).
//!
//! This layer only knows the shape of a flow and of a step (`type` or walkerOS's `package`,
//! `config`, weir's `sources`). What a step's `config` may hold is checked by the source or
//! destination that owns it. walkerOS keys that describe JavaScript bundling (`packages`,
//! `import`, a `code` import name, `config.bundle`) are accepted and ignored; keys that need
//! JavaScript at run time (transformer chains, stores, an inline `code` step, `env`) are
//! errors naming the path, since silently dropping them would change what the flow does.

use std::path::Path;

use serde_json::{Map, Value};

use super::references::{self, Scopes};
use super::{ConfigErrors, Format, join, parse_text};
use crate::event::Object;

/// One source or destination entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub id: String,
    /// weir's type name (`http`, `file`, `redis`...) from `type`; empty when only a walkerOS
    /// `package` names the step (the source and destination registries resolve it).
    pub kind: String,
    /// walkerOS's package name, its version dropped (`@walkeros/server-destination-redis`).
    pub package: Option<String>,
    /// Dotted path of the entry, for error messages (e.g. `destinations.events`).
    pub path: String,
    /// The walkerOS `config` block (`Value::Null` when absent).
    pub config: Value,
    /// Destinations only: the sources it takes events from (default: all).
    pub sources: Option<Vec<String>>,
}

/// The collector's flow-level state, as walkerOS's `startFlow` takes it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CollectorConfig {
    pub globals: Object,
    pub user: Object,
    pub consent: Object,
    pub custom: Object,
    /// Key of this flow in `source.release` (walkerOS's CLI sets it to the flow's name).
    pub name: Option<String>,
    /// Value stamped into `source.release` (default: weir's version).
    pub release: Option<String>,
}

/// The flow's `journal` block: where accepted events are kept on disk until every
/// journaled destination has delivered (or dead-lettered) them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalSettings {
    /// `false`: memory only (events queued in memory are lost if the process dies).
    pub enabled: bool,
    pub path: std::path::PathBuf,
    /// Disk the journal may take; past it requests are answered 503 + `Retry-After`.
    pub max_bytes: u64,
    pub segment_bytes: u64,
}

pub const DEFAULT_JOURNAL_PATH: &str = "weir-data/journal";
pub const DEFAULT_JOURNAL_MAX_BYTES: u64 = 1 << 30;
pub const DEFAULT_JOURNAL_SEGMENT_BYTES: u64 = 64 << 20;
/// The smallest segment: a few records.
const MIN_SEGMENT_BYTES: u64 = 4096;

impl Default for JournalSettings {
    fn default() -> Self {
        JournalSettings {
            enabled: true,
            path: DEFAULT_JOURNAL_PATH.into(),
            max_bytes: DEFAULT_JOURNAL_MAX_BYTES,
            segment_bytes: DEFAULT_JOURNAL_SEGMENT_BYTES,
        }
    }
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct JournalBlock {
    enabled: Option<bool>,
    path: Option<std::path::PathBuf>,
    max_bytes: Option<u64>,
    segment_bytes: Option<u64>,
}

fn parse_journal(value: &Value, path: &str, errors: &mut ConfigErrors) -> JournalSettings {
    let defaults = JournalSettings::default();
    let Some(block) = super::typed::parse::<JournalBlock>(value, path, errors) else {
        return defaults;
    };
    let settings = JournalSettings {
        enabled: block.enabled.unwrap_or(defaults.enabled),
        path: block.path.unwrap_or(defaults.path),
        max_bytes: block.max_bytes.unwrap_or(defaults.max_bytes),
        segment_bytes: block.segment_bytes.unwrap_or(defaults.segment_bytes),
    };
    if settings.segment_bytes < MIN_SEGMENT_BYTES {
        errors.push(
            join(path, "segmentBytes"),
            format!("must be at least {MIN_SEGMENT_BYTES}"),
        );
    } else if settings.max_bytes < 2 * settings.segment_bytes {
        errors.push(
            join(path, "maxBytes"),
            format!(
                "must be at least two segments ({} bytes with segmentBytes {}): the segment being written is only removed once a newer one exists",
                2 * settings.segment_bytes,
                settings.segment_bytes
            ),
        );
    }
    settings
}

/// The flow's `code` block: the limits `$code:` JavaScript runs under (`timeout` ms per
/// call, `memoryLimit` bytes per runtime, one runtime per thread that evaluates code).
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct CodeBlock {
    timeout: Option<u64>,
    memory_limit: Option<usize>,
}

/// The smallest memory limit: QuickJS needs about a megabyte for itself and weir's helpers.
const MIN_CODE_MEMORY: usize = 4 << 20;

fn parse_code_limits(value: &Value, path: &str, errors: &mut ConfigErrors) -> crate::code::Limits {
    let defaults = crate::code::Limits::default();
    let Some(block) = super::typed::parse::<CodeBlock>(value, path, errors) else {
        return defaults;
    };
    if block.timeout == Some(0) {
        errors.push(join(path, "timeout"), "must be at least 1 (milliseconds per call)");
    }
    if block.memory_limit.is_some_and(|bytes| bytes < MIN_CODE_MEMORY) {
        errors.push(
            join(path, "memoryLimit"),
            format!("must be at least {MIN_CODE_MEMORY} bytes"),
        );
    }
    crate::code::Limits {
        timeout: block.timeout.map_or(defaults.timeout, std::time::Duration::from_millis),
        memory: block.memory_limit.unwrap_or(defaults.memory),
    }
}

/// The flow's `admin` block: the listener that serves `/metrics`, the status page and the
/// tap, apart from ingest (loopback by default; `listen = false` turns it off).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSettings {
    /// `None`: no admin listener.
    pub listen: Option<String>,
    /// Required on every admin path but `/healthz` and `/readyz` when set.
    pub bearer_token: Option<super::typed::BearerToken>,
    /// HTTPS on the admin listener.
    pub tls: Option<super::typed::TlsServer>,
}

pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9100";

impl Default for AdminSettings {
    fn default() -> Self {
        AdminSettings {
            listen: Some(DEFAULT_ADMIN_LISTEN.to_owned()),
            bearer_token: None,
            tls: None,
        }
    }
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct AdminBlock {
    /// An address, or `false`.
    listen: Option<Value>,
    bearer_token: Option<String>,
    bearer_token_file: Option<String>,
    tls: Option<Value>,
}

fn parse_admin(value: &Value, path: &str, errors: &mut ConfigErrors) -> AdminSettings {
    let Some(block) = super::typed::parse::<AdminBlock>(value, path, errors) else {
        return AdminSettings::default();
    };
    let listen = match block.listen {
        None => Some(DEFAULT_ADMIN_LISTEN.to_owned()),
        Some(Value::Bool(false)) => None,
        Some(Value::String(address)) if super::typed::is_listen_address(&address) => Some(address),
        Some(other) => {
            errors.push(
                join(path, "listen"),
                format!("{other} is not host:port (or false for no admin listener)"),
            );
            None
        }
    };
    let bearer_token =
        super::typed::BearerToken::resolve(block.bearer_token, block.bearer_token_file.as_deref(), path, errors);
    let tls = block
        .tls
        .as_ref()
        .and_then(|tls| super::typed::TlsServer::parse(tls, &join(path, "tls"), errors));
    AdminSettings {
        listen,
        bearer_token,
        tls,
    }
}

/// A loaded flow.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Flow {
    pub name: Option<String>,
    pub collector: CollectorConfig,
    /// The `journal` block (enabled by default).
    pub journal: JournalSettings,
    /// The `code` block: limits of `$code:` JavaScript.
    pub code: crate::code::Limits,
    /// The `admin` block: the admin listener.
    pub admin: AdminSettings,
    pub sources: Vec<Step>,
    pub destinations: Vec<Step>,
    /// Problems found while loading that did not stop it; building the flow reports them
    /// together with its own, so `weir validate` lists everything at once.
    pub problems: ConfigErrors,
}

/// Reads and checks a flow file. `flow_name` picks one of several flows.
pub fn load_flow(path: &Path, flow_name: Option<&str>) -> Result<Flow, ConfigErrors> {
    let mut errors = ConfigErrors::default();
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) => {
            errors.push("", format!("cannot read {}: {error}", path.display()));
            return Err(errors);
        }
    };
    let parsed = match Format::from_path(path) {
        Some(format) => parse_text(&text, format),
        // No telling extension: JSON, then TOML, then YAML (YAML accepts almost anything).
        None => parse_text(&text, Format::Json)
            .or_else(|_| parse_text(&text, Format::Toml))
            .or_else(|_| parse_text(&text, Format::Yaml)),
    };
    match parsed {
        Ok(value) => parse_flow(value, flow_name, &|name| std::env::var(name).ok()),
        Err(message) => {
            errors.push("", format!("{}: {message}", path.display()));
            Err(errors)
        }
    }
}

/// Checks a flow given as a JSON tree; `env` looks up environment variables. `Err` when the
/// file's structure is unusable; other problems are kept in [`Flow::problems`].
pub fn parse_flow(
    document: Value,
    flow_name: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Flow, ConfigErrors> {
    let mut errors = ConfigErrors::default();
    let Value::Object(mut root) = document else {
        errors.push("", "a flow file must be an object");
        return Err(errors);
    };
    let root_variables = take_object(&mut root, "variables", "", &mut errors);

    let (name, mut flow, path) = if root.contains_key("flows") {
        if let Some(version) = root.get("version")
            && version != &Value::from(4)
        {
            errors.push("version", "only walkerOS flow files of version 4 are supported");
        }
        for key in root.keys() {
            if !matches!(key.as_str(), "version" | "flows" | "$schema" | "include" | "contract") {
                errors.push(key.as_str(), "unknown key");
            }
        }
        let Some(Value::Object(mut flows)) = root.remove("flows") else {
            errors.push("flows", "must be an object of named flows");
            return Err(errors);
        };
        let chosen = match flow_name {
            Some(name) => name.to_owned(),
            None if flows.len() == 1 => flows.keys().next().cloned().unwrap_or_default(),
            None => {
                let names: Vec<&str> = flows.keys().map(String::as_str).collect();
                errors.push(
                    "flows",
                    format!(
                        "the file has several flows ({}); pick one with --flow",
                        names.join(", ")
                    ),
                );
                return Err(errors);
            }
        };
        let Some(flow) = flows.remove(&chosen) else {
            errors.push("flows", format!("no flow named \"{chosen}\""));
            return Err(errors);
        };
        let Value::Object(flow) = flow else {
            errors.push(join("flows", &chosen), "must be an object");
            return Err(errors);
        };
        let path = join("flows", &chosen);
        (Some(chosen), flow, path)
    } else {
        (None, root, String::new())
    };

    let flow_variables = take_object(&mut flow, "variables", &path, &mut errors);
    let mut result = Flow {
        name: name.clone(),
        ..Flow::default()
    };
    let base_variables = [&flow_variables, &root_variables];
    // The `code` block first: `$code:` values elsewhere run under its limits as they load.
    if let Some(mut value) = flow.remove("code") {
        let at = join(&path, "code");
        let scopes = Scopes {
            variables: base_variables.to_vec(),
            env,
            code: crate::code::Limits::default(),
        };
        references::resolve(&mut value, &at, &scopes, &mut errors);
        result.code = parse_code_limits(&value, &at, &mut errors);
    }
    let base_scopes = Scopes {
        variables: base_variables.to_vec(),
        env,
        code: result.code,
    };

    for (key, value) in flow {
        let at = join(&path, &key);
        match key.as_str() {
            "sources" | "destinations" => {
                let Value::Object(steps) = value else {
                    errors.push(at, "must be an object of named steps");
                    continue;
                };
                for (id, step) in steps {
                    let step_path = join(&at, &id);
                    let parsed = parse_step(&id, step, &step_path, key == "destinations", &base_scopes, &mut errors);
                    if let Some(parsed) = parsed {
                        if key == "sources" {
                            result.sources.push(parsed);
                        } else {
                            result.destinations.push(parsed);
                        }
                    }
                }
            }
            "collector" | "journal" | "admin" => {
                // Blocks of flow-level state: their references resolve in the flow's scopes.
                let mut value = value;
                references::resolve(&mut value, &at, &base_scopes, &mut errors);
                match key.as_str() {
                    "collector" => result.collector = parse_collector(value, &at, &mut errors),
                    "admin" => result.admin = parse_admin(&value, &at, &mut errors),
                    _ => result.journal = parse_journal(&value, &at, &mut errors),
                }
            }
            "config" => check_flow_config(&value, &at, &mut errors),
            // The npm packages walkerOS's CLI bundles (`{"<name>": {"version": ...}}`): weir
            // has its steps built in; each step's `package` is checked by its registry.
            "packages" => {
                if !value.is_object() {
                    errors.push(at, "must be an object of package names");
                }
            }
            "transformers" | "stores" => {
                if value.as_object().is_some_and(|m| !m.is_empty()) {
                    errors.push(
                        at,
                        format!(
                            "walkerOS {key} run JavaScript and are not supported by weir yet; remove the block (or keep this flow on walkerOS)"
                        ),
                    );
                }
            }
            _ => errors.push(at, "unknown key"),
        }
    }
    if result.collector.name.is_none() {
        // walkerOS's CLI names the collector after the flow when bundling.
        result.collector.name = name;
    }
    result.problems = errors;
    Ok(result)
}

fn take_object(map: &mut Map<String, Value>, key: &str, path: &str, errors: &mut ConfigErrors) -> Map<String, Value> {
    match map.remove(key) {
        None => Map::new(),
        Some(Value::Object(object)) => object,
        Some(_) => {
            errors.push(join(path, key), "must be an object");
            Map::new()
        }
    }
}

fn check_flow_config(value: &Value, path: &str, errors: &mut ConfigErrors) {
    let Value::Object(config) = value else {
        errors.push(path, "must be an object");
        return;
    };
    for (key, item) in config {
        match key.as_str() {
            "platform" => match item.as_str() {
                Some("server") => {}
                Some("web") => errors.push(
                    join(path, key),
                    "this is a web flow (walkerOS runs it in the browser); weir runs server flows: use a flow with platform \"server\"",
                ),
                _ => errors.push(join(path, key), "weir runs server flows: platform must be \"server\""),
            },
            // Bundling and hosting details for walkerOS's CLI: nothing for weir to do.
            "url" | "settings" | "bundle" | "observe" => {}
            _ => errors.push(join(path, key), "unknown key"),
        }
    }
}

/// The entry of a source or destination `registry` that `step` names: by `type`, or by
/// walkerOS `package` when it has no type. `None`, with the error, when there is none.
/// `what` is "source" or "destination", for the message.
pub fn find_kind<'a, K>(
    registry: &'a [K],
    name: impl Fn(&K) -> &'static str,
    package: impl Fn(&K) -> Option<&'static str>,
    step: &Step,
    what: &str,
    errors: &mut ConfigErrors,
) -> Option<&'a K> {
    let known = |names: Vec<&str>| names.join(", ");
    if step.kind.is_empty()
        && let Some(wanted) = &step.package
    {
        let found = registry.iter().find(|kind| package(kind) == Some(wanted.as_str()));
        if found.is_none() {
            let packages = registry.iter().filter_map(&package).collect();
            errors.push(
                join(&step.path, "package"),
                format!("weir does not implement {wanted}; it knows {}", known(packages)),
            );
        }
        return found;
    }
    let found = registry.iter().find(|kind| name(kind) == step.kind);
    if found.is_none() {
        errors.push(
            join(&step.path, "type"),
            format!(
                "unknown {what} type \"{}\"; weir has {}",
                step.kind,
                known(registry.iter().map(&name).collect())
            ),
        );
    }
    found
}

/// A package name without its version: `@scope/name@1.2.3` is `@scope/name`.
fn package_name(package: &str) -> &str {
    match package.rfind('@') {
        Some(at) if at > 0 => &package[..at],
        _ => package,
    }
}

fn parse_step(
    id: &str,
    step: Value,
    path: &str,
    is_destination: bool,
    base_scopes: &Scopes<'_>,
    errors: &mut ConfigErrors,
) -> Option<Step> {
    let Value::Object(mut step) = step else {
        errors.push(path, "must be an object");
        return None;
    };
    let step_variables = take_object(&mut step, "variables", path, errors);
    let mut scopes = Scopes {
        variables: vec![&step_variables],
        env: base_scopes.env,
        code: base_scopes.code,
    };
    scopes.variables.extend_from_slice(&base_scopes.variables);

    let mut kind = None;
    let mut package = None;
    let mut config = Value::Null;
    let mut sources = None;
    for (key, mut value) in step {
        let at = join(path, &key);
        match key.as_str() {
            "type" => match value {
                Value::String(name) => kind = Some(name),
                _ => errors.push(at, "must be a string"),
            },
            "package" => match value {
                Value::String(name) => package = Some(name),
                _ => errors.push(at, "must be a string"),
            },
            "config" => {
                references::resolve(&mut value, &at, &scopes, errors);
                config = value;
            }
            "sources" if is_destination => match serde_json::from_value::<Vec<String>>(value) {
                Ok(list) => sources = Some(list),
                Err(_) => errors.push(at, "must be a list of source ids"),
            },
            // walkerOS bundling details and step examples: nothing for weir to do.
            "import" | "examples" | "primary" => {}
            // walkerOS's import name for the package's factory (`"code": "destinationDemo"`),
            // as `import` is: weir has its steps built in.
            "code" if value.is_string() => {}
            "code" => errors.push(
                at,
                "an inline JavaScript step cannot run in weir; name a `package` or a `type`",
            ),
            "env" | "before" | "next" | "cache" => {
                errors.push(
                    at,
                    format!("`{key}` needs JavaScript at run time and is not supported by weir"),
                );
            }
            _ => errors.push(at, "unknown key"),
        }
    }
    if kind.is_none() && package.is_none() {
        errors.push(path, "needs a `type` (or a walkerOS `package`)");
        return None;
    }
    Some(Step {
        id: id.to_owned(),
        kind: kind.unwrap_or_default(),
        package: package.map(|package| package_name(&package).to_owned()),
        path: path.to_owned(),
        config,
        sources,
    })
}

fn parse_collector(value: Value, path: &str, errors: &mut ConfigErrors) -> CollectorConfig {
    let mut collector = CollectorConfig::default();
    let Value::Object(map) = value else {
        errors.push(path, "must be an object");
        return collector;
    };
    let mut globals_static = Object::new();
    for (key, value) in map {
        let at = join(path, &key);
        let object = |value: Value, errors: &mut ConfigErrors| match value {
            Value::Object(object) => object,
            _ => {
                errors.push(at.clone(), "must be an object");
                Object::new()
            }
        };
        match key.as_str() {
            "globals" => collector.globals = object(value, errors),
            "globalsStatic" => globals_static = object(value, errors),
            "user" => collector.user = object(value, errors),
            "custom" => collector.custom = object(value, errors),
            "consent" => {
                // walkerOS's `consent` command coerces every value with `!!`.
                collector.consent = object(value, errors)
                    .into_iter()
                    .map(|(group, granted)| (group, Value::Bool(crate::json::truthy(&granted))))
                    .collect();
            }
            "name" | "release" => match value {
                Value::String(text) if key == "name" => collector.name = Some(text),
                Value::String(text) => collector.release = Some(text),
                _ => errors.push(at, "must be a string"),
            },
            "run" => {
                if value != Value::Bool(true) {
                    errors.push(at, "weir always runs the collector at start; only `true` is accepted");
                }
            }
            // Browser session state, the pre-run queue cap and the logger: no meaning here.
            "sessionStatic" | "queueMax" | "logger" | "observe" => {}
            _ => errors.push(at, "unknown key"),
        }
    }
    // walkerOS: `globals = {...globalsStatic, ...globals}`.
    if !globals_static.is_empty() {
        for (key, value) in std::mem::take(&mut collector.globals) {
            globals_static.insert(key, value);
        }
        collector.globals = globals_static;
    }
    collector
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn the_code_block_sets_the_javascript_limits() {
        let flow = parse_flow(json!({"sources": {}}), None, &no_env).unwrap();
        assert_eq!(flow.code, crate::code::Limits::default());
        let flow = parse_flow(json!({"code": {"timeout": 20, "memoryLimit": 16777216}}), None, &no_env).unwrap();
        assert!(flow.problems.is_empty(), "{}", flow.problems);
        assert_eq!(
            flow.code,
            crate::code::Limits {
                timeout: std::time::Duration::from_millis(20),
                memory: 16 << 20
            }
        );
        let flow = parse_flow(
            json!({"code": {"timeout": 0, "memoryLimit": 1024, "memory": 1}}),
            None,
            &no_env,
        )
        .unwrap();
        let problems = flow.problems.to_string();
        for expected in [
            "code.timeout: must be at least 1",
            "code.memoryLimit: must be at least 4194304 bytes",
            "code.memory: unknown key",
        ] {
            assert!(problems.contains(expected), "{expected} in {problems}");
        }
    }

    /// A `$code:` value is evaluated while the flow loads, under the flow's own `code`
    /// limits wherever the block stands in the file.
    #[test]
    fn code_values_load_under_the_flow_s_code_limits() {
        let busy = "$code:(() => { const end = Date.now() + 200; while (Date.now() < end) {} return 1 })()";
        let with_timeout = |timeout: u64| {
            parse_flow(
                json!({
                    "destinations": {"b": {"type": "blackhole", "config": {"settings": {"n": busy}}}},
                    "code": {"timeout": timeout}
                }),
                None,
                &no_env,
            )
            .unwrap()
            .problems
            .to_string()
        };
        // 200 ms of work: beyond the default 50 ms, within a flow's 5 s.
        assert_eq!(with_timeout(5000), "");
        let problems = with_timeout(20);
        assert!(
            problems.contains("destinations.b.config.settings.n") && problems.contains("time limit of 20ms"),
            "{problems}"
        );
    }

    #[test]
    fn the_journal_block_has_defaults_takes_env_references_and_checks_sizes() {
        let flow = parse_flow(json!({"sources": {}}), None, &no_env).unwrap();
        assert_eq!(flow.journal, JournalSettings::default());
        assert!(flow.journal.enabled);

        let env = |name: &str| (name == "JOURNAL_DIR").then(|| "/var/lib/weir/journal".to_owned());
        let flow = parse_flow(
            json!({"journal": {"path": "$env.JOURNAL_DIR", "maxBytes": 1048576, "segmentBytes": 65536}}),
            None,
            &env,
        )
        .unwrap();
        assert!(flow.problems.is_empty(), "{}", flow.problems);
        assert_eq!(flow.journal.path, std::path::PathBuf::from("/var/lib/weir/journal"));
        assert_eq!((flow.journal.max_bytes, flow.journal.segment_bytes), (1048576, 65536));

        let flow = parse_flow(json!({"journal": {"enabled": false}}), None, &no_env).unwrap();
        assert!(!flow.journal.enabled);

        let flow = parse_flow(
            json!({"journal": {"maxBytes": 65536, "segmentBytes": 65536, "sise": 1}}),
            None,
            &no_env,
        )
        .unwrap();
        let problems = flow.problems.to_string();
        assert!(
            problems.contains("journal.maxBytes: must be at least two segments"),
            "{problems}"
        );
        assert!(problems.contains("journal.sise: unknown key"), "{problems}");
        let flow = parse_flow(json!({"journal": {"segmentBytes": 100}}), None, &no_env).unwrap();
        assert!(
            flow.problems
                .to_string()
                .contains("journal.segmentBytes: must be at least 4096")
        );
    }

    #[test]
    fn a_walkeros_flow_file_loads_with_packages_and_collector_state() {
        let document = json!({
            "version": 4,
            "$schema": "https://walkeros.io/schema/flow/v4.json",
            "flows": {"default": {
                "config": {"platform": "server", "bundle": {"packages": {}}},
                "sources": {"http": {"package": "@walkeros/server-source-express", "config": {"settings": {"port": 8080}}}},
                "destinations": {"events": {
                    "package": "@walkeros/server-destination-redis@4.4.0",
                    "variables": {"stream": "walkeros:events"},
                    "config": {"settings": {"redis": {"streamKey": "$var.stream"}}}
                }},
                "collector": {"globals": {"env": "prod"}, "globalsStatic": {"site": "a", "env": "dev"}, "consent": {"functional": 1}}
            }}
        });
        let flow = parse_flow(document, None, &no_env).unwrap();
        assert!(flow.problems.is_empty(), "{}", flow.problems);
        assert_eq!(flow.name.as_deref(), Some("default"));
        assert_eq!(flow.collector.name.as_deref(), Some("default"));
        // The registries turn packages into types (assembly's tests: they build).
        assert_eq!(
            flow.sources[0].package.as_deref(),
            Some("@walkeros/server-source-express")
        );
        assert_eq!(
            flow.destinations[0].package.as_deref(),
            Some("@walkeros/server-destination-redis")
        );
        assert_eq!(
            flow.destinations[0].config["settings"]["redis"]["streamKey"],
            "walkeros:events"
        );
        assert_eq!(
            Value::Object(flow.collector.globals),
            json!({"site": "a", "env": "prod"})
        );
        assert_eq!(Value::Object(flow.collector.consent), json!({"functional": true}));
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let document = json!({
            "sources": {"http": {"type": "http", "nxt": 1}},
            "destinations": {
                "a": {"package": "@walkeros/server-destination-gcp"},
                "b": {"type": "file", "before": "decoder"},
                "c": {}
            },
            "transformers": {"t": {"package": "@walkeros/transformer-ga4"}}
        });
        let errors = parse_flow(document, None, &no_env).unwrap().problems;
        let text = errors.to_string();
        for expected in [
            "sources.http.nxt: unknown key",
            "destinations.b.before: `before` needs JavaScript",
            "destinations.c: needs a `type`",
            "transformers: walkerOS transformers run JavaScript",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
        }
        // An unknown package is the destination registry's to report (assembly's tests).
        assert_eq!(errors.len(), 4, "{text}");
    }

    #[test]
    fn bundling_keys_are_accepted_and_inline_code_steps_are_not() {
        let document = json!({"version": 4, "flows": {"server": {
            "packages": {"@walkeros/destination-demo": {}},
            "sources": {"express": {"package": "@walkeros/server-source-express", "code": "sourceExpress"}},
            "destinations": {
                "demo": {"package": "@walkeros/destination-demo", "code": "destinationDemo", "import": "destinationDemo"},
                "inline": {"code": {"push": "$code:() => {}"}}
            },
            "collector": {"run": true},
            "config": {"platform": "server", "bundle": {"packages": {}}},
            "stores": {"cache": {"package": "@walkeros/store-memory"}}
        }}});
        let flow = parse_flow(document, None, &no_env).unwrap();
        let text = flow.problems.to_string();
        assert!(
            text.contains("flows.server.destinations.inline.code: an inline JavaScript step cannot run in weir"),
            "{text}"
        );
        assert!(
            text.contains("flows.server.stores: walkerOS stores run JavaScript and are not supported by weir yet"),
            "{text}"
        );
        assert_eq!(flow.problems.len(), 3, "{text}"); // and `inline` names no package
        assert_eq!(flow.sources.len(), 1);
        assert_eq!(
            flow.destinations[0].package.as_deref(),
            Some("@walkeros/destination-demo")
        );
        let web = parse_flow(json!({"config": {"platform": "web"}}), None, &no_env).unwrap();
        assert!(web.problems.to_string().contains("config.platform: this is a web flow"));
    }

    #[test]
    fn several_flows_need_a_choice() {
        let document = json!({"version": 4, "flows": {"web": {}, "server": {"destinations": {}}}});
        assert!(
            parse_flow(document.clone(), None, &no_env)
                .unwrap_err()
                .to_string()
                .contains("--flow")
        );
        assert_eq!(
            parse_flow(document, Some("server"), &no_env).unwrap().name.as_deref(),
            Some("server")
        );
    }
}
