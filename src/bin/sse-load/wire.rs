//! The line protocol between the coordinator and its workers (over the worker's stdin and
//! stdout), and a worker's result ([`Partial`]) in a form that merges exactly.
//!
//! Worker to coordinator: `FIRST` (the first worker's first stream to each server is open),
//! `READY` (every client resolved), `P …` (progress, about once a
//! second), `CLOSED end_ns counts` (it ended the window itself), then `RESULT`, the result's
//! lines, `DONE`. Coordinator to worker: `START start_ns`, `END end_ns [counts]`, `STOP`.
//! `counts` is `g:n,g:n…`: published and other window events (not ticks, which are each
//! server's own) per client group as the sender saw them.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::stats::{Histogram, Key};
use crate::ticks::Link;

/// A progress report.
#[derive(Debug, Clone)]
pub struct Progress {
    /// Streams open now.
    pub streaming: u64,
    /// Events received so far (window or not).
    pub received: u64,
    /// Connections failed, refused or lost so far.
    pub errors: u64,
    /// Latency of the timed events received since the previous report.
    pub recent: Histogram,
}

/// A message from a worker.
#[derive(Debug)]
pub enum FromWorker {
    /// The first worker's first stream to each server opened.
    First,
    Ready,
    Progress(Progress),
    Closed {
        end_ns: u64,
        counts: Vec<u64>,
    },
    Result(Box<Partial>),
}

/// A message to a worker.
#[derive(Debug, Clone, PartialEq)]
pub enum ToWorker {
    Start { start_ns: u64 },
    End { end_ns: u64, counts: Vec<u64> },
    Stop,
}

/// Per-group counts as `g:n,…` (`-` when there are none).
pub fn counts_text(counts: &[u64]) -> String {
    let s: Vec<String> = counts
        .iter()
        .enumerate()
        .filter(|(_, n)| **n > 0)
        .map(|(g, n)| format!("{g}:{n}"))
        .collect();
    if s.is_empty() {
        "-".into()
    } else {
        s.join(",")
    }
}

fn parse_counts(s: &str) -> Result<Vec<u64>, String> {
    let mut v = Vec::new();
    if s == "-" || s.is_empty() {
        return Ok(v);
    }
    for pair in s.split(',') {
        let (g, n) = pair
            .split_once(':')
            .ok_or_else(|| format!("bad counts `{s}`"))?;
        let g: usize = g.parse().map_err(|_| format!("bad counts `{s}`"))?;
        let n: u64 = n.parse().map_err(|_| format!("bad counts `{s}`"))?;
        if g >= 65_536 {
            return Err(format!("bad counts `{s}`"));
        }
        if v.len() <= g {
            v.resize(g + 1, 0);
        }
        v[g] = n;
    }
    Ok(v)
}

impl ToWorker {
    /// The message as one line (with its newline).
    pub fn line(&self) -> String {
        match self {
            ToWorker::Start { start_ns } => format!("START {start_ns}\n"),
            ToWorker::End { end_ns, counts } => format!("END {end_ns} {}\n", counts_text(counts)),
            ToWorker::Stop => "STOP\n".into(),
        }
    }

    /// Reads one line.
    pub fn parse(line: &str) -> Result<ToWorker, String> {
        let mut it = line.split_ascii_whitespace();
        let num = |v: Option<&str>| -> Result<u64, String> {
            v.and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("bad message `{line}`"))
        };
        match it.next() {
            Some("START") => Ok(ToWorker::Start {
                start_ns: num(it.next())?,
            }),
            Some("END") => Ok(ToWorker::End {
                end_ns: num(it.next())?,
                counts: parse_counts(it.next().unwrap_or("-"))?,
            }),
            Some("STOP") => Ok(ToWorker::Stop),
            _ => Err(format!("bad message `{line}`")),
        }
    }
}

/// What one worker measured, merged by the coordinator (sums, minima, maxima, histograms
/// bucket by bucket, per-event counts by event).
#[derive(Debug, Clone, Default)]
pub struct Partial {
    pub clients: u64,
    /// Streaming when the window started (expected to get everything).
    pub connected: u64,
    /// Counted clients per group.
    pub counted_per_group: Vec<u64>,
    pub connect_failed: u64,
    /// Refusals by reason (`503`, `200-content-type-text/html`, …).
    pub refused: BTreeMap<String, u64>,
    pub disconnected: u64,
    pub slow: u64,
    /// Slow clients the server closed (that is allowed: it protects the others).
    pub slow_closed: u64,
    pub reconnects: u64,
    pub reconnect_failed: u64,
    /// Seconds from the worker's start until every client resolved.
    pub connect_seconds: f64,
    pub delivered: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub per_client_min: u64,
    pub per_client_max: u64,
    /// CPU clock ticks (user + system, from `/proc/self/stat`) spent in the window.
    pub cpu_ticks: u64,
    /// Resident memory added by opening the clients, and the fixed size of one client.
    pub rss_clients_bytes: u64,
    pub client_struct_bytes: u64,
    pub published_sent: u64,
    pub published_acked: u64,
    pub published_failed: u64,
    pub first_error: Option<String>,
    pub latency: Histogram,
    /// Published and other window events and how many of this worker's clients got each.
    pub events: Vec<((u16, Key), u32)>,
    /// The window as this worker counted it (unix ns; (0, 0): it never opened).
    pub window_ns: (u64, u64),
    /// Tick links and how many of this worker's clients took each ([`crate::ticks`]).
    pub tick_links: Vec<(Link, u64)>,
    /// Per group, the stretches without a tick around reconnects.
    pub tick_stretches: Vec<(u16, Histogram)>,
}

