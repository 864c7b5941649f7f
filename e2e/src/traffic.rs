//! Bookinfo traffic from the `client` pod, as the demo shows it and the tests judge it: page
//! loads, what each showed (`v1`, `v2 black stars`, `reviews unavailable`), how long it took,
//! and waiting for a routing change to be in force.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure};

use crate::bookinfo;
use crate::local::{Call, Mesh};

/// The client pod's view of Bookinfo.
pub struct Bookinfo {
    client: String,
    productpage: SocketAddr,
}

/// What a batch of page loads showed.
#[derive(Clone, Debug, Default)]
pub struct Loads {
    /// How many pages showed each thing ([`bookinfo::summary`]).
    pub shown: BTreeMap<String, usize>,
    /// How many answers had each status.
    pub statuses: BTreeMap<u16, usize>,
    /// How long each took.
    pub latencies: Vec<Duration>,
}

impl Bookinfo {
    /// Bookinfo as the `client` pod of `mesh` reaches it.
    pub fn new(mesh: &mut Mesh) -> anyhow::Result<Self> {
        Ok(Self {
            client: mesh.namespace_of("client"),
            productpage: SocketAddr::from((mesh.vip("productpage")?, bookinfo::PORT)),
        })
    }

    /// A page load (the JSON view), as `user` if given.
    pub fn call(&self, user: Option<&str>) -> Call {
        let path = match user {
            Some(user) => format!("/api/v1/products/0?user={user}"),
            None => "/api/v1/products/0".to_owned(),
        };
        Call::get(&self.client, self.productpage, "productpage:9080", &path)
    }

    /// One page load: what it showed, and how long it took.
    pub fn page(&self, user: Option<&str>) -> anyhow::Result<(String, Duration)> {
        let answer = self.call(user).send()?;
        ensure!(answer.status == 200, "productpage answered {}: {}", answer.status, answer.body);
        Ok((bookinfo::summary(&answer.json()), answer.elapsed))
    }

    /// `n` page loads, 4 at a time.
    pub fn loads(&self, user: Option<&str>, n: usize) -> anyhow::Result<Loads> {
        let mut loads = Loads::default();
        for answer in self.call(user).send_many(n, 4) {
            let answer = answer?;
            *loads.statuses.entry(answer.status).or_default() += 1;
            loads.latencies.push(answer.elapsed);
            let shown = if answer.status == 200 {
                bookinfo::summary(&answer.json())
            } else {
                format!("HTTP {}", answer.status)
            };
            *loads.shown.entry(shown).or_default() += 1;
        }
        Ok(loads)
    }

    /// `n` page loads: how many showed each thing; any answer but 200 is an error.
    pub fn counts(&self, user: Option<&str>, n: usize) -> anyhow::Result<BTreeMap<String, usize>> {
        let loads = self.loads(user, n)?;
        ensure!(
            loads.statuses.keys().all(|s| *s == 200),
            "productpage answered {:?}",
            loads.statuses
        );
        Ok(loads.shown)
    }

    /// Waits (up to 20 s) until `n` page loads in a row show only `want` (a change reaches
    /// the proxies within a second or so), then checks `n` more.
    pub fn settles_on(&self, user: Option<&str>, want: &str, n: usize) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut last = BTreeMap::new();
        while Instant::now() < deadline {
            last = self.counts(user, n)?;
            if last.len() == 1 && last.contains_key(want) {
                let again = self.counts(user, n)?;
                ensure!(
                    again.len() == 1 && again.contains_key(want),
                    "after settling on {want:?}: {again:?}"
                );
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        bail!("user {user:?} never saw only {want:?}: last {last:?}")
    }

    /// Waits (up to 20 s) until batches of `n` page loads show only things `allowed` says
    /// yes to, and at least one `needed`: a weighted split is in force.
    pub fn settles_within(
        &self,
        n: usize,
        allowed: impl Fn(&str) -> bool,
        needed: &str,
    ) -> anyhow::Result<BTreeMap<String, usize>> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let counts = self.counts(None, n)?;
            if counts.keys().all(|k| allowed(k)) && counts.contains_key(needed) {
                return Ok(counts);
            }
            ensure!(Instant::now() < deadline, "the split never took effect: {counts:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// `count` of `n` lies within five standard deviations of the share `share` (a false failure
/// less than once in a million runs).
pub fn near(count: usize, n: usize, share: f64) -> bool {
    let mean = n as f64 * share;
    let sd = (n as f64 * share * (1.0 - share)).sqrt();
    (count as f64 - mean).abs() <= 5.0 * sd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn near_means_within_five_standard_deviations() {
        // 200 tries at 50%: sd 7.07, so 65..=135 pass.
        assert!(near(100, 200, 0.5) && near(65, 200, 0.5) && near(135, 200, 0.5));
        assert!(!near(64, 200, 0.5) && !near(136, 200, 0.5));
        assert!(!near(0, 60, 1.0 / 3.0));
    }
}
