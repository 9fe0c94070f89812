//! The run's outcome: the workers' results merged exactly ([`Report::merge`]), shown as a
//! human table or one JSON line.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use crate::stats::{FastBuild, Histogram, Key};
use crate::ticks::{self, Link, TickCheck};
use crate::wire::Partial;

/// How one event fared: how many of the clients that should have got it did.
#[derive(Debug, Clone, PartialEq)]
pub struct EventOutcome {
    pub group: u16,
    /// The event's time (ticks, publishes), for ordering.
    pub time_ns: Option<u64>,
    pub received: u64,
    pub expected: u64,
}

/// What the coordinator adds to the workers' results.
#[derive(Debug, Default, Clone)]
pub struct RunInfo {
    pub urls: Vec<String>,
    pub clients: u64,
    pub workers: u64,
    /// Workers that ended without a result, with why.
    pub workers_failed: Vec<String>,
    pub source_ips: u8,
    pub interrupted: bool,
    pub window_seconds: f64,
    pub publish_rate_asked: Option<f64>,
    /// CPU ticks of every worker and the coordinator over the window.
    pub load_cpu_ticks: u64,
    /// The server's (all the servers' found) over the same time, when known.
    pub server_cpu_ticks: Option<u64>,
    pub ticks_per_second: u64,
    /// `--tick-interval`, when given (else the tick check infers it).
    pub tick_interval_ns: Option<u64>,
}

/// The run's outcome, as reported.
#[derive(Debug, Default, Clone)]
pub struct Report {
    pub info: RunInfo,
    pub connected: u64,
    pub connect_failed: u64,
    pub refused: BTreeMap<String, u64>,
    pub first_error: Option<String>,
    pub connect_seconds: f64,
    /// Distinct events in the measured window (ticks, published, other), over all groups.
    pub events: u64,
    pub ticks: u64,
    pub published_events: u64,
    /// Deliveries owed: every published or other event to each client of its group, and
    /// each client's own server's ticks (delivered + missed).
    pub expected: u64,
    /// The ticks, checked per connection.
    pub tick_check: TickCheck,
    pub delivered: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub disconnected: u64,
    pub slow: u64,
    pub slow_closed: u64,
    pub reconnects: u64,
    pub reconnect_failed: u64,
    pub per_client_min: u64,
    pub per_client_max: u64,
    pub latency: Histogram,
    pub published_sent: u64,
    pub published_acked: u64,
    pub published_failed: u64,
    /// Memory per client: resident memory added by the clients, and the fixed struct size.
    pub rss_per_client: f64,
    pub client_struct_bytes: u64,
    /// Every window event's outcome, by group then time.
    pub outcomes: Vec<EventOutcome>,
}

