//! Public ids and who may see what. Applications and endpoints are uuids in the database and
//! `app_<32 hex>` / `ep_<32 hex>` outside it (the Svix shape); messages already carry their
//! `msg_…` id; an attempt is `atmpt_<delivery>_<attempt>`. Parsing also accepts a bare uuid, so
//! the CLI's older output keeps working.

use std::fmt;

use uuid::Uuid;

/// Which applications a caller may see: every one (an operator, an unscoped token) or one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    All,
    Application(Uuid),
}

impl Scope {
    /// Whether `application` is visible.
    pub fn allows(self, application: Uuid) -> bool {
        match self {
            Self::All => true,
            Self::Application(own) => own == application,
        }
    }

    /// The one application, if scoped (for statements that filter by it).
    pub fn application(self) -> Option<Uuid> {
        match self {
            Self::All => None,
            Self::Application(own) => Some(own),
        }
    }
}

/// An id's kind, for messages and parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Application,
    Endpoint,
}

impl Kind {
    fn prefix(self) -> &'static str {
        match self {
            Self::Application => "app_",
            Self::Endpoint => "ep_",
        }
    }
}

/// A uuid shown with its kind's prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublicId(pub Kind, pub Uuid);

impl fmt::Display for PublicId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.0.prefix(), self.1.simple())
    }
}

/// `app_<hex>` for an application.
pub fn app_id(id: Uuid) -> String {
    PublicId(Kind::Application, id).to_string()
}

/// `ep_<hex>` for an endpoint.
pub fn endpoint_id(id: Uuid) -> String {
    PublicId(Kind::Endpoint, id).to_string()
}

/// The uuid behind `text` if it is an id of `kind` (`app_…`/`ep_…`) or a bare uuid; `None` for
/// anything else (which may still be a uid).
pub fn parse(kind: Kind, text: &str) -> Option<Uuid> {
    match text.strip_prefix(kind.prefix()) {
        Some(hex) if hex.len() == 32 => Uuid::try_parse(hex).ok(),
        Some(_) => None,
        None => Uuid::try_parse(text).ok().filter(|_| text.len() == 36),
    }
}

/// `atmpt_<delivery>_<attempt>`.
pub fn attempt_id(delivery: i64, attempt: i32) -> String {
    format!("atmpt_{delivery}_{attempt}")
}

/// The (delivery, attempt) behind an attempt id.
pub fn parse_attempt(text: &str) -> Option<(i64, i32)> {
    let (delivery, attempt) = text.strip_prefix("atmpt_")?.split_once('_')?;
    Some((delivery.parse().ok()?, attempt.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_other_text_is_not_an_id() {
        let id = Uuid::new_v4();
        assert_eq!(parse(Kind::Application, &app_id(id)), Some(id));
        assert_eq!(parse(Kind::Endpoint, &endpoint_id(id)), Some(id));
        assert_eq!(parse(Kind::Endpoint, &id.to_string()), Some(id), "a bare uuid");
        assert_eq!(parse(Kind::Endpoint, &app_id(id)), None, "the wrong kind");
        assert_eq!(parse(Kind::Application, "customer-42"), None, "a uid");
        assert_eq!(parse(Kind::Application, "app_123"), None);
        assert_eq!(parse_attempt(&attempt_id(42, 3)), Some((42, 3)));
        assert_eq!(parse_attempt("atmpt_x_1"), None);
        assert!(Scope::Application(id).allows(id) && !Scope::Application(id).allows(Uuid::nil()));
    }
}
