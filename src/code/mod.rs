//! JavaScript in flows: the `$code:` functions walkerOS writes into mappings (`fn`,
//! `condition`, `validate`) and `$code:` values elsewhere, run in an embedded, sandboxed
//! QuickJS.
//!
//! Why QuickJS (through `rquickjs`): it is maintained (QuickJS-NG underneath), builds from the
//! crate with only a C compiler (pre-generated bindings, nothing downloaded at build time,
//! which V8 bindings need), starts a runtime in well under a millisecond, and exposes nothing
//! but ECMAScript: no file, network, process, timer or module access exists to take away.
//! What weir adds is a logger (`context.logger`, into weir's log) and the limits:
//!
//! - a wall-clock limit per call (an interrupt handler QuickJS polls; code cannot catch it),
//! - a memory limit per runtime (an allocation beyond it throws),
//! - a bounded stack.
//!
//! A call past a limit fails like a throw. The runtime is then rebuilt, so what a runaway call
//! left behind (a full heap, a half-built global) does not reach the next call. The limit is
//! per call: a loop over many items may take it once per item.
//!
//! QuickJS runtimes are single-threaded, so every thread that evaluates code has its own
//! (a thread-local [`Engine`], built on first use, compiling each function once): memory is
//! bounded by `memoryLimit` per such thread. What one call leaves in the runtime's globals is
//! seen by later calls on that thread, as in any JavaScript process; the objects every call
//! shares (`context.collector`, `context.mapping`, `context.logger`) are frozen. When a flow
//! has code, the delivery machinery maps inside `tokio::task::block_in_place` ([`in_use`]),
//! so a slow call holds up the batch it maps, not the other requests.
//!
//! Results are judged as walkerOS's `castToProperty` judges them, inside the runtime by a
//! helper written here (not user-replaceable: it captures the builtins it uses before any
//! user code runs): booleans, strings, numbers but NaN, and plain objects and arrays of those,
//! where `undefined` may appear nested (an array hole becomes JSON `null`); `null` anywhere,
//! NaN, a `Date`, a `Map`, a function are not properties.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rquickjs::context::intrinsic;
use rquickjs::function::Rest;
use rquickjs::promise::PromiseState;
use rquickjs::{Coerced, Context, Ctx, Exception, Function, Object, Persistent, Runtime};
use serde_json::Value;

/// Default limit for one call.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(50);
/// Default heap limit of one runtime (one per evaluating thread).
pub const DEFAULT_MEMORY: usize = 64 << 20;
/// The JavaScript stack; well below the 2 MiB of tokio's threads.
const STACK: usize = 256 << 10;

static TIMEOUT_US: AtomicU64 = AtomicU64::new(DEFAULT_TIMEOUT.as_micros() as u64);
static MEMORY: AtomicUsize = AtomicUsize::new(DEFAULT_MEMORY);
static NEXT_ID: AtomicU64 = AtomicU64::new(1);
/// Whether this process compiled any code (callers then keep mapping off the async threads).
static IN_USE: AtomicBool = AtomicBool::new(false);
/// Bumped by [`set_limits`]: engines built under older limits rebuild themselves.
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// The limits every call runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub timeout: Duration,
    pub memory: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            timeout: DEFAULT_TIMEOUT,
            memory: DEFAULT_MEMORY,
        }
    }
}

/// Sets the limits of every later call, on every thread.
pub fn set_limits(limits: Limits) {
    let current = Limits {
        timeout: timeout(),
        memory: MEMORY.load(Ordering::Relaxed),
    };
    if current == limits {
        return;
    }
    TIMEOUT_US.store(limits.timeout.as_micros().max(1) as u64, Ordering::Relaxed);
    MEMORY.store(limits.memory, Ordering::Relaxed);
    GENERATION.fetch_add(1, Ordering::Relaxed);
}

/// Whether any `$code:` function was compiled in this process: mapping may then run code
/// (in a mapping or in a destination's settings) and belongs off the async threads.
pub fn in_use() -> bool {
    IN_USE.load(Ordering::Relaxed)
}

fn timeout() -> Duration {
    LOAD_TIMEOUT
        .with(Cell::get)
        .unwrap_or_else(|| Duration::from_micros(TIMEOUT_US.load(Ordering::Relaxed)))
}

/// Why a call (or compiling) failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CodeError {
    #[error("threw {0}")]
    Thrown(String),
    #[error("ran past its time limit of {0:?}")]
    Timeout(Duration),
    #[error("ran out of memory (the limit is {0} bytes)")]
    OutOfMemory(usize),
    #[error("returned a promise that never settles")]
    NeverSettles,
    #[error("is not a function (it evaluates to {0})")]
    NotAFunction(String),
    #[error("does not give a JSON value: it evaluates to {0}")]
    NotAValue(String),
    #[error("the JavaScript engine failed: {0}")]
    Engine(String),
}

/// What a function returned, as the mapping reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct Returned {
    /// JavaScript truthiness (what `condition` and `validate` go by).
    pub truthy: bool,
    /// The value when walkerOS's `castToProperty` keeps it; `None` for `undefined` and for
    /// what is not a property (`null`, NaN, a Date...).
    pub property: Option<Value>,
}

