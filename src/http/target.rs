//! The request target (RFC 9112 §3.2): origin-form `/path?query`, absolute-form
//! `http://host/path?query` (what a client talking to a proxy sends; a server must accept it),
//! and asterisk-form `*` (only for `OPTIONS`); and the query string's decoding.

/// A request target split into the parts routing uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The path without the query, percent-decoding not applied; `*` for asterisk-form.
    pub path: String,
    /// Query parameters in order, percent-decoded (`+` is a space).
    pub query: Vec<(String, String)>,
    /// The authority of an absolute-form target (`host[:port]`), which replaces `Host`.
    pub authority: Option<String>,
}

/// Splits a request target. `None` when it is none of the accepted forms (400).
pub fn parse_target(target: &str, asterisk_allowed: bool) -> Option<Target> {
    if target == "*" {
        return asterisk_allowed.then(|| Target {
            path: "*".to_owned(),
            query: Vec::new(),
            authority: None,
        });
    }
    let (authority, origin_form) = if target.starts_with('/') {
        (None, target)
    } else {
        let (authority, rest) = split_absolute_form(target)?;
        (Some(authority.to_owned()), rest)
    };
    // A fragment is never sent on the wire (RFC 9110 §4.2.5); refuse it rather than guess.
    if origin_form.contains('#') {
        return None;
    }
    let (path, query) = match origin_form.split_once('?') {
        Some((p, q)) => (p, parse_query(q)?),
        None => (origin_form, Vec::new()),
    };
    Some(Target {
        path: if path.is_empty() { "/" } else { path }.to_owned(),
        query,
        authority,
    })
}

/// `http://host:port/p?q` → (`host:port`, `/p?q`); `http://host?q` → (`host`, `?q`).
/// Only the `http` and `https` schemes (case-insensitive); a non-empty authority without
/// userinfo (RFC 9110 §4.2.4: a recipient should treat userinfo as an error).
fn split_absolute_form(target: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = target.split_once("://")?;
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return None;
    }
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if authority.is_empty() || !valid_authority(authority) {
        return None;
    }
    Some((authority, path))
}

/// True for a `Host` value or target authority made only of the characters an authority may
/// hold (RFC 3986 reg-name, IP literal, port; no userinfo); the empty value is valid for
/// `Host`.
pub fn valid_authority(value: &str) -> bool {
    value.bytes().all(|b| {
        b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b':'
                    | b'%'
                    | b'['
                    | b']'
            )
    })
}

/// Splits a query string into decoded `(name, value)` pairs; `None` when a name or value
/// does not decode to UTF-8.
pub fn parse_query(q: &str) -> Option<Vec<(String, String)>> {
    q.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => Some((percent_decode(k)?, percent_decode(v)?)),
            None => Some((percent_decode(kv)?, String::new())),
        })
        .collect()
}

/// Decodes `%XX` escapes and `+`; invalid escapes are kept as written. `None` when the
/// decoded bytes are not UTF-8: replacing them (U+FFFD) would merge distinct names
/// (`topic=%FF` and `topic=%FE` would be one topic), so such a request is refused.
pub fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' if i + 2 < bytes.len()
                && hex(bytes[i + 1]).is_some()
                && hex(bytes[i + 2]).is_some() =>
            {
                let hi = hex(bytes[i + 1]).unwrap_or(0);
                let lo = hex(bytes[i + 2]).unwrap_or(0);
                out.push(hi << 4 | lo);
                i += 3;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(target: &str) -> Option<Target> {
        parse_target(target, false)
    }

    #[test]
    fn origin_form() {
        let target = t("/events?topic=a&topic=b%20c&x").unwrap();
        assert_eq!(target.path, "/events");
        assert_eq!(
            target.query,
            vec![
                ("topic".into(), "a".into()),
                ("topic".into(), "b c".into()),
                ("x".into(), String::new())
            ]
        );
        assert_eq!(target.authority, None);
    }

    #[test]
    fn absolute_form_gives_path_query_and_authority() {
        let target = t("http://example.com:3000/publish?topic=x").unwrap();
        assert_eq!(target.path, "/publish");
        assert_eq!(target.query, vec![("topic".into(), "x".into())]);
        assert_eq!(target.authority.as_deref(), Some("example.com:3000"));
        assert_eq!(t("HTTPS://h").unwrap().path, "/");
        let target = t("http://h?topic=y").unwrap();
        assert_eq!((target.path.as_str(), target.query.len()), ("/", 1));
        assert_eq!(t("http://[::1]:80/health").unwrap().path, "/health");
    }

    #[test]
    fn refused_targets() {
        for bad in [
            "",
            "events",
            "ftp://h/",
            "http:///path",
            "http://user@h/",
            "http://h h/",
            "host:80",
            "/a#frag",
            "*",
        ] {
            assert_eq!(t(bad), None, "{bad:?}");
        }
        assert_eq!(parse_target("*", true).unwrap().path, "*");
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(
            percent_decode("a%2Fb+c%zz%4").as_deref(),
            Some("a/b c%zz%4")
        );
        assert_eq!(percent_decode("%FF"), None);
        assert_eq!(percent_decode("%C3%A9").as_deref(), Some("é"));
        // Hex digits in either case.
        assert_eq!(percent_decode("%c3%a9%2f%6A%6a").as_deref(), Some("é/jj"));
        assert!(t("/events?topic=%FF").is_none());
        assert!(t("/events?topic=%FE").is_none());
    }

    #[test]
    fn authority_characters() {
        assert!(valid_authority("example.com:3000"));
        assert!(valid_authority("[::1]:3000"));
        assert!(valid_authority(""));
        assert!(!valid_authority("a b"));
        assert!(!valid_authority("a/b"));
    }
}
