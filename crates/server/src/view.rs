//! The in-memory view of jobs that answers members' status reads: a
//! sharded map from generation id to the job's last known state, its
//! answer already encoded, so a read is a lookup and a reference-count
//! increment — no lock held across shards, no disk, no upstream call.

use std::sync::Arc;

use aimlvid::{Generation, Status};
use bytes::Bytes;
use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use tokio::sync::watch;

use crate::store::KeyId;

/// A job as members see it.
#[derive(Debug)]
pub struct JobView {
    /// The key that created it; only that key may see it.
    pub key_id: KeyId,
    /// Its status.
    pub status: Status,
    /// The generation as JSON, exactly as served.
    pub body: Bytes,
}

impl JobView {
    /// The view of a generation.
    pub fn new(key_id: KeyId, generation: &Generation) -> Self {
        JobView { key_id, status: generation.status.clone(), body: encode(generation) }
    }

    /// Whether the job has ended.
    pub fn is_finished(&self) -> bool {
        self.status.is_finished()
    }
}

/// A generation as the upstream writes it. The upstream is a Node app,
/// whose `JSON.stringify` never writes a whole number as `120000.0`; the
/// typed client reads numbers as `f64`, so whole ones are written back as
/// integers to keep answers byte-for-byte the upstream's.
pub fn encode(generation: &Generation) -> Bytes {
    let Ok(mut value) = serde_json::to_value(generation) else { return Bytes::new() };
    whole_numbers_as_integers(&mut value);
    serde_json::to_vec(&value).map(Bytes::from).unwrap_or_default()
}

fn whole_numbers_as_integers(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Number(n) => {
            if let Some(f) = n.as_f64().filter(|f| n.is_f64() && f.fract() == 0.0 && f.abs() < 9.0e15) {
                *value = Value::from(f as i64);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(whole_numbers_as_integers),
        Value::Object(map) => map.values_mut().for_each(whole_numbers_as_integers),
        _ => {}
    }
}

/// Every job the server has seen this run or loaded at start.
#[derive(Debug, Default)]
pub struct JobViews {
    by_id: DashMap<String, Slot>,
}

#[derive(Debug)]
struct Slot {
    view: Arc<JobView>,
    /// The job's status changes, for event streams: made when the first
    /// stream subscribes to an unfinished job, fed by every later
    /// [`JobViews::put`], and dropped with the job's last change.
    events: Option<watch::Sender<Arc<JobView>>>,
}

/// What a subscriber to a job's changes gets.
#[derive(Debug)]
pub enum Feed {
    /// The job has finished: this is its last state.
    Finished(Arc<JobView>),
    /// The job is unfinished: its current state, then each change; the
    /// channel closes after the job finishes.
    Live(watch::Receiver<Arc<JobView>>),
}

impl Feed {
    /// The key that owns the job.
    pub fn key_id(&self) -> KeyId {
        match self {
            Feed::Finished(view) => view.key_id,
            Feed::Live(changes) => changes.borrow().key_id,
        }
    }
}

impl JobViews {
    /// A job by generation id.
    pub fn get(&self, id: &str) -> Option<Arc<JobView>> {
        self.by_id.get(id).map(|slot| slot.view.clone())
    }

    /// Sets a job's view and tells its subscribers. A finished job is never
    /// replaced by an unfinished one, so a reordered update cannot undo its end.
    pub fn put(&self, id: &str, view: JobView) {
        let view = Arc::new(view);
        match self.by_id.entry(id.to_owned()) {
            Entry::Occupied(mut slot) => {
                let slot = slot.get_mut();
                if slot.view.is_finished() && !view.is_finished() {
                    return;
                }
                slot.view = view.clone();
                if let Some(events) = &slot.events {
                    events.send_replace(view);
                }
                if slot.view.is_finished() {
                    // Subscribers still read the last value; then their channel closes.
                    slot.events = None;
                }
            }
            Entry::Vacant(slot) => {
                slot.insert(Slot { view, events: None });
            }
        }
    }

    /// Subscribes to a job's changes; `None` if it is not in memory.
    pub fn subscribe(&self, id: &str) -> Option<Feed> {
        // Under the shard's write lock, so no change can slip between the
        // current state and the subscription.
        let mut slot = self.by_id.get_mut(id)?;
        if slot.view.is_finished() {
            return Some(Feed::Finished(slot.view.clone()));
        }
        let changes = match &slot.events {
            Some(events) => events.subscribe(),
            None => {
                let (events, changes) = watch::channel(slot.view.clone());
                slot.events = Some(events);
                changes
            }
        };
        Some(Feed::Live(changes))
    }

    /// How many jobs are in view, and how many of them are unfinished.
    pub fn counts(&self) -> (usize, usize) {
        let unfinished = self.by_id.iter().filter(|slot| !slot.view.is_finished()).count();
        (self.by_id.len(), unfinished)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finished_job_stays_finished() {
        let views = JobViews::default();
        views.put("g", JobView::new(1, &Generation::new("g", Status::Completed)));
        views.put("g", JobView::new(1, &Generation::new("g", Status::Generating)));
        let view = views.get("g").unwrap();
        assert_eq!(view.status, Status::Completed);
        let body: serde_json::Value = serde_json::from_slice(&view.body).unwrap();
        assert_eq!(body, serde_json::json!({"id": "g", "status": "completed"}));
        assert_eq!(views.counts(), (1, 0));
    }

    #[test]
    fn subscribers_see_each_change_and_the_channel_closes_after_the_end() {
        let views = JobViews::default();
        assert!(views.subscribe("g").is_none());
        views.put("g", JobView::new(7, &Generation::new("g", Status::Queued)));
        let Some(Feed::Live(mut changes)) = views.subscribe("g") else { panic!("not live") };
        assert_eq!(changes.borrow_and_update().status, Status::Queued);
        views.put("g", JobView::new(7, &Generation::new("g", Status::Generating)));
        assert!(changes.has_changed().unwrap());
        assert_eq!(changes.borrow_and_update().status, Status::Generating);
        views.put("g", JobView::new(7, &Generation::new("g", Status::Completed)));
        assert_eq!(changes.borrow_and_update().status, Status::Completed, "the last value stays readable");
        assert!(changes.has_changed().is_err(), "and then the channel is closed");
        let Some(Feed::Finished(view)) = views.subscribe("g") else { panic!("not finished") };
        assert_eq!((view.key_id, view.status.clone()), (7, Status::Completed));
    }

    #[test]
    fn whole_numbers_are_written_as_node_writes_them() {
        let generation: Generation = serde_json::from_str(
            r#"{"id":"g","status":"completed","meta":{"usage":{"credits_used":120000}},"extra":[1.5,2.0]}"#,
        )
        .unwrap();
        assert_eq!(
            std::str::from_utf8(&encode(&generation)).unwrap(),
            r#"{"extra":[1.5,2],"id":"g","meta":{"usage":{"credits_used":120000}},"status":"completed"}"#
        );
    }
}
