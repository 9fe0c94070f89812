//! Publishing: `POST /publish` (auth, fields, the body in either framing) and
//! [`Core::publish`], which validates, encodes once, appends to the event log and wakes the
//! topic's subscribers; ticks are published here too.
use std::rc::Rc;
use std::time::Instant;

use chrono::{DateTime, Utc};

use super::Core;
use super::client::{AfterAnswer, BodyState, Bytes, ClientId, Pending, Phase};
use super::connection::{answer, fail, on_bytes, refuse};
use super::error::RequestError;
use super::event_log::{DEFAULT_TOPIC, TICK_TOPIC_ID};
use super::metrics::CloseReason;
use super::topic::TopicId;
use crate::http::chunked::ChunkedDecoder;
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
    let topic = head.param("topic").unwrap_or(DEFAULT_TOPIC).to_owned();
    let event = head.param("event").map(str::to_owned);
    let event_id = head.param("id").map(str::to_owned);
    if !valid_topic_name(&topic) {
        fail(core, id, RequestError::InvalidTopic, now);
        return;
    }
    // `--publish-token`, or a token whose `publish` claim covers the topic (401/403).
    if let Err(refusal) = core.authorize_publish(head, &topic, now) {
        refuse(core, id, refusal, now);
        return;
    }
    if let Err(e) = check_fields(event.as_deref(), event_id.as_deref()) {
        fail(core, id, e, now);
        return;
    }
    // A body is framed by Content-Length or by chunked coding (both at once was refused by
    // the parser as a smuggling shape).
    let chunked = match (head.transfer_encoding, head.chunked) {
        (true, true) => Some(ChunkedDecoder::default()),
        (true, false) => {
            fail(core, id, RequestError::UnsupportedCoding, now);
            return;
        }
        (false, _) => None,
    };
    let need = match (&chunked, head.content_length) {
        (Some(_), _) => 0,
        (None, Some(len)) if len > core.cfg.max_body as u64 => {
            fail(core, id, RequestError::BodyTooLarge, now);
            return;
        }
        (None, Some(len)) => len as usize,
        (None, None) => {
            fail(core, id, RequestError::LengthRequired, now);
            return;
        }
    };
    let body_follows = chunked.is_some() || need > 0;
    let state = BodyState {
        chunked,
        topic,
        event,
        id: event_id,
        need,
        body: Vec::with_capacity(need),
        then: AfterAnswer::for_request(head.close),
    };
    if let Some(c) = core.client_mut(id) {
        c.phase = Phase::Body(Box::new(state));
        if head.expect_continue && rest.is_empty() && body_follows {
            c.pending = Some(Pending {
                bytes: Bytes::Static(b"HTTP/1.1 100 Continue\r\n\r\n"),
                offset: 0,
            });
        }
    }
    core.schedule(id);
    if !body_follows {
        let Some(c) = core.client_mut(id) else { return };
        let Phase::Body(st) = std::mem::replace(&mut c.phase, Phase::Closing(CloseReason::Normal))
        else {
            return;
        };
        finish_publish(core, id, *st, rest, now);
    } else if !rest.is_empty() {
        on_bytes(core, id, &rest, now);
    }
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

pub(super) fn finish_publish(
    core: &mut Core,
    id: ClientId,
    st: BodyState,
    early: Vec<u8>,
    now: Instant,
) {
    let Ok(data) = String::from_utf8(st.body) else {
        fail(core, id, RequestError::NotUtf8, now);
        return;
    };
    match core.publish_event(&st.topic, st.event.as_deref(), st.id.as_deref(), &data, now) {
        Ok(event_id) => {
            let body = format!("{event_id}\n");
            let r = response::complete(
                200,
                "text/plain; charset=utf-8",
                &[],
                body.as_bytes(),
                st.then.closes(),
            );
            answer(core, id, 200, r, st.then, early, now);
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
        if self.shutdown_deadline.is_some() {
            return Err(RequestError::ShuttingDown);
        }
        if !valid_topic_name(topic) {
            return Err(RequestError::InvalidTopic);
        }
        check_fields(event, id)?;
        if data.is_empty() {
            return Err(RequestError::EmptyData);
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

    pub(super) fn tick(&mut self, now: Instant, wall: DateTime<Utc>) {
        let mut buf = Vec::with_capacity(64);
        frame::encode_event(&mut buf, None, None, &crate::timefmt::tick_text(wall));
        self.metrics.ticks += 1;
        let gseq = self.log.assign_gseq();
        self.append(now, TICK_TOPIC_ID, gseq, Rc::from(buf), None);
    }
}
