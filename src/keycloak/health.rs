//! The health probe's cache: when Keycloak was last asked and what it said.
//!
//! `is_available()` answers from a probe younger than `health_check_cache_seconds`, so a busy
//! login path does not probe Keycloak on every call; the record lives in sled so that one-shot
//! commands started by cron share it. The probe itself (the realm's discovery document) is a
//! breaker-guarded call made by [`super::guard::GuardedKeycloak::is_available`]; the thread
//! that keeps this cache warm in `start` is in [`crate::service`].

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// The last probe, or the last Keycloak call (an answered call shows Keycloak reachable; an
/// unreachable one shows an outage).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeRecord {
    /// When it was taken.
    pub at: DateTime<Utc>,
    /// Whether Keycloak answered as Keycloak, with the realm in place.
    pub ok: bool,
    /// When not ok: true for an outage (not reached, 5xx, 429), false for an answer that says
    /// our configuration is wrong (unknown realm). An outage below the failure threshold is the
    /// breaker's to judge; a misconfiguration stands for the whole cache period.
    pub outage: bool,
    /// Why not, when not.
    pub reason: Option<String>,
}

/// What a fresh record says about trying Keycloak now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A fresh success: Keycloak is there.
    Up,
    /// A fresh misconfiguration: calls cannot succeed; do not try.
    Misconfigured,
    /// No fresh record, or a fresh outage the breaker has not yet acted on: ask Keycloak.
    Unknown,
}

impl ProbeRecord {
    /// The verdict at `now` for a record trusted for `ttl`.
    pub fn verdict(
        record: Option<&ProbeRecord>,
        now: DateTime<Utc>,
        ttl: std::time::Duration,
    ) -> Verdict {
        match record {
            Some(r) if r.is_fresh(now, ttl) && r.ok => Verdict::Up,
            Some(r) if r.is_fresh(now, ttl) && !r.outage => Verdict::Misconfigured,
            _ => Verdict::Unknown,
        }
    }
}

impl ProbeRecord {
    /// True while the record may stand in for a new probe.
    pub fn is_fresh(&self, now: DateTime<Utc>, ttl: std::time::Duration) -> bool {
        let ttl = Duration::from_std(ttl).unwrap_or(Duration::MAX);
        self.at <= now && now < self.at + ttl
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn freshness_follows_the_ttl_and_ignores_records_from_the_future() {
        let t = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let r = ProbeRecord {
            at: t,
            ok: true,
            outage: false,
            reason: None,
        };
        let ttl = std::time::Duration::from_secs(30);
        assert!(r.is_fresh(t + Duration::seconds(29), ttl));
        assert!(!r.is_fresh(t + Duration::seconds(30), ttl));
        assert!(
            !r.is_fresh(t - Duration::seconds(1), ttl),
            "clock went back: probe again"
        );
        assert!(!r.is_fresh(t, std::time::Duration::ZERO));
    }

    #[test]
    fn only_fresh_successes_and_misconfigurations_are_trusted() {
        let t = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let ttl = std::time::Duration::from_secs(30);
        let rec = |ok, outage| ProbeRecord {
            at: t,
            ok,
            outage,
            reason: None,
        };
        let soon = t + Duration::seconds(5);
        assert_eq!(
            ProbeRecord::verdict(Some(&rec(true, false)), soon, ttl),
            Verdict::Up
        );
        assert_eq!(
            ProbeRecord::verdict(Some(&rec(false, false)), soon, ttl),
            Verdict::Misconfigured
        );
        assert_eq!(
            ProbeRecord::verdict(Some(&rec(false, true)), soon, ttl),
            Verdict::Unknown
        );
        assert_eq!(ProbeRecord::verdict(None, soon, ttl), Verdict::Unknown);
        let late = t + Duration::seconds(31);
        assert_eq!(
            ProbeRecord::verdict(Some(&rec(true, false)), late, ttl),
            Verdict::Unknown
        );
    }
}