/// The arguments of one call: `fn(value, context)` with `context = {event, mapping,
/// collector, logger, consent}` (the mapping is the function's own, the logger weir's).
pub struct Call<'a> {
    pub value: Input<'a>,
    pub event: &'a dyn EventSource,
    pub consent: Consent<'a>,
    /// The collector as JSON text; the same `Arc` is parsed once per thread.
    pub collector: &'a Arc<str>,
    /// Whether a returned promise is awaited (value level) or counts as it is (rule level).
    pub awaited: bool,
}

/// `context.consent`: an object, or its JSON text when the caller holds it as text (an
/// event's own consent), which spares parsing and writing it again.
#[derive(Clone, Copy)]
pub enum Consent<'a> {
    Object(&'a serde_json::Map<String, Value>),
    Json(&'a str),
}

/// The event a call sees (`context.event`, and the value when the value is the event),
/// member by member: code reads it lazily, so a member is only turned into JavaScript when
/// the code touches it, straight from the JSON text weir's events keep per member.
pub trait EventSource {
    /// The JSON text of member `key`, if the event has one.
    fn member(&self, key: &str) -> Option<std::borrow::Cow<'_, str>>;
    /// Its member names, in order.
    fn keys(&self) -> Vec<String>;
    /// Whether `value` is this event (a call's value often is).
    fn is(&self, value: &Value) -> bool;
    /// The request's ingest object (`context.ingest`), as a tree and as JSON text, when the
    /// event's source has an `ingest` mapping.
    fn ingest(&self) -> Option<(&Value, &str)> {
        None
    }
}

/// A call's first argument.
#[derive(Clone, Copy)]
pub enum Input<'a> {
    /// JavaScript's `undefined`.
    Undefined,
    /// The event itself (the same object as `context.event`).
    Event,
    Json(&'a Value),
}

/// A JSON tree as the event (tests, and values that are not weir events).
impl EventSource for Value {
    fn member(&self, key: &str) -> Option<std::borrow::Cow<'_, str>> {
        let member = self.get(key)?;
        Some(serde_json::to_string(member).unwrap_or_else(|_| "null".into()).into())
    }

    fn keys(&self) -> Vec<String> {
        self.as_object()
            .map(|map| map.keys().cloned().collect())
            .unwrap_or_default()
    }

    fn is(&self, value: &Value) -> bool {
        std::ptr::eq(self, value)
    }
}

/// The event of the call in progress, as the lazy event's host functions reach it.
type Current = Cell<(f64, Option<*const (dyn EventSource + 'static)>)>;

/// Whether `source` is an arrow function that takes at most one plain parameter
/// (`() => ...`, `v => ...`, `(v) => ...`, `async (v) => ...`), the form most walkerOS
/// mappings use: such a function cannot reach a second argument (an arrow has no
/// `arguments` of its own; no rest or default parameter collects it), so its calls skip
/// building the context. Anything else is taken to see it.
fn takes_one_parameter(source: &str) -> bool {
    let is_name = |name: &str| {
        let mut chars = name.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '$')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
    };
    let text = source.trim_start();
    let text = match text.strip_prefix("async") {
        Some(rest) if rest.starts_with(|c: char| c.is_whitespace() || c == '(') => rest.trim_start(),
        _ => text,
    };
    let (parameters, rest) = match text.strip_prefix('(') {
        Some(inner) => match inner.split_once(')') {
            Some((parameters, rest)) => (parameters.trim(), rest),
            None => return false,
        },
        None => {
            let end = text
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '$'))
                .unwrap_or(text.len());
            (&text[..end], &text[end..])
        }
    };
    // `async` alone is a parameter name, `async => 1` a one-parameter arrow.
    (parameters.is_empty() || is_name(parameters)) && rest.trim_start().starts_with("=>")
}

/// A compiled `$code:` function.
#[derive(Debug, Clone)]
pub struct Code(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    id: u64,
    source: String,
    /// `context.mapping`: the value spec or rule the function sits in.
    mapping: Value,
    /// Whether the source reads as a one-parameter arrow (see [`takes_one_parameter`]).
    one_parameter: bool,
    /// Whether a failure was logged already (once per function).
    logged: AtomicBool,
}

impl PartialEq for Code {
    fn eq(&self, other: &Code) -> bool {
        self.0.source == other.0.source
    }
}

impl Code {
    /// Compiles `source` (the text after `$code:`), which must evaluate to a function.
    /// `mapping` is what its calls see as `context.mapping`.
    pub fn compile(source: &str, mapping: Value) -> Result<Code, CodeError> {
        let code = Code(Arc::new(Inner {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            source: source.to_owned(),
            mapping,
            one_parameter: takes_one_parameter(source),
            logged: AtomicBool::new(false),
        }));
        with_engine(|engine| engine.function(&code).map(|_| ()))?;
        IN_USE.store(true, Ordering::Relaxed);
        Ok(code)
    }

    pub fn source(&self) -> &str {
        &self.0.source
    }

    /// Calls the function.
    pub fn call(&self, call: &Call<'_>) -> Result<Returned, CodeError> {
        with_engine(|engine| engine.call(self, call))
    }

    /// Calls the function with plain JSON arguments, `f(args...)`, awaiting a promise (the API
    /// destination's `transform(data, config, rule)`).
    pub fn apply(&self, args: &[&Value]) -> Result<Returned, CodeError> {
        with_engine(|engine| engine.apply(self, args))
    }

    /// True the first time only: whether this failure should be logged.
    pub fn first_failure(&self) -> bool {
        !self.0.logged.swap(true, Ordering::Relaxed)
    }
}

