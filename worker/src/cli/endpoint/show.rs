//! The text of `endpoint show`.

use crate::admin::endpoints::read::EndpointDetail;

/// Prints an endpoint's settings and health, one `label value` line each.
pub(super) fn print(detail: &EndpointDetail) {
    let or_default = |v: Option<i32>, default: &str| v.map_or(default.to_owned(), |v| v.to_string());
    println!("endpoint      {}", detail.id);
    println!("url           {}", detail.url);
    let types = if detail.event_types.is_empty() { "* (all)".to_owned() } else { detail.event_types.join(", ") };
    println!("event types   {types}");
    let reason = detail.state_reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
    println!(
        "state         {}{reason} (since {})",
        detail.state,
        detail.state_changed_at.format("%Y-%m-%d %H:%M:%S UTC")
    );
    let until =
        detail.circuit_open_until.map(|t| format!(" until {}", t.format("%Y-%m-%d %H:%M:%S UTC"))).unwrap_or_default();
    println!("circuit       {}{until}", detail.circuit_state);
    println!("ordered       {}", if detail.ordered { "yes (FIFO, one in flight)" } else { "no" });
    println!(
        "rate limit    {} /s, burst {}",
        or_default(detail.rate_limit_per_second, "default"),
        or_default(detail.rate_limit_burst, "default")
    );
    println!("in flight     {} per worker", or_default(detail.max_in_flight, "default"));
    println!("timeout       {}", detail.timeout_ms.map_or("default".to_owned(), |ms| format!("{ms} ms")));
    println!(
        "headers       {}",
        if detail.header_names.is_empty() { "(none)".to_owned() } else { detail.header_names.join(", ") }
    );
    let expiring: Vec<String> =
        detail.secret_expiries.iter().map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string()).collect();
    let rotation =
        if expiring.is_empty() { String::new() } else { format!(" (previous expires {})", expiring.join(", ")) };
    println!("secrets       {}{rotation}", detail.secrets);
    println!("backlog       {} ({} paused)", detail.backlog, detail.paused_deliveries);
    println!("dead letters  {}", detail.dead_letters);
    let ratio = detail.success_ratio_last_hour.map_or("n/a".to_owned(), |r| format!("{:.1} %", r * 100.0));
    println!(
        "last hour     {} attempts, {} delivered, success {ratio}",
        detail.attempts_last_hour, detail.delivered_last_hour
    );
    match (&detail.last_error, detail.last_error_at) {
        (Some(error), Some(at)) => println!("last error    {} — {error}", at.format("%Y-%m-%d %H:%M:%S UTC")),
        _ => println!("last error    (none)"),
    }
}