fn key_text(k: Key) -> String {
    match k {
        Key::Tick(t) => format!("t {t}"),
        Key::Ts(t) => format!("s {t}"),
        Key::Opaque(h) => format!("o {h}"),
    }
}

impl Partial {
    /// The result as lines, from `RESULT` to `DONE`.
    pub fn lines(&self) -> String {
        let mut o = String::from("RESULT\n");
        let mut n = |k: &str, v: u64| {
            let _ = writeln!(o, "N {k} {v}");
        };
        n("clients", self.clients);
        n("connected", self.connected);
        n("connect_failed", self.connect_failed);
        n("disconnected", self.disconnected);
        n("slow", self.slow);
        n("slow_closed", self.slow_closed);
        n("reconnects", self.reconnects);
        n("reconnect_failed", self.reconnect_failed);
        n("connect_us", (self.connect_seconds * 1e6) as u64);
        n("delivered", self.delivered);
        n("duplicates", self.duplicates);
        n("out_of_order", self.out_of_order);
        n("per_client_min", self.per_client_min);
        n("per_client_max", self.per_client_max);
        n("cpu_ticks", self.cpu_ticks);
        n("rss_clients_bytes", self.rss_clients_bytes);
        n("client_struct_bytes", self.client_struct_bytes);
        n("published_sent", self.published_sent);
        n("published_acked", self.published_acked);
        n("published_failed", self.published_failed);
        let _ = writeln!(o, "G {}", counts_text(&self.counted_per_group));
        for (why, c) in &self.refused {
            let _ = writeln!(o, "R {why} {c}");
        }
        if let Some(e) = &self.first_error {
            let _ = writeln!(o, "E {}", e.replace('\n', " "));
        }
        let _ = writeln!(o, "H {}", self.latency.sparse());
        for ((g, k), c) in &self.events {
            let _ = writeln!(o, "V {g} {} {c}", key_text(*k));
        }
        let _ = writeln!(o, "W {} {}", self.window_ns.0, self.window_ns.1);
        for ((g, from, to), c) in &self.tick_links {
            let _ = writeln!(o, "T {g} {from} {to} {c}");
        }
        for (g, h) in &self.tick_stretches {
            let _ = writeln!(o, "S {g} {}", h.sparse());
        }
        o.push_str("DONE\n");
        o
    }

    /// Reads one line of a result (between `RESULT` and `DONE`).
    pub fn read_line(&mut self, line: &str) -> Result<(), String> {
        let bad = || format!("bad result line `{line}`");
        let (tag, rest) = line.split_once(' ').ok_or_else(bad)?;
        match tag {
            "N" => {
                let (k, v) = rest.split_once(' ').ok_or_else(bad)?;
                let v: u64 = v.parse().map_err(|_| bad())?;
                let slot = match k {
                    "clients" => &mut self.clients,
                    "connected" => &mut self.connected,
                    "connect_failed" => &mut self.connect_failed,
                    "disconnected" => &mut self.disconnected,
                    "slow" => &mut self.slow,
                    "slow_closed" => &mut self.slow_closed,
                    "reconnects" => &mut self.reconnects,
                    "reconnect_failed" => &mut self.reconnect_failed,
                    "connect_us" => {
                        self.connect_seconds = v as f64 / 1e6;
                        return Ok(());
                    }
                    "delivered" => &mut self.delivered,
                    "duplicates" => &mut self.duplicates,
                    "out_of_order" => &mut self.out_of_order,
                    "per_client_min" => &mut self.per_client_min,
                    "per_client_max" => &mut self.per_client_max,
                    "cpu_ticks" => &mut self.cpu_ticks,
                    "rss_clients_bytes" => &mut self.rss_clients_bytes,
                    "client_struct_bytes" => &mut self.client_struct_bytes,
                    "published_sent" => &mut self.published_sent,
                    "published_acked" => &mut self.published_acked,
                    "published_failed" => &mut self.published_failed,
                    _ => return Err(bad()),
                };
                *slot = v;
            }
            "G" => self.counted_per_group = parse_counts(rest)?,
            "R" => {
                let (why, c) = rest.rsplit_once(' ').ok_or_else(bad)?;
                self.refused
                    .insert(why.to_owned(), c.parse().map_err(|_| bad())?);
            }
            "E" => self.first_error = Some(rest.to_owned()),
            "H" => self.latency = Histogram::from_sparse(rest)?,
            "V" => {
                let p: Vec<&str> = rest.split(' ').collect();
                let [g, kind, v, c] = p[..] else {
                    return Err(bad());
                };
                let v: u64 = v.parse().map_err(|_| bad())?;
                let key = match kind {
                    "t" => Key::Tick(v),
                    "s" => Key::Ts(v),
                    "o" => Key::Opaque(v),
                    _ => return Err(bad()),
                };
                let g: u16 = g.parse().map_err(|_| bad())?;
                self.events.push(((g, key), c.parse().map_err(|_| bad())?));
            }
            "W" => {
                let (a, b) = rest.split_once(' ').ok_or_else(bad)?;
                self.window_ns = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
            }
            "T" => {
                let p: Vec<&str> = rest.split(' ').collect();
                let [g, from, to, c] = p[..] else {
                    return Err(bad());
                };
                let link = (
                    g.parse().map_err(|_| bad())?,
                    from.parse().map_err(|_| bad())?,
                    to.parse().map_err(|_| bad())?,
                );
                self.tick_links.push((link, c.parse().map_err(|_| bad())?));
            }
            "S" => {
                let (g, h) = rest.split_once(' ').ok_or_else(bad)?;
                let g: u16 = g.parse().map_err(|_| bad())?;
                self.tick_stretches.push((g, Histogram::from_sparse(h)?));
            }
            _ => return Err(bad()),
        }
        Ok(())
    }
}

