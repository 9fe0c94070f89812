//! Cross-origin access: the CORS headers of a response and the answer to an `OPTIONS`
//! preflight, from `--allow-origin`.
//!
//! - Default (`*`): every origin may read public streams and publish, with
//!   `Access-Control-Allow-Origin: *` and never credentials (a browser then sends no cookies
//!   cross-origin; a page can still use the `access_token` parameter or a header).
//! - A list of exact origins (`https://app.example.com`): a request whose `Origin` is in the list
//!   gets that origin back with `Access-Control-Allow-Credentials: true`, so
//!   `new EventSource(url, {withCredentials: true})` carries the token cookie; any other origin
//!   gets no `Access-Control-Allow-Origin` and its browser withholds the response. Answers carry
//!   `Vary: Origin` so caches keep them apart.
//!
//! Credentials are never combined with `*`, and `null` (the origin of sandboxed frames and
//! `file:` pages) is never allowed: anyone can produce it.

use std::fmt;

/// How long a browser may cache a preflight answer, in seconds.
pub const PREFLIGHT_MAX_AGE_SECS: u32 = 600;

/// Request headers a cross-origin page may send (`Last-Event-ID` for a manual resume,
/// `Authorization` for a bearer token, `Content-Type` for a publish).
pub const ALLOWED_REQUEST_HEADERS: &str = "Authorization, Content-Type, Last-Event-ID";

/// Which origins may read our answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsPolicy {
    /// `*`: any origin, without credentials.
    AnyOrigin,
    /// Exactly these origins (`scheme://host[:port]`, lower-case), with credentials.
    Origins(Vec<String>),
}

/// An `--allow-origin` value that is not an origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginError(pub String);

impl fmt::Display for OriginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for OriginError {}

/// Which endpoint a preflight asks about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/` and `/events`: `GET`, `HEAD`.
    Stream,
    /// `/publish`: `POST`.
    Publish,
}

impl Endpoint {
    /// The methods a cross-origin page may use on it.
    pub fn methods(self) -> &'static str {
        match self {
            Endpoint::Stream => "GET, HEAD",
            Endpoint::Publish => "POST",
        }
    }
}

impl CorsPolicy {
    /// Builds the policy from the `--allow-origin` values: none or `*` alone is
    /// [`CorsPolicy::AnyOrigin`]; otherwise each must be `http(s)://host[:port]` without path,
    /// query, trailing slash or credentials, and `*` may not be mixed with origins.
    pub fn new<S: AsRef<str>>(origins: &[S]) -> Result<CorsPolicy, OriginError> {
        let origins: Vec<&str> = origins.iter().map(|o| o.as_ref().trim()).collect();
        match origins.as_slice() {
            [] | ["*"] => return Ok(CorsPolicy::AnyOrigin),
            _ if origins.contains(&"*") => {
                return Err(OriginError(
                    "--allow-origin: `*` cannot be combined with a list of origins".into(),
                ));
            }
            _ => {}
        }
        let mut list = Vec::with_capacity(origins.len());
        for o in origins {
            list.push(checked_origin(o)?);
        }
        Ok(CorsPolicy::Origins(list))
    }

    /// The CORS header lines (`Name: value`, no CRLF) for an answer to a request that sent
    /// `origin` (its `Origin` header, if any).
    pub fn response_headers(&self, origin: Option<&[u8]>) -> Vec<String> {
        match self {
            CorsPolicy::AnyOrigin => vec!["Access-Control-Allow-Origin: *".to_owned()],
            CorsPolicy::Origins(list) => {
                let mut headers = Vec::with_capacity(3);
                if let Some(allowed) = origin.and_then(|o| self::find(list, o)) {
                    headers.push(format!("Access-Control-Allow-Origin: {allowed}"));
                    headers.push("Access-Control-Allow-Credentials: true".to_owned());
                }
                headers.push("Vary: Origin".to_owned());
                headers
            }
        }
    }

