//! The command line, and its validation into a [`Plan`]: which URLs, topics and headers each
//! client uses, what the publisher sends where. Every check that can fail on user input is here,
//! so a bad flag is one message and exit code 2 before any socket opens.

use std::path::PathBuf;
use std::time::Duration;

use sse_server::config::parse_duration;

use crate::net::{self, HttpUrl};

/// The command line.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "sse-load",
    version,
    about = "Load generator for Server-Sent Events servers: connects many clients (over several worker processes), measures fan-out latency and per-client completeness"
)]
pub struct Args {
    /// The event stream to open; repeat to spread the clients over several servers.
    #[arg(long = "url", default_value = "http://127.0.0.1:3000/events")]
    pub urls: Vec<String>,
    /// Concurrent streams to open (over all workers and URLs).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub clients: u32,
    /// Worker processes (default: enough for the open-file limit, up to the cores for big runs).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub workers: Option<u32>,
    /// Connections opened per second over all workers (0: as fast as possible).
    #[arg(long, default_value_t = 5000.0)]
    pub rate: f64,
    /// Spread source addresses over 127.0.0.1 … 127.0.0.K (default: as many as the ephemeral
    /// ports need; IPv4 loopback servers only).
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=254))]
    pub source_ips: Option<u8>,
    /// Length of the measured window, which starts once every stream is open.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// End the window after this many events (ticks seen, or events published).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub events: Option<u64>,
    /// Publish `ts=<unix ns>` events at this rate (per second) during the window.
    #[arg(long)]
    pub publish_rate: Option<f64>,
    /// Where to POST them (default: `/publish` on the stream's server).
    #[arg(long)]
    pub publish_url: Option<String>,
    /// Publish requests sent ahead of their responses on the keep-alive connection.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub publish_pipeline: u32,
    /// Extra request header (`Name: value`) for the streams and the publishes; repeatable.
    #[arg(long = "header")]
    pub headers: Vec<String>,
    /// Spread clients (and published events) over these topics (`?topic=` on each stream).
    #[arg(long, value_delimiter = ',')]
    pub topics: Vec<String>,
    /// This many of the clients connect and never read (the others must be unaffected).
    #[arg(long, default_value_t = 0)]
    pub slow: u32,
    /// Each client drops its stream after a random time around this (0.5× to 1.5×) and
    /// resumes with `Last-Event-ID`; every event must still arrive once, in order.
    #[arg(long, value_parser = parse_duration)]
    pub reconnect_every: Option<Duration>,
    /// The servers' tick interval, for checking each connection's ticks (no gap past two
    /// intervals). Default: per client group, the median time between a stream's
    /// consecutive ticks.
    #[arg(long, value_parser = parse_duration)]
    pub tick_interval: Option<Duration>,
    /// Give up on connections still not streaming after this long.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// After the window, wait at most this long for its last events to reach everyone.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub drain: Duration,
    /// Print one JSON line (instead of the table) on stdout.
    #[arg(long)]
    pub json: bool,
    /// Also write a self-contained HTML report (summary and SVG charts) to this file.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// The server's process id, for the CPU comparison (default: found by the URL's port).
    #[arg(long = "server-pid")]
    pub server_pids: Vec<u32>,
    /// Internal: run as worker `INDEX:FIRST:COUNT:SOURCE_IPS:RATE` of a coordinator.
    #[arg(long, hide = true)]
    pub worker: Option<String>,
}

/// What one worker process does (from the hidden `--worker` flag).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WorkerSpec {
    /// 0 for the first worker (which also runs the publisher).
    pub index: u32,
    /// The global index of its first client.
    pub first: usize,
    /// How many clients it runs.
    pub count: usize,
    /// Loopback source addresses to spread over.
    pub source_ips: u8,
    /// Its share of `--rate`.
    pub rate: f64,
}

impl WorkerSpec {
    /// The flag's value.
    pub fn to_flag(self) -> String {
        format!(
            "{}:{}:{}:{}:{}",
            self.index, self.first, self.count, self.source_ips, self.rate
        )
    }