impl Report {
    /// Adds the workers' results: counts summed, histograms merged bucket by bucket, each
    /// event's receivers summed across workers and compared with the clients of its group.
    pub fn merge(info: RunInfo, parts: &[Partial]) -> Report {
        let mut r = Report {
            per_client_min: u64::MAX,
            info,
            ..Report::default()
        };
        let mut counted: Vec<u64> = Vec::new();
        let mut events: HashMap<(u16, Key), u64, FastBuild> = HashMap::default();
        let mut links: HashMap<Link, u64, FastBuild> = HashMap::default();
        let mut stretches: BTreeMap<u16, Histogram> = BTreeMap::new();
        let (mut start_ns, mut end_ns) = (0u64, 0u64);
        let (mut rss, mut rss_clients) = (0u64, 0u64);
        for p in parts {
            r.connected += p.connected;
            r.connect_failed += p.connect_failed;
            for (why, n) in &p.refused {
                *r.refused.entry(why.clone()).or_insert(0) += n;
            }
            if r.first_error.is_none() {
                r.first_error.clone_from(&p.first_error);
            }
            r.connect_seconds = r.connect_seconds.max(p.connect_seconds);
            r.delivered += p.delivered;
            r.duplicates += p.duplicates;
            r.out_of_order += p.out_of_order;
            r.disconnected += p.disconnected;
            r.slow += p.slow;
            r.slow_closed += p.slow_closed;
            r.reconnects += p.reconnects;
            r.reconnect_failed += p.reconnect_failed;
            if p.connected > 0 {
                r.per_client_min = r.per_client_min.min(p.per_client_min);
                r.per_client_max = r.per_client_max.max(p.per_client_max);
            }
            r.latency.merge(&p.latency);
            r.published_sent += p.published_sent;
            r.published_acked += p.published_acked;
            r.published_failed += p.published_failed;
            r.info.load_cpu_ticks += p.cpu_ticks;
            rss += p.rss_clients_bytes;
            rss_clients += p.clients;
            r.client_struct_bytes = r.client_struct_bytes.max(p.client_struct_bytes);
            if counted.len() < p.counted_per_group.len() {
                counted.resize(p.counted_per_group.len(), 0);
            }
            for (c, n) in counted.iter_mut().zip(&p.counted_per_group) {
                *c += n;
            }
            for &(k, n) in &p.events {
                *events.entry(k).or_insert(0) += u64::from(n);
            }
            for &(l, n) in &p.tick_links {
                *links.entry(l).or_insert(0) += n;
            }
            for (g, h) in &p.tick_stretches {
                stretches.entry(*g).or_default().merge(h);
            }
            if p.window_ns.0 > 0 {
                start_ns = if start_ns == 0 {
                    p.window_ns.0
                } else {
                    start_ns.min(p.window_ns.0)
                };
                end_ns = end_ns.max(p.window_ns.1);
            }
        }
        if r.per_client_min == u64::MAX {
            r.per_client_min = 0;
        }
        r.rss_per_client = if rss_clients > 0 {
            rss as f64 / rss_clients as f64
        } else {
            0.0
        };
        for (&(g, k), &n) in &events {
            let expected = counted.get(usize::from(g)).copied().unwrap_or(0);
            r.expected += expected;
            match k {
                Key::Tick(_) => r.ticks += 1,
                Key::Ts(_) => r.published_events += 1,
                Key::Opaque(_) => {}
            }
            r.outcomes.push(EventOutcome {
                group: g,
                time_ns: k.time(),
                received: n,
                expected,
            });
        }
        r.tick_check = ticks::check(
            &links,
            &stretches,
            start_ns,
            end_ns,
            r.info.tick_interval_ns,
        );
        let t = &r.tick_check;
        r.ticks += t.ticks;
        r.expected += t.delivered + t.missed;
        r.events = events.len() as u64 + t.ticks;
        r.outcomes.extend(t.outcomes.iter().cloned());
        r.outcomes.sort_by_key(|o| (o.group, o.time_ns));
        r
    }

    /// Every streaming client got every event of the window, once, in order, nobody was lost
    /// along the way, and every worker finished.
    pub fn all_delivered(&self) -> bool {
        self.connected + self.slow == self.info.clients
            && self.expected > 0
            && self.delivered == self.expected
            && self.tick_check.missed == 0
            && self.duplicates == 0
            && self.out_of_order == 0
            && self.disconnected == 0
            && self.info.workers_failed.is_empty()
            && !self.info.interrupted
    }

    /// Deliveries per second over the window.
    pub fn deliveries_per_second(&self) -> f64 {
        if self.info.window_seconds > 0.0 {
            self.delivered as f64 / self.info.window_seconds
        } else {
            0.0
        }
    }

    /// Microseconds of CPU per delivery for `ticks` clock ticks.
    fn us_per_delivery(&self, ticks: u64) -> f64 {
        if self.delivered == 0 {
            return 0.0;
        }
        ticks as f64 * 1e6 / self.info.ticks_per_second.max(1) as f64 / self.delivered as f64
    }

