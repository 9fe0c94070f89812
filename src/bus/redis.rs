//! What both bus threads say to Redis: the two Lua scripts, the connection setup, and the
//! decoding of stream entries and script answers.

use super::config::{BusConfig, RedisStore};
use super::fingerprint::AtOffset;
pub(super) use super::types::new_epoch;
use super::types::{BusEvent, ClusterId};
use redis::{Connection, RedisResult, Value};
use std::time::Duration;

/// Lua shared by the scripts: moves entries at the top of the stream that this deployment's
/// nodes did not write (an id above `<o>-0`, `o` the meta hash's counter: every node's entry
/// is written together with the counter) into the `foreign` stream, with their id, then sets
/// the log's last id back to `<o>-0` so the next offset can be added. Such an entry (an
/// `XADD … *`, an operator's `redis-cli`, another deployment on the prefix) would otherwise
/// block every publish (`XADD` needs an id above the top) and look like a log that went
/// back in time. Moves at most 100 per call; answers how many it moved.
const CLEAR_TOP: &str = r"
local function clear_top(log, foreign, o)
  local moved = 0
  while moved < 100 do
    local top = redis.call('XREVRANGE', log, '+', '-', 'COUNT', 1)
    if #top == 0 then break end
    local id = top[1][1]
    local ms, seq = string.match(id, '^(%d+)-(%d+)$')
    ms = tonumber(ms)
    if ms < o or (ms == o and seq == '0') then break end
    redis.call('XADD', foreign, 'MAXLEN', '~', 1000, '*', 'id', id, unpack(top[1][2]))
    redis.call('XDEL', log, id)
    moved = moved + 1
  end
  if moved > 0 then redis.call('XSETID', log, string.format('%d-0', o)) end
  return moved
end
";

/// Appends one event. `KEYS`: the stream, the meta hash, the stream foreign entries are
/// moved to. `ARGV`: an epoch to create if the meta hash is missing (a fresh or emptied
/// Redis), the `MAXLEN ~` bound, then the entry's field/value pairs. The offset is the meta
/// hash's counter plus one and becomes the entry's id `<offset>-0`; the counter is stored
/// only after `XADD` succeeded, so offsets have no holes. A new epoch deletes any stream left
/// from the lost one. Answers `{epoch, offset, foreign entries moved}`.
pub(super) fn publish_script() -> String {
    format!(
        "{CLEAR_TOP}{}",
        r"
local epoch = redis.call('HGET', KEYS[2], 'e')
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[2], 'e', epoch, 'o', 0)
end
local o = tonumber(redis.call('HGET', KEYS[2], 'o') or '0')
local moved = clear_top(KEYS[1], KEYS[3], o)
local offset = o + 1
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], string.format('%d-0', offset),
  'e', epoch, unpack(ARGV, 3))
redis.call('HSET', KEYS[2], 'o', offset)
return {epoch, offset, moved}
"
    )
}

/// Moves foreign entries off the top of the stream (see `CLEAR_TOP`), for a tail that met
/// one. `KEYS`: the stream, the meta hash, the foreign stream. Answers how many it moved.
pub(super) fn clear_script() -> String {
    format!(
        "{CLEAR_TOP}{}",
        r"
local o = tonumber(redis.call('HGET', KEYS[2], 'o') or '0')
return clear_top(KEYS[1], KEYS[3], o)
"
    )
}

/// Reads (creating it when missing, as [`publish_script`] does) the epoch, the head offset
/// and the first retained entry's id, atomically: what a tail needs when it (re)connects.
/// `ARGV`: the epoch to create, the epoch the caller follows and the last offset it saw
/// (empty when none), then `1` when the caller found the entry at that offset not to be the
/// one it delivered. When that epoch is current but its head is *below* the caller's offset,
/// Redis came back with an older copy of the log (an `appendfsync everysec` tail lost in a
/// crash, a restored backup, a replica promoted without the newest events): its next offsets
/// would repeat ids already delivered, so the log gets a new epoch, as if lost; likewise when
/// the caller says those offsets were already reused with other content. Answers
/// `{epoch, head, first_id or nil}`.
pub(super) const HELLO_SCRIPT: &str = r"
local epoch = redis.call('HGET', KEYS[2], 'e')
local head = tonumber(redis.call('HGET', KEYS[2], 'o') or '0')
local seen = tonumber(ARGV[3])
local diverged = ARGV[4] == '1'
if not epoch or (epoch == ARGV[2] and seen and (head < seen or diverged)) then
  epoch = ARGV[1]
  head = 0
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[2], 'e', epoch, 'o', 0)
end
local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
local first_id = false
if #first > 0 then first_id = first[1][1] end
return {epoch, head, first_id}
";

