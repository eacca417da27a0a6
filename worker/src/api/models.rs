//! The request and response bodies, in the Svix v1 shape (camelCase JSON). Field names and
//! meanings follow Svix where it has the field; the OpenAPI document is generated from these.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::{IntoParams, ToSchema};

use crate::admin::{applications, attempts, endpoints, event_types, ids, messages};
use crate::policy::states::{DeliveryOutcome, EndpointState};

/// Metadata: string pairs.
pub type Metadata = BTreeMap<String, String>;

fn metadata_of(map: &serde_json::Map<String, serde_json::Value>) -> Metadata {
    map.iter().map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_owned))).collect()
}

/// Metadata as stored.
pub fn metadata_map(metadata: Option<&Metadata>) -> serde_json::Map<String, serde_json::Value> {
    metadata.into_iter().flatten().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect()
}

/// A field that may be absent (`None`: leave it), `null` (`Some(None)`: clear it) or a value.
fn absent_null_or_value<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// A page of items.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListResponse<T: ToSchema> {
    pub data: Vec<T>,
    pub iterator: Option<String>,
    pub prev_iterator: Option<String>,
    pub done: bool,
}

impl<T: ToSchema> ListResponse<T> {
    pub fn of<U>(page: crate::admin::page::Page<U>, convert: impl FnMut(U) -> T) -> Self {
        let page = page.map(convert);
        Self { data: page.data, iterator: page.iterator, prev_iterator: None, done: page.done }
    }
}

/// Which page to read.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Items at most (1–250, default 50).
    #[param(minimum = 1, maximum = 250)]
    pub limit: Option<i64>,
    /// The `iterator` of the previous page.
    pub iterator: Option<String>,
}

