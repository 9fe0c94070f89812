//! Publishing: `POST /publish` (auth, fields, the body in either framing) and
//! [`Core::publish`], which validates, encodes once, appends to the event log and wakes the
//! topic's subscribers; ticks are published here too.
use std::rc::Rc;
use std::time::Instant;

use chrono::{DateTime, Utc};

use super::Core;
use super::access::Denied;
use super::answers::{answer, connection_for, fail, read_body, refuse};
use super::checks::Answer;
use super::client::{Bytes, ClientId};
use super::error::RequestError;
use super::event_log::{DEFAULT_TOPIC, TICK_TOPIC_ID};
use super::exchange::{AfterAnswer, BodyPurpose, CheckFor, PublishFields};
use super::log_engine::Appended;
use crate::http::body::BodyReader;
use crate::http::request::RequestHead;
use crate::http::response;
use crate::sse::frame;

/// Longest topic name, event type or event id accepted, in bytes.
pub const MAX_NAME: usize = 256;

pub(super) fn valid_topic_name(name: &str) -> bool {
    name.len() <= MAX_NAME && !name.contains('\0')
}

/// Checks a publish's head (topic, token, fields, framing) and begins reading its body.
/// `checked`: its token's check, made off the reactor, once it came back.
pub(super) fn begin_publish(
    core: &mut Core,
    id: ClientId,
    head: &RequestHead,
    more: bool,
    checked: Option<&Answer>,
    now: Instant,
) {
    let topic = head.param("topic").unwrap_or(DEFAULT_TOPIC).to_owned();
    let event = head.param("event").map(str::to_owned);
    let event_id = head.param("id").map(str::to_owned);
    if !valid_topic_name(&topic) {
        fail(core, id, RequestError::InvalidTopic, now);
        return;
    }
    // `--publish-token`, or a token whose `publish` claim covers the topic (401/403).
    match core.authorize_publish(head, &topic, checked, now) {
        Ok(_) => {}
        Err(Denied::Refused(refusal)) => return refuse(core, id, refusal, now),
        // Held until its signature is checked off the reactor; then this runs again.
        Err(Denied::Check(token)) => {
            return core.hold_for_check(id, head, CheckFor::Publish, token, now);
        }
    }
    if let Err(e) = check_fields(event.as_deref(), event_id.as_deref()) {
        fail(core, id, e, now);
        return;
    }
    let reader = match BodyReader::for_use(head, core.cfg.max_body) {
        Ok(reader) => reader,
        Err(e) => return fail(core, id, e.into(), now),
    };
    let fields = PublishFields {
        topic,
        event,
        id: event_id,
        connection: connection_for(core, head),
    };
    if head.expect_continue
        && !more
        && !reader.is_done()
        && let Some(c) = core.client_mut(id)
    {
        c.set_pending(Bytes::Static(response::CONTINUE));
        core.schedule(id);
    }
    read_body(core, id, reader, BodyPurpose::Publish(fields));
}

pub(super) fn check_fields(event: Option<&str>, id: Option<&str>) -> Result<(), RequestError> {
    if let Some(e) = event
        && (e.is_empty() || e.len() > MAX_NAME || !frame::valid_field_value(e))
    {
        return Err(RequestError::InvalidEvent);
    }
    if let Some(i) = id
        && (i.is_empty() || i.len() > MAX_NAME || !frame::valid_field_value(i))
    {
        return Err(RequestError::InvalidId);
    }
    Ok(())
}

/// A publish body is complete: publish the event and answer with its id.
pub(super) fn finish_publish(
    core: &mut Core,
    id: ClientId,
    fields: PublishFields,
    body: Vec<u8>,
    now: Instant,
) {
    let Ok(data) = String::from_utf8(body) else {
        fail(core, id, RequestError::NotUtf8, now);
        return;
    };
    let PublishFields {
        topic,
        event,
        id: event_id,
        connection,
    } = fields;
    let appended = core
        .check_event(&topic, event.as_deref(), event_id.as_deref())
        .and_then(|()| {
            let (event, custom_id) = (event.as_deref(), event_id.as_deref());
            core.append_event(Some(id), &topic, event, custom_id, &data, now)
        });
    match appended {
        Ok(Appended::Now(event_id)) => {
            let body = format!("{event_id}\n");
            let text = "text/plain; charset=utf-8";
            let r = response::answer(200, text, &[], body.as_bytes(), connection, false);
            answer(core, id, 200, r, AfterAnswer::after(connection), now);
        }
        // The answer waits for the log; pipelined requests are read meanwhile.
        Ok(Appended::Later(token)) => core.await_publish(id, token, connection, now),
        Err(RequestError::BusUnavailable { .. }) => core.refuse_publish_kept(id, connection, now),
        Err(e) => fail(core, id, e, now),
    }
}

impl Core {
    /// Validates the event and appends it to the log: its id, or an empty string when the
    /// log answers later.
    pub(super) fn publish_event(
        &mut self,
        topic: &str,
        event: Option<&str>,
        id: Option<&str>,
        data: &str,
        now: Instant,
    ) -> Result<String, RequestError> {
        self.check_event(topic, event, id)?;
        match self.append_event(None, topic, event, id, data, now)? {
            Appended::Now(event_id) => Ok(event_id),
            // The id is not known yet: the shared log answers later (logged if refused).
            Appended::Later(_) => Ok(String::new()),
        }
    }

    /// Whether an event can be published at all (shutting down, names, data).
    pub(super) fn check_event(
        &self,
        topic: &str,
        event: Option<&str>,
        id: Option<&str>,
    ) -> Result<(), RequestError> {
        if self.shutdown_deadline.is_some() {
            return Err(RequestError::ShuttingDown);
        }
        if !valid_topic_name(topic) {
            return Err(RequestError::InvalidTopic);
        }
        check_fields(event, id)?;
        Ok(())
    }

    pub(super) fn tick(&mut self, now: Instant, wall: DateTime<Utc>) {
        let mut buf = Vec::with_capacity(64);
        frame::encode_event(&mut buf, None, None, &crate::timefmt::tick_text(wall));
        self.metrics.ticks += 1;
        let gseq = self.tick_seq();
        self.append(now, TICK_TOPIC_ID, gseq, Rc::from(buf), None);
    }
}
