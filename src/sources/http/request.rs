//! The request as walkerOS's express source hands it to its `ingest` mapping: Express's `req`
//! (`ip`, `ips`, `method`, `url`, `originalUrl`, `path`, `query`, `protocol`, `secure`,
//! `hostname`, `headers`), built as a JSON tree only for a source that has an `ingest`.
//!
//! Which address is the client's follows Express's `trust proxy` (the `proxy-addr`
//! package): walkerOS never sets it, so `ip` is the peer's address unless
//! `settings.trustProxy` says which hops are proxies. Then weir walks from the peer back
//! through `X-Forwarded-For`, right to left, and the first address that is not a trusted
//! proxy is the client (all trusted: the left-most). A trusted peer's `X-Forwarded-Proto`
//! and `X-Forwarded-Host` give `protocol` and `hostname`. Trusting hops you do not run lets
//! any client choose its own `ip`, so nothing is trusted by default.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use axum::http::request::Parts;
use ipnet::IpNet;
use serde_json::{Map, Value};

use crate::config::{ConfigErrors, join};

/// Which hops in front of weir are proxies whose `X-Forwarded-*` headers it believes.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum TrustProxy {
    /// walkerOS's (and Express's) default: none.
    #[default]
    Nobody,
    /// `true`: every hop (the left-most `X-Forwarded-For` address is the client).
    Everyone,
    /// A number: this many hops, counted from weir.
    Hops(usize),
    /// Addresses and CIDR ranges (with Express's names `loopback`, `linklocal`, `uniquelocal`).
    Networks(Vec<IpNet>),
}

/// Express's named ranges.
fn named(name: &str) -> Option<&'static [&'static str]> {
    match name {
        "loopback" => Some(&["127.0.0.1/8", "::1/128"]),
        "linklocal" => Some(&["169.254.0.0/16", "fe80::/10"]),
        "uniquelocal" => Some(&["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"]),
        _ => None,
    }
}

impl TrustProxy {
    /// `settings.trustProxy`: `true`/`false`, a hop count, or addresses, CIDR ranges and
    /// named ranges as a list or one comma-separated string.
    pub fn parse(value: &Value, path: &str, errors: &mut ConfigErrors) -> TrustProxy {
        let words: Vec<&str> = match value {
            Value::Bool(false) => return TrustProxy::Nobody,
            Value::Bool(true) => return TrustProxy::Everyone,
            Value::Number(number) => match number.as_u64() {
                Some(hops) => return TrustProxy::Hops(hops as usize),
                None => {
                    errors.push(path, "must be a whole number of hops");
                    return TrustProxy::Nobody;
                }
            },
            Value::String(text) => text.split(',').map(str::trim).collect(),
            Value::Array(items) if items.iter().all(Value::is_string) => {
                items.iter().filter_map(Value::as_str).map(str::trim).collect()
            }
            _ => {
                errors.push(
                    path,
                    "must be true, false, a number of hops, or a list of addresses and CIDR ranges",
                );
                return TrustProxy::Nobody;
            }
        };
        let mut networks = Vec::new();
        for word in words {
            let parsed: Option<Vec<IpNet>> = match named(word) {
                Some(ranges) => ranges.iter().map(|range| range.parse().ok()).collect(),
                None => word
                    .parse::<IpNet>()
                    .ok()
                    .or_else(|| word.parse::<IpAddr>().ok().map(IpNet::from))
                    .map(|net| vec![net]),
            };
            match parsed {
                Some(parsed) => networks.extend(parsed),
                None => errors.push(
                    path,
                    format!("\"{word}\" is not an address, a CIDR range or one of loopback, linklocal, uniquelocal"),
                ),
            }
        }
        TrustProxy::Networks(networks)
    }

    /// Whether the hop `hop` (0: the peer) at `address` is a trusted proxy.
    fn trusts(&self, address: &str, hop: usize) -> bool {
        match self {
            TrustProxy::Nobody => false,
            TrustProxy::Everyone => true,
            TrustProxy::Hops(hops) => hop < *hops,
            TrustProxy::Networks(networks) => address
                .parse::<IpAddr>()
                .map(|ip| ip.to_canonical())
                .is_ok_and(|ip| networks.iter().any(|net| net.contains(&ip))),
        }
    }

