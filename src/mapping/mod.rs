//! walkerOS 4.4's mapping, per destination: consent, policies, rule lookup with `*`
//! wildcards, rule fields and the value language (walkerOS `packages/core/src/mapping.ts`).
//!
//! A destination's mapping is parsed once at config load into [`DestinationMapping`], with
//! the destination's own rule `settings` type `S`, so every rule is checked (and every error
//! reported with its path) before weir starts. [`DestinationMapping::apply`] then does, per
//! event, what walkerOS's `pushToDestinations` + `processEventMapping` do, in the same order.
//! Where walkerOS's code and its documentation disagree, weir follows the documentation:
//! rule-level `consent` is enforced, and `skip` is accepted as the older name of `silent`.

pub mod consent;
pub mod include;
pub mod path;
pub mod value;

use std::borrow::Cow;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::code::{Call, Code, Consent, Input};
use crate::collector::Collector;
use crate::config::{ConfigErrors, join, typed};
use crate::event::{Event, Object, split_name};
use crate::json::assign;
pub use consent::granted_consent;
pub use include::Section;
use path::{remove_by_path, set_by_path};

pub use value::{ValueContext, ValueSpec, code_failed, ingest_path, parse_code};

/// `batch` of a destination or a rule: a number (the debounce `wait`) or `{wait, size, age}`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchSpec {
    pub wait: Option<u64>,
    pub size: Option<u64>,
    pub age: Option<u64>,
}

impl BatchSpec {
    pub fn parse(value: &Value, path: &str, errors: &mut ConfigErrors) -> Option<BatchSpec> {
        #[derive(serde::Deserialize)]
        struct Fields {
            wait: Option<u64>,
            size: Option<u64>,
            age: Option<u64>,
        }
        match value {
            Value::Number(n) => match n.as_u64() {
                Some(wait) => Some(BatchSpec {
                    wait: Some(wait),
                    ..BatchSpec::default()
                }),
                None => {
                    errors.push(path, "must be a whole number of milliseconds or {wait, size, age}");
                    None
                }
            },
            Value::Object(_) => typed::parse::<Fields>(value, path, errors).map(|f| BatchSpec {
                wait: f.wait,
                size: f.size,
                age: f.age,
            }),
            _ => {
                errors.push(path, "must be a number (wait ms) or {wait, size, age}");
                None
            }
        }
    }
}

/// A destination's per-rule `settings` type: read with serde, then checked for what serde
/// cannot say — values that load but do nothing, as walkerOS ignores them (warnings), and
/// values walkerOS would send but no server accepts (errors).
pub trait RuleSettings: DeserializeOwned {
    /// Reports into `errors` (`path` is the rule's `settings`).
    fn check(&self, _path: &str, _errors: &mut ConfigErrors) {}
}

impl RuleSettings for serde::de::IgnoredAny {}

/// Rule settings of a destination that has none (`file`, `stdout`, `blackhole`): any key in
/// a rule's `settings` is reported as unknown.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoRuleSettings {}

impl RuleSettings for NoRuleSettings {}

/// A policy: `{path: value spec}`, written into the event before mapping.
pub type Policy = Vec<(String, ValueSpec)>;

/// One mapping rule.
#[derive(Debug)]
pub struct Rule<S> {
    /// JavaScript choosing among the rules of one event: `condition(event, context)`.
    pub condition: Option<Code>,
    pub name: Option<String>,
    pub data: Option<ValueSpec>,
    pub settings: Option<S>,
    pub policy: Option<Policy>,
    /// `Some(vec![])` is an explicit empty list, which overrides the destination's.
    pub include: Option<Vec<Section>>,
    pub remove: Option<Vec<String>>,
    pub consent: Option<Object>,
    pub ignore: bool,
    pub silent: bool,
    /// The batch buffer of this rule, when it has its own `batch`.
    pub batch_slot: Option<usize>,
}

/// The rules of one entity, by action (`*` matches any); several rules per action are
/// walkerOS's rule arrays.
type ActionRules<S> = Vec<(String, Vec<Rule<S>>)>;

/// Rules by entity, then action; `*` matches any.
#[derive(Debug)]
pub struct Rules<S>(Vec<(String, ActionRules<S>)>);

impl<S> Default for Rules<S> {
    fn default() -> Self {
        Rules(Vec::new())
    }
}

