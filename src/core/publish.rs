//! Publishing: `POST /publish` (auth, fields, the body in either framing) and
//! [`Core::publish`], which validates, encodes once, appends to the event log and wakes the
//! topic's subscribers; ticks are published here too.
use std::rc::Rc;
use std::time::Instant;

use chrono::{DateTime, Utc};

use super::Core;
use super::client::{AfterAnswer, BodyPurpose, Bytes, ClientId, Pending, PublishFields};
use super::connection::{answer, fail, read_body};
use super::endpoints::{authorize, connection_for};
use super::error::RequestError;
use super::event_log::{DEFAULT_TOPIC, TICK_TOPIC_ID};
use super::topic::TopicId;
use crate::bus::types::Publish;
use crate::http::body::BodyReader;
use crate::http::request::RequestHead;
use crate::http::response;
use crate::sse::frame;

/// Longest topic name, event type or event id accepted, in bytes.
pub const MAX_NAME: usize = 256;

pub(super) fn valid_topic_name(name: &str) -> bool {
    name.len() <= MAX_NAME && !name.contains('\0')
}

/// The topic named `name`, created or recycled if needed (see [`EventLog::topic_for`]).
///
/// [`EventLog::topic_for`]: super::event_log::EventLog::topic_for
pub(super) fn topic_for(core: &mut Core, name: &str) -> Result<TopicId, RequestError> {
    core.log.topic_for(name).ok_or(RequestError::TooManyTopics)
}

pub(super) fn begin_publish(
    core: &mut Core,
    id: ClientId,
    head: &RequestHead,
    rest: Vec<u8>,
    now: Instant,
) {
    if let Err(e) = authorize(core, head) {
        fail(core, id, e, now);
        return;
    }
    let topic = head.param("topic").unwrap_or(DEFAULT_TOPIC).to_owned();
    let event = head.param("event").map(str::to_owned);
    let event_id = head.param("id").map(str::to_owned);
    if !valid_topic_name(&topic) {
        fail(core, id, RequestError::InvalidTopic, now);
        return;
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
        && rest.is_empty()
        && !reader.is_done()
        && let Some(c) = core.client_mut(id)
    {
        c.pending = Some(Pending {
            bytes: Bytes::Static(response::CONTINUE),
            offset: 0,
        });
        core.schedule(id);
    }
    read_body(core, id, reader, BodyPurpose::Publish(fields), rest, now);
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
    early: Vec<u8>,
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
    if core.is_cluster() {
        let publish = core.check_event(&topic, event.as_deref(), event_id.as_deref());
        let submitted = publish.and_then(|()| {
            let event = Publish {
                token: 0,
                topic,
                event,
                custom_id: event_id,
                data,
            };
            core.publish_to_bus(Some((id, connection, early)), event, now)
        });
        if let Err(e) = submitted {
            fail(core, id, e, now);
        }
        return;
    }
    match core.publish_event(&topic, event.as_deref(), event_id.as_deref(), &data, now) {
        Ok(event_id) => {
            let body = format!("{event_id}\n");
            let text = "text/plain; charset=utf-8";
            let r = response::answer(200, text, &[], body.as_bytes(), connection, false);
            answer(core, id, 200, r, AfterAnswer::after(connection), early, now);
        }
        Err(e) => fail(core, id, e, now),
    }
}

impl Core {
    /// Validates, encodes once, appends to the topic's log, wakes its subscribers.
    pub(super) fn publish_event(
        &mut self,
        topic: &str,
        event: Option<&str>,
        id: Option<&str>,
        data: &str,
        now: Instant,
    ) -> Result<String, RequestError> {
        self.check_event(topic, event, id)?;
        if self.is_cluster() {
            // The id is not known yet: the shared log answers later (logged if refused).
            let event = Publish {
                token: 0,
                topic: topic.to_owned(),
                event: event.map(str::to_owned),
                custom_id: id.map(str::to_owned),
                data: data.to_owned(),
            };
            self.publish_to_bus(None, event, now)?;
            return Ok(String::new());
        }
        let t = topic_for(self, topic)?;
        let gseq = self.log.assign_gseq();
        let event_id = match id {
            Some(i) => i.to_owned(),
            None => self.log.event_id(gseq),
        };
        let mut buf = Vec::with_capacity(data.len() + 32 + event_id.len());
        frame::encode_event(&mut buf, Some(&event_id), event, data);
        self.metrics.events_published += 1;
        self.append(now, t, gseq, Rc::from(buf), id);
        Ok(event_id)
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
        // Cluster mode numbers events by their offset in the shared log: a tick shares the
        // newest number instead of taking one (it is never resumed from).
        let gseq = if self.is_cluster() {
            self.log.last_gseq()
        } else {
            self.log.assign_gseq()
        };
        self.append(now, TICK_TOPIC_ID, gseq, Rc::from(buf), None);
    }
}
