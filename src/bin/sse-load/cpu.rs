//! CPU time and memory from `/proc`: this process's, a server's (found by its listening port
//! when not given), so a run can say what it cost next to what the server spent.

use std::fs;

/// User plus system clock ticks of a process, from `/proc/PID/stat` (`self` for this one).
pub fn ticks(pid: &str) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces or parentheses: fields start after the last `)`.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_ascii_whitespace().collect();
    // After `)`: state is field 3, utime field 14, stime field 15 (1-based in proc(5)).
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// This process's CPU clock ticks (0 if `/proc` is unreadable).
pub fn self_ticks() -> u64 {
    ticks("self").unwrap_or(0)
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`, usually 100).
pub fn ticks_per_second() -> u64 {
    // SAFETY: sysconf with a constant argument has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as u64 } else { 100 }
}

/// This process's resident memory in bytes (`VmRSS`; 0 if unknown).
pub fn rss_bytes() -> u64 {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// The process listening on TCP `port` (IPv4 or IPv6), if this user can see it.
pub fn listener_pid(port: u16) -> Option<u32> {
    let inode = listen_inode(port)?;
    let want = format!("socket:[{inode}]");
    for entry in fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if fs::read_link(fd.path()).is_ok_and(|l| l.to_str() == Some(want.as_str())) {
                return Some(pid);
            }
        }
    }
    None
}

/// The inode of the listening socket on `port`, from `/proc/net/tcp` and `tcp6`.
fn listen_inode(port: u16) -> Option<u64> {
    let port_hex = format!(":{port:04X}");
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_ascii_whitespace().collect();
            // local_address, rem_address, st (0A = LISTEN), …, inode is field 9.
            if f.len() > 9 && f[1].ends_with(&port_hex) && f[3] == "0A" {
                return f[9].parse().ok();
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process_and_finds_a_listener() {
        assert!(ticks("self").is_some());
        assert!(rss_bytes() > 0);
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert_eq!(listener_pid(port), Some(std::process::id()));
        assert!(ticks("0").is_none());
    }
}