    /// Reads the flag's value.
    pub fn parse(s: &str) -> Result<WorkerSpec, String> {
        let bad = || format!("bad --worker `{s}`");
        let p: Vec<&str> = s.split(':').collect();
        let [index, first, count, ips, rate] = p[..] else {
            return Err(bad());
        };
        Ok(WorkerSpec {
            index: index.parse().map_err(|_| bad())?,
            first: first.parse().map_err(|_| bad())?,
            count: count.parse().map_err(|_| bad())?,
            source_ips: ips.parse().map_err(|_| bad())?,
            rate: rate.parse().map_err(|_| bad())?,
        })
    }
}

/// The validated run: everything a worker or the coordinator needs besides sockets.
#[derive(Debug, Clone)]
pub struct Plan {
    pub args: Args,
    pub urls: Vec<HttpUrl>,
    /// Topics clients spread over; empty: no `topic` parameter.
    pub topics: Vec<String>,
    /// Extra header lines, each ending in CRLF.
    pub headers: String,
    /// Where the publisher posts (without the topic), when publishing.
    pub publish: Option<HttpUrl>,
}

impl Plan {
    /// Checks the flags. Errors are usage errors (exit 2).
    pub fn new(args: Args) -> Result<Plan, String> {
        let urls = args
            .urls
            .iter()
            .map(|u| HttpUrl::parse(u))
            .collect::<Result<Vec<_>, _>>()?;
        if !(args.rate.is_finite() && args.rate >= 0.0) {
            return Err(format!("--rate {} must be a number ≥ 0", args.rate));
        }
        if args.source_ips.is_some_and(|k| k > 1)
            && let Some(u) = urls.iter().find(|u| !net::is_v4_loopback(u.addr.ip()))
        {
            return Err(format!(
                "--source-ips needs IPv4 loopback servers (127.0.0.0/8), not {}",
                u.addr.ip()
            ));
        }
        let publish = match (&args.publish_url, args.publish_rate) {
            (Some(_), None) => return Err("--publish-url needs --publish-rate".into()),
            (_, None) => None,
            (_, Some(r)) if !(r.is_finite() && r > 0.0) => {
                return Err(format!("--publish-rate {r} must be more than 0"));
            }
            (_, Some(_)) if urls.len() > 1 => {
                return Err("--publish-rate publishes to one server: give one --url".into());
            }
            (Some(u), Some(_)) => Some(HttpUrl::parse(u)?),
            (None, Some(_)) => Some(urls[0].with_target("/publish")),
        };
        let mut headers = String::new();
        for h in &args.headers {
            match h.split_once(':') {
                Some((name, _))
                    if !name.is_empty()
                        && !name.contains(char::is_whitespace)
                        && !h.contains(['\r', '\n']) =>
                {
                    headers.push_str(h);
                    headers.push_str("\r\n");
                }
                _ => return Err(format!("--header `{h}` must look like `Name: value`")),
            }
        }
        for t in &args.topics {
            if t.is_empty()
                || !t
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            {
                return Err(format!(
                    "--topics: `{t}` is not a topic name (letters, digits, `-`, `_`, `.`)"
                ));
            }
        }
        if u64::from(args.slow) >= u64::from(args.clients) {
            return Err(format!(
                "--slow {} must leave some of the {} clients reading",
                args.slow, args.clients
            ));
        }
        if args
            .reconnect_every
            .is_some_and(|d| d < Duration::from_millis(10))
        {
            return Err("--reconnect-every must be at least 10ms".into());
        }
        if args
            .tick_interval
            .is_some_and(|d| d < Duration::from_millis(1))
        {
            return Err("--tick-interval must be at least 1ms".into());
        }
        Ok(Plan {
            topics: args.topics.clone(),
            args,
            urls,
            headers,
            publish,
        })
    }

    /// Client groups: one per (URL, topic). Events are counted per group, since a group's
    /// clients get only their server's and topic's events.
    pub fn groups(&self) -> usize {
        self.urls.len() * self.topics.len().max(1)
    }

    /// The group of the client with global index `i`: URLs round-robin, then topics.
    pub fn group_of(&self, i: usize) -> u16 {
        let n = self.urls.len();
        let t = self.topics.len().max(1);
        ((i % n) * t + (i / n) % t) as u16
    }

