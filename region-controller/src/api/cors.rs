//! Cross-origin access to the public nearest-edge lookup, for web pages
//! (the browser SDK asks the controller from the app's page).
//!
//! Only `GET /v1/edges/nearest` is offered cross-origin, and only to the
//! origins in `api.cors_origins` (exact `scheme://host[:port]`, compared
//! case-insensitively; `*` allows any page and must be written out: there
//! is no wildcard by default). A request whose `Origin` is not allowed is
//! answered 403 `origin_not_allowed` without CORS headers, so the browser
//! reports a CORS failure and the page learns nothing; requests without an
//! `Origin` (native SDKs, curl) are not affected. Operator endpoints never
//! carry CORS headers: the dashboard is served from the controller's own
//! origin.

use hyper::header::{HeaderValue, ORIGIN, VARY};
use hyper::{Request, Response, StatusCode};

use super::ApiError;

/// How long a browser may cache a preflight answer.
const PREFLIGHT_MAX_AGE_S: &str = "600";

/// The allowed origins.
#[derive(Clone, Debug, Default)]
pub struct CorsPolicy {
    origins: Vec<String>,
    any: bool,
}

/// What to do with a cross-origin request.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No `Origin` header: not a cross-origin browser request.
    NotCors,
    /// Allowed: answer with `Access-Control-Allow-Origin: <origin>`.
    Allowed(String),
    Refused(String),
}

impl CorsPolicy {
    pub fn new(origins: &[String]) -> Result<CorsPolicy, String> {
        let mut policy = CorsPolicy::default();
        for o in origins {
            let o = o.trim().trim_end_matches('/').to_ascii_lowercase();
            if o == "*" {
                policy.any = true;
                continue;
            }
            let rest = o
                .strip_prefix("https://")
                .or_else(|| o.strip_prefix("http://"))
                .ok_or_else(|| {
                    format!("api.cors_origins: {o:?} is not an origin (scheme://host[:port])")
                })?;
            if rest.is_empty() || rest.contains('/') {
                return Err(format!(
                    "api.cors_origins: {o:?} is not an origin (scheme://host[:port], no path)"
                ));
            }
            policy.origins.push(o);
        }
        Ok(policy)
    }

    pub fn verdict<B>(&self, req: &Request<B>) -> Verdict {
        let Some(origin) = req.headers().get(ORIGIN) else {
            return Verdict::NotCors;
        };
        let origin = String::from_utf8_lossy(origin.as_bytes()).into_owned();
        let lower = origin.to_ascii_lowercase();
        if self.any || self.origins.contains(&lower) {
            Verdict::Allowed(origin)
        } else {
            Verdict::Refused(origin)
        }
    }

    /// The answer to a preflight (`OPTIONS`) of the lookup.
    pub fn preflight<B>(
        &self,
        req: &Request<B>,
    ) -> Result<Response<http_body_util::Full<bytes::Bytes>>, ApiError> {
        match self.verdict(req) {
            Verdict::Allowed(origin) => {
                let mut resp = Response::builder()
                    .status(StatusCode::NO_CONTENT)
                    .header("access-control-allow-methods", "GET")
                    .header("access-control-max-age", PREFLIGHT_MAX_AGE_S)
                    .body(Default::default())
                    .unwrap_or_default();
                allow(&mut resp, &origin);
                Ok(resp)
            }
            Verdict::Refused(origin) => Err(refused(&origin)),
            Verdict::NotCors => Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "use GET (OPTIONS is a CORS preflight and needs an Origin)",
            )),
        }
    }
}

/// Mark `resp` readable by `origin`.
pub fn allow<B>(resp: &mut Response<B>, origin: &str) {
    if let Ok(v) = HeaderValue::from_str(origin) {
        resp.headers_mut().insert("access-control-allow-origin", v);
        resp.headers_mut()
            .insert(VARY, HeaderValue::from_static("Origin"));
    }
}

pub fn refused(origin: &str) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "origin_not_allowed",
        format!("origin {origin:?} is not in api.cors_origins"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(origin: Option<&str>) -> Request<()> {
        let mut b = Request::get("/v1/edges/nearest");
        if let Some(o) = origin {
            b = b.header(ORIGIN, o);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn only_listed_origins_are_allowed() {
        let p = CorsPolicy::new(&[
            "https://App.example.com/".into(),
            "http://127.0.0.1:8000".into(),
        ])
        .unwrap();
        assert_eq!(p.verdict(&req(None)), Verdict::NotCors);
        assert_eq!(
            p.verdict(&req(Some("https://app.example.com"))),
            Verdict::Allowed("https://app.example.com".into())
        );
        assert!(matches!(
            p.verdict(&req(Some("http://127.0.0.1:8000"))),
            Verdict::Allowed(_)
        ));
        for other in ["https://evil.example", "http://app.example.com", "null"] {
            assert!(
                matches!(p.verdict(&req(Some(other))), Verdict::Refused(_)),
                "{other}"
            );
        }
        // Nothing by default.
        let none = CorsPolicy::new(&[]).unwrap();
        assert!(matches!(
            none.verdict(&req(Some("https://app.example.com"))),
            Verdict::Refused(_)
        ));
        let any = CorsPolicy::new(&["*".into()]).unwrap();
        assert!(matches!(
            any.verdict(&req(Some("https://x.example"))),
            Verdict::Allowed(_)
        ));
    }

    #[test]
    fn bad_origins_are_refused_at_start() {
        for bad in [
            "app.example.com",
            "https://app.example.com/path",
            "ftp://x",
            "https://",
        ] {
            assert!(CorsPolicy::new(&[bad.into()]).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_preflight_allows_get_for_a_listed_origin_only() {
        let p = CorsPolicy::new(&["https://app.example.com".into()]).unwrap();
        let ok = p.preflight(&req(Some("https://app.example.com"))).unwrap();
        assert_eq!(ok.status(), StatusCode::NO_CONTENT);
        assert_eq!(
            ok.headers()["access-control-allow-origin"],
            "https://app.example.com"
        );
        assert_eq!(ok.headers()["access-control-allow-methods"], "GET");
        let no = p.preflight(&req(Some("https://evil.example"))).unwrap_err();
        assert_eq!(no.code, "origin_not_allowed");
    }
}
