//! Rendering a scenario's requests as bytes, with what each must get back.

use super::model;
use super::*;

impl Sim {
    /// Builds a request's bytes and what it must get.
    pub(super) fn render(
        &self,
        kind: &RequestKind,
    ) -> (Vec<u8>, Expect, Option<StreamWant>, Option<PubReq>) {
        let status = |s: u16| Expect {
            statuses: vec![s],
            closes: true,
            head_only: false,
            late: false,
            completed_at: None,
        };
        let host = "Host: sim\r\n";
        match kind {
            RequestKind::Stream {
                topics,
                last_id,
                in_query,
            } => {
                let mut names: Vec<usize> = (0..TOPICS.len())
                    .filter(|i| u32::from(*topics) & (1 << i) != 0)
                    .collect();
                let too_many = names.len() > self.cfg.max_topics_per_client;
                let mut query: Vec<String> = names
                    .iter()
                    .map(|&t| format!("topic={}", percent_encode(TOPICS[t])))
                    .collect();
                if names.is_empty() {
                    names.push(0);
                }
                let last = match last_id {
                    LastId::None => None,
                    LastId::Unknown => Some("nope".to_owned()),
                    LastId::EarlierRun => Some("abc-5".to_owned()),
                    LastId::Seq(n) => Some(format!("{}-{n}", self.boot)),
                    LastId::Custom(i) => Some(IDS[usize::from(*i) % 3].to_owned()),
                    LastId::Head(k) => {
                        let n = match k % 4 {
                            0 => self.newest_number() + 1,
                            1 => self.newest_on(&names),
                            _ => self.newest_on(&names).saturating_sub(1),
                        };
                        Some(format!("{}-{n}", self.boot))
                    }
                };
                let mut head = String::new();
                if let Some(l) = &last {
                    if *in_query {
                        query.push(format!("lastEventId={}", percent_encode(l)));
                    } else {
                        let _ = write!(head, "Last-Event-ID: {l}\r\n");
                    }
                }
                let q = if query.is_empty() {
                    String::new()
                } else {
                    format!("?{}", query.join("&"))
                };
                let req = format!(
                    "GET /events{q} HTTP/1.1\r\n{host}Accept: text/event-stream\r\n{head}\r\n"
                );
                let want = StreamWant {
                    topics: names,
                    last_id: last,
                };
                if too_many {
                    return (req.into_bytes(), status(400), None, None);
                }
                (req.into_bytes(), dummy_expect(), Some(want), None)
            }
            RequestKind::HeadEvents => (
                format!("HEAD /events HTTP/1.1\r\n{host}\r\n").into_bytes(),
                Expect {
                    statuses: vec![200],
                    closes: true,
                    head_only: true,
                    late: false,
                    completed_at: None,
                },
                None,
                None,
            ),
            RequestKind::Health { close } => {
                let conn = if *close { "Connection: close\r\n" } else { "" };
                (
                    format!("GET /health HTTP/1.1\r\n{host}{conn}\r\n").into_bytes(),
                    Expect {
                        statuses: vec![200],
                        closes: *close,
                        head_only: false,
                        late: false,
                        completed_at: None,
                    },
                    None,
                    None,
                )
            }
            RequestKind::Publish {
                topic,
                event,
                id,
                data,
                close,
            } => {
                let topic = usize::from(*topic) % TOPICS.len();
                let event = event.map(|e| EVENTS[usize::from(e) % EVENTS.len()]);
                let id = id.map(|i| IDS[usize::from(i) % IDS.len()]);
                let data = build_data(data);
                let mut q = format!("topic={}", percent_encode(TOPICS[topic]));
                if let Some(e) = event {
                    let _ = write!(q, "&event={}", percent_encode(e));
                }
                if let Some(i) = id {
                    let _ = write!(q, "&id={}", percent_encode(i));
                }
                let conn = if *close { "Connection: close\r\n" } else { "" };
                let mut req = format!(
                    "POST /publish?{q} HTTP/1.1\r\n{host}{conn}Content-Length: {}\r\n\r\n",
                    data.len()
                )
                .into_bytes();
                req.extend_from_slice(data.as_bytes());
                let fields_ok =
                    event.is_none_or(model::valid_field) && id.is_none_or(model::valid_field);
                // The body limit is checked after the fields, before the body arrives.
                let too_large = fields_ok && data.len() > self.cfg.max_body;
                let valid = publish_valid(event, id, &data) && !too_large;
                let expect = if too_large {
                    status(413)
                } else if valid {
                    // 503 when the server began shutting down meanwhile.
                    Expect {
                        statuses: vec![200, 503],
                        closes: *close,
                        head_only: false,
                        late: false,
                        completed_at: None,
                    }
                } else {
                    status(400)
                };
                let p = valid.then(|| PubReq {
                    topic,
                    event: event.map(str::to_owned),
                    id: id.map(str::to_owned),
                    data,
                    expect_index: 0,
                });
                (req, expect, None, p)
            }
            RequestKind::NotFound => (
                format!("GET /nowhere HTTP/1.1\r\n{host}\r\n").into_bytes(),
                status(404),
                None,
                None,
            ),
            RequestKind::WrongMethod => (
                format!("POST /events HTTP/1.1\r\n{host}Content-Length: 0\r\n\r\n").into_bytes(),
                status(405),
                None,
                None,
            ),
            RequestKind::Garbage => (
                b"\x16\x03\x01\x00garbage\r\n\r\n".to_vec(),
                status(400),
                None,
                None,
            ),
            RequestKind::Oversized => {
                let pad = "a".repeat(self.cfg.max_head + 10);
                (
                    format!("GET /events HTTP/1.1\r\n{host}X-Pad: {pad}\r\n\r\n").into_bytes(),
                    status(431),
                    None,
                    None,
                )
            }
            RequestKind::TooManyHeaders => {
                let many: String = (0..70).map(|i| format!("X-{i}: y\r\n")).collect();
                (
                    format!("GET /events HTTP/1.1\r\n{many}\r\n").into_bytes(),
                    status(431),
                    None,
                    None,
                )
            }
            RequestKind::BadFraming => (
                format!(
                    "POST /publish HTTP/1.1\r\n{host}Content-Length: 1\r\nContent-Length: 2\r\n\r\n"
                )
                .into_bytes(),
                status(400),
                None,
                None,
            ),
            RequestKind::NoLength => (
                format!("POST /publish HTTP/1.1\r\n{host}\r\n").into_bytes(),
                status(411),
                None,
                None,
            ),
            RequestKind::TooLarge => (
                format!(
                    "POST /publish HTTP/1.1\r\n{host}Content-Length: {}\r\n\r\n",
                    self.cfg.max_body + 1
                )
                .into_bytes(),
                status(413),
                None,
                None,
            ),
            RequestKind::Metrics | RequestKind::Clients => {
                let path = if *kind == RequestKind::Metrics {
                    "/metrics"
                } else {
                    "/clients"
                };
                (
                    format!("GET {path} HTTP/1.1\r\n{host}\r\n").into_bytes(),
                    Expect {
                        statuses: vec![200],
                        closes: false,
                        head_only: false,
                        late: false,
                        completed_at: None,
                    },
                    None,
                    None,
                )
            }
            RequestKind::BadTopic => (
                format!("GET /events?topic=a%00b HTTP/1.1\r\n{host}\r\n").into_bytes(),
                // The topics are checked before any limit: 400 even at the client limit.
                status(400),
                None,
                None,
            ),
            RequestKind::BodyOnGet {
                stream,
                len,
                chunked,
            } => {
                let bodiless = if *stream {
                    RequestKind::Stream {
                        topics: 0,
                        last_id: LastId::None,
                        in_query: false,
                    }
                } else {
                    RequestKind::Health { close: false }
                };
                let (head, expect, want, _) = self.render(&bodiless);
                let len = usize::from(*len) % 5000;
                let mut req = head[..head.len() - 2].to_vec();
                if *chunked {
                    req.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                    let mut left = len;
                    while left > 0 {
                        let n = left.min(1000);
                        req.extend_from_slice(format!("{n:x}\r\n").as_bytes());
                        req.extend(std::iter::repeat_n(b'b', n));
                        req.extend_from_slice(b"\r\n");
                        left -= n;
                    }
                    req.extend_from_slice(b"0\r\n\r\n");
                } else {
                    req.extend_from_slice(format!("Content-Length: {len}\r\n\r\n").as_bytes());
                    req.extend(std::iter::repeat_n(b'b', len));
                }
                if len > self.cfg.max_body {
                    return (req, status(413), None, None);
                }
                (req, expect, want, None)
            }
            RequestKind::InvalidUtf8Topic { byte } => (
                format!(
                    "GET /events?topic=a%{:02X}b HTTP/1.1\r\n{host}\r\n",
                    0x80 | byte
                )
                .into_bytes(),
                // As for a NUL: 400 before any limit.
                status(400),
                None,
                None,
            ),
        }
    }
}

pub(super) fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}