impl<S> Rules<S> {
    fn actions(&self, entity: &str) -> Option<&ActionRules<S>> {
        self.0.iter().find(|(key, _)| key == entity).map(|(_, actions)| actions)
    }

    /// walkerOS `getMappingEvent`: the rule for `name` and its key (`"product *"`). In a list
    /// of rules the first whose condition `holds` wins; when none does, only `* *` is tried.
    ///
    /// `* <action>` is only consulted when the entity has no block at all; an entity block
    /// without the action (and without `*`) falls through to `* *`. A condition that fails
    /// (`Err`) fails the lookup.
    pub fn lookup<E>(
        &self,
        name: &str,
        mut holds: impl FnMut(&Rule<S>) -> Result<bool, E>,
    ) -> Result<Option<(&Rule<S>, String)>, E> {
        let Some((entity, action)) = split_name(name) else {
            return Ok(None);
        };
        let mut first_holding = |rules: &'_ [Rule<S>]| -> Result<Option<usize>, E> {
            for (index, rule) in rules.iter().enumerate() {
                if holds(rule)? {
                    return Ok(Some(index));
                }
            }
            Ok(None)
        };
        let entity_key = if self.actions(entity).is_some() { entity } else { "*" };
        if let Some(actions) = self.actions(entity_key) {
            let action_key = if actions.iter().any(|(key, _)| key == action) {
                action
            } else {
                "*"
            };
            if let Some((_, rules)) = actions.iter().find(|(key, _)| key == action_key)
                && let Some(index) = first_holding(rules)?
            {
                return Ok(Some((&rules[index], format!("{entity_key} {action_key}"))));
            }
        }
        let Some((_, rules)) = self
            .actions("*")
            .and_then(|actions| actions.iter().find(|(key, _)| key == "*"))
        else {
            return Ok(None);
        };
        Ok(first_holding(rules)?.map(|index| (&rules[index], "* *".to_owned())))
    }
}

/// A destination's mapping configuration.
#[derive(Debug)]
pub struct DestinationMapping<S> {
    pub consent: Option<Object>,
    pub policy: Option<Policy>,
    pub data: Option<ValueSpec>,
    pub include: Option<Vec<Section>>,
    pub rules: Rules<S>,
    /// The destination's id: code failures are counted under it.
    pub owner: String,
}

/// What the mapping decided for one event at one destination.
// Returned and consumed at once for every event: boxing the big variant would cost an
// allocation per event for nothing.
#[allow(clippy::large_enum_variant)]
pub enum MappingOutcome<'m, 'e, S> {
    /// The matching rule says `ignore`.
    Ignored,
    /// A rule's `condition` threw: walkerOS fails the push to this destination (the event
    /// is dead-lettered there, with this reason).
    Failed(String),
    /// The destination's or the rule's required consent is not granted.
    Denied,
    Mapped(Mapped<'m, 'e, S>),
}

/// An event mapped for one destination.
pub struct Mapped<'m, 'e, S> {
    /// The event after policies and the rule's `name`, with consent reduced to the granted
    /// groups and the collector's user merged in; borrowed when none of that changed it.
    pub event: Cow<'e, Event>,
    pub data: Option<Value>,
    pub rule: Option<&'m Rule<S>>,
    /// `"<entity> <action>"` of the matching rule (`"* *"`...), or empty.
    pub rule_key: String,
}

impl<S: RuleSettings> DestinationMapping<S> {
    /// Parses `consent`, `policy`, `data`, `include` and `mapping` of a destination's
    /// `config` (found at `path`). `rule_batch` is called for each rule with its own `batch`
    /// and returns the rule's batch slot.
    pub fn from_config(
        config: &Map<String, Value>,
        path: &str,
        errors: &mut ConfigErrors,
        rule_batch: &mut dyn FnMut(&BatchSpec) -> usize,
    ) -> Option<DestinationMapping<S>> {
        let before = errors.len();
        let consent = config
            .get("consent")
            .and_then(|value| value::parse_consent(value, &join(path, "consent"), errors));
        let policy = config
            .get("policy")
            .and_then(|value| parse_policy(value, &join(path, "policy"), errors));
        let data = config
            .get("data")
            .and_then(|value| ValueSpec::parse(value, &join(path, "data"), errors));
        let include = config
            .get("include")
            .and_then(|value| include::parse(value, &join(path, "include"), errors));
        let rules = match config.get("mapping") {
            None => Rules::default(),
            Some(value) => parse_rules(value, &join(path, "mapping"), errors, rule_batch),
        };
        (errors.len() == before).then_some(DestinationMapping {
            consent,
            policy,
            data,
            include,
            rules,
            owner: String::new(),
        })
    }

