//! CORS exactly as walkerOS's express source answers it, which is the behaviour of the npm
//! `cors` middleware it installs (`@walkeros/server-source-express`): with `cors: true` every response carries
//! `Access-Control-Allow-Origin: *` and every `OPTIONS` request, on any path, is answered
//! 204 with the methods `GET,HEAD,PUT,PATCH,POST,DELETE` and the requested headers echoed.
//! Written by hand because `tower-http`'s CORS layer differs on the wire (which requests
//! count as preflights, `Vary` values, method list) and wire compatibility is the point.

use axum::http::{HeaderMap, HeaderValue, header};
use serde::Deserialize;

/// `cors` options, as the npm `cors` package reads them.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CorsOptions {
    pub origin: Option<Origins>,
    pub methods: Option<Vec<String>>,
    /// Allowed request headers (`allowedHeaders` is accepted as the npm package's own name).
    #[serde(alias = "allowedHeaders")]
    pub headers: Option<Vec<String>>,
    pub exposed_headers: Option<Vec<String>>,
    pub credentials: Option<bool>,
    pub max_age: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Origins {
    One(String),
    List(Vec<String>),
}

/// The CORS policy of one HTTP source.
#[derive(Debug, Clone)]
pub enum Cors {
    Off,
    On(CorsOptions),
}

const DEFAULT_METHODS: &str = "GET,HEAD,PUT,PATCH,POST,DELETE";

impl Cors {
    /// Whether responses depend on the request's `Origin` (an origin list is reflected).
    pub fn needs_request_origin(&self) -> bool {
        matches!(
            self,
            Cors::On(CorsOptions {
                origin: Some(Origins::List(_)),
                ..
            })
        )
    }

    pub fn is_on(&self) -> bool {
        matches!(self, Cors::On(_))
    }

    /// Origin headers for a response to a request from `origin`.
    fn origin_headers(options: &CorsOptions, origin: Option<&HeaderValue>, out: &mut HeaderMap) {
        match &options.origin {
            None => {
                out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
            }
            Some(Origins::One(origin)) if origin == "*" => {
                out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
            }
            Some(Origins::One(origin)) => {
                if let Ok(value) = HeaderValue::from_str(origin) {
                    out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
                }
                out.append(header::VARY, HeaderValue::from_static("Origin"));
            }
            Some(Origins::List(allowed)) => {
                if let Some(requested) = origin
                    && allowed.iter().any(|o| o == "*" || requested.as_bytes() == o.as_bytes())
                {
                    out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, requested.clone());
                }
                out.append(header::VARY, HeaderValue::from_static("Origin"));
            }
        }
        if options.credentials == Some(true) {
            out.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
    }

    /// Headers added to every non-preflight response.
    pub fn response_headers(&self, origin: Option<&HeaderValue>, out: &mut HeaderMap) {
        let Cors::On(options) = self else { return };
        Self::origin_headers(options, origin, out);
        if let Some(exposed) = &options.exposed_headers
            && let Ok(value) = HeaderValue::from_str(&exposed.join(","))
        {
            out.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, value);
        }
    }

    /// Headers of the 204 answer to an `OPTIONS` request.
    pub fn preflight_headers(&self, request: &HeaderMap, out: &mut HeaderMap) {
        let Cors::On(options) = self else { return };
        Self::origin_headers(options, request.get(header::ORIGIN), out);
        let methods = options
            .methods
            .as_ref()
            .map_or_else(|| DEFAULT_METHODS.to_owned(), |m| m.join(","));
        if let Ok(value) = HeaderValue::from_str(&methods) {
            out.insert(header::ACCESS_CONTROL_ALLOW_METHODS, value);
        }
        match &options.headers {
            Some(allowed) => {
                if let Ok(value) = HeaderValue::from_str(&allowed.join(",")) {
                    out.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, value);
                }
            }
            None => {
                out.append(header::VARY, HeaderValue::from_static("Access-Control-Request-Headers"));
                if let Some(requested) = request.get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
                    out.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, requested.clone());
                }
            }
        }
        if let Some(max_age) = options.max_age {
            out.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from(max_age));
        }
    }
}