/// Evaluates `source` once (a `$code:` value outside the mapping's function slots) and
/// returns its result as JSON: it must be a property (a function is refused, as is `null`).
/// It runs under `limits` (the flow's, which are not in force yet while it loads), in an
/// engine of its own.
pub fn evaluate(source: &str, limits: Limits) -> Result<Value, CodeError> {
    /// Clears the load-time limit however evaluation ends.
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            LOAD_TIMEOUT.with(|slot| slot.set(None));
        }
    }
    LOAD_TIMEOUT.with(|slot| slot.set(Some(limits.timeout)));
    let _reset = Reset;
    Engine::new(GENERATION.load(Ordering::Relaxed), limits.memory).and_then(|mut engine| engine.evaluate(source))
}

thread_local! {
    static ENGINE: RefCell<Option<Engine>> = const { RefCell::new(None) };
    /// The time limit of [`evaluate`] while it runs on this thread.
    static LOAD_TIMEOUT: Cell<Option<Duration>> = const { Cell::new(None) };
}

/// Runs `work` on this thread's engine, building it first (or again, after limits changed
/// or a call broke a limit).
fn with_engine<T>(work: impl FnOnce(&mut Engine) -> Result<T, CodeError>) -> Result<T, CodeError> {
    ENGINE.with(|slot| {
        let mut slot = slot.borrow_mut();
        let generation = GENERATION.load(Ordering::Relaxed);
        if slot.as_ref().is_none_or(|engine| engine.generation != generation) {
            *slot = None; // the old one goes before the new one is built
            *slot = Some(Engine::new(generation, MEMORY.load(Ordering::Relaxed))?);
        }
        let engine = slot.as_mut().expect("built above");
        let result = work(engine);
        if matches!(result, Err(CodeError::Timeout(_) | CodeError::OutOfMemory(_))) {
            *slot = None;
        }
        result
    })
}

/// weir's helpers, evaluated before any user code: `property(v)` is walkerOS's
/// `castToProperty` + `JSON.stringify` (a JSON string, `null` when `v` is not a property,
/// `undefined` for `undefined`); `logger(log)` builds `context.logger` around the host
/// function `log(level, scope, message, context)`.
const HELPERS: &str = r#"(() => {
  const toString = Object.prototype.toString, isArray = Array.isArray, keys = Object.keys,
        isNaN = Number.isNaN, stringify = JSON.stringify, apply = Reflect.apply, ErrorType = Error,
        StringType = String;
  const ok = (v, depth) => {
    if (depth > 200) return false;
    switch (typeof v) {
      case 'boolean': case 'string': case 'undefined': return true;
      case 'number': return !isNaN(v);
      case 'object': {
        if (v === null) return false;
        if (isArray(v)) {
          for (let i = 0; i < v.length; i++) if (!ok(v[i], depth + 1)) return false;
          return true;
        }
        if (apply(toString, v, []) !== '[object Object]') return false;
        const names = keys(v);
        for (let i = 0; i < names.length; i++) if (!ok(v[names[i]], depth + 1)) return false;
        return true;
      }
      default: return false;
    }
  };
  const property = (v) => (ok(v, 0) ? stringify(v) : null);
  const text = (v) => {
    if (v instanceof ErrorType) return StringType(v.message);
    try { return typeof v === 'string' ? v : stringify(v); } catch (e) { return StringType(v); }
  };
  const logger = (log) => {
    const make = (scope) => {
      const emit = (level) => (message, context) =>
        log(level, scope, text(message), context === undefined ? undefined : text(context));
      return {
        error: emit('error'), warn: emit('warn'), info: emit('info'), debug: emit('debug'),
        throw: (message, context) => {
          emit('error')(message, context);
          throw message instanceof ErrorType ? message : new ErrorType(StringType(message));
        },
        json: (data) => log('info', scope, text(data), undefined),
        scope: (name) => make(scope ? scope + ':' + StringType(name) : StringType(name)),
      };
    };
    return make('');
  };
  const freezeObject = Object.freeze, isFrozen = Object.isFrozen;
  const freeze = (v) => {
    if (typeof v === 'object' && v !== null && !isFrozen(v)) {
      freezeObject(v);
      const names = keys(v);
      for (let i = 0; i < names.length; i++) freeze(v[names[i]]);
    }
    return v;
  };
  // The event a call sees, read lazily: a proxy whose members are parsed from the event's
  // JSON (`field(serial, key)` gives the member parsed, or undefined) when first touched, so
  // that a function that reads `event.data.title` does not pay for parsing the whole event.
  // It behaves as the plain object would (writes, deletes, keys in the event's order,
  // JSON.stringify, Object.freeze).
  // What a proxy needs lives on its target under a symbol no code can name (and the traps
  // hide): the call's serial, upgraded to {serial, gone, order} once a member is deleted or
  // the keys are listed. A member the target owns is loaded; one it does not own is loaded
  // unless it was deleted. (A WeakMap of per-event records cost more than the call itself.)
  const lazyEvent = (field, fieldKeys) => {
    const META = Symbol('event'), owns = Object.hasOwn, R = Reflect, create = Object.create,
          defineProperty = Object.defineProperty, frozenOrder = new WeakMap(), proto = Object.prototype;
    // The record form of the target's META (undefined once frozen: everything is loaded).
    const record = (o) => {
      const m = o[META];
      if (typeof m !== 'number') return m;
      const upgraded = { serial: m, gone: create(null), order: null };
      o[META] = upgraded;
      return upgraded;
    };
    const load = (o, k) => {
      if (typeof k !== 'string' || owns(o, k)) return;
      const m = o[META];
      let serial = m;
      if (typeof m !== 'number') {
        if (m === undefined || m.gone[k] === true) return;
        serial = m.serial;
      }
      const value = field(serial, k);
      if (value === undefined) return;
      // A plain assignment makes the same data property, unless the prototype has the name
      // (`__proto__`, or a setter some code put on Object.prototype).
      if (k in proto) {
        defineProperty(o, k, { value, writable: true, enumerable: true, configurable: true });
      } else {
        o[k] = value;
      }
    };
    // Every member, loaded; the names that keep their place in the event's order (not
    // those deleted: set again, they come after, as on a plain object).
    const loadAll = (o) => {
      const m = record(o);
      if (m === undefined) return frozenOrder.get(o) || [];
      if (m.order === null) m.order = fieldKeys(m.serial) || [];
      const kept = [];
      for (let i = 0; i < m.order.length; i++) {
        if (m.gone[m.order[i]] === true) continue;
        load(o, m.order[i]);
        kept.push(m.order[i]);
      }
      return kept;
    };
    const forget = (o, k) => {
      if (typeof k !== 'string') return;
      const m = record(o);
      if (m !== undefined) m.gone[k] = true;
    };
    const handler = {
      get: (o, k) => { if (!owns(o, k)) load(o, k); return o[k]; },
      has: (o, k) => { load(o, k); return k in o; },
      set: (o, k, v) => { load(o, k); return R.set(o, k, v); },
      deleteProperty: (o, k) => { forget(o, k); return R.deleteProperty(o, k); },
      defineProperty: (o, k, d) => { load(o, k); return R.defineProperty(o, k, d); },
      getOwnPropertyDescriptor: (o, k) => { load(o, k); return R.getOwnPropertyDescriptor(o, k); },
      preventExtensions: (o) => {
        // A non-extensible target must list every key it has: META goes first.
        if (o[META] !== undefined) {
          frozenOrder.set(o, loadAll(o));
          delete o[META];
        }
        return R.preventExtensions(o);
      },
      ownKeys: (o) => {
        const order = loadAll(o), keys = [], listed = create(null);
        for (let i = 0; i < order.length; i++) {
          if (owns(o, order[i])) { keys.push(order[i]); listed[order[i]] = true; }
        }
        const own = R.ownKeys(o);
        for (let i = 0; i < own.length; i++) {
          if (own[i] !== META && (typeof own[i] !== 'string' || listed[own[i]] !== true)) keys.push(own[i]);
        }
        return keys;
      },
    };
    return (serial) => {
      const o = {};
      o[META] = serial;
      return new Proxy(o, handler);
    };
  };
  // One call of a mapping function: `fn(value, {event, mapping, collector, logger, consent})`
  // with the event lazy (and the value the same object when it is the event), in one trip
  // into the runtime.
  // `ingest` is there only when the event came with one (walkerOS's mapping context has
  // no such key).
  const caller = (makeEvent, logger) => (fn, isEvent, value, serial, mapping, collector, consent, ingest) => {
    const event = makeEvent(serial);
    const context = ingest === undefined ? { event, mapping, collector, logger, consent }
      : { event, mapping, collector, logger, consent, ingest };
    return fn(isEvent ? event : value, context);
  };
  // A function that cannot see its context (`(value) => ...`) gets the value alone.
  const bareCaller = (makeEvent) => (fn, isEvent, value, serial) => fn(isEvent ? makeEvent(serial) : value);
  return [property, logger, freeze, lazyEvent, caller, bareCaller];
})()"#;