impl Progress {
    /// The report as one line.
    pub fn line(&self) -> String {
        format!(
            "P {} {} {} {}\n",
            self.streaming,
            self.received,
            self.errors,
            self.recent.sparse()
        )
    }
}

/// Reads messages from one worker's output, line by line.
#[derive(Default)]
pub struct Reader {
    result: Option<Partial>,
}

impl Reader {
    /// Reads one line: a complete message, or `None` while inside a result.
    pub fn line(&mut self, line: &str) -> Result<Option<FromWorker>, String> {
        let line = line.trim_end_matches(['\r', '\n']);
        if let Some(r) = &mut self.result {
            if line == "DONE" {
                let r = self.result.take().unwrap_or_default();
                return Ok(Some(FromWorker::Result(Box::new(r))));
            }
            r.read_line(line)?;
            return Ok(None);
        }
        let mut it = line.splitn(2, ' ');
        match (it.next(), it.next()) {
            (Some("READY"), _) => Ok(Some(FromWorker::Ready)),
            (Some("FIRST"), _) => Ok(Some(FromWorker::First)),
            (Some("RESULT"), _) => {
                self.result = Some(Partial::default());
                Ok(None)
            }
            (Some("CLOSED"), Some(rest)) => {
                let (end, counts) = rest.split_once(' ').unwrap_or((rest, "-"));
                Ok(Some(FromWorker::Closed {
                    end_ns: end.parse().map_err(|_| format!("bad `{line}`"))?,
                    counts: parse_counts(counts)?,
                }))
            }
            (Some("P"), Some(rest)) => {
                let p: Vec<&str> = rest.splitn(4, ' ').collect();
                let [s, r, e, h] = p[..] else {
                    return Err(format!("bad `{line}`"));
                };
                let n = |v: &str| v.parse::<u64>().map_err(|_| format!("bad `{line}`"));
                Ok(Some(FromWorker::Progress(Progress {
                    streaming: n(s)?,
                    received: n(r)?,
                    errors: n(e)?,
                    recent: Histogram::from_sparse(h)?,
                })))
            }
            _ => Err(format!("unexpected worker output `{line}`")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        for m in [
            ToWorker::Start { start_ns: 12 },
            ToWorker::End {
                end_ns: 34,
                counts: vec![0, 5, 0, 7],
            },
            ToWorker::End {
                end_ns: 34,
                counts: vec![],
            },
            ToWorker::Stop,
        ] {
            assert_eq!(ToWorker::parse(m.line().trim_end()), Ok(m));
        }
        assert!(ToWorker::parse("GO").is_err());
    }

    #[test]
    fn a_result_round_trips() {
        let mut p = Partial {
            clients: 10,
            connected: 9,
            counted_per_group: vec![4, 5],
            first_error: Some("stream 3: read: reset".into()),
            events: vec![((1, Key::Tick(5)), 4), ((0, Key::Opaque(u64::MAX)), 3)],
            window_ns: (100, 900),
            tick_links: vec![((0, 0, 150), 4), ((0, 150, u64::MAX), 3), ((1, 1, 160), 1)],
            ..Partial::default()
        };
        let mut stretch = Histogram::default();
        stretch.record(2_000_000_000);
        p.tick_stretches.push((1, stretch));
        p.refused.insert("503".into(), 1);
        p.latency.record(1234);
        p.connect_seconds = 1.5;
        let mut r = Reader::default();
        let mut got = None;
        for line in p.lines().lines() {
            if let Some(FromWorker::Result(x)) = r.line(line).unwrap() {
                got = Some(x);
            }
        }
        let got = got.expect("a result");
        assert_eq!(got.lines(), p.lines());
        assert!(r.line("garbage").is_err());
        let prog = Progress {
            streaming: 3,
            received: 9,
            errors: 1,
            recent: Histogram::default(),
        };
        assert!(
            matches!(r.line(&prog.line()).unwrap(), Some(FromWorker::Progress(q)) if q.received == 9)
        );
    }
}
