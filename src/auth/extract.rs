//! Finding a request's token: `Authorization: Bearer`, then a cookie, then the `access_token`
//! query parameter.
//!
//! Pure functions over the request's header pairs (names compared case-insensitively, values as
//! raw bytes) and its percent-decoded query pairs, so they do not depend on the core's request
//! type and can be fuzzed on their own.

use std::fmt;

/// Longest token accepted, in bytes. A request head is at most `--max-head` (8 KiB by default),
/// so a real token is always shorter; this bounds the work of verifying garbage.
pub const MAX_TOKEN_BYTES: usize = 8192;

/// Default name of the cookie that carries the token (`--jwt-cookie`).
pub const DEFAULT_COOKIE: &str = "sse_token";

/// The query parameter that carries the token: the weakest source, since URLs end up in proxy
/// and server logs and in browser history.
pub const QUERY_PARAM: &str = "access_token";

/// A bearer token as the client sent it. Its `Debug` shows the length, never the token, so a
/// token cannot reach the logs by accident; it has no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct BearerToken(String);

impl BearerToken {
    /// Wraps a token string.
    pub fn new(token: impl Into<String>) -> BearerToken {
        BearerToken(token.into())
    }

    /// The token itself, for verification and comparison only: never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BearerToken(<redacted, {} bytes>)", self.0.len())
    }
}

/// Where a token came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSource {
    /// `Authorization: Bearer <token>`.
    Header,
    /// The cookie named by `--jwt-cookie`.
    Cookie,
    /// The `access_token` query parameter.
    Query,
}

/// A token was sent but cannot be one (too long, not text, `Bearer` without a token).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MalformedToken;

/// The sources to look at: subscribing reads all three; publishing never reads the cookie (a
/// browser attaches cookies to a cross-site form POST by itself, so a cookie would let any web
/// page publish with a visitor's token).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sources {
    /// Header, cookie, query, in that order.
    All,
    /// Header, then query.
    NoCookie,
}

/// Finds the request's token, looking in order at the `Authorization` header (scheme `Bearer`,
/// case-insensitive), the cookie `cookie_name`, and the `access_token` query parameter. The
/// first source that has one wins, even if a later one differs.
///
/// An `Authorization` header with another scheme (`Basic`, for a proxy's own login) is not an
/// error: the next sources are tried. An empty cookie or query value counts as absent (a
/// logged-out page often keeps an empty cookie). `Ok(None)`: no token anywhere.
pub fn find_token(
    headers: &[(&str, &[u8])],
    query: &[(&str, &str)],
    cookie_name: &str,
    sources: Sources,
) -> Result<Option<(BearerToken, TokenSource)>, MalformedToken> {
    if let Some(token) = bearer_from_headers(headers)? {
        return Ok(Some((token, TokenSource::Header)));
    }
    if sources == Sources::All
        && let Some(token) = cookie_from_headers(headers, cookie_name)?
    {
        return Ok(Some((token, TokenSource::Cookie)));
    }
    if let Some(token) = from_query(query)? {
        return Ok(Some((token, TokenSource::Query)));
    }
    Ok(None)
}

/// The token of the first `Authorization` header if its scheme is `Bearer`.
pub fn bearer_from_headers(
    headers: &[(&str, &[u8])],
) -> Result<Option<BearerToken>, MalformedToken> {
    let Some((_, value)) = headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("authorization"))
    else {
        return Ok(None);
    };
    let value = trim_ows(value);
    let scheme_end = value
        .iter()
        .position(|&b| b == b' ' || b == b'\t')
        .unwrap_or(value.len());
    if !value[..scheme_end].eq_ignore_ascii_case(b"bearer") {
        return Ok(None);
    }
    let token = trim_ows(&value[scheme_end..]);
    if token.is_empty() {
        return Err(MalformedToken);
    }
    checked_token(token).map(Some)
}