    /// Names the destination this mapping belongs to (for counting code failures).
    pub fn owned_by(mut self, owner: &str) -> DestinationMapping<S> {
        self.owner = owner.to_owned();
        self
    }
}

impl<S> DestinationMapping<S> {
    /// What walkerOS's `pushToDestinations` (consent, user) and `processEventMapping`
    /// (policy, rule, data, include, remove) do with `event` for this destination. The
    /// event is copied only when something changes it.
    pub fn apply<'m, 'e>(&'m self, event: &'e Event, collector: &Collector) -> MappingOutcome<'m, 'e, S> {
        let mut event: Cow<'e, Event> = Cow::Borrowed(event);
        if !(self.consent.is_none() && consent_stays(&event, collector)) {
            let own_consent = event.object(crate::event::key::CONSENT);
            let Some(granted) = granted_consent(self.consent.as_ref(), &collector.consent, Some(&own_consent)) else {
                return MappingOutcome::Denied;
            };
            // Order matters for the stored bytes, so compare entry by entry.
            if !own_consent.iter().eq(granted.iter()) {
                event.to_mut().set("consent", Some(Value::Object(granted)));
            }
        }
        if !collector.user.is_empty() {
            let user = assign(&collector.user, &event.object(crate::event::key::USER));
            event.to_mut().set("user", Some(Value::Object(user)));
        }
        let owner = self.owner.as_str();
        if let Some(policy) = &self.policy {
            event = Cow::Owned(with_policy(&event, policy, &value_context(&*event, collector, owner)));
        }
        let found = match self
            .rules
            .lookup(event.name(), |rule| rule_holds(rule, &event, collector, owner))
        {
            Ok(found) => found,
            Err(reason) => return MappingOutcome::Failed(reason),
        };
        if let Some((rule, _)) = &found
            && let Some(policy) = &rule.policy
        {
            event = Cow::Owned(with_policy(&event, policy, &value_context(&*event, collector, owner)));
        }
        let mut data = self
            .data
            .as_ref()
            .and_then(|spec| spec.value(event.tree(), &value_context(&*event, collector, owner)));
        let Some((rule, rule_key)) = found else {
            data = with_include(data, self.include.as_deref(), &event);
            return MappingOutcome::Mapped(Mapped {
                event,
                data,
                rule: None,
                rule_key: String::new(),
            });
        };
        if rule.ignore {
            return MappingOutcome::Ignored;
        }
        if let Some(required) = &rule.consent {
            // Against the groups the destination gate already resolved (collector state
            // overlaid with the event's own): an event that denies a group stays denied
            // even when the collector grants it.
            let granted = event.object(crate::event::key::CONSENT);
            if granted_consent(Some(required), &granted, None).is_none() {
                return MappingOutcome::Denied;
            }
        }
        if let Some(name) = &rule.name {
            event.to_mut().set("name", Some(Value::from(name.as_str())));
        }
        if let Some(spec) = &rule.data {
            let rule_data = spec.value(event.tree(), &value_context(&*event, collector, owner));
            data = match (data, rule_data) {
                (Some(Value::Object(base)), Some(Value::Object(own))) => Some(Value::Object(assign(&base, &own))),
                (_, rule_data) => rule_data,
            };
        }
        data = with_include(data, rule.include.as_deref().or(self.include.as_deref()), &event);
        if let (Some(paths), Some(target @ Value::Object(_))) = (&rule.remove, &mut data) {
            for path in paths {
                remove_by_path(target, path);
            }
        }
        MappingOutcome::Mapped(Mapped {
            event,
            data,
            rule: Some(rule),
            rule_key,
        })
    }
}

/// What value specs read while mapping `event` (or, for a source's `ingest`, a request)
/// for `owner`, whose failed calls are counted under its name.
pub fn value_context<'a>(
    event: &'a dyn crate::code::EventSource,
    collector: &'a Collector,
    owner: &'a str,
) -> ValueContext<'a> {
    ValueContext {
        collector_consent: &collector.consent,
        inherited_consent: None,
        event,
        collector: collector.script_view(),
        owner,
    }
}

