//! When development certificates are renewed and switched: pure time arithmetic.
//!
//! A self-signed certificate is valid for 13 days (Chrome accepts at most 14
//! for `serverCertificateHashes`). A day before it expires a successor is
//! issued and its hash published next to the current one; an hour before
//! expiry the server starts serving the successor. A page that fetched the
//! hashes during that overlap holds both, so it keeps connecting across the
//! switch. The old certificate's hash stays published until it expires.

use time::{Duration, OffsetDateTime};

/// Total validity of a development certificate.
pub const VALIDITY: Duration = Duration::days(13);
/// How long before expiry the successor is issued (and published).
pub const RENEW_BEFORE: Duration = Duration::days(1);
/// How long before expiry the successor starts being served.
pub const SWITCH_BEFORE: Duration = Duration::hours(1);

/// Something with a validity period.
pub trait Validity {
    fn not_after(&self) -> OffsetDateTime;
}

/// The certificates of a rotation: the one served, the one coming, the one
/// going out.
#[derive(Debug)]
pub struct Rotation<G> {
    pub current: G,
    pub successor: Option<G>,
    pub retired: Option<G>,
}

impl<G: Validity> Rotation<G> {
    pub fn new(current: G) -> Self {
        Self {
            current,
            successor: None,
            retired: None,
        }
    }

    /// Brings the rotation up to date at `now`, calling `issue` for a new
    /// certificate when one is due. Returns whether anything changed.
    pub fn tick<E>(&mut self, now: OffsetDateTime, mut issue: impl FnMut() -> Result<G, E>) -> Result<bool, E> {
        let mut changed = false;
        if self.retired.as_ref().is_some_and(|g| now >= g.not_after()) {
            self.retired = None;
            changed = true;
        }
        if self.successor.is_none() && now >= self.current.not_after() - RENEW_BEFORE {
            self.successor = Some(issue()?);
            changed = true;
        }
        if now >= self.current.not_after() - SWITCH_BEFORE
            && let Some(successor) = self.successor.take()
        {
            let old = std::mem::replace(&mut self.current, successor);
            self.retired = (now < old.not_after()).then_some(old);
            changed = true;
        }
        Ok(changed)
    }

    /// The certificates whose hashes are published: current first.
    pub fn published(&self) -> impl Iterator<Item = &G> {
        std::iter::once(&self.current)
            .chain(self.successor.as_ref())
            .chain(self.retired.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq)]
    struct Cert(OffsetDateTime, u32);
    impl Validity for Cert {
        fn not_after(&self) -> OffsetDateTime {
            self.0
        }
    }

    #[test]
    fn a_successor_is_published_a_day_ahead_and_served_an_hour_before_expiry() {
        let t0 = OffsetDateTime::UNIX_EPOCH;
        let mut serial = 0;
        let mut issue_at = |now: OffsetDateTime| {
            serial += 1;
            Ok::<_, ()>(Cert(now + VALIDITY, serial))
        };
        let mut rot = Rotation::new(Cert(t0 + VALIDITY, 0));

        // Mid-life: nothing to do.
        let mid = t0 + Duration::days(6);
        assert!(!rot.tick(mid, || issue_at(mid)).unwrap());
        assert_eq!(rot.published().count(), 1);

        // A day before expiry: the successor appears beside the current one.
        let renew = t0 + VALIDITY - RENEW_BEFORE;
        assert!(rot.tick(renew, || issue_at(renew)).unwrap());
        assert_eq!(rot.current.1, 0);
        let hashes: Vec<u32> = rot.published().map(|c| c.1).collect();
        assert_eq!(hashes, vec![0, 1]);

        // An hour before expiry: the successor is served, the old one still published.
        let switch = t0 + VALIDITY - SWITCH_BEFORE;
        assert!(rot.tick(switch, || issue_at(switch)).unwrap());
        assert_eq!(rot.current.1, 1);
        let hashes: Vec<u32> = rot.published().map(|c| c.1).collect();
        assert_eq!(hashes, vec![1, 0]);

        // Once the old one has expired it is no longer published.
        let gone = t0 + VALIDITY;
        assert!(rot.tick(gone, || issue_at(gone)).unwrap());
        let hashes: Vec<u32> = rot.published().map(|c| c.1).collect();
        assert_eq!(hashes, vec![1]);
    }

    #[test]
    fn a_certificate_found_expired_at_start_is_replaced_at_once() {
        let t0 = OffsetDateTime::UNIX_EPOCH;
        let mut rot = Rotation::new(Cert(t0, 0));
        let now = t0 + Duration::days(30);
        rot.tick(now, || Ok::<_, ()>(Cert(now + VALIDITY, 1))).unwrap();
        assert_eq!(rot.current.1, 1);
        assert_eq!(rot.published().count(), 1, "the expired one is not published");
    }
}