/// ECMAScript's builtins; no `eval` of new text at run time is needed beyond compiling, but
/// rquickjs compiles through the `Eval` intrinsic.
type Intrinsics = (
    intrinsic::Date,
    intrinsic::Eval,
    intrinsic::RegExp,
    intrinsic::Json,
    intrinsic::MapSet,
    intrinsic::TypedArrays,
    intrinsic::Promise,
    intrinsic::Proxy,
    intrinsic::WeakRef,
);

/// A function compiled on one engine.
#[derive(Clone)]
struct Compiled {
    function: Persistent<Function<'static>>,
    /// Its (frozen) `context.mapping`.
    mapping: Persistent<rquickjs::Value<'static>>,
    /// A one-parameter arrow, called without a context.
    bare: bool,
}

/// One thread's QuickJS. Field order is drop order: every `Persistent` goes before the
/// context and the runtime (QuickJS aborts on values outliving their runtime).
struct Engine {
    /// By code id: ids are a counter, so rustc's Fx hash (one multiply) does, where the
    /// default SipHash showed in profiles of every call.
    functions: rustc_hash::FxHashMap<u64, Compiled>,
    collector: Option<(Arc<str>, Persistent<rquickjs::Value<'static>>)>,
    property: Persistent<Function<'static>>,
    freeze: Persistent<Function<'static>>,
    /// `caller`: runs one mapping function with its arguments and context, the event lazy.
    invoke: Persistent<Function<'static>>,
    /// `bareCaller`: the same for a function that cannot see its context.
    invoke_bare: Persistent<Function<'static>>,
    /// The last consent a call saw, as JSON text, and its (frozen) object.
    consent: Option<(String, Persistent<rquickjs::Value<'static>>)>,
    context: Context,
    // Held so that it is dropped last (the context holds it too).
    #[allow(dead_code)]
    runtime: Runtime,
    deadline: Rc<Cell<Option<Instant>>>,
    fired: Rc<Cell<bool>>,
    /// The event of the call in progress, which its lazy event reads: the call's serial and
    /// a pointer to the event, null outside a call.
    current: Rc<Current>,
    serial: f64,
    memory: usize,
    generation: u64,
}

impl Engine {
    fn new(generation: u64, memory: usize) -> Result<Engine, CodeError> {
        let engine_error = |error: rquickjs::Error| CodeError::Engine(error.to_string());
        let runtime = Runtime::new().map_err(engine_error)?;
        let context = Context::custom::<Intrinsics>(&runtime).map_err(engine_error)?;
        // After the context exists: building one under a small limit can fail.
        runtime.set_memory_limit(memory);
        runtime.set_max_stack_size(STACK);
        let deadline: Rc<Cell<Option<Instant>>> = Rc::new(Cell::new(None));
        let fired = Rc::new(Cell::new(false));
        let (watched, flag) = (deadline.clone(), fired.clone());
        runtime.set_interrupt_handler(Some(Box::new(move || match watched.get() {
            Some(until) if Instant::now() >= until => {
                flag.set(true);
                true
            }
            _ => false,
        })));
        let current: Rc<Current> = Rc::new(Cell::new((0.0, None)));
        let (property, freeze, invoke, invoke_bare) = context
            .with(|ctx| -> rquickjs::Result<_> {
                let helpers: rquickjs::Array = ctx.eval(HELPERS)?;
                let property: Function = helpers.get(0)?;
                let make_logger: Function = helpers.get(1)?;
                let freeze: Function = helpers.get(2)?;
                let lazy_event: Function = helpers.get(3)?;
                let (reader, lister) = (current.clone(), current.clone());
                let field = Function::new(
                    ctx.clone(),
                    member_reader(move |ctx, serial, key| {
                        match current_event(&reader, serial).and_then(|event| event.member(&key)) {
                            Some(text) => ctx.json_parse(text.as_bytes().to_vec()),
                            None => Ok(rquickjs::Value::new_undefined(ctx)),
                        }
                    }),
                )?;
                let field_keys = Function::new(ctx.clone(), move |serial: f64| {
                    Some(current_event(&lister, serial)?.keys())
                })?;
                let make_event: Function = lazy_event.call((field, field_keys))?;
                let log = Function::new(ctx.clone(), log_line)?;
                let logger: Object = make_logger.call((log,))?;
                // Shared by every call on this thread: frozen, so no call changes another's.
                let logger: Object = freeze.call((logger,))?;
                let caller: Function = helpers.get(4)?;
                let invoke: Function = caller.call((make_event.clone(), logger))?;
                let bare_caller: Function = helpers.get(5)?;
                let invoke_bare: Function = bare_caller.call((make_event,))?;
                Ok((
                    Persistent::save(&ctx, property),
                    Persistent::save(&ctx, freeze),
                    Persistent::save(&ctx, invoke),
                    Persistent::save(&ctx, invoke_bare),
                ))
            })
            .map_err(engine_error)?;
        Ok(Engine {
            functions: rustc_hash::FxHashMap::default(),
            collector: None,
            property,
            freeze,
            invoke,
            invoke_bare,
            consent: None,
            context,
            runtime,
            deadline,
            fired,
            current,
            serial: 0.0,
            memory,
            generation,
        })
    }

    fn arm(&self) -> Instant {
        let until = Instant::now() + timeout();
        self.fired.set(false);
        self.deadline.set(Some(until));
        until
    }

    fn disarm(&self) {
        self.deadline.set(None);
    }

    /// `code`'s compiled function and its (frozen) mapping, compiled on this engine on first
    /// use.
    fn function(&mut self, code: &Code) -> Result<Compiled, CodeError> {
        if let Some(found) = self.functions.get(&code.0.id) {
            return Ok(found.clone());
        }
        self.arm();
        let (fired, memory) = (&self.fired, self.memory);
        let freeze = self.freeze.clone();
        let compiled = self.context.with(|ctx| {
            stack_from_here(&ctx);
            // The newline keeps a trailing `// comment` from swallowing the parenthesis.
            let value: rquickjs::Value = ctx
                .eval(format!("(\n{}\n)", code.0.source))
                .map_err(|error| failure(&ctx, error, fired, memory))?;
            let Some(function) = value.as_function().cloned() else {
                return Err(CodeError::NotAFunction(describe(&value)));
            };
            let fail = |error| failure(&ctx, error, fired, memory);
            let mapping = ctx
                .json_parse(serde_json::to_string(&code.0.mapping).unwrap_or_else(|_| "null".into()))
                .map_err(fail)?;
            let mapping: rquickjs::Value = freeze.restore(&ctx).map_err(fail)?.call((mapping,)).map_err(fail)?;
            // The source must be that one function as a whole (`v => v, (e, c) => c` is not).
            let text: String = ctx
                .eval::<Function, _>("Function.prototype.toString")
                .and_then(|to_string| to_string.call((rquickjs::function::This(function.clone()),)))
                .unwrap_or_default();
            Ok(Compiled {
                bare: code.0.one_parameter && text.trim() == code.0.source.trim(),
                function: Persistent::save(&ctx, function),
                mapping: Persistent::save(&ctx, mapping),
            })
        });
        self.disarm();
        let compiled = compiled?;
        self.functions.insert(code.0.id, compiled.clone());
        Ok(compiled)
    }

    fn call(&mut self, code: &Code, call: &Call<'_>) -> Result<Returned, CodeError> {
        let Compiled {
            function,
            mapping,
            bare,
        } = self.function(code)?;
        let collector = match &self.collector {
            Some((text, parsed)) if Arc::ptr_eq(text, call.collector) => Some(parsed.clone()),
            _ => None,
        };
        let sees_context = !bare;
        let until = self.arm();
        let (fired, memory) = (&self.fired, self.memory);
        let (property, freeze) = (self.property.clone(), self.freeze.clone());
        let invoke = if sees_context {
            self.invoke.clone()
        } else {
            self.invoke_bare.clone()
        };
        self.serial += 1.0;
        let serial = self.serial;
        // Read by the lazy event's `field` while the call runs; cleared below.
        let event: *const (dyn EventSource + '_) = call.event;
        // SAFETY: only the lifetime bound changes; `current_event` hands the pointer out only
        // while this call runs, and it is cleared before the call returns.
        let event: *const (dyn EventSource + 'static) = unsafe { std::mem::transmute(event) };
        self.current.set((serial, Some(event)));
        let consent_text: std::borrow::Cow<'_, str> = match call.consent {
            _ if !sees_context => "".into(),
            Consent::Json(text) => text.into(),
            Consent::Object(map) => serde_json::to_string(map).unwrap_or_else(|_| "{}".into()).into(),
        };
        let cached_consent = match &self.consent {
            Some((text, parsed)) if *text == *consent_text => Some(parsed.clone()),
            _ => None,
        };
        let result = self.context.with(|ctx| {
            stack_from_here(&ctx);
            let fail = |error| failure(&ctx, error, fired, memory);
            let function = function.restore(&ctx).map_err(fail)?;
            let parse = |value: &dyn erased::Json| ctx.json_parse(value.text()).map_err(fail);
            let undefined = || rquickjs::Value::new_undefined(ctx.clone());
            let (is_event, value) = match call.value {
                Input::Event => (true, undefined()),
                Input::Json(value) if call.event.is(value) => (true, undefined()),
                Input::Json(value) => (false, parse(value)?),
                Input::Undefined => (false, undefined()),
            };
            if !sees_context {
                let returned: rquickjs::Value = invoke
                    .restore(&ctx)
                    .map_err(fail)?
                    .call((function, is_event, value, serial))
                    .map_err(fail)?;
                let returned = conclude(&ctx, returned, call.awaited, until, fired, memory, &property)?;
                return Ok((returned, None, None));
            }
            let (consent, fresh_consent) = match cached_consent {
                Some(parsed) => (parsed.restore(&ctx).map_err(fail)?, None),
                None => {
                    let parsed = ctx.json_parse(consent_text.as_bytes().to_vec()).map_err(fail)?;
                    // Shared by later calls with the same consent: frozen, as the collector is.
                    let parsed: rquickjs::Value = freeze
                        .clone()
                        .restore(&ctx)
                        .map_err(fail)?
                        .call((parsed,))
                        .map_err(fail)?;
                    (parsed.clone(), Some(Persistent::save(&ctx, parsed)))
                }
            };
            let (collector, fresh) = match collector {
                Some(parsed) => (parsed.restore(&ctx).map_err(fail)?, None),
                None => {
                    let parsed = ctx.json_parse(call.collector.as_bytes().to_vec()).map_err(fail)?;
                    let parsed: rquickjs::Value = freeze.restore(&ctx).map_err(fail)?.call((parsed,)).map_err(fail)?;
                    (parsed.clone(), Some(Persistent::save(&ctx, parsed)))
                }
            };
            let mapping = mapping.restore(&ctx).map_err(fail)?;
            let ingest = match call.event.ingest() {
                Some((_, text)) => ctx.json_parse(text).map_err(fail)?,
                None => undefined(),
            };
            // Eight arguments: one more than rquickjs's tuples take.
            let mut args = rquickjs::function::Args::new(ctx.clone(), 8);
            let pushed: rquickjs::Result<()> = (|| {
                args.push_arg(function)?;
                args.push_arg(is_event)?;
                args.push_arg(value)?;
                args.push_arg(serial)?;
                args.push_arg(mapping)?;
                args.push_arg(collector)?;
                args.push_arg(consent)?;
                args.push_arg(ingest)
            })();
            pushed.map_err(fail)?;
            let returned: rquickjs::Value = invoke.restore(&ctx).map_err(fail)?.call_arg(args).map_err(fail)?;
            let returned = conclude(&ctx, returned, call.awaited, until, fired, memory, &property)?;
            Ok((returned, fresh, fresh_consent))
        });
        self.current.set((0.0, None));
        self.disarm();
        let (returned, fresh, fresh_consent) = result?;
        if let Some(parsed) = fresh {
            self.collector = Some((call.collector.clone(), parsed));
        }
        if let Some(parsed) = fresh_consent {
            self.consent = Some((consent_text.into_owned(), parsed));
        }
        Ok(returned)
    }

    /// Calls `code` with plain JSON arguments (no mapping context), awaiting a promise.
    fn apply(&mut self, code: &Code, args: &[&Value]) -> Result<Returned, CodeError> {
        let function = self.function(code)?.function;
        let until = self.arm();
        let (fired, memory) = (&self.fired, self.memory);
        let property = self.property.clone();
        let result = self.context.with(|ctx| {
            stack_from_here(&ctx);
            let fail = |error| failure(&ctx, error, fired, memory);
            let function = function.restore(&ctx).map_err(fail)?;
            let mut values = Vec::with_capacity(args.len());
            for arg in args {
                values.push(
                    ctx.json_parse(serde_json::to_vec(arg).unwrap_or_default())
                        .map_err(fail)?,
                );
            }
            let returned: rquickjs::Value = function.call((Rest(values),)).map_err(fail)?;
            conclude(&ctx, returned, true, until, fired, memory, &property)
        });
        self.disarm();
        result
    }

    fn evaluate(&mut self, source: &str) -> Result<Value, CodeError> {
        self.arm();
        let (fired, memory) = (&self.fired, self.memory);
        let property = self.property.clone();
        let result = self.context.with(|ctx| {
            stack_from_here(&ctx);
            let fail = |error| failure(&ctx, error, fired, memory);
            let value: rquickjs::Value = ctx.eval(format!("(\n{source}\n)")).map_err(fail)?;
            if fired.get() {
                return Err(CodeError::Timeout(timeout()));
            }
            if value.is_function() {
                return Err(CodeError::NotAValue(
                    "a function (functions go in a mapping's fn, condition and validate)".into(),
                ));
            }
            let json: rquickjs::Value = property
                .restore(&ctx)
                .map_err(fail)?
                .call((value.clone(),))
                .map_err(fail)?;
            match json.as_string() {
                Some(text) => serde_json::from_str(&text.to_string().map_err(fail)?)
                    .map_err(|error| CodeError::Engine(error.to_string())),
                None => Err(CodeError::NotAValue(describe(&value))),
            }
        });
        self.disarm();
        result
    }
}

/// What a call returned, settled: its promise awaited when `awaited`, the microtasks it queued
/// run under its time limit, and its value cast as walkerOS's `castToProperty` does.
fn conclude<'js>(
    ctx: &Ctx<'js>,
    mut returned: rquickjs::Value<'js>,
    awaited: bool,
    until: Instant,
    fired: &Cell<bool>,
    memory: usize,
    property: &Persistent<Function<'static>>,
) -> Result<Returned, CodeError> {
    let fail = |error| failure(ctx, error, fired, memory);
    // An interrupt inside a promise executor rejects the promise instead of throwing.
    if fired.get() {
        return Err(CodeError::Timeout(timeout()));
    }
    if awaited && let Some(promise) = returned.as_promise().cloned() {
        returned = settle(ctx, &promise, until, fired, memory)?;
    }
    // A primitive is read directly; anything else goes through the property check and JSON.
    let (truthy, json) = match primitive(&returned) {
        Some(done) => (done.truthy, Err(done.property)),
        None => {
            let truthy = returned.get::<Coerced<bool>>().map(|coerced| coerced.0).map_err(fail)?;
            let json: rquickjs::Value = property
                .clone()
                .restore(ctx)
                .map_err(fail)?
                .call((returned,))
                .map_err(fail)?;
            (truthy, Ok(json))
        }
    };
    // Microtasks the call queued run now, under its limit, not in the next call.
    while ctx.execute_pending_job() {
        if fired.get() {
            break;
        }
    }
    if fired.get() {
        return Err(CodeError::Timeout(timeout()));
    }
    let json = match json {
        Ok(json) => json,
        Err(property) => return Ok(Returned { truthy, property }),
    };
    let property = match json.as_string() {
        Some(text) => {
            let text = text.to_string().map_err(fail)?;
            Some(serde_json::from_str(&text).map_err(|error| CodeError::Engine(error.to_string()))?)
        }
        None => None,
    };
    Ok(Returned { truthy, property })
}

/// walkerOS's `castToProperty` and JavaScript's truthiness of a primitive, read without a
/// round trip through JSON (as `JSON.stringify` then serde_json would give it: integral
/// numbers as integers, infinities as `null`); `None` for objects and the like.
fn primitive(value: &rquickjs::Value<'_>) -> Option<Returned> {
    let (truthy, property) = match value.type_of() {
        rquickjs::Type::Undefined | rquickjs::Type::Uninitialized | rquickjs::Type::Null => (false, None),
        rquickjs::Type::Bool => {
            let bool = value.as_bool()?;
            (bool, Some(Value::Bool(bool)))
        }
        rquickjs::Type::Int => {
            let int = value.as_int()?;
            (int != 0, Some(Value::from(int)))
        }
        rquickjs::Type::Float => {
            let float = value.as_float()?;
            let property = if float.is_nan() {
                None
            } else if float.is_infinite() {
                Some(Value::Null)
            } else if float.fract() == 0.0 && float.abs() < 9.0e18 {
                Some(Value::from(float as i64))
            } else {
                serde_json::Number::from_f64(float).map(Value::Number)
            };
            (float != 0.0 && !float.is_nan(), property)
        }
        rquickjs::Type::String => {
            let text = value.as_string()?.to_string().ok()?;
            (!text.is_empty(), Some(Value::String(text)))
        }
        _ => return None,
    };
    Some(Returned { truthy, property })
}

/// Gives a closure the signature of the lazy event's `field(serial, key)`: the value it
/// returns lives in the context it is called in (a closure cannot say so by itself).
fn member_reader<F>(read: F) -> F
where
    F: for<'js> Fn(Ctx<'js>, f64, String) -> rquickjs::Result<rquickjs::Value<'js>>,
{
    read
}

/// The event of the call with this `serial`, while it runs; `None` for an older call's lazy
/// event (what it had not read yet reads as absent).
fn current_event(current: &Current, serial: f64) -> Option<&dyn EventSource> {
    let (now, event) = current.get();
    if now != serial {
        return None;
    }
    // SAFETY: `Engine::call` points `current` at its `call.event`, which outlives the call,
    // and clears it before returning; this runs inside that call, on its thread.
    event.map(|event| unsafe { &*event })
}

/// Whether the runtime has used (nearly) all the memory it may: what tells QuickJS's own
/// `null` (it could not allocate the error) from code that throws `null`.
fn near_memory_limit(ctx: &Ctx<'_>, memory: usize) -> bool {
    let mut usage = std::mem::MaybeUninit::<rquickjs::qjs::JSMemoryUsage>::zeroed();
    // SAFETY: the context is alive for the whole `with` this runs in, so its runtime pointer
    // is valid; QuickJS fills the whole struct, which starts zeroed anyway.
    let usage = unsafe {
        rquickjs::qjs::JS_ComputeMemoryUsage(rquickjs::qjs::JS_GetRuntime(ctx.as_raw().as_ptr()), usage.as_mut_ptr());
        usage.assume_init()
    };
    usize::try_from(usage.malloc_size).unwrap_or(0) >= memory / 10 * 9
}

/// Measures the stack limit from here: rquickjs measures it from where the runtime was built,
/// which may be deeper than where a later call comes from.
fn stack_from_here(ctx: &Ctx<'_>) {
    // SAFETY: the context is alive for the whole `with`, so its runtime pointer is valid.
    unsafe { rquickjs::qjs::JS_UpdateStackTop(rquickjs::qjs::JS_GetRuntime(ctx.as_raw().as_ptr())) }
}

/// Runs queued jobs until `promise` settles (within the call's limit).
fn settle<'js>(
    ctx: &Ctx<'js>,
    promise: &rquickjs::Promise<'js>,
    until: Instant,
    fired: &Cell<bool>,
    memory: usize,
) -> Result<rquickjs::Value<'js>, CodeError> {
    loop {
        match promise.state() {
            PromiseState::Pending => {
                if fired.get() || Instant::now() >= until {
                    return Err(CodeError::Timeout(timeout()));
                }
                if !ctx.execute_pending_job() {
                    return Err(CodeError::NeverSettles);
                }
            }
            _ => {
                return promise
                    .result::<rquickjs::Value>()
                    .expect("settled")
                    .map_err(|error| failure(ctx, error, fired, memory));
            }
        }
    }
}