    /// sse-load's CPU per delivery (all workers and the coordinator), in microseconds.
    pub fn load_us_per_delivery(&self) -> f64 {
        self.us_per_delivery(self.info.load_cpu_ticks)
    }

    /// The server's CPU per delivery over the same time, when its process was found.
    pub fn server_us_per_delivery(&self) -> Option<f64> {
        self.info.server_cpu_ticks.map(|t| self.us_per_delivery(t))
    }

    /// Refusals as `503 ×12, …`.
    pub fn refused_text(&self) -> String {
        let v: Vec<String> = self
            .refused
            .iter()
            .map(|(w, n)| format!("{w} ×{n}"))
            .collect();
        v.join(", ")
    }

    fn rejected(&self) -> u64 {
        self.refused.values().sum()
    }

    /// The result word.
    pub fn verdict(&self) -> &'static str {
        if self.info.interrupted {
            "INTERRUPTED (partial result)"
        } else if self.all_delivered() {
            "ALL DELIVERED"
        } else {
            "INCOMPLETE"
        }
    }
}

/// The two ways a report is shown.
impl Report {
    /// The human-readable table.
    pub fn table(&self) -> String {
        let ms = |ns: u64| ns as f64 / 1e6;
        let i = &self.info;
        let mut o = String::new();
        let _ = writeln!(o, "sse-load report: {}", i.urls.join(" "));
        let _ = writeln!(
            o,
            "  clients          {} connected of {} in {:.3} s ({} failed to connect, {} refused{}; {} workers, {} source IPs)",
            self.connected,
            i.clients,
            self.connect_seconds,
            self.connect_failed,
            self.rejected(),
            if self.refused.is_empty() {
                String::new()
            } else {
                format!(": {}", self.refused_text())
            },
            i.workers,
            i.source_ips
        );
        for w in &i.workers_failed {
            let _ = writeln!(o, "  worker failed    {w}");
        }
        if let Some(e) = &self.first_error {
            let _ = writeln!(o, "  first error      {e}");
        }
        let _ = writeln!(
            o,
            "  window           {:.3} s, {} events ({} ticks, {} published)",
            i.window_seconds, self.events, self.ticks, self.published_events
        );
        let pct = if self.expected == 0 {
            0.0
        } else {
            100.0 * self.delivered as f64 / self.expected as f64
        };
        let _ = writeln!(
            o,
            "  delivered        {} of {} ({pct:.3}%): {} missing, {} duplicate, {} out of order, {} disconnected",
            self.delivered,
            self.expected,
            self.expected.saturating_sub(self.delivered),
            self.duplicates,
            self.out_of_order,
            self.disconnected
        );
        let t = &self.tick_check;
        if t.ticks > 0 || t.missed > 0 {
            let every = t.interval_ns.map_or(String::new(), |every| {
                let how = if i.tick_interval_ns.is_some() {
                    "--tick-interval"
                } else {
                    "inferred"
                };
                format!(", one every {:.1} ms ({how})", ms(every))
            });
            let _ = writeln!(
                o,
                "  ticks            {} of {} per connection, {} missed: {} tick source{}{every}",
                t.delivered,
                t.delivered + t.missed,
                t.missed,
                t.sources,
                if t.sources == 1 { "" } else { "s" },
            );
        }
        let _ = writeln!(
            o,
            "  per client       {} to {} events",
            self.per_client_min, self.per_client_max
        );
        if self.slow > 0 {
            let _ = writeln!(
                o,
                "  slow clients     {} never read ({} closed by the server)",
                self.slow, self.slow_closed
            );
        }
        if self.reconnects > 0 || self.reconnect_failed > 0 {
            let _ = writeln!(
                o,
                "  reconnects       {} with Last-Event-ID ({} failed)",
                self.reconnects, self.reconnect_failed
            );
        }
        let h = &self.latency;
        let _ = writeln!(
            o,
            "  latency          p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms  mean {:.3} ms  ({} samples)",
            ms(h.quantile(0.5)),
            ms(h.quantile(0.99)),
            ms(h.max()),
            ms(h.mean()),
            h.count()
        );
        let _ = writeln!(o, "  deliveries/s     {:.0}", self.deliveries_per_second());
        let server = self
            .server_us_per_delivery()
            .map_or("server not found (--server-pid)".into(), |s| {
                format!("server {s:.3} µs")
            });
        let _ = writeln!(
            o,
            "  CPU/delivery     sse-load {:.3} µs, {server}",
            self.load_us_per_delivery()
        );
        let _ = writeln!(
            o,
            "  memory/client    {:.0} B resident ({} B fixed per client)",
            self.rss_per_client, self.client_struct_bytes
        );
        if let Some(rate) = i.publish_rate_asked {
            let achieved = if i.window_seconds > 0.0 {
                self.published_sent as f64 / i.window_seconds
            } else {
                0.0
            };
            let _ = writeln!(
                o,
                "  publish          asked {rate}/s, achieved {achieved:.1}/s: {} sent, {} acknowledged, {} failed",
                self.published_sent, self.published_acked, self.published_failed
            );
        }
        let _ = writeln!(o, "  result           {}", self.verdict());
        o
    }