    /// The URL and topic of a group.
    pub fn group_target(&self, g: u16) -> (&HttpUrl, Option<&str>) {
        let t = self.topics.len().max(1);
        let g = usize::from(g);
        (
            &self.urls[g / t],
            self.topics.get(g % t).map(String::as_str),
        )
    }

    /// A short name for a group (for the report).
    pub fn group_label(&self, g: u16) -> String {
        let (u, topic) = self.group_target(g);
        match topic {
            Some(t) => format!("{}{} topic {t}", u.host, u.target),
            None => format!("{}{}", u.host, u.target),
        }
    }

    /// True for the clients that never read (the last `--slow` of them).
    pub fn is_slow(&self, i: usize) -> bool {
        i >= (self.args.clients - self.args.slow) as usize
    }

    /// The `GET` for a client of group `g`, resuming after `last_event_id` when given.
    pub fn stream_request(&self, g: u16, last_event_id: Option<&str>) -> Vec<u8> {
        let (u, topic) = self.group_target(g);
        let target = with_topic(&u.target, topic);
        let resume = last_event_id.map_or(String::new(), |id| format!("Last-Event-ID: {id}\r\n"));
        format!(
            "GET {target} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n{resume}{}\r\n",
            u.host, self.headers
        )
        .into_bytes()
    }

    /// The publisher's target for its `k`-th event, and that event's group.
    pub fn publish_target(&self, k: u64) -> Option<(String, u16)> {
        let p = self.publish.as_ref()?;
        let t = self.topics.len().max(1) as u64;
        let g = (k % t) as u16;
        Some((with_topic(&p.target, self.group_target(g).1), g))
    }
}

/// `target` with `topic=…` added to its query.
fn with_topic(target: &str, topic: Option<&str>) -> String {
    match topic {
        None => target.to_owned(),
        Some(t) if target.contains('?') => format!("{target}&topic={t}"),
        Some(t) => format!("{target}?topic={t}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    fn plan(extra: &[&str]) -> Result<Plan, String> {
        let mut v = vec!["sse-load"];
        v.extend_from_slice(extra);
        Plan::new(Args::try_parse_from(v).map_err(|e| e.to_string())?)
    }

    #[test]
    fn groups_spread_over_urls_then_topics() {
        let p = plan(&[
            "--url",
            "http://127.0.0.1:1/e",
            "--url",
            "http://127.0.0.1:2/e?x=1",
            "--topics",
            "a,b",
        ])
        .unwrap();
        assert_eq!(p.groups(), 4);
        let gs: Vec<u16> = (0..8).map(|i| p.group_of(i)).collect();
        assert_eq!(gs, [0, 2, 1, 3, 0, 2, 1, 3]);
        let req = String::from_utf8(p.stream_request(3, Some("7"))).unwrap();
        assert!(
            req.starts_with("GET /e?x=1&topic=b HTTP/1.1\r\nHost: 127.0.0.1:2\r\n"),
            "{req}"
        );
        assert!(req.contains("Last-Event-ID: 7\r\n"));
    }

    #[test]
    fn publisher_round_robins_topics() {
        let p = plan(&["--topics", "a,b", "--publish-rate", "10"]).unwrap();
        assert_eq!(p.publish_target(0), Some(("/publish?topic=a".into(), 0)));
        assert_eq!(p.publish_target(3), Some(("/publish?topic=b".into(), 1)));
    }

    #[test]
    fn bad_plans() {
        assert!(plan(&["--topics", "a b"]).is_err());
        assert!(plan(&["--clients", "5", "--slow", "5"]).is_err());
        assert!(
            plan(&[
                "--url",
                "http://127.0.0.1:1/",
                "--url",
                "http://127.0.0.1:2/",
                "--publish-rate",
                "5"
            ])
            .is_err()
        );
        assert!(plan(&["--reconnect-every", "1ms"]).is_err());
        assert!(plan(&["--tick-interval", "0s"]).is_err());
        assert!(plan(&["--tick-interval", "200ms"]).is_ok());
    }

    #[test]
    fn worker_spec_round_trips() {
        let w = WorkerSpec {
            index: 2,
            first: 40_000,
            count: 19_000,
            source_ips: 3,
            rate: 2500.0,
        };
        assert_eq!(WorkerSpec::parse(&w.to_flag()), Ok(w));
        assert!(WorkerSpec::parse("1:2").is_err());
    }
}