impl ListQuery {
    pub fn page(&self) -> crate::admin::page::PageRequest {
        crate::admin::page::PageRequest { limit: self.limit, iterator: self.iterator.clone() }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationIn {
    pub name: String,
    /// The producer's own id for this customer (1–256 of `a-zA-Z0-9._-`).
    pub uid: Option<String>,
    /// Messages per second this application's endpoints get unless they set their own.
    #[serde(alias = "throttleRate")]
    pub rate_limit: Option<i32>,
    pub metadata: Option<Metadata>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationPatch {
    pub name: Option<String>,
    pub uid: Option<String>,
    #[serde(alias = "throttleRate")]
    pub rate_limit: Option<i32>,
    pub metadata: Option<Metadata>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationOut {
    pub id: String,
    pub uid: Option<String>,
    pub name: String,
    pub rate_limit: Option<i32>,
    pub throttle_rate: Option<i32>,
    pub metadata: Metadata,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<applications::Application> for ApplicationOut {
    fn from(app: applications::Application) -> Self {
        Self {
            id: ids::app_id(app.id),
            uid: app.uid,
            name: app.name,
            rate_limit: app.rate_limit_per_second,
            throttle_rate: app.rate_limit_per_second,
            metadata: metadata_of(&app.metadata),
            created_at: app.created_at,
            updated_at: app.updated_at,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CreateAppQuery {
    /// Return the existing application with the same uid instead of a conflict.
    pub get_if_exists: Option<bool>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointIn {
    /// Where to POST (https://…); checked against the delivery policy.
    pub url: String,
    pub description: Option<String>,
    /// Event types to receive; none or empty: every type.
    #[serde(alias = "eventTypes")]
    pub filter_types: Option<Vec<String>>,
    /// Requests per second to this endpoint, across the fleet.
    #[serde(alias = "throttleRate")]
    pub rate_limit: Option<i32>,
    pub uid: Option<String>,
    pub disabled: Option<bool>,
    pub metadata: Option<Metadata>,
    /// `whsec_` + base64 of 24–64 bytes; generated when absent.
    pub secret: Option<String>,
    /// Custom headers sent with every request.
    pub headers: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointPatch {
    pub url: Option<String>,
    pub description: Option<String>,
    #[serde(alias = "eventTypes")]
    pub filter_types: Option<Vec<String>>,
    /// `null` removes the endpoint's own limit (the application's default applies again).
    #[serde(alias = "throttleRate", default, deserialize_with = "absent_null_or_value")]
    #[schema(value_type = Option<i32>)]
    pub rate_limit: Option<Option<i32>>,
    /// `null` removes the uid.
    #[serde(default, deserialize_with = "absent_null_or_value")]
    #[schema(value_type = Option<String>)]
    pub uid: Option<Option<String>>,
    pub disabled: Option<bool>,
    pub metadata: Option<Metadata>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointOut {
    pub id: String,
    pub url: String,
    pub description: String,
    pub filter_types: Option<Vec<String>>,
    /// The same as `filterTypes` (the name newer Svix SDKs read).
    pub event_types: Option<Vec<String>>,
    pub rate_limit: Option<i32>,
    pub throttle_rate: Option<i32>,
    pub uid: Option<String>,
    pub disabled: bool,
    pub metadata: Metadata,
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<endpoints::tenant::Endpoint> for EndpointOut {
    fn from(e: endpoints::tenant::Endpoint) -> Self {
        let types = (!e.event_types.is_empty()).then_some(e.event_types);
        Self {
            id: ids::endpoint_id(e.id),
            url: e.url,
            description: e.description,
            filter_types: types.clone(),
            event_types: types,
            rate_limit: e.rate_limit_per_second,
            throttle_rate: e.rate_limit_per_second,
            uid: e.uid,
            disabled: e.state == EndpointState::Disabled,
            metadata: metadata_of(&e.metadata),
            version: 1,
            created_at: e.created_at,
            updated_at: e.updated_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointSecretOut {
    /// `whsec_…`
    pub key: String,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointSecretRotateIn {
    /// The new secret; generated when absent.
    pub key: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointHeadersIn {
    pub headers: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointHeadersPatchIn {
    pub headers: BTreeMap<String, String>,
    pub delete_headers: Option<Vec<String>>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointHeadersOut {
    pub headers: BTreeMap<String, String>,
    /// Header names whose values are not shown (none: every value is shown to its owner).
    pub sensitive: Vec<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecoverIn {
    /// Replay what failed since this time…
    pub since: DateTime<Utc>,
    /// …and before this one.
    pub until: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecoverOut {
    pub id: String,
    /// `finished`: the replay is queued.
    pub status: String,
    /// `endpoint.recover`
    pub task: String,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessageIn {
    pub event_type: String,
    /// Any JSON object; sent and signed byte for byte.
    #[schema(value_type = Object)]
    pub payload: Box<RawValue>,
    /// The producer's own id for the event.
    pub event_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessageOut {
    pub id: String,
    pub event_type: String,
    pub event_id: Option<String>,
    #[schema(value_type = Object)]
    pub payload: Box<RawValue>,
    pub timestamp: DateTime<Utc>,
}

impl From<messages::Message> for MessageOut {
    fn from(m: messages::Message) -> Self {
        let payload = RawValue::from_string(m.payload)
            .unwrap_or_else(|_| RawValue::from_string("{}".to_owned()).expect("valid JSON"));
        Self { id: m.id, event_type: m.event_type, event_id: m.event_id, payload, timestamp: m.created_at }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MessageListQuery {
    pub limit: Option<i64>,
    pub iterator: Option<String>,
    /// Only these event types (comma-separated).
    pub event_types: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessageAttemptOut {
    pub id: String,
    pub msg_id: String,
    pub endpoint_id: String,
    pub url: String,
    /// The start of the response body.
    pub response: String,
    /// 0 when no response was received.
    pub response_status_code: i32,
    pub response_duration_ms: i32,
    /// 0 success, 1 pending, 2 fail.
    pub status: i32,
    /// `success`, `pending` or `fail`.
    pub status_text: String,
    /// 0 scheduled, 1 manual.
    pub trigger_type: i32,
    pub timestamp: DateTime<Utc>,
    /// Beyond Svix: the connection's dialled address, timings and response headers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forensics: Option<super::forensics::AttemptForensicsOut>,
}

impl From<attempts::Attempt> for MessageAttemptOut {
    fn from(a: attempts::Attempt) -> Self {
        let (status, text) = match a.outcome {
            DeliveryOutcome::Delivered => (0, "success"),
            DeliveryOutcome::Deferred | DeliveryOutcome::Throttled => (1, "pending"),
            _ => (2, "fail"),
        };
        Self {
            id: a.public_id(),
            msg_id: a.message_id,
            endpoint_id: ids::endpoint_id(a.endpoint_id),
            url: a.url,
            response: a.response_excerpt.or(a.error).unwrap_or_default(),
            response_status_code: a.status_code.unwrap_or(0),
            response_duration_ms: a.duration_ms,
            status,
            status_text: text.to_owned(),
            trigger_type: 0,
            timestamp: a.attempted_at,
            forensics: super::forensics::AttemptForensicsOut::of(a.forensics),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventTypeIn {
    pub name: String,
    pub description: String,
    pub archived: Option<bool>,
    #[schema(value_type = Option<Object>)]
    pub schemas: Option<serde_json::Value>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventTypeOut {
    pub name: String,
    pub description: String,
    pub archived: bool,
    pub deprecated: bool,
    #[schema(value_type = Option<Object>)]
    pub schemas: Option<serde_json::Value>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<event_types::EventType> for EventTypeOut {
    fn from(t: event_types::EventType) -> Self {
        Self {
            name: t.name,
            description: t.description,
            archived: t.archived,
            deprecated: false,
            schemas: t.schemas.map(|s| s.0),
            created_at: t.created_at,
            updated_at: t.updated_at,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventTypeListQuery {
    pub limit: Option<i64>,
    pub iterator: Option<String>,
    pub include_archived: Option<bool>,
}
