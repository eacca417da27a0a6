//! The stored states and the one outcome vocabulary. Each is a Rust enum whose names are the
//! values the schema's CHECK constraints allow; [`text_enum!`] maps them to and from `text`
//! columns and parameters (arrays included), so no code compares state strings.

/// Declares a unit enum stored as `text`: `as_str`, `FromStr`, `Display` and the sqlx
/// encoding, decoding and array support, all from one list of `Variant => "value"` pairs.
macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            /// The stored value (and metric label).
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::policy::states::UnknownValue;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                match text {
                    $($text => Ok(Self::$variant),)+
                    _ => Err($crate::policy::states::UnknownValue { what: stringify!($name), value: text.to_owned(), allowed: &[$($text),+] }),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl sqlx::Type<sqlx::Postgres> for $name {
            fn type_info() -> sqlx::postgres::PgTypeInfo {
                <&str as sqlx::Type<sqlx::Postgres>>::type_info()
            }

            fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
                <&str as sqlx::Type<sqlx::Postgres>>::compatible(ty)
            }
        }

        impl sqlx::postgres::PgHasArrayType for $name {
            fn array_type_info() -> sqlx::postgres::PgTypeInfo {
                <&str as sqlx::postgres::PgHasArrayType>::array_type_info()
            }
        }

        impl<'q> sqlx::Encode<'q, sqlx::Postgres> for $name {
            fn encode_by_ref(
                &self,
                buf: &mut sqlx::postgres::PgArgumentBuffer,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <&str as sqlx::Encode<'q, sqlx::Postgres>>::encode_by_ref(&self.as_str(), buf)
            }
        }

        impl<'r> sqlx::Decode<'r, sqlx::Postgres> for $name {
            fn decode(value: sqlx::postgres::PgValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
                let text = <&str as sqlx::Decode<'r, sqlx::Postgres>>::decode(value)?;
                Ok(text.parse::<Self>()?)
            }
        }
    };
}

pub(crate) use text_enum;

/// A stored value that names no variant (a row written by a newer release, or by hand).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a valid {what} (expected one of {allowed:?})")]
pub struct UnknownValue {
    pub what: &'static str,
    pub value: String,
    pub allowed: &'static [&'static str],
}

text_enum! {
    /// A row of the queue table (`webhook.deliveries.state`).
    DeliveryState {
        /// Waiting for its `run_at`, claimable once due.
        Pending => "pending",
        /// Leased to a worker.
        Running => "running",
        /// Parked while its endpoint is paused; spends no attempts.
        Paused => "paused",
    }
}

text_enum! {
    /// What an operator (or a 410) made of an endpoint (`webhook.endpoints.state`).
    EndpointState {
        Active => "active",
        /// Deliveries wait, parked.
        Paused => "paused",
        /// Deliveries become dead letters (replayable once enabled).
        Disabled => "disabled",
    }
}

text_enum! {
    /// The fleet's circuit breaker of an endpoint (`webhook.endpoints.circuit_state`).
    CircuitState {
        /// Deliveries flow.
        Closed => "closed",
        /// Nothing is sent until the cool-down ends.
        Open => "open",
        /// One probe delivery decides: delivered closes, failed opens again.
        HalfOpen => "half_open",
    }
}

text_enum! {
    /// How one delivery step ended: the `outcome` of the attempt history and the label of
    /// `webhook_deliveries_total{outcome}`, from this one list.
    DeliveryOutcome {
        /// The receiver answered 2xx.
        Delivered => "delivered",
        /// The attempt failed and another is scheduled.
        Retried => "retried",
        /// A permanent failure (410, unknown endpoint, invalid URL, oversized payload): dead letter.
        Failed => "failed",
        /// Retries exhausted: dead letter.
        Dead => "dead",
        /// Held back by the endpoint's rate limit, rescheduled without spending an attempt.
        Throttled => "throttled",
        /// Refused by the SSRF guard or TLS policy before any connection: dead letter.
        Refused => "refused",
        /// Put back without an attempt (paused endpoint, open circuit, saturation, shutdown).
        Deferred => "deferred",
    }
}

text_enum! {
    /// The operational events (docs/operational-events.md): the `type` of their payload, their
    /// event type in the operational application, and the label of
    /// `webhook_operational_events_total{event}`. Svix's names where Svix has the event.
    OperationalEvent {
        /// An endpoint was disabled: by a 410 (`trigger: automatic`) or by an operator (`manual`).
        EndpointDisabled => "endpoint.disabled",
        /// An operator enabled a disabled endpoint.
        EndpointEnabled => "endpoint.enabled",
        /// A delivery became a dead letter (retries exhausted or a permanent failure).
        AttemptExhausted => "message.attempt.exhausted",
        /// A delivery's fourth attempt failed and another is scheduled.
        AttemptFailing => "message.attempt.failing",
        /// A delivery succeeded after its fourth attempt had failed.
        AttemptRecovered => "message.attempt.recovered",
        /// An endpoint's circuit opened (closed → open; a failed probe's reopening is not one).
        CircuitOpened => "endpoint.circuit.opened",
        /// An endpoint's circuit closed after a successful probe.
        CircuitClosed => "endpoint.circuit.closed",
        /// A rotated-out secret of an endpoint stops signing soon.
        SecretExpiring => "endpoint.secret.expiring",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_round_trips_and_unknown_values_are_named() {
        for state in CircuitState::ALL {
            assert_eq!(state.as_str().parse::<CircuitState>(), Ok(*state));
        }
        for outcome in DeliveryOutcome::ALL {
            assert_eq!(outcome.to_string().parse::<DeliveryOutcome>(), Ok(*outcome));
        }
        for event in OperationalEvent::ALL {
            assert_eq!(event.as_str().parse::<OperationalEvent>(), Ok(*event));
        }
        assert_eq!(OperationalEvent::AttemptExhausted.as_str(), "message.attempt.exhausted", "Svix's name");
        let err = "halfopen".parse::<CircuitState>().unwrap_err();
        assert_eq!(
            err.to_string(),
            r#""halfopen" is not a valid CircuitState (expected one of ["closed", "open", "half_open"])"#
        );
        assert_eq!(serde_json::to_string(&EndpointState::Disabled).unwrap(), r#""disabled""#);
    }
}