    /// One line of JSON with every number.
    pub fn json(&self) -> String {
        let i = &self.info;
        let h = &self.latency;
        let mut o = String::from("{");
        let mut put = |k: &str, v: String| {
            if o.len() > 1 {
                o.push(',');
            }
            let _ = write!(o, "\"{k}\":{v}");
        };
        let opt = |v: Option<f64>| v.map_or("null".into(), |v| format!("{v:.3}"));
        put("url", json_str(i.urls.first().map_or("", String::as_str)));
        let urls: Vec<String> = i.urls.iter().map(|u| json_str(u)).collect();
        put("urls", format!("[{}]", urls.join(",")));
        put("clients", i.clients.to_string());
        put("workers", i.workers.to_string());
        let failed: Vec<String> = i.workers_failed.iter().map(|w| json_str(w)).collect();
        put("workers_failed", format!("[{}]", failed.join(",")));
        put("source_ips", i.source_ips.to_string());
        put("connected", self.connected.to_string());
        put("connect_failed", self.connect_failed.to_string());
        put("rejected", self.rejected().to_string());
        let refused: Vec<String> = self
            .refused
            .iter()
            .map(|(w, n)| format!("{}:{n}", json_str(w)))
            .collect();
        put("rejected_by", format!("{{{}}}", refused.join(",")));
        put(
            "first_error",
            self.first_error.as_deref().map_or("null".into(), json_str),
        );
        put("connect_seconds", format!("{:.6}", self.connect_seconds));
        put("window_seconds", format!("{:.6}", i.window_seconds));
        put("events", self.events.to_string());
        put("ticks", self.ticks.to_string());
        put("published_events", self.published_events.to_string());
        put("expected", self.expected.to_string());
        put("delivered", self.delivered.to_string());
        put(
            "missing",
            self.expected.saturating_sub(self.delivered).to_string(),
        );
        let t = &self.tick_check;
        put("ticks_delivered", t.delivered.to_string());
        put("ticks_expected", (t.delivered + t.missed).to_string());
        put("ticks_missed", t.missed.to_string());
        put("tick_sources", t.sources.to_string());
        put(
            "tick_interval_ms",
            t.interval_ns
                .map_or("null".into(), |i| format!("{:.3}", i as f64 / 1e6)),
        );
        put("duplicates", self.duplicates.to_string());
        put("out_of_order", self.out_of_order.to_string());
        put("disconnected", self.disconnected.to_string());
        put("slow", self.slow.to_string());
        put("slow_closed", self.slow_closed.to_string());
        put("reconnects", self.reconnects.to_string());
        put("reconnect_failed", self.reconnect_failed.to_string());
        put("per_client_min", self.per_client_min.to_string());
        put("per_client_max", self.per_client_max.to_string());
        put("latency_samples", h.count().to_string());
        put("p50_ms", format!("{:.6}", h.quantile(0.5) as f64 / 1e6));
        put("p99_ms", format!("{:.6}", h.quantile(0.99) as f64 / 1e6));
        put("max_ms", format!("{:.6}", h.max() as f64 / 1e6));
        put("mean_ms", format!("{:.6}", h.mean() as f64 / 1e6));
        put(
            "deliveries_per_second",
            format!("{:.1}", self.deliveries_per_second()),
        );
        put("load_cpu_ticks", i.load_cpu_ticks.to_string());
        put(
            "server_cpu_ticks",
            i.server_cpu_ticks.map_or("null".into(), |t| t.to_string()),
        );
        put(
            "load_cpu_us_per_delivery",
            format!("{:.4}", self.load_us_per_delivery()),
        );
        put(
            "server_cpu_us_per_delivery",
            opt(self.server_us_per_delivery()),
        );
        put(
            "rss_bytes_per_client",
            format!("{:.0}", self.rss_per_client),
        );
        put("client_struct_bytes", self.client_struct_bytes.to_string());
        put(
            "publish_rate_asked",
            i.publish_rate_asked
                .map_or("null".into(), |r| format!("{r}")),
        );
        let achieved = if i.window_seconds > 0.0 {
            self.published_sent as f64 / i.window_seconds
        } else {
            0.0
        };
        put("publish_rate_achieved", format!("{achieved:.1}"));
        put("published_sent", self.published_sent.to_string());
        put("published_acked", self.published_acked.to_string());
        put("published_failed", self.published_failed.to_string());
        put("interrupted", i.interrupted.to_string());
        put("all_delivered", self.all_delivered().to_string());
        o.push('}');
        o
    }
}