    /// The header lines of the `204 No Content` answer to an `OPTIONS` preflight for
    /// `endpoint`. An origin that is not allowed gets no `Access-Control-Allow-*` at all, which
    /// the browser reads as a refusal.
    pub fn preflight_headers(&self, origin: Option<&[u8]>, endpoint: Endpoint) -> Vec<String> {
        let mut headers = self.response_headers(origin);
        if headers
            .iter()
            .any(|h| h.starts_with("Access-Control-Allow-Origin:"))
        {
            headers.push(format!(
                "Access-Control-Allow-Methods: {}",
                endpoint.methods()
            ));
            headers.push(format!(
                "Access-Control-Allow-Headers: {ALLOWED_REQUEST_HEADERS}"
            ));
            headers.push(format!("Access-Control-Max-Age: {PREFLIGHT_MAX_AGE_SECS}"));
        }
        headers
    }

    /// Whether cookies can reach us cross-origin under this policy.
    pub fn allows_credentials(&self) -> bool {
        matches!(self, CorsPolicy::Origins(_))
    }
}

/// The configured origin equal to `origin` (ASCII case-insensitively: scheme and host are).
fn find<'a>(list: &'a [String], origin: &[u8]) -> Option<&'a str> {
    list.iter()
        .find(|o| o.as_bytes().eq_ignore_ascii_case(origin))
        .map(String::as_str)
}

