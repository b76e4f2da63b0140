//! The path-quality dashboard: a static page served by the controller's API
//! at `/`, and what the controller remembers for it ([`observer`]).
//!
//! The page (`assets/`: HTML, CSS, vanilla JavaScript and a world outline)
//! is compiled into the binary with `include_bytes!`: it loads nothing from
//! anywhere else, and its Content-Security-Policy forbids it to. It holds no
//! data: it asks for the operator's bearer token and reads everything from
//! the JSON API (`/v1/mesh`, `/v1/links/history`), polling every 2 s. See
//! `docs/observability.md` for what it shows and `docs/api.md` for the API.

pub mod observer;

pub use observer::{GoneEdge, HistorySample, LinkHistory, Observer, ObserverLimits};

/// A file of the page: content type and bytes.
pub struct Asset {
    pub content_type: &'static str,
    pub body: &'static [u8],
}

/// The page's files by request path (`/` is the page itself).
pub fn asset(path: &str) -> Option<Asset> {
    let (content_type, body): (&str, &[u8]) = match path {
        "/" | "/index.html" => (
            "text/html; charset=utf-8",
            include_bytes!("assets/index.html"),
        ),
        "/dashboard/app.js" => (
            "text/javascript; charset=utf-8",
            include_bytes!("assets/app.js"),
        ),
        "/dashboard/world.js" => (
            "text/javascript; charset=utf-8",
            include_bytes!("assets/world.js"),
        ),
        "/dashboard/app.css" => ("text/css; charset=utf-8", include_bytes!("assets/app.css")),
        _ => return None,
    };
    Some(Asset { content_type, body })
}

/// Every path [`asset`] serves (for method checks and tests).
pub const ASSET_PATHS: [&str; 5] = [
    "/",
    "/index.html",
    "/dashboard/app.js",
    "/dashboard/world.js",
    "/dashboard/app.css",
];

/// The page may load and fetch only from its own origin, and may not be
/// framed (clickjacking of a page that holds a token); no inline scripts or
/// styles (the script styles what it builds through the DOM).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_served_and_references_only_its_own_origin() {
        for path in ASSET_PATHS {
            let a = asset(path).unwrap_or_else(|| panic!("{path} is not served"));
            assert!(!a.body.is_empty(), "{path}");
            let text = std::str::from_utf8(a.body).expect("assets are UTF-8");
            for external in ["http://", "https://", "//cdn", "fonts.googleapis"] {
                // The page builds its own URLs from location; the only
                // absolute URLs allowed are the SVG namespace's.
                let bad = text
                    .match_indices(external)
                    .filter(|(i, _)| !text[*i..].starts_with("http://www.w3.org/"))
                    .count();
                assert_eq!(bad, 0, "{path} references {external}");
            }
        }
        assert!(asset("/dashboard/").is_none());
        assert!(asset("/dashboard/../Cargo.toml").is_none());
        let page = std::str::from_utf8(asset("/").unwrap().body).unwrap();
        for script in [
            "/dashboard/world.js",
            "/dashboard/app.js",
            "/dashboard/app.css",
        ] {
            assert!(page.contains(script), "the page loads {script}");
        }
    }
}
