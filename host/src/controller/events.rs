//! Kubernetes Events (`events.k8s.io/v1`) about `WasmAutoscaler`s.
//!
//! kube-runtime's recorder folds every Event with the same reason into the first one for six
//! minutes, keeping the first note: five different scales read as one "scaled from 1 to 3",
//! count 5. Here only exact repeats fold (same object, type, reason, action and note) into an
//! `EventSeries`, as client-go's does for identical Events; an Event with a new note is a new
//! Event. Names follow client-go (`OBJECT.HEX-NANOS`).

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use tokio::sync::Mutex;

/// How long an Event keeps collecting exact repeats (client-go and kube-runtime use 6 min).
const SERIES_WINDOW: Duration = Duration::from_secs(6 * 60);

/// Longest note the Events API accepts, in bytes.
pub(crate) const MAX_NOTE_BYTES: usize = 1024;

/// Normal or Warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum EventType {
    /// Something expected happened (a scale).
    Normal,
    /// Something needs attention (a policy failure, a refused spec).
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SeriesKey {
    object: String,
    type_: EventType,
    reason: String,
    action: String,
    note: String,
}

#[derive(Debug, Clone)]
struct Series {
    name: String,
    count: i32,
    first: Timestamp,
}

/// Publishes Events for one controller instance.
pub struct EventSink {
    client: Client,
    controller: String,
    instance: String,
    series: Mutex<HashMap<SeriesKey, Series>>,
}

impl EventSink {
    /// Events reported as `controller` by `instance` (the pod's name).
    pub fn new(client: Client, controller: &str, instance: &str) -> Self {
        EventSink {
            client,
            controller: controller.into(),
            instance: instance.into(),
            series: Mutex::new(HashMap::new()),
        }
    }

    /// Records an Event about `regarding`: a new Event unless it repeats the last one with
    /// the same note within six minutes, which only counts up its series.
    pub(crate) async fn publish(
        &self,
        regarding: &ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        note: &str,
    ) -> Result<(), kube::Error> {
        let note = crate::redact::bounded(note, MAX_NOTE_BYTES);
        let namespace = regarding
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let key = SeriesKey {
            object: format!(
                "{}/{}/{}",
                namespace,
                regarding.name.as_deref().unwrap_or_default(),
                regarding.uid.as_deref().unwrap_or_default()
            ),
            type_,
            reason: reason.into(),
            action: action.into(),
            note: note.clone(),
        };
        let now = Timestamp::now();
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        // The lock is never held across a request: one slow Event must not hold up every
        // other resource's.
        let repeat = {
            let mut series = self.series.lock().await;
            series.retain(|_, s| {
                now.duration_since(s.first).as_secs() < SERIES_WINDOW.as_secs() as i64
            });
            series.get(&key).map(|s| (s.name.clone(), s.count + 1))
        };
        if let Some((name, count)) = repeat {
            let patch =
                json!({"series": EventSeries { count, last_observed_time: MicroTime(now) }});
            match api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    if let Some(s) = self.series.lock().await.get_mut(&key) {
                        s.count = s.count.max(count);
                    }
                    return Ok(());
                }
                // The Event expired or was deleted: start a new one.
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(error) => return Err(error),
            }
        }
        let name = format!(
            "{}.{:x}",
            regarding.name.as_deref().unwrap_or("wasmscaler"),
            now.as_nanosecond()
        );
        let event = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.clone()),
                ..ObjectMeta::default()
            },
            action: Some(action.into()),
            reason: Some(reason.into()),
            note: Some(note),
            type_: Some(type_.as_str().into()),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            ..Event::default()
        };
        api.create(&PostParams::default(), &event).await?;
        self.series.lock().await.insert(
            key,
            Series {
                name,
                count: 1,
                first: now,
            },
        );
        Ok(())
    }
}