/// What an rquickjs error means for the call: the interrupt (time), an allocation past the
/// limit, or a throw with its message.
fn failure(ctx: &Ctx<'_>, error: rquickjs::Error, fired: &Cell<bool>, memory: usize) -> CodeError {
    if !matches!(error, rquickjs::Error::Exception) {
        return if fired.get() {
            CodeError::Timeout(timeout())
        } else {
            CodeError::Engine(error.to_string())
        };
    }
    let thrown = ctx.catch();
    if fired.get() {
        return CodeError::Timeout(timeout());
    }
    if thrown.is_null() && near_memory_limit(ctx, memory) {
        // QuickJS throws null when it cannot even allocate the error (code may `throw null`
        // too: that is a throw like any other).
        return CodeError::OutOfMemory(memory);
    }
    if let Some(exception) = thrown
        .as_object()
        .and_then(|object| Exception::from_object(object.clone()))
    {
        let message = exception.message().unwrap_or_default();
        let name: Option<String> = exception.get("name").ok();
        if name.as_deref() == Some("InternalError") && message == "out of memory" {
            return CodeError::OutOfMemory(memory);
        }
        return CodeError::Thrown(format!("{}: {message}", name.as_deref().unwrap_or("Error")));
    }
    CodeError::Thrown(
        thrown
            .get::<Coerced<String>>()
            .map(|text| text.0)
            .unwrap_or_else(|_| "a value that cannot be printed".into()),
    )
}