/// Code reads an event member by member, from the JSON text the event keeps for it.
impl crate::code::EventSource for Event {
    fn member(&self, key: &str) -> Option<std::borrow::Cow<'_, str>> {
        self.member_json(key)
    }

    fn keys(&self) -> Vec<String> {
        self.fields().map(|(name, _)| name.to_owned()).collect()
    }

    fn is(&self, value: &Value) -> bool {
        self.is_tree(value)
    }

    fn ingest(&self) -> Option<(&Value, &str)> {
        self.ingest().map(|ingest| (&ingest.value, &*ingest.text))
    }
}

/// walkerOS's rule condition: `condition(event, context)`, not awaited (a promise counts as
/// true); a throw fails the push.
fn rule_holds<S>(rule: &Rule<S>, event: &Event, collector: &Collector, owner: &str) -> Result<bool, String> {
    let Some(condition) = &rule.condition else {
        return Ok(true);
    };
    // walkerOS: the event's own consent object, else the collector's; the event's as the
    // text it keeps, unparsed.
    let consent = match event.field(crate::event::key::CONSENT) {
        Some(crate::event::FieldRef::Text(text)) if text.starts_with('{') => Consent::Json(text),
        Some(crate::event::FieldRef::Value(Value::Object(own))) => Consent::Object(own),
        _ => Consent::Object(&collector.consent),
    };
    let call = Call {
        value: Input::Event,
        event,
        consent,
        collector: collector.script_view(),
        awaited: false,
    };
    match condition.call(&call) {
        Ok(returned) => Ok(returned.truthy),
        Err(error) => {
            code_failed(owner, condition, &error);
            Err(format!("a rule's condition {error}"))
        }
    }
}

/// Whether the granted subset of the event's consent is the consent itself, so nothing
/// needs computing: every group `true`, and nothing the collector adds. The common case, so
/// it is checked on the event's text without parsing it.
fn consent_stays(event: &Event, collector: &Collector) -> bool {
    match event.field(crate::event::key::CONSENT) {
        Some(crate::event::FieldRef::Text(text)) => {
            crate::json::members(text).all(|(_, value, _)| value == "true")
                && (collector.consent.is_empty() || text == collector.consent_text())
        }
        _ => false,
    }
}

/// The event after a policy: each entry reads the event as it was before the policy, then
/// all are written.
/// A top-level key set to nothing stays as walkerOS's `undefined` (see
/// [`Event::after_policy`]).
fn with_policy(event: &Event, policy: &Policy, context: &ValueContext<'_>) -> Event {
    let tree = event.tree();
    let results: Vec<Option<Value>> = policy.iter().map(|(_, spec)| spec.value(tree, context)).collect();
    let mut tree = tree.clone();
    let mut undefined = Vec::new();
    if let Value::Object(map) = &mut tree {
        for ((path, _), result) in policy.iter().zip(results) {
            if result.is_none() && !path.contains('.') {
                undefined.push(path.as_str());
            }
            set_by_path(map, path, result);
        }
    }
    Event::after_policy(event, tree, &undefined)
}

/// walkerOS `include`: the flattened sections under the data, explicit data winning.
fn with_include(data: Option<Value>, sections: Option<&[Section]>, event: &Event) -> Option<Value> {
    let Some(sections) = sections.filter(|s| !s.is_empty()) else {
        return data;
    };
    let flattened = include::flatten(sections, event.tree());
    if flattened.is_empty() {
        return data;
    }
    match data {
        Some(Value::Object(own)) => Some(Value::Object(assign(&flattened, &own))),
        None | Some(Value::Null) => Some(Value::Object(flattened)),
        other => other,
    }
}

fn parse_policy(value: &Value, path: &str, errors: &mut ConfigErrors) -> Option<Policy> {
    let Value::Object(entries) = value else {
        errors.push(path, "must be an object of event path → mapping value");
        return None;
    };
    let mut policy = Vec::with_capacity(entries.len());
    for (target, spec) in entries {
        if let Some(spec) = ValueSpec::parse(spec, &join(path, target), errors) {
            policy.push((target.clone(), spec));
        }
    }
    Some(policy)
}