/// The value of cookie `name` from the request's `Cookie` headers (all of them, in order; the
/// first cookie of that name wins, as browsers send the most specific one first).
///
/// Parsing is lenient where browsers are (`;` with or without a space, whitespace around names
/// and values, a value in double quotes, pairs without `=` skipped) and never fails on other
/// cookies: a malformed or non-UTF-8 neighbour is skipped. Only our own cookie's value can be
/// malformed (too long, or not UTF-8).
pub fn cookie_from_headers(
    headers: &[(&str, &[u8])],
    name: &str,
) -> Result<Option<BearerToken>, MalformedToken> {
    let cookie_headers = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("cookie"));
    for (_, value) in cookie_headers {
        for pair in value.split(|&b| b == b';') {
            let Some(eq) = pair.iter().position(|&b| b == b'=') else {
                continue;
            };
            if trim_ows(&pair[..eq]) != name.as_bytes() {
                continue;
            }
            let mut v = trim_ows(&pair[eq + 1..]);
            if v.len() >= 2 && v[0] == b'"' && v[v.len() - 1] == b'"' {
                v = &v[1..v.len() - 1];
            }
            if v.is_empty() {
                return Ok(None);
            }
            return checked_token(v).map(Some);
        }
    }
    Ok(None)
}

/// The first `access_token` query parameter.
pub fn from_query(query: &[(&str, &str)]) -> Result<Option<BearerToken>, MalformedToken> {
    match query.iter().find(|(k, _)| *k == QUERY_PARAM) {
        Some((_, v)) if !v.is_empty() => checked_token(v.as_bytes()).map(Some),
        _ => Ok(None),
    }
}

/// Accepts a token of at most [`MAX_TOKEN_BYTES`] bytes of UTF-8 without spaces or control
/// characters: anything else can be neither a JWT nor a `--publish-token` (which may be
/// non-ASCII).
fn checked_token(bytes: &[u8]) -> Result<BearerToken, MalformedToken> {
    if bytes.len() > MAX_TOKEN_BYTES
        || bytes
            .iter()
            .any(|&b| b.is_ascii_control() || b.is_ascii_whitespace())
    {
        return Err(MalformedToken);
    }
    let text = std::str::from_utf8(bytes).map_err(|_| MalformedToken)?;
    Ok(BearerToken(text.to_owned()))
}

