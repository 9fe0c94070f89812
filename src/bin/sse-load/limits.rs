//! What the machine allows, decided before any socket opens: descriptors per process (so how
//! many workers), descriptors for the whole system, and ephemeral ports per source address
//! (so how many loopback source addresses). A request past a limit is a usage error that names
//! the limit and what it allows.

use std::fs;

/// Descriptors each worker keeps back from clients: epoll, stdio, the publisher, a margin.
pub const RESERVED_FDS: u64 = 16;
/// Use at most this share of one address's ephemeral ports (the rest for everything else).
const PORT_SHARE: f64 = 0.9;
/// Spread further, to at most this share per source address, when addresses are free to
/// choose: the kernel's search for a free ephemeral port in `connect` slows down sharply as
/// the range fills (measured: 38,000 connections from one address took 51 s, with 8% of them
/// too late for the server's request timeout).
const PORT_SHARE_FAST: f64 = 0.125;
/// A worker is worth its own process from this many clients on (below, one core is enough).
const CLIENTS_PER_CORE: u64 = 5_000;

/// The machine's limits, as read.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Open files per process (after raising the soft limit to the hard one).
    pub nofile: u64,
    /// Descriptors the whole system can still open (`fs.file-max` minus those in use).
    pub system_files_free: Option<u64>,
    /// Ephemeral ports per (source address, destination).
    pub ephemeral_ports: u64,
    pub cores: u64,
}

impl Limits {
    /// Reads them (raising this process's soft open-file limit, as workers will).
    pub fn read() -> Limits {
        let nofile = sse_server::os::raise_nofile_limit();
        let system_files_free = fs::read_to_string("/proc/sys/fs/file-nr")
            .ok()
            .and_then(|s| {
                let f: Vec<u64> = s
                    .split_whitespace()
                    .filter_map(|v| v.parse().ok())
                    .collect();
                Some(f.get(2)?.saturating_sub(*f.first()?))
            });
        let ephemeral_ports = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|s| {
                let f: Vec<u64> = s
                    .split_whitespace()
                    .filter_map(|v| v.parse().ok())
                    .collect();
                Some(f.get(1)?.saturating_sub(*f.first()?) + 1)
            })
            .unwrap_or(28_232);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
        Limits {
            nofile,
            system_files_free,
            ephemeral_ports,
            cores,
        }
    }

    /// Clients one worker can hold.
    pub fn per_worker(&self) -> u64 {
        self.nofile.saturating_sub(RESERVED_FDS)
    }

    /// How many workers for `clients`: enough for the open-file limit, and for big runs one
    /// per core; `asked` (`--workers`) is checked against the limit.
    pub fn workers(&self, clients: u64, asked: Option<u32>) -> Result<u64, String> {
        let room = self.per_worker().max(1);
        let needed = clients.div_ceil(room);
        match asked {
            Some(n) if u64::from(n) < needed => Err(format!(
                "--workers {n} is too few for --clients {clients}: the open-file limit (ulimit -n {}) allows {room} clients per worker, so at least {needed} workers",
                self.nofile
            )),
            Some(n) => Ok(u64::from(n).min(clients)),
            None => Ok(needed
                .max(self.cores.min(clients.div_ceil(CLIENTS_PER_CORE)))
                .max(1)),
        }
    }

    /// Checks the whole-system descriptor limit.
    pub fn check_system(&self, clients: u64) -> Result<(), String> {
        match self.system_files_free {
            Some(free) if clients > free => Err(format!(
                "--clients {clients} needs {clients} descriptors, but the system-wide limit (fs.file-max) leaves {free} free"
            )),
            _ => Ok(()),
        }
    }

    /// Loopback source addresses needed for `per_target` connections to one server address.
    pub fn source_ips_needed(&self, per_target: u64) -> u64 {
        self.spread(per_target, PORT_SHARE)
    }

    fn spread(&self, per_target: u64, share: f64) -> u64 {
        let usable = ((self.ephemeral_ports as f64 * share) as u64).max(1);
        per_target.div_ceil(usable).max(1)
    }

    /// The source addresses to use: `asked`, or as many as the ports need. Past 254
    /// (127.0.0.1 … 127.0.0.254), or when a non-loopback server needs several, it is an error.
    pub fn source_ips(
        &self,
        per_target: u64,
        asked: Option<u8>,
        loopback_v4: bool,
    ) -> Result<u8, String> {
        let needed = self.source_ips_needed(per_target);
        if let Some(k) = asked {
            if u64::from(k) < needed {
                eprintln!(
                    "sse-load: warning: --source-ips {k} gives {} ephemeral ports per server; {per_target} connections need {needed} addresses",
                    u64::from(k) * self.ephemeral_ports
                );
            }
            return Ok(k);
        }
        if needed > 1 && !loopback_v4 {
            return Err(format!(
                "{per_target} connections to one server need {needed} source addresses ({} ephemeral ports each), which only works for IPv4 loopback servers",
                self.ephemeral_ports
            ));
        }
        if loopback_v4 && needed <= 254 {
            return Ok(self.spread(per_target, PORT_SHARE_FAST).clamp(needed, 254) as u8);
        }
        u8::try_from(needed).ok().filter(|&k| k <= 254).ok_or_else(|| {
            format!(
                "{per_target} connections to one server need {needed} loopback source addresses ({} ephemeral ports each); at most 254 exist",
                self.ephemeral_ports
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            nofile: 20_000,
            system_files_free: Some(1_000_000),
            ephemeral_ports: 28_232,
            cores: 2,
        }
    }

    #[test]
    fn workers_follow_the_open_file_limit_and_cores() {
        let l = limits();
        assert_eq!(l.workers(1_000, None), Ok(1));
        assert_eq!(l.workers(10_000, None), Ok(2));
        assert_eq!(l.workers(38_000, None), Ok(2));
        assert_eq!(l.workers(100_000, None), Ok(6));
        assert_eq!(l.workers(100_000, Some(8)), Ok(8));
        assert!(
            l.workers(100_000, Some(5))
                .unwrap_err()
                .contains("open-file limit")
        );
        assert_eq!(l.workers(3, Some(8)), Ok(3));
    }

    #[test]
    fn source_addresses_follow_the_ports() {
        let l = limits();
        assert_eq!(l.source_ips_needed(19_000), 1);
        assert_eq!(l.source_ips_needed(50_000), 2);
        assert_eq!(l.source_ips(1_000, None, true), Ok(1));
        assert_eq!(l.source_ips(19_000, None, true), Ok(6));
        assert_eq!(l.source_ips(100_000, None, true), Ok(29));
        assert_eq!(l.source_ips(19_000, None, false), Ok(1));
        assert_eq!(l.source_ips(100_000, Some(8), true), Ok(8));
        assert!(l.source_ips(50_000, None, false).is_err());
        assert!(
            l.source_ips(10_000_000, None, true)
                .unwrap_err()
                .contains("254")
        );
        assert!(
            l.check_system(2_000_000)
                .unwrap_err()
                .contains("fs.file-max")
        );
    }
}