/// Opens a connection whose every read and write is bounded by `read_timeout`/`io_timeout`:
/// a Redis that stops answering is seen as broken, never waited on.
pub(super) fn connect(
    client: &redis::Client,
    config: &BusConfig,
    read_timeout: Duration,
) -> RedisResult<Connection> {
    let con = client.get_connection_with_timeout(config.io_timeout)?;
    con.set_write_timeout(Some(config.io_timeout))?;
    con.set_read_timeout(Some(read_timeout))?;
    Ok(con)
}

/// What the log knows when a tail connects.
#[derive(Debug)]
pub(super) struct Hello {
    pub epoch: String,
    pub head: u64,
    pub first_retained: Option<u64>,
}

/// Runs [`HELLO_SCRIPT`] (by SHA; the crate loads it on `NOSCRIPT`); `seen` is the epoch
/// followed and the last offset seen in it, if any; `diverged`: the entry at that offset is
/// not the one delivered (a new epoch is started if `seen`'s epoch is still current).
pub(super) fn hello(
    con: &mut Connection,
    keys: &RedisStore,
    script: &redis::Script,
    epoch_if_missing: &str,
    seen: Option<(&str, u64)>,
    diverged: bool,
) -> RedisResult<Hello> {
    let (followed, offset) = match seen {
        Some((epoch, offset)) => (epoch, offset.to_string()),
        None => ("", String::new()),
    };
    let value: Value = script
        .key(keys.stream_key())
        .key(keys.meta_key())
        .arg(epoch_if_missing)
        .arg(followed)
        .arg(offset)
        .arg(if diverged { "1" } else { "" })
        .invoke(con)?;
    let parts = as_array(&value).unwrap_or(&[]);
    let epoch = parts
        .first()
        .and_then(as_text)
        .filter(|e| super::types::is_valid_epoch(e));
    let head = parts.get(1).and_then(as_u64);
    match (epoch, head) {
        (Some(epoch), Some(head)) => Ok(Hello {
            epoch,
            head,
            first_retained: parts
                .get(2)
                .and_then(as_text)
                .and_then(|id| entry_offset(&id)),
        }),
        _ => Err(protocol_error("unexpected answer to the hello script")),
    }
}

/// Decodes [`publish_script`]'s `{epoch, offset, moved}`: the id, and how many foreign
/// entries it moved off the top of the stream first.
pub(super) fn published_id(value: &Value) -> Option<(ClusterId, u64)> {
    let parts = as_array(value)?;
    let epoch = parts.first().and_then(as_text)?;
    let offset = parts.get(1).and_then(as_u64)?;
    let moved = parts.get(2).and_then(as_u64).unwrap_or(0);
    super::types::is_valid_epoch(&epoch).then_some((ClusterId { epoch, offset }, moved))
}

/// The entry field/value pairs of one publish (after the epoch, which the script adds):
/// `t` topic, `v` event name, `i` publisher id, `m` acceptance time (unix ms), `d` data.
pub(super) fn entry_fields(
    publish: &super::types::Publish,
) -> Vec<(&'static str, std::borrow::Cow<'_, str>)> {
    let mut fields = vec![("t", publish.topic.as_str().into())];
    if let Some(event) = &publish.event {
        fields.push(("v", event.as_str().into()));
    }
    if let Some(id) = &publish.custom_id {
        fields.push(("i", id.as_str().into()));
    }
    fields.push(("m", publish.accepted_ms.to_string().into()));
    fields.push(("d", publish.data.as_str().into()));
    fields
}

/// One stream entry, decoded.
#[derive(Debug)]
pub(super) enum Entry {
    Event(BusEvent),
    /// Written by this deployment's script in another epoch: the log was lost and rebuilt
    /// under the tail's feet (a flush while connected).
    OtherEpoch {
        offset: u64,
    },
    /// Not an entry this bus wrote (missing fields, not UTF-8); it takes its offset's place
    /// as a hole, which the core treats like a trimmed event.
    Unreadable {
        offset: u64,
        why: String,
    },
    /// An id no node writes (`<ms>-<seq>` with `seq` above 0): someone else's entry.
    Foreign {
        ms: u64,
        seq: u64,
    },
}

impl Entry {
    /// Whether the entry sits above `<head>-0`, the newest id a node of this deployment
    /// wrote (as far as the meta hash read before it says): then it is not (yet) known to be
    /// ours, and a tail must not move past it (see [`clear_script`]).
    pub(super) fn above(&self, head: u64) -> bool {
        match self {
            Entry::Event(e) => e.offset > head,
            Entry::OtherEpoch { offset } | Entry::Unreadable { offset, .. } => *offset > head,
            Entry::Foreign { ms, seq } => *ms > head || (*ms == head && *seq > 0),
        }
    }
}