    /// Express's `req.ip` and `req.ips`: the client's address, and the addresses the
    /// trusted proxies forwarded, client first.
    pub fn addresses(&self, peer: &str, headers: &HeaderMap) -> (String, Vec<String>) {
        // The peer, then X-Forwarded-For right to left.
        let mut hops = vec![peer.to_owned()];
        if *self != TrustProxy::Nobody {
            for value in headers.get_all("x-forwarded-for") {
                // Bytes a client put in do not hide the hops a proxy appended after them.
                let text = String::from_utf8_lossy(value.as_bytes());
                let mut list: Vec<String> = text
                    .split(',')
                    .map(|hop| hop.trim().to_owned())
                    .filter(|hop| !hop.is_empty())
                    .collect();
                list.reverse();
                // Several headers: the later ones were added by hops nearer weir.
                let at = 1;
                hops.splice(at..at, list);
            }
        }
        let mut last = hops.len() - 1;
        for (hop, address) in hops.iter().enumerate().take(hops.len() - 1) {
            if !self.trusts(address, hop) {
                last = hop;
                break;
            }
        }
        hops.truncate(last + 1);
        let ip = hops[last].clone();
        let mut ips: Vec<String> = hops.into_iter().skip(1).collect();
        ips.reverse();
        (ip, ips)
    }
}

/// The first value of a header list (`a, b` → `a`), trimmed.
fn first_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    let text = headers.get(name)?.to_str().ok()?;
    Some(text.split(',').next().unwrap_or_default().trim()).filter(|value| !value.is_empty())
}

/// A host header's name without its port (`[::1]:80` → `[::1]`).
fn without_port(host: &str) -> &str {
    let end = if host.starts_with('[') {
        host.find(']').map_or(host.len(), |at| at + 1)
    } else {
        host.find(':').unwrap_or(host.len())
    };
    &host[..end]
}

/// The request's headers as Node's `req.headers` holds them: lower-case names, a repeated
/// header's values joined with `, ` (`; ` for `cookie`, a list for `set-cookie`).
fn headers_object(headers: &HeaderMap) -> Map<String, Value> {
    let mut out = Map::new();
    for name in headers.keys() {
        let values: Vec<String> = headers
            .get_all(name)
            .iter()
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
            .collect();
        let value = match name.as_str() {
            "set-cookie" => Value::from(values),
            "cookie" => Value::from(values.join("; ")),
            _ => Value::from(values.join(", ")),
        };
        out.insert(name.as_str().to_owned(), value);
    }
    out
}

/// Express 5's `req.query` (its default "simple" parser, Node's `querystring`): each value a
/// string, a repeated key a list.
fn query_object(query: &str) -> Map<String, Value> {
    let mut out = Map::new();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match out.get_mut(key.as_ref()) {
            None => {
                out.insert(key.into_owned(), Value::from(value.into_owned()));
            }
            Some(Value::Array(list)) => list.push(Value::from(value.into_owned())),
            Some(single) => {
                let first = single.take();
                *single = Value::Array(vec![first, Value::from(value.into_owned())]);
            }
        }
    }
    out
}

/// Express's `req` for a request from `peer`.
pub fn request_object(parts: &Parts, peer: Option<SocketAddr>, trust: &TrustProxy) -> Value {
    let headers = &parts.headers;
    let peer_ip = peer
        .map(|peer| peer.ip().to_canonical().to_string())
        .unwrap_or_default();
    let (ip, ips) = trust.addresses(&peer_ip, headers);
    let proxied = trust.trusts(&peer_ip, 0);
    let protocol = match first_value(headers, "x-forwarded-proto") {
        Some(forwarded) if proxied => forwarded.to_owned(),
        // weir's listeners speak plain HTTP.
        _ => "http".to_owned(),
    };
    let host = match first_value(headers, "x-forwarded-host") {
        Some(forwarded) if proxied => Some(forwarded),
        _ => headers.get("host").and_then(|host| host.to_str().ok()),
    };
    let url = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned());
    let mut object = Map::new();
    object.insert("method".into(), Value::from(parts.method.as_str()));
    object.insert("url".into(), Value::from(url.clone()));
    object.insert("originalUrl".into(), Value::from(url));
    object.insert("path".into(), Value::from(parts.uri.path()));
    object.insert(
        "query".into(),
        Value::Object(query_object(parts.uri.query().unwrap_or_default())),
    );
    object.insert("secure".into(), Value::from(protocol == "https"));
    object.insert("protocol".into(), Value::from(protocol));
    if let Some(host) = host {
        object.insert("hostname".into(), Value::from(without_port(host)));
    }
    object.insert("ip".into(), Value::from(ip));
    object.insert("ips".into(), Value::from(ips));
    object.insert("headers".into(), Value::Object(headers_object(headers)));
    Value::Object(object)
}