/// `s` as a JSON string literal.
pub fn json_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    sse_server::json::push_json_string(&mut o, s);
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_sums_each_event_across_workers() {
        let a = Partial {
            clients: 3,
            connected: 3,
            counted_per_group: vec![2, 1],
            delivered: 5,
            events: vec![
                ((0, Key::Ts(1)), 2),
                ((1, Key::Ts(2)), 1),
                ((0, Key::Ts(3)), 2),
            ],
            ..Partial::default()
        };
        let b = Partial {
            clients: 2,
            connected: 2,
            counted_per_group: vec![1, 1],
            delivered: 3,
            events: vec![
                ((0, Key::Ts(1)), 1),
                ((1, Key::Ts(2)), 1),
                ((0, Key::Ts(3)), 1),
            ],
            ..Partial::default()
        };
        let info = RunInfo {
            clients: 5,
            workers: 2,
            ..RunInfo::default()
        };
        let r = Report::merge(info.clone(), &[a.clone(), b]);
        assert_eq!((r.events, r.expected, r.delivered), (3, 8, 8));
        assert!(r.all_delivered(), "{}", r.table());
        let short = Partial {
            delivered: 2,
            events: vec![((0, Key::Ts(1)), 1), ((1, Key::Ts(2)), 1)],
            ..a.clone()
        };
        let r = Report::merge(info, &[a, short]);
        assert!(!r.all_delivered());
        assert_eq!(
            r.outcomes
                .iter()
                .filter(|o| o.received < o.expected)
                .count(),
            2
        );
    }

    #[test]
    fn json_is_one_line() {
        let r = Report {
            info: RunInfo {
                urls: vec!["http://x/\"q\"".into()],
                ..RunInfo::default()
            },
            ..Report::default()
        };
        let j = r.json();
        assert!(!j.contains('\n'));
        assert!(j.contains("\"all_delivered\":false"));
        assert!(j.contains("\\\"q\\\""));
    }
}