/// Decodes the entries of an `XRANGE` answer.
pub(super) fn xrange_entries(value: &Value, epoch: &str) -> Vec<Entry> {
    let list = as_array(value).unwrap_or(&[]);
    list.iter().filter_map(|e| decode_entry(e, epoch)).collect()
}

/// Decodes the entries of an `XREAD` answer on one stream (`Nil`, on a timeout, is none).
pub(super) fn xread_entries(value: &Value, epoch: &str) -> Vec<Entry> {
    let stream_entries = match value {
        // RESP2: [[stream, [entries…]]]
        Value::Array(streams) => streams
            .first()
            .and_then(as_array)
            .and_then(|stream| stream.get(1)),
        // RESP3: {stream: [entries…]}
        Value::Map(pairs) => pairs.first().map(|(_, entries)| entries),
        _ => None,
    };
    stream_entries.map_or_else(Vec::new, |list| xrange_entries(list, epoch))
}

fn decode_entry(value: &Value, epoch: &str) -> Option<Entry> {
    let parts = as_array(value)?;
    let id = parts.first().and_then(as_text)?;
    let Some(offset) = entry_offset(&id) else {
        let (ms, seq) = id.split_once('-')?;
        return Some(Entry::Foreign {
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
        });
    };
    let fields = parts.get(1).and_then(as_array).unwrap_or(&[]);
    let mut found: [Option<String>; 6] = Default::default();
    for pair in fields.chunks(2) {
        let [name, value] = pair else { break };
        let slot = match as_bytes(name) {
            Some(b"e") => 0,
            Some(b"t") => 1,
            Some(b"v") => 2,
            Some(b"i") => 3,
            Some(b"d") => 4,
            Some(b"m") => 5,
            _ => continue,
        };
        match as_bytes(value).map(|b| String::from_utf8(b.to_vec())) {
            Some(Ok(text)) => found[slot] = Some(text),
            _ => {
                return Some(Entry::Unreadable {
                    offset,
                    why: "a field is not UTF-8 text".into(),
                });
            }
        }
    }
    let [entry_epoch, topic, event, custom_id, data, accepted] = found;
    let (Some(entry_epoch), Some(topic), Some(data)) = (entry_epoch, topic, data) else {
        return Some(Entry::Unreadable {
            offset,
            why: "missing fields".into(),
        });
    };
    if entry_epoch != epoch {
        return Some(Entry::OtherEpoch { offset });
    }
    Some(Entry::Event(BusEvent {
        offset,
        id: ClusterId {
            epoch: entry_epoch,
            offset,
        },
        topic,
        event,
        custom_id,
        data,
        // Written by every publish; absent from older entries (then not measured).
        accepted_ms: accepted.and_then(|ms| ms.parse().ok()),
    }))
}

/// Reads back the entry at `offset` (`XRANGE <offset>-0 <offset>-0`) as the tail
/// fingerprint's rule sees it; `epoch` is the log's current one.
pub(super) fn entry_at(
    con: &mut Connection,
    keys: &RedisStore,
    offset: u64,
    epoch: &str,
) -> RedisResult<Vec<Entry>> {
    let id = format!("{offset}-0");
    let value: Value = redis::cmd("XRANGE")
        .arg(keys.stream_key())
        .arg(&id)
        .arg(&id)
        .query(con)?;
    Ok(xrange_entries(&value, epoch))
}

/// What decoded entries read back at one offset are to the fingerprint's rule.
pub(super) fn at_offset(entries: &[Entry]) -> AtOffset<'_> {
    match entries.first() {
        Some(Entry::Event(event)) => AtOffset::Event(event),
        Some(Entry::OtherEpoch { .. } | Entry::Unreadable { .. }) => AtOffset::Other,
        Some(Entry::Foreign { .. }) | None => AtOffset::Nothing,
    }
}

/// The offset of a stream id `<offset>-0`; `None` for ids this bus does not write.
pub(super) fn entry_offset(id: &str) -> Option<u64> {
    let (ms, seq) = id.split_once('-')?;
    if seq != "0" {
        return None;
    }
    ms.parse().ok().filter(|&offset| offset > 0)
}

pub(super) fn as_array(value: &Value) -> Option<&[Value]> {
    match value {
        Value::Array(items) | Value::Set(items) => Some(items),
        _ => None,
    }
}

pub(super) fn as_bytes(value: &Value) -> Option<&[u8]> {
    match value {
        Value::BulkString(bytes) => Some(bytes),
        Value::SimpleString(text) => Some(text.as_bytes()),
        _ => None,
    }
}

pub(super) fn as_text(value: &Value) -> Option<String> {
    as_bytes(value).and_then(|b| String::from_utf8(b.to_vec()).ok())
}

pub(super) fn as_u64(value: &Value) -> Option<u64> {
    match value {
        Value::Int(n) => u64::try_from(*n).ok(),
        other => as_text(other).and_then(|t| t.parse().ok()),
    }
}