/// `settings.trustProxy` of the source at `settings_path`, when given.
pub fn trust_proxy(settings: Option<&Value>, settings_path: &str, errors: &mut ConfigErrors) -> TrustProxy {
    settings.map_or(TrustProxy::Nobody, |value| {
        TrustProxy::parse(value, &join(settings_path, "trustProxy"), errors)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderValue, Request};

    fn trust(value: Value) -> TrustProxy {
        let mut errors = ConfigErrors::default();
        let trust = TrustProxy::parse(&value, "settings.trustProxy", &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        trust
    }

    fn forwarded(list: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in list {
            headers.append("x-forwarded-for", HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn the_client_is_the_first_untrusted_hop_from_weir() {
        let headers = forwarded(&["203.0.113.7, 198.51.100.2", "10.0.0.5"]);
        // Nobody trusted (walkerOS's default): the peer, whatever the header says.
        assert_eq!(
            TrustProxy::Nobody.addresses("10.0.0.9", &headers),
            ("10.0.0.9".to_owned(), vec![])
        );
        // The private range trusted: 10.0.0.9 and 10.0.0.5 are proxies, 198.51.100.2 is not.
        let private = trust(Value::from("uniquelocal"));
        assert_eq!(
            private.addresses("10.0.0.9", &headers),
            (
                "198.51.100.2".to_owned(),
                vec!["198.51.100.2".to_owned(), "10.0.0.5".to_owned()]
            )
        );
        // An untrusted peer's header is not believed.
        assert_eq!(private.addresses("192.0.2.1", &headers).0, "192.0.2.1");
        // Two hops: the peer and 10.0.0.5.
        assert_eq!(trust(Value::from(2)).addresses("10.0.0.9", &headers).0, "198.51.100.2");
        // Everyone: the left-most address.
        assert_eq!(
            trust(Value::Bool(true)).addresses("10.0.0.9", &headers).0,
            "203.0.113.7"
        );
        // A single address and a CIDR, as a list.
        let listed = trust(serde_json::json!(["10.0.0.9", "10.0.0.0/29"]));
        assert_eq!(listed.addresses("10.0.0.9", &headers).0, "198.51.100.2");
    }

    #[test]
    fn a_bad_trust_setting_names_the_word() {
        let mut errors = ConfigErrors::default();
        TrustProxy::parse(&Value::from("10.0.0.0/8, office"), "settings.trustProxy", &mut errors);
        let text = errors.to_string();
        assert!(
            text.contains("settings.trustProxy") && text.contains("\"office\""),
            "{text}"
        );
        let mut errors = ConfigErrors::default();
        TrustProxy::parse(&serde_json::json!({"a": 1}), "settings.trustProxy", &mut errors);
        assert!(!errors.is_empty());
    }

    #[test]
    fn the_request_object_has_express_s_fields() {
        let request = Request::post("/collect?utm=a&tag=x&tag=y%20z")
            .header("host", "collect.example.com:8080")
            .header("user-agent", "curl/8")
            .header("x-forwarded-proto", "https")
            .header("accept", "a")
            .header("accept", "b")
            .body(())
            .unwrap();
        let (parts, ()) = request.into_parts();
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let object = request_object(&parts, Some(peer), &TrustProxy::Nobody);
        assert_eq!(
            object,
            serde_json::json!({
                "method": "POST",
                "url": "/collect?utm=a&tag=x&tag=y%20z",
                "originalUrl": "/collect?utm=a&tag=x&tag=y%20z",
                "path": "/collect",
                "query": {"utm": "a", "tag": ["x", "y z"]},
                "secure": false,
                "protocol": "http",
                "hostname": "collect.example.com",
                "ip": "127.0.0.1",
                "ips": [],
                "headers": {
                    "host": "collect.example.com:8080",
                    "user-agent": "curl/8",
                    "x-forwarded-proto": "https",
                    "accept": "a, b"
                }
            })
        );
        // A trusted peer's forwarded protocol counts.
        let object = request_object(&parts, Some(peer), &trust(Value::from("loopback")));
        assert_eq!(
            (&object["protocol"], &object["secure"]),
            (&Value::from("https"), &Value::Bool(true))
        );
        assert_eq!(without_port("[::1]:80"), "[::1]");
    }
}
