//! The engine against walkerOS's result rules and the sandbox's limits.

use super::*;
use serde_json::json;

fn compile(source: &str) -> Code {
    Code::compile(source, json!({"fn": format!("$code:{source}")})).unwrap()
}

fn collector() -> Arc<str> {
    Arc::from(r#"{"consent":{"functional":true},"globals":{"env":"test"}}"#)
}

fn call_with(source: &str, value: &Value, awaited: bool) -> Result<Returned, CodeError> {
    let collector = collector();
    let consent = json!({"functional": true});
    compile(source).call(&Call {
        value: Input::Json(value),
        event: value,
        consent: Consent::Object(consent.as_object().unwrap()),
        collector: &collector,
        awaited,
    })
}

fn call(source: &str, value: &Value) -> Result<Returned, CodeError> {
    call_with(source, value, true)
}

fn property(source: &str) -> Option<Value> {
    call(source, &json!({"name": "page view", "data": {"id": "a"}}))
        .unwrap()
        .property
}

#[test]
fn values_come_back_as_json() {
    let event = json!({"name": "order complete", "data": {"id": "o-1", "total": 5}});
    let returned = call("(value) => value.data.id.toUpperCase()", &event).unwrap();
    assert_eq!(returned.property, Some(json!("O-1")));
    assert!(returned.truthy);
    assert_eq!(
        property("(v) => ({n: 1, s: 'x', b: false, list: [1, 'a'], deep: {x: {y: 2}}})"),
        Some(json!({"n": 1, "s": "x", "b": false, "list": [1, "a"], "deep": {"x": {"y": 2}}}))
    );
    assert_eq!(property("() => 0"), Some(json!(0)));
    assert!(!call("() => 0", &json!({})).unwrap().truthy);
}

/// walkerOS's `castToProperty`: undefined, null (anywhere), NaN, a Date, a Map, a function
/// are not properties; `undefined` nested is (an array hole is JSON null, a key is left out).
#[test]
fn what_is_not_a_property_comes_back_as_none() {
    for source in [
        "() => undefined",
        "() => null",
        "() => NaN",
        "() => new Date(0)",
        "() => new Map()",
        "() => (x) => x",
        "() => ({a: null})",
        "() => [1, null]",
        "() => ({a: {b: [NaN]}})",
        "() => Symbol('s')",
    ] {
        assert_eq!(property(source), None, "{source}");
    }
    assert_eq!(property("() => [1, undefined]"), Some(json!([1, null])));
    assert_eq!(property("() => ({a: 1, b: undefined})"), Some(json!({"a": 1})));
    assert_eq!(property("() => Object.create(null)"), Some(json!({})));
}

#[test]
fn throws_report_their_message() {
    assert_eq!(
        call("() => { throw new TypeError('no id') }", &json!({})),
        Err(CodeError::Thrown("TypeError: no id".into()))
    );
    assert_eq!(
        call("() => { throw 'plain' }", &json!({})),
        Err(CodeError::Thrown("plain".into()))
    );
    // `throw null` is a throw, not the engine running out of memory.
    assert_eq!(
        call("() => { throw null }", &json!({})),
        Err(CodeError::Thrown("null".into()))
    );
    // A missing path throws as in JavaScript.
    assert!(matches!(
        call("(v) => v.data.missing.deeper", &json!({"data": {}})),
        Err(CodeError::Thrown(message)) if message.starts_with("TypeError")
    ));
}

#[test]
fn promises_are_awaited_at_value_level_and_truthy_at_rule_level() {
    let event = json!({"data": {"id": "p"}});
    let awaited = call("async (v) => v.data.id + '!'", &event).unwrap();
    assert_eq!(awaited.property, Some(json!("p!")));
    let chained = call("(v) => Promise.resolve(1).then((n) => n + 1)", &event).unwrap();
    assert_eq!(chained.property, Some(json!(2)));
    assert_eq!(
        call("async () => { throw new Error('late') }", &event),
        Err(CodeError::Thrown("Error: late".into()))
    );
    // Not awaited: a promise object, truthy, not a property (walkerOS's rule conditions).
    let rule_level = call_with("async () => false", &event, false).unwrap();
    assert!(rule_level.truthy);
    assert_eq!(rule_level.property, None);
    assert_eq!(
        call("() => new Promise(() => {})", &event),
        Err(CodeError::NeverSettles)
    );
}

#[test]
fn the_context_has_walkeros_keys() {
    let event = json!({"name": "page view", "consent": {"functional": true}});
    let item = json!({"id": "i"});
    let collector = collector();
    let code = Code::compile(
        "(value, context) => [value.id, context.event.name, context.mapping.key, context.collector.globals.env, context.consent.functional, typeof context.logger.info]",
        json!({"key": "data.id"}),
    )
    .unwrap();
    let returned = code
        .call(&Call {
            value: Input::Json(&item),
            event: &event,
            consent: Consent::Object(json!({"functional": true}).as_object().unwrap()),
            collector: &collector,
            awaited: true,
        })
        .unwrap();
    assert_eq!(
        returned.property,
        Some(json!(["i", "page view", "data.id", "test", true, "function"]))
    );
    // The logger writes and returns; `throw` throws.
    assert_eq!(
        property("(v, c) => { c.logger.info('hello', {a: 1}); c.logger.scope('x').warn('w'); return 1 }"),
        Some(json!(1))
    );
    assert_eq!(
        call("(v, c) => c.logger.throw('stop')", &json!({})),
        Err(CodeError::Thrown("Error: stop".into()))
    );
}

#[test]
fn compiling_reports_syntax_errors_and_non_functions() {
    assert!(matches!(
        Code::compile("(v) => v.", json!({})),
        Err(CodeError::Thrown(message)) if message.starts_with("SyntaxError")
    ));
    assert!(matches!(
        Code::compile("'text'", json!({})),
        Err(CodeError::NotAFunction(_))
    ));
    // A trailing line comment does not swallow the wrapping.
    assert!(Code::compile("(v) => v // done", json!({})).is_ok());
}

#[test]
fn code_values_evaluate_once_to_json() {
    assert_eq!(evaluate("1 + 2", Limits::default()), Ok(json!(3)));
    assert_eq!(
        evaluate("['a', 'b'].map((s) => s.toUpperCase())", Limits::default()),
        Ok(json!(["A", "B"]))
    );
    assert!(evaluate("(v) => v", Limits::default()).is_err());
    assert!(evaluate("null", Limits::default()).is_err());
}

/// The sandbox: no host access exists, and a call past a limit fails alone; the next call on
/// the same thread works.
#[test]
fn the_sandbox_holds() {
    let event = json!({});
    for source in [
        "() => require('fs')",
        "() => fetch('http://127.0.0.1:1/')",
        "() => process.exit(1)",
        "() => import('fs')",
        "() => std.loadFile('/etc/passwd')",
    ] {
        let result = call(source, &event);
        assert!(matches!(&result, Err(CodeError::Thrown(_))), "{source}: {result:?}");
    }

    // A global left by one call is seen by the next on this thread...
    assert_eq!(property("() => { globalThis.marker = 1; return 1 }"), Some(json!(1)));
    assert_eq!(property("() => typeof globalThis.marker"), Some(json!("number")));
    let started = Instant::now();
    assert_eq!(
        call("() => { while (true) {} }", &event),
        Err(CodeError::Timeout(DEFAULT_TIMEOUT))
    );
    // ... but not after a call broke a limit: the runtime was rebuilt.
    assert_eq!(property("() => typeof globalThis.marker"), Some(json!("undefined")));
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    // try/catch cannot swallow the interrupt.
    assert_eq!(
        call("() => { for (;;) { try { while (true) {} } catch (e) {} } }", &event),
        Err(CodeError::Timeout(DEFAULT_TIMEOUT))
    );
    assert_eq!(property("() => 'after the loop'"), Some(json!("after the loop")));
    // A loop inside a promise executor turns into a rejection, not a throw: still a timeout,
    // awaited or not.
    assert_eq!(
        call("() => new Promise(() => { for (;;) {} })", &event),
        Err(CodeError::Timeout(DEFAULT_TIMEOUT))
    );
    assert_eq!(
        call_with("() => new Promise(() => { for (;;) {} })", &event, false),
        Err(CodeError::Timeout(DEFAULT_TIMEOUT))
    );
    assert_eq!(
        call(
            "() => { queueMicrotask(function again() { queueMicrotask(again) }); return 1 }",
            &event
        ),
        Err(CodeError::Timeout(DEFAULT_TIMEOUT))
    );
    // What every call shares is frozen.
    assert!(matches!(
        call("(v, c) => { c.logger.info = null; return 1 }", &event),
        Err(CodeError::Thrown(message)) if message.starts_with("TypeError")
    ));
    assert!(matches!(
        call("(v, c) => { c.collector.globals.env = 'changed'; return 1 }", &event),
        Err(CodeError::Thrown(message)) if message.starts_with("TypeError")
    ));

    let huge = call(
        "() => { const a = []; for (;;) a.push(new Array(1e6).fill(1)); }",
        &event,
    );
    assert_eq!(huge, Err(CodeError::OutOfMemory(DEFAULT_MEMORY)));
    let single = call("() => 'x'.repeat(10 * 1024 * 1024 * 1024)", &event);
    assert!(
        matches!(single, Err(CodeError::OutOfMemory(_) | CodeError::Thrown(_))),
        "{single:?}"
    );
    assert_eq!(
        property("() => 'after the allocation'"),
        Some(json!("after the allocation"))
    );

    let deep = call("() => { const f = (n) => f(n + 1) + 1; return f(0); }", &event);
    assert!(
        matches!(&deep, Err(CodeError::Thrown(message)) if message.contains("RangeError") || message.contains("InternalError")),
        "{deep:?}"
    );
    assert_eq!(
        property("() => 'after the recursion'"),
        Some(json!("after the recursion"))
    );
}

/// The event is read lazily (a member is parsed when first touched), yet behaves as the plain
/// object walkerOS passes: keys in the event's order, writes, deletes, `in`, JSON.stringify,
/// the same object as `context.event`, and returned whole.
#[test]
fn the_lazy_event_behaves_as_the_plain_object() {
    let event = json!({"name": "page view", "data": {"title": "Home", "n": 1}, "user": {"id": "u"}, "consent": {}});
    let text = |source: &str| call(source, &event).unwrap().property;
    assert_eq!(text("(e) => JSON.stringify(e)"), Some(json!(event.to_string())));
    assert_eq!(
        text("(e) => Object.keys(e).join()"),
        Some(json!("name,data,user,consent"))
    );
    assert_eq!(
        text("(e) => { e.data.x = 1; delete e.user; e.extra = 2; e.name = 'n'; return JSON.stringify(e) }"),
        Some(json!(
            r#"{"name":"n","data":{"title":"Home","n":1,"x":1},"consent":{},"extra":2}"#
        ))
    );
    assert_eq!(
        text("(e) => ['data' in e, 'nope' in e, e.nope === undefined, e.hasOwnProperty('user')].join()"),
        Some(json!("true,false,true,true"))
    );
    assert_eq!(
        text("(e, c) => c.event === e && c.event.data === e.data"),
        Some(json!(true))
    );
    assert_eq!(text("(e) => e"), Some(event.clone()));
    assert_eq!(text("(e) => ({...e}).data.title"), Some(json!("Home")));
    assert_eq!(text("(e) => Object.entries(e).length"), Some(json!(4)));
    // A member named `__proto__` is a member, as JSON.parse makes it.
    let odd = json!({"name": "a b", "__proto__": {"x": 1}});
    let returned = call(
        "(e) => [Object.keys(e).join(), e.__proto__.x, Object.getPrototypeOf(e) === Object.prototype].join('|')",
        &odd,
    );
    assert_eq!(returned.unwrap().property, Some(json!("name,__proto__|1|true")));
    // weir's bookkeeping is not part of the event.
    assert_eq!(
        text("(e) => [Object.getOwnPropertySymbols(e).length, Reflect.ownKeys(e).length].join()"),
        Some(json!("0,4"))
    );
    assert_eq!(
        text("(e) => Object.isFrozen(Object.freeze(e)) && e.data.title"),
        Some(json!("Home"))
    );
    // Frozen after one member was read: the keys stay in the event's order.
    assert_eq!(
        text(
            "(e) => { e.user; Object.freeze(e); return [Object.keys(e).join(), Object.getOwnPropertySymbols(e).length].join('|') }"
        ),
        Some(json!("name,data,user,consent|0"))
    );
    // A write to a frozen event fails with a TypeError and changes nothing (QuickJS throws
    // when a proxy refuses a write, in sloppy code too, where a plain object would ignore it).
    for strict in ["", "'use strict'; "] {
        assert_eq!(
            text(&format!(
                "(e) => {{ {strict}Object.freeze(e); try {{ e.name = 'x'; return 'wrote' }} catch (error) {{ return (error instanceof TypeError) + e.name }} }}"
            )),
            Some(json!("truepage view")),
            "{strict}"
        );
    }
    // A setter some code left on Object.prototype neither hides a member nor sees weir's
    // bookkeeping.
    call(
        "() => { Object.defineProperty(Object.prototype, 'data', { configurable: true, get() { return 'proto' }, set(v) { globalThis.seen = Object.getOwnPropertySymbols(this).length } }); return 1 }",
        &event,
    )
    .unwrap();
    assert_eq!(
        text("(e) => [e.data.title, globalThis.seen === undefined].join()"),
        Some(json!("Home,true"))
    );
    call("() => { delete Object.prototype.data; return 1 }", &event).unwrap();
    // A member deleted before it was read stays deleted, and is not listed.
    assert_eq!(
        text("(e) => { delete e.data; return [e.data === undefined, 'data' in e, Object.keys(e).join()].join('|') }"),
        Some(json!("true|false|name,user,consent"))
    );
    // Deleted after listing, then set again: it is the new value, at the end.
    assert_eq!(
        text("(e) => { Object.keys(e); delete e.name; e.name = 'x'; return Object.keys(e).join() + '|' + e.name }"),
        Some(json!("data,user,consent,name|x"))
    );
    // A value that is not the event (a loop item) is a plain copy.
    let collector = collector();
    let item = json!({"entity": "product"});
    let returned = compile("(item, c) => item.entity + '/' + c.event.name")
        .call(&Call {
            value: Input::Json(&item),
            event: &event,
            consent: Consent::Object(event["consent"].as_object().unwrap()),
            collector: &collector,
            awaited: true,
        })
        .unwrap();
    assert_eq!(returned.property, Some(json!("product/page view")));
    // An event kept past its call reads what it had read; the rest is gone.
    call("(e) => { globalThis.kept = e; return e.name }", &event).unwrap();
    assert_eq!(
        text("() => [globalThis.kept.name, globalThis.kept.data].join('|')"),
        Some(json!("page view|"))
    );
}

/// Primitives come back without a trip through JSON, as JSON would have given them.
#[test]
fn primitives_come_back_as_json_gives_them() {
    for (source, expected, truthy) in [
        ("() => 1.5", Some(json!(1.5)), true),
        ("() => 2 ** 60", Some(json!(1_152_921_504_606_846_976u64)), true),
        ("() => 1e21", Some(json!(1e21)), true),
        ("() => -0", Some(json!(0)), false),
        ("() => -3", Some(json!(-3)), true),
        ("() => 7 / 1", Some(json!(7)), true),
        ("() => Infinity", Some(Value::Null), true),
        ("() => NaN", None, false),
        ("() => ''", Some(json!("")), false),
        ("() => 'é\\u2028'", Some(json!("é\u{2028}")), true),
        ("() => false", Some(json!(false)), false),
        ("() => null", None, false),
        ("() => undefined", None, false),
    ] {
        let returned = call(source, &json!({})).unwrap();
        assert_eq!(returned.property, expected, "{source}");
        assert_eq!(returned.truthy, truthy, "{source}");
    }
}

#[test]
fn only_a_one_parameter_arrow_is_called_without_its_context() {
    for bare in [
        "() => 1",
        "v => v",
        " (value) => value.x",
        "async (e) => e",
        "async e => e",
        "$ => $",
        "async => 1",
    ] {
        assert!(takes_one_parameter(bare), "{bare}");
    }
    for seeing in [
        "(v, c) => c",
        "(v, ...rest) => rest[0]",
        "(v, c = 1) => c",
        "({data}) => data",
        "function (v) { return arguments[1] }",
        "async function (v) { return 1 }",
        "(v /* c */) => v",
    ] {
        assert!(!takes_one_parameter(seeing), "{seeing}");
    }
    // Each form that can reach the context gets it.
    let event = json!({"name": "page view"});
    for source in [
        "(v, ...rest) => rest[0].event.name",
        "(v, c = 1) => c.event.name",
        "function (v) { return arguments[1].event.name }",
        // Starts like a one-parameter arrow, but the function is the second one.
        "v => v, (e, c) => c.event.name",
    ] {
        assert_eq!(
            call(source, &event).unwrap().property,
            Some(json!("page view")),
            "{source}"
        );
    }
    assert_eq!(
        call("(e) => e.name", &event).unwrap().property,
        Some(json!("page view"))
    );
}