/// Checks one `--allow-origin` value and lower-cases it.
fn checked_origin(o: &str) -> Result<String, OriginError> {
    let bad = |why: &str| {
        Err(OriginError(format!(
            "--allow-origin {o:?}: {why} (expected e.g. https://app.example.com or http://localhost:8080)"
        )))
    };
    if o.eq_ignore_ascii_case("null") {
        return bad("`null` is the origin of sandboxed and file: pages, which anyone can produce");
    }
    let Some((scheme, rest)) = o.split_once("://") else {
        return bad("no scheme");
    };
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return bad("the scheme must be http or https");
    }
    if rest.is_empty() {
        return bad("no host");
    }
    if rest.contains(['/', '?', '#', '@']) {
        return bad("an origin has no path, query, fragment or user");
    }
    let host_ok = rest
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']' | b'_'));
    if !host_ok {
        return bad("unexpected character in the host");
    }
    // An IPv6 literal is bracketed; the port, if any, follows the host after one colon.
    let port = match rest.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((_, "")) => None,
            Some((_, after)) => match after.strip_prefix(':') {
                Some(port) => Some(port),
                None => return bad("unexpected character after the IPv6 address"),
            },
            None => return bad("unclosed IPv6 address"),
        },
        None => rest.split_once(':').map(|(_, port)| port),
    };
    if port.is_some_and(|p| p.is_empty() || p.parse::<u16>().is_err()) {
        return bad("the port must be a number up to 65535");
    }
    Ok(o.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(origins: &[&str]) -> CorsPolicy {
        CorsPolicy::new(origins).expect("valid origins")
    }

    #[test]
    fn default_and_star_allow_any_origin_without_credentials() {
        for p in [list(&[]), list(&["*"])] {
            assert_eq!(p, CorsPolicy::AnyOrigin);
            assert!(!p.allows_credentials());
            for origin in [None, Some(&b"https://evil.example"[..])] {
                let h = p.response_headers(origin);
                assert_eq!(h, ["Access-Control-Allow-Origin: *"]);
                assert!(!h.iter().any(|l| l.contains("Credentials")));
            }
        }
    }

    #[test]
    fn a_listed_origin_is_echoed_with_credentials() {
        let p = list(&["https://app.example.com", "http://localhost:8080"]);
        assert!(p.allows_credentials());
        assert_eq!(
            p.response_headers(Some(b"https://app.example.com")),
            [
                "Access-Control-Allow-Origin: https://app.example.com",
                "Access-Control-Allow-Credentials: true",
                "Vary: Origin",
            ]
        );
        // Scheme and host compare case-insensitively; the configured spelling is sent.
        assert_eq!(
            p.response_headers(Some(b"HTTP://LOCALHOST:8080"))[0],
            "Access-Control-Allow-Origin: http://localhost:8080"
        );
    }

    #[test]
    fn other_origins_get_no_allow_origin_but_vary() {
        let p = list(&["https://app.example.com"]);
        for origin in [
            None,
            Some(&b"https://evil.example"[..]),
            Some(b"https://app.example.com.evil.example"),
            Some(b"http://app.example.com"),
            Some(b"https://app.example.com:443"),
            Some(b"null"),
            Some(b"https://app.example.com\r\nX-Injected: 1"),
        ] {
            assert_eq!(p.response_headers(origin), ["Vary: Origin"], "{origin:?}");
        }
    }

    #[test]
    fn preflight_lists_methods_and_headers_only_for_allowed_origins() {
        let p = list(&["https://app.example.com"]);
        let h = p.preflight_headers(Some(b"https://app.example.com"), Endpoint::Publish);
        assert!(
            h.contains(&"Access-Control-Allow-Methods: POST".to_owned()),
            "{h:?}"
        );
        assert!(
            h.contains(&format!(
                "Access-Control-Allow-Headers: {ALLOWED_REQUEST_HEADERS}"
            )),
            "{h:?}"
        );
        assert!(
            h.contains(&"Access-Control-Max-Age: 600".to_owned()),
            "{h:?}"
        );
        assert!(h.contains(&"Access-Control-Allow-Credentials: true".to_owned()));
        let s = p.preflight_headers(Some(b"https://app.example.com"), Endpoint::Stream);
        assert!(
            s.contains(&"Access-Control-Allow-Methods: GET, HEAD".to_owned()),
            "{s:?}"
        );
        assert_eq!(
            p.preflight_headers(Some(b"https://evil.example"), Endpoint::Publish),
            ["Vary: Origin"]
        );
        let any = CorsPolicy::AnyOrigin.preflight_headers(None, Endpoint::Stream);
        assert_eq!(any[0], "Access-Control-Allow-Origin: *");
        assert!(
            any.iter()
                .any(|l| l.starts_with("Access-Control-Allow-Methods"))
        );
        assert!(!any.iter().any(|l| l.contains("Credentials")));
    }

    #[test]
    fn bad_origins_are_refused_with_a_reason() {
        for (origin, why) in [
            ("app.example.com", "no scheme"),
            ("ftp://app.example.com", "http or https"),
            ("https://", "no host"),
            ("https://app.example.com/", "no path"),
            ("https://app.example.com/path", "no path"),
            ("https://user@app.example.com", "no path"),
            ("https://app example.com", "unexpected character"),
            ("https://app.example.com:99999", "port"),
            ("https://app.example.com:", "port"),
            ("https://a.example:1:2", "port"),
            ("http://[::1]:70000", "port"),
            ("http://[::1", "unclosed"),
            ("null", "null"),
            ("https://a.example\r\nX: y", "unexpected character"),
        ] {
            let err = CorsPolicy::new(&[origin]).expect_err(origin).to_string();
            assert!(err.contains(why), "{origin:?}: {err}");
        }
        let mixed = CorsPolicy::new(&["*", "https://a.example"]).expect_err("mixed");
        assert!(mixed.to_string().contains("cannot be combined"));
    }

    #[test]
    fn good_origins_are_normalised() {
        assert_eq!(
            list(&[
                "HTTPS://App.Example.com",
                "http://[::1]:3000",
                "http://127.0.0.1:80"
            ]),
            CorsPolicy::Origins(vec![
                "https://app.example.com".into(),
                "http://[::1]:3000".into(),
                "http://127.0.0.1:80".into(),
            ])
        );
    }
}