/// Strips optional whitespace (SP, HTAB) from both ends.
fn trim_ows(mut b: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = b {
        b = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = b {
        b = rest;
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find(
        headers: &[(&str, &[u8])],
        query: &[(&str, &str)],
    ) -> Result<Option<(String, TokenSource)>, MalformedToken> {
        find_token(headers, query, DEFAULT_COOKIE, Sources::All)
            .map(|o| o.map(|(t, s)| (t.expose().to_owned(), s)))
    }

    fn tok(s: &str, src: TokenSource) -> Result<Option<(String, TokenSource)>, MalformedToken> {
        Ok(Some((s.to_owned(), src)))
    }

    #[test]
    fn bearer_header_any_case_and_whitespace() {
        for value in [
            "Bearer abc.def.ghi",
            "bearer abc.def.ghi",
            "BEARER   abc.def.ghi  ",
            "\tBearer\tabc.def.ghi",
        ] {
            assert_eq!(
                find(&[("Authorization", value.as_bytes())], &[]),
                tok("abc.def.ghi", TokenSource::Header),
                "{value:?}"
            );
        }
        assert_eq!(
            find(&[("AUTHORIZATION", b"Bearer x")], &[]),
            tok("x", TokenSource::Header)
        );
    }

    #[test]
    fn bearer_without_token_or_with_bad_bytes_is_malformed() {
        for value in [
            &b"Bearer"[..],
            b"Bearer   ",
            b"Bearer a b",
            b"Bearer a\x01",
            b"Bearer \xff\xfe",
        ] {
            assert_eq!(
                find(&[("authorization", value)], &[]),
                Err(MalformedToken),
                "{value:?}"
            );
        }
        let long = format!("Bearer {}", "a".repeat(MAX_TOKEN_BYTES + 1));
        assert_eq!(
            find(&[("authorization", long.as_bytes())], &[]),
            Err(MalformedToken)
        );
        let max = format!("Bearer {}", "a".repeat(MAX_TOKEN_BYTES));
        assert!(matches!(
            find(&[("authorization", max.as_bytes())], &[]),
            Ok(Some(_))
        ));
    }

    #[test]
    fn another_scheme_falls_through_to_cookie_and_query() {
        assert_eq!(
            find(
                &[
                    ("authorization", b"Basic dXNlcjpwdw=="),
                    ("cookie", b"sse_token=c")
                ],
                &[]
            ),
            tok("c", TokenSource::Cookie)
        );
        assert_eq!(
            find(
                &[("authorization", b"Bearerish x")],
                &[("access_token", "q")]
            ),
            tok("q", TokenSource::Query)
        );
    }

    #[test]
    fn precedence_header_then_cookie_then_query() {
        let all: &[(&str, &[u8])] = &[("cookie", b"sse_token=c"), ("authorization", b"Bearer h")];
        let q: &[(&str, &str)] = &[("access_token", "q")];
        assert_eq!(find(all, q), tok("h", TokenSource::Header));
        assert_eq!(find(&all[..1], q), tok("c", TokenSource::Cookie));
        assert_eq!(find(&[], q), tok("q", TokenSource::Query));
        assert_eq!(find(&[], &[]), Ok(None));
        // Publishing skips the cookie.
        let publish = find_token(all, q, DEFAULT_COOKIE, Sources::NoCookie)
            .map(|o| o.map(|(t, s)| (t.expose().to_owned(), s)));
        assert_eq!(publish, tok("h", TokenSource::Header));
        let publish = find_token(&all[..1], q, DEFAULT_COOKIE, Sources::NoCookie)
            .map(|o| o.map(|(t, s)| (t.expose().to_owned(), s)));
        assert_eq!(publish, tok("q", TokenSource::Query));
    }

    #[test]
    fn cookie_parsing_is_lenient_about_neighbours() {
        for value in [
            &b"sse_token=t"[..],
            b"a=1; sse_token=t",
            b"a=1;sse_token=t;b=2",
            b"  a=1 ;  sse_token = t ; b",
            b"a; =x; sse_token=t",
            b"sse_token=\"t\"",
            b"a=\xff\xfe; sse_token=t",
            b"a=\"unterminated; sse_token=t",
            b";;;sse_token=t;;",
            b"sse_token=t; sse_token=second",
        ] {
            assert_eq!(
                find(&[("Cookie", value)], &[]),
                tok("t", TokenSource::Cookie),
                "{:?}",
                String::from_utf8_lossy(value)
            );
        }
    }

    #[test]
    fn cookie_name_must_match_exactly() {
        for value in [
            &b"xsse_token=t"[..],
            b"sse_token2=t",
            b"SSE_TOKEN=t",
            b"sse_token",
            b"",
        ] {
            assert_eq!(find(&[("cookie", value)], &[]), Ok(None), "{value:?}");
        }
        assert_eq!(
            find_token(&[("cookie", b"other=t")], &[], "other", Sources::All)
                .map(|o| o.map(|(t, _)| t.expose().to_owned())),
            Ok(Some("t".to_owned()))
        );
    }

    #[test]
    fn several_cookie_headers_are_all_read() {
        assert_eq!(
            find(&[("cookie", b"a=1"), ("cookie", b"sse_token=t")], &[]),
            tok("t", TokenSource::Cookie)
        );
    }

    #[test]
    fn empty_cookie_or_query_value_is_absent_but_a_bad_one_is_malformed() {
        assert_eq!(
            find(&[("cookie", b"sse_token=")], &[("access_token", "q")]),
            tok("q", TokenSource::Query),
            "an empty cookie counts as no cookie"
        );
        assert_eq!(find(&[("cookie", b"sse_token=\"\"")], &[]), Ok(None));
        assert_eq!(find(&[], &[("access_token", "")]), Ok(None));
        assert_eq!(
            find(&[("cookie", b"sse_token=a b")], &[]),
            Err(MalformedToken)
        );
        assert_eq!(
            find(&[("cookie", b"sse_token=\xff")], &[]),
            Err(MalformedToken)
        );
        assert_eq!(find(&[], &[("access_token", "a\nb")]), Err(MalformedToken));
    }

    #[test]
    fn non_ascii_utf8_is_a_token_for_the_shared_publish_token() {
        assert_eq!(
            find(&[("authorization", "Bearer pässwörd".as_bytes())], &[]),
            tok("pässwörd", TokenSource::Header)
        );
    }

    #[test]
    fn first_query_parameter_wins() {
        assert_eq!(
            find(
                &[],
                &[
                    ("topic", "x"),
                    ("access_token", "one"),
                    ("access_token", "two")
                ]
            ),
            tok("one", TokenSource::Query)
        );
    }

    #[test]
    fn debug_never_shows_the_token() {
        let t = BearerToken::new("secret.jwt.value");
        let shown = format!("{t:?} {:?}", Some((&t, TokenSource::Cookie)));
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("16 bytes"), "{shown}");
    }
}
