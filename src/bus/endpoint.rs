//! Where the Redis master is: a fixed address (`redis://`, `redis+unix://`, `unix://`), or
//! whatever the Sentinels name now (`redis+sentinel://h1:p1,h2:p2/<master>[/db]`).
//!
//! Each thread asks its [`Endpoint`] for a client on every (re)connect, so after a Sentinel
//! failover both the tail and the command connection follow the promoted master; while no
//! Sentinel names a reachable master the lookup fails and the callers treat it as Redis
//! being down (backoff, `503`s, streams kept open). Every step is bounded by the bus's
//! connect and I/O timeouts: a Sentinel or master that stops answering is skipped, never
//! waited on. (The `redis` crate's own Sentinel client connects without timeouts, which is
//! why the lookup is done here.)

use redis::{Client, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisResult, Value};
use std::time::Duration;

/// How to reach the master.
#[derive(Clone, Debug)]
pub(super) enum Endpoint {
    /// One fixed server.
    Direct(Client),
    /// The master the Sentinels name for `master`, database `db`.
    Sentinel(SentinelUrl),
}

/// A parsed `redis+sentinel://` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct SentinelUrl {
    /// `host:port` of each Sentinel, asked in this order.
    pub sentinels: Vec<(String, u16)>,
    /// The name the Sentinels monitor (`sentinel monitor <name> …`).
    pub master: String,
    pub db: i64,
}

impl SentinelUrl {
    /// Parses `redis+sentinel://h:p[,h:p…]/<master>[/db]`; the message says what is wrong.
    pub(super) fn parse(url: &str) -> Result<SentinelUrl, String> {
        let rest = url
            .strip_prefix("redis+sentinel://")
            .ok_or("not a redis+sentinel:// URL")?;
        let (hosts, path) = rest.split_once('/').ok_or("no master name")?;
        if hosts.contains('@') {
            return Err("credentials are not supported in a sentinel URL".into());
        }
        let mut sentinels = Vec::new();
        for host in hosts.split(',') {
            let (name, port) = host
                .rsplit_once(':')
                .ok_or_else(|| format!("sentinel {host:?} needs host:port"))?;
            let port: u16 = port
                .parse()
                .ok()
                .filter(|&p| p > 0)
                .ok_or_else(|| format!("sentinel {host:?}: bad port"))?;
            let name = name.trim_start_matches('[').trim_end_matches(']');
            if name.is_empty() {
                return Err(format!("sentinel {host:?}: no host"));
            }
            sentinels.push((name.to_owned(), port));
        }
        let (master, db) = match path.split_once('/') {
            Some((master, db)) => (
                master,
                db.parse::<u16>()
                    .map_err(|_| "the part after the master name must be a database number")?,
            ),
            None => (path, 0),
        };
        let valid_name = !master.is_empty()
            && master
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        if !valid_name {
            return Err("the master name must be letters, digits, '_', '.' or '-'".into());
        }
        Ok(SentinelUrl {
            sentinels,
            master: master.to_owned(),
            db: i64::from(db),
        })
    }
}

impl Endpoint {
    /// The endpoint for a `--redis` URL (already validated by `config::validate_url`).
    pub(super) fn open(url: &str) -> Result<Endpoint, String> {
        if url.starts_with("redis+sentinel://") {
            return SentinelUrl::parse(url).map(Endpoint::Sentinel);
        }
        Client::open(url)
            .map(Endpoint::Direct)
            .map_err(|e| e.to_string())
    }

    /// A client for the current master. With Sentinels: each is asked in turn
    /// (`SENTINEL get-master-addr-by-name`), and the first address whose server says
    /// `ROLE` master wins; a Sentinel that is down, does not know the name, or names a
    /// server that is not (yet) a master is skipped.
    pub(super) fn client(&self, timeout: Duration) -> RedisResult<Client> {
        let sentinel = match self {
            Endpoint::Direct(client) => return Ok(client.clone()),
            Endpoint::Sentinel(sentinel) => sentinel,
        };
        let mut last = "no sentinel answered".to_owned();
        for (host, port) in &sentinel.sentinels {
            match master_named_by(host, *port, sentinel, timeout) {
                Ok(client) => return Ok(client),
                Err(why) => last = format!("sentinel {host}:{port}: {why}"),
            }
        }
        Err(redis::RedisError::from((
            redis::ErrorKind::Io,
            "no master from the sentinels",
            last,
        )))
    }
}

fn master_named_by(
    host: &str,
    port: u16,
    sentinel: &SentinelUrl,
    timeout: Duration,
) -> Result<Client, String> {
    let describe = |e: redis::RedisError| super::redis::describe(&e);
    let asked = tcp_info(host, port, 0)
        .and_then(Client::open)
        .map_err(describe)?;
    let mut con = asked
        .get_connection_with_timeout(timeout)
        .map_err(describe)?;
    con.set_read_timeout(Some(timeout)).map_err(describe)?;
    con.set_write_timeout(Some(timeout)).map_err(describe)?;
    let address: Option<(String, u16)> = redis::cmd("SENTINEL")
        .arg("get-master-addr-by-name")
        .arg(&sentinel.master)
        .query(&mut con)
        .map_err(describe)?;
    let (ip, port) = address.ok_or_else(|| format!("does not know {:?}", sentinel.master))?;
    let master = tcp_info(&ip, port, sentinel.db)
        .and_then(Client::open)
        .map_err(describe)?;
    let mut con = master
        .get_connection_with_timeout(timeout)
        .map_err(|e| format!("master {ip}:{port}: {}", describe(e)))?;
    con.set_read_timeout(Some(timeout)).map_err(describe)?;
    let role: Value = redis::cmd("ROLE").query(&mut con).map_err(describe)?;
    let is_master = super::redis::as_array(&role)
        .and_then(|parts| parts.first())
        .and_then(super::redis::as_text)
        .is_some_and(|r| r == "master");
    if is_master {
        Ok(master)
    } else {
        Err(format!("{ip}:{port} is not a master (yet)"))
    }
}

fn tcp_info(host: &str, port: u16, db: i64) -> RedisResult<ConnectionInfo> {
    let info = ConnectionAddr::Tcp(host.to_owned(), port).into_connection_info()?;
    let settings = info.redis_settings().clone().set_db(db);
    Ok(info.set_redis_settings(settings))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinel_urls() {
        let url = SentinelUrl::parse("redis+sentinel://127.0.0.1:26379,h2:26380/mymaster/2")
            .expect("valid");
        assert_eq!(
            url.sentinels,
            vec![("127.0.0.1".into(), 26379), ("h2".into(), 26380)]
        );
        assert_eq!((url.master.as_str(), url.db), ("mymaster", 2));
        let url = SentinelUrl::parse("redis+sentinel://[::1]:26379/m").expect("valid");
        assert_eq!((url.sentinels[0].0.as_str(), url.db), ("::1", 0));
        for (bad, why) in [
            ("redis+sentinel://h:1", "no master"),
            ("redis+sentinel://h/m", "host:port"),
            ("redis+sentinel://h:0/m", "bad port"),
            ("redis+sentinel://:1/m", "no host"),
            ("redis+sentinel://h:1/", "master name"),
            ("redis+sentinel://h:1/m/x", "database"),
            ("redis+sentinel://u:p@h:1/m", "credentials"),
        ] {
            let err = SentinelUrl::parse(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }
}