fn parse_rules<S: RuleSettings>(
    value: &Value,
    path: &str,
    errors: &mut ConfigErrors,
    rule_batch: &mut dyn FnMut(&BatchSpec) -> usize,
) -> Rules<S> {
    let Value::Object(entities) = value else {
        errors.push(path, "must be an object: entity → action → rule");
        return Rules::default();
    };
    let mut rules = Vec::with_capacity(entities.len());
    for (entity, actions) in entities {
        let entity_path = join(path, entity);
        let actions = match actions {
            Value::Object(actions) => actions,
            // walkerOS treats a falsy entry as absent.
            Value::Null | Value::Bool(false) => continue,
            _ => {
                errors.push(entity_path, "must be an object: action → rule");
                continue;
            }
        };
        let mut parsed_actions = Vec::with_capacity(actions.len());
        for (action, rule) in actions {
            let rule_path = join(&entity_path, action);
            let parsed = match rule {
                Value::Array(list) => {
                    // A rule without a condition always matches: the ones after it never do.
                    if let Some(open) = list[..list.len().saturating_sub(1)]
                        .iter()
                        .position(|rule| rule.get("condition").is_none())
                    {
                        errors.warn(
                            join(&rule_path, &open.to_string()),
                            "this rule has no `condition`, so it always matches and the rules after it in this list never do",
                        );
                    }
                    list.iter()
                        .enumerate()
                        .filter_map(|(index, rule)| {
                            parse_rule(rule, &join(&rule_path, &index.to_string()), errors, rule_batch)
                        })
                        .collect()
                }
                // walkerOS treats a falsy rule as absent.
                Value::Null | Value::Bool(false) => continue,
                single => parse_rule(single, &rule_path, errors, rule_batch).into_iter().collect(),
            };
            parsed_actions.push((action.clone(), parsed));
        }
        rules.push((entity.clone(), parsed_actions));
    }
    Rules(rules)
}

/// A rule as its condition sees it (`context.mapping`).
fn value_of_rule(fields: &Map<String, Value>) -> Value {
    Value::Object(fields.clone())
}

fn parse_rule<S: RuleSettings>(
    value: &Value,
    path: &str,
    errors: &mut ConfigErrors,
    rule_batch: &mut dyn FnMut(&BatchSpec) -> usize,
) -> Option<Rule<S>> {
    let Value::Object(fields) = value else {
        errors.push(path, "a rule must be an object");
        return None;
    };
    let before = errors.len();
    let mut rule = Rule {
        condition: None,
        name: None,
        data: None,
        settings: None,
        policy: None,
        include: None,
        remove: None,
        consent: None,
        ignore: false,
        silent: false,
        batch_slot: None,
    };
    let flag = |value: &Value, at: String, errors: &mut ConfigErrors| match value {
        Value::Bool(flag) => *flag,
        _ => {
            errors.push(at, "must be true or false");
            false
        }
    };
    for (key, value) in fields {
        let at = join(path, key);
        match key.as_str() {
            "name" => match value {
                Value::String(name) => rule.name = Some(name.clone()),
                _ => errors.push(at, "must be a string"),
            },
            "data" => rule.data = ValueSpec::parse(value, &at, errors),
            "settings" => {
                rule.settings = typed::parse::<S>(value, &at, errors);
                if let Some(settings) = &rule.settings {
                    settings.check(&at, errors);
                }
            }
            "policy" => rule.policy = parse_policy(value, &at, errors),
            "include" => rule.include = include::parse(value, &at, errors),
            "remove" => match serde_json::from_value::<Vec<String>>(value.clone()) {
                Ok(paths) => rule.remove = Some(paths),
                Err(_) => errors.push(at, "must be a list of paths"),
            },
            "consent" => rule.consent = value::parse_consent(value, &at, errors),
            "ignore" => rule.ignore = flag(value, at, errors),
            // `skip` is walkerOS 3.x's (and its documentation's) name for `silent`.
            "silent" | "skip" => rule.silent |= flag(value, at, errors),
            "batch" => {
                if let Some(spec) = BatchSpec::parse(value, &at, errors) {
                    rule.batch_slot = Some(rule_batch(&spec));
                }
            }
            "condition" => rule.condition = parse_code(value, &at, value_of_rule(fields), errors),
            "extend" => errors.push(
                at,
                "`extend` merges onto a walkerOS package's default rule; weir's destinations have none",
            ),
            _ => errors.push(at, "unknown rule key"),
        }
    }
    (errors.len() == before).then_some(rule)
}

#[cfg(test)]
mod tests;
