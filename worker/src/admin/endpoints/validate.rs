//! What endpoint settings may be: checked before anything is written.

use url::Url;

use super::Error;
use crate::policy::address::NetPolicy;

/// Headers the worker owns.
const RESERVED_HEADERS: &[&str] =
    &["content-type", "content-length", "host", "user-agent", "webhook-id", "webhook-timestamp", "webhook-signature"];

pub(super) fn check_url(text: &str) -> Result<String, Error> {
    let url = Url::parse(text).map_err(|err| Error::Url { url: text.to_owned(), reason: err.to_string() })?;
    // Registration checks the form only (scheme, credentials): whether an address may be reached
    // is the delivering fleet's decision (its allow-list), checked at every delivery.
    NetPolicy::new(vec!["0.0.0.0/0".parse().expect("CIDR"), "::/0".parse().expect("CIDR")], false).check_url(&url)?;
    Ok(url.to_string())
}

pub(super) fn check_event_types(types: &[String]) -> Result<(), Error> {
    match types.iter().find(|t| t.is_empty() || t.chars().any(char::is_whitespace)) {
        Some(bad) => Err(Error::EventType(bad.clone())),
        None => Ok(()),
    }
}

pub(super) fn parse_header(line: &str) -> Result<(String, String), Error> {
    let (name, value) = line.split_once(':').ok_or_else(|| Error::Header(line.to_owned()))?;
    let (name, value) = (name.trim().to_ascii_lowercase(), value.trim().to_owned());
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+.^_`|~-".contains(c);
    if name.is_empty() || !name.chars().all(token) || value.chars().any(|c| c.is_control()) {
        return Err(Error::Header(line.to_owned()));
    }
    if RESERVED_HEADERS.contains(&name.as_str()) {
        return Err(Error::ReservedHeader(name));
    }
    Ok((name, value))
}

pub(super) fn check_uid(changes: &super::Changes) -> Result<(), Error> {
    let Some(Some(uid)) = &changes.uid else { return Ok(()) };
    let valid = (1..=256).contains(&uid.len())
        && uid.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        && crate::admin::ids::parse(crate::admin::ids::Kind::Endpoint, uid).is_none();
    if valid { Ok(()) } else { Err(Error::Uid(uid.clone())) }
}