/// JSON text of what is handed to a call (a value or a consent map).
mod erased {
    pub trait Json {
        fn text(&self) -> String;
    }
    impl Json for serde_json::Value {
        fn text(&self) -> String {
            serde_json::to_string(self).unwrap_or_else(|_| "null".into())
        }
    }
    impl Json for serde_json::Map<String, serde_json::Value> {
        fn text(&self) -> String {
            serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
        }
    }
}

/// A short description of a value for messages.
fn describe(value: &rquickjs::Value<'_>) -> String {
    let text = value
        .get::<Coerced<String>>()
        .map(|text| text.0)
        .unwrap_or_else(|_| value.type_name().to_owned());
    let text: String = text.chars().take(60).collect();
    format!("{} {text:?}", value.type_name())
}

/// `context.logger`'s host function: a line in weir's log, target `weir::code`.
fn log_line(level: String, scope: String, message: String, context: Option<String>) {
    let context = context.unwrap_or_default();
    match level.as_str() {
        "error" => tracing::error!(target: "weir::code", scope = %scope, context = %context, "{message}"),
        "warn" => tracing::warn!(target: "weir::code", scope = %scope, context = %context, "{message}"),
        "info" => tracing::info!(target: "weir::code", scope = %scope, context = %context, "{message}"),
        _ => tracing::debug!(target: "weir::code", scope = %scope, context = %context, "{message}"),
    }
}

#[cfg(test)]
mod tests;