pub(super) fn protocol_error(what: &'static str) -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Parse, what))
}

/// A short, one-line description of a Redis error for logs and replies.
pub(super) fn describe(error: &redis::RedisError) -> String {
    let text = error.to_string();
    text.lines().next().unwrap_or("redis error").to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    fn entry(id: &str, fields: &[&str]) -> Value {
        Value::Array(vec![
            bulk(id),
            Value::Array(fields.iter().map(|f| bulk(f)).collect()),
        ])
    }

    #[test]
    fn decodes_an_xread_answer() {
        let answer = Value::Array(vec![Value::Array(vec![
            bulk("{sse}:log"),
            Value::Array(vec![
                entry("7-0", &["e", "ep", "t", "", "d", "hello"]),
                entry(
                    "8-0",
                    &["e", "ep", "t", "news", "v", "x", "i", "c1", "d", "a\nb"],
                ),
                entry("9-0", &["e", "other", "t", "", "d", ""]),
                entry("10-0", &["e", "ep", "d", "no topic"]),
                entry("1700000000000-3", &["e", "ep", "t", "", "d", "foreign"]),
            ]),
        ])]);
        let got = xread_entries(&answer, "ep");
        assert_eq!(got.len(), 5);
        assert!(matches!(
            got[4],
            Entry::Foreign {
                ms: 1700000000000,
                seq: 3
            }
        ));
        assert!(got[4].above(10) && !got[0].above(7) && got[0].above(6));
        assert!(Entry::Foreign { ms: 7, seq: 1 }.above(7));
        assert!(!Entry::Foreign { ms: 7, seq: 1 }.above(8));
        let Entry::Event(first) = &got[0] else {
            panic!("{got:?}")
        };
        assert_eq!(
            (first.offset, first.topic.as_str(), first.data.as_str()),
            (7, "", "hello")
        );
        assert_eq!(first.id.to_string(), "ep-7");
        assert_eq!(first.event, None);
        let Entry::Event(second) = &got[1] else {
            panic!("{got:?}")
        };
        assert_eq!(second.event.as_deref(), Some("x"));
        assert_eq!(second.custom_id.as_deref(), Some("c1"));
        assert_eq!(second.data, "a\nb");
        assert!(matches!(got[2], Entry::OtherEpoch { offset: 9 }));
        assert!(matches!(got[3], Entry::Unreadable { offset: 10, .. }));
    }

    #[test]
    fn decodes_an_xrange_answer_and_timeouts() {
        let answer = Value::Array(vec![entry("3-0", &["e", "ep", "t", "a", "d", "x"])]);
        assert!(matches!(&xrange_entries(&answer, "ep")[..], [Entry::Event(e)] if e.offset == 3));
        assert!(xread_entries(&Value::Nil, "ep").is_empty());
        assert!(xrange_entries(&Value::Array(vec![]), "ep").is_empty());
    }

    #[test]
    fn non_utf8_fields_are_unreadable() {
        let answer = Value::Array(vec![Value::Array(vec![
            bulk("5-0"),
            Value::Array(vec![
                bulk("e"),
                bulk("ep"),
                bulk("t"),
                bulk(""),
                bulk("d"),
                Value::BulkString(vec![0xff]),
            ]),
        ])]);
        assert!(matches!(
            &xrange_entries(&answer, "ep")[..],
            [Entry::Unreadable { offset: 5, .. }]
        ));
    }

    #[test]
    fn stream_ids() {
        assert_eq!(entry_offset("1-0"), Some(1));
        assert_eq!(entry_offset("42-0"), Some(42));
        assert_eq!(entry_offset("42-1"), None);
        assert_eq!(entry_offset("0-0"), None);
        assert_eq!(entry_offset("x-0"), None);
        assert_eq!(entry_offset("42"), None);
    }

    #[test]
    fn script_answers() {
        let ok = Value::Array(vec![bulk("ep"), Value::Int(12)]);
        assert_eq!(
            published_id(&ok).map(|(id, moved)| (id.to_string(), moved)),
            Some(("ep-12".into(), 0))
        );
        let moved = Value::Array(vec![bulk("ep"), Value::Int(13), Value::Int(2)]);
        assert_eq!(published_id(&moved).map(|(_, m)| m), Some(2));
        assert_eq!(
            published_id(&Value::Array(vec![bulk("EP"), Value::Int(1)])),
            None
        );
        assert_eq!(
            published_id(&Value::Array(vec![bulk("ep"), Value::Int(-1)])),
            None
        );
        assert_eq!(published_id(&Value::Nil), None);
        let epoch = new_epoch(5);
        assert_eq!(epoch.len(), 13);
        assert!(super::super::types::is_valid_epoch(&epoch));
    }
}
