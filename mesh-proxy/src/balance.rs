//! Endpoint selection for a cluster: round robin (weighted), least request (power of two
//! choices), random (weighted), and consistent hashing (ring hash; also standing in for
//! Maglev). Pure and lock-free: picking is a few atomic operations, so it can sit on the data
//! path of every request.

use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use envoy_types::pb::envoy::config::cluster::v3::cluster::LbPolicy;
use envoy_types::pb::envoy::config::core::v3::{HealthStatus, Metadata, address, socket_address};
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
use envoy_types::pb::google::protobuf::value::Kind;
use mesh_api::identity::SpiffeId;
use mesh_api::xds::mtls::{IDENTITY_METADATA, TLS_MODE, TLS_MODE_ISTIO, TRANSPORT_SOCKET_MATCH};

/// Most entries of a weighted round-robin schedule (weights are scaled down to fit).
const MAX_SCHEDULE: usize = 4096;
/// Points on the hash ring per unit of weight.
const POINTS_PER_WEIGHT: u64 = 128;
/// Most points on a ring (weights are scaled down to fit).
const MAX_RING: u64 = 1 << 17;

/// One endpoint, with what selection needs to know about it.
#[derive(Debug)]
pub struct Host {
    /// Address connections to the endpoint go to.
    pub address: SocketAddr,
    /// Its load-balancing weight (at least 1).
    pub weight: u32,
    /// Requests in flight to it (least request reads this).
    pub active: AtomicU64,
    /// Whether it takes mesh mTLS (endpoint metadata `tlsMode: istio`), and as whom.
    pub mesh: Option<PeerIdentity>,
    /// Its outlier-detection state, carried across updates for the same address
    /// ([`Balancer::carry_from`]).
    pub health: crate::outlier::HostHealth,
}

/// Who a mesh endpoint must prove to be.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PeerIdentity {
    /// This SPIFFE id (from the endpoint's metadata).
    Exactly(SpiffeId),
    /// One of these (the cluster's: a DestinationRule's `subjectAltNames`, or the identities
    /// of the service's workloads).
    OneOf(std::sync::Arc<[SpiffeId]>),
    /// Not known: connections are refused rather than take any workload of the trust
    /// domain for this one.
    Unknown,
}

impl Host {
    /// A host without mesh mTLS, with nothing in flight and no outlier record.
    pub fn new(address: SocketAddr, weight: u32) -> Self {
        Self {
            address,
            weight,
            active: AtomicU64::new(0),
            mesh: None,
            health: crate::outlier::HostHealth::default(),
        }
    }
}

/// The identity a mesh endpoint must present, from its metadata: `tlsMode: istio` under
/// `envoy.transport_socket_match`, and the SPIFFE id under `mesh.identity`. `None` for a
/// plaintext endpoint.
fn mesh_identity(metadata: Option<&Metadata>) -> Option<PeerIdentity> {
    let metadata = metadata?;
    let tls = metadata.filter_metadata.get(TRANSPORT_SOCKET_MATCH)?;
    let mode = tls.fields.get(TLS_MODE)?;
    if !matches!(&mode.kind, Some(Kind::StringValue(m)) if m == TLS_MODE_ISTIO) {
        return None;
    }
    let id = metadata
        .typed_filter_metadata
        .get(IDENTITY_METADATA)
        .and_then(|any| <String as prost::Message>::decode(any.value.as_slice()).ok())
        .and_then(|text| text.parse().ok());
    Some(id.map_or(PeerIdentity::Unknown, PeerIdentity::Exactly))
}

/// How a cluster picks among its endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// In turn, in proportion to weights.
    RoundRobin,
    /// The less busy of two chosen at random (weighted).
    LeastRequest,
    /// At random, in proportion to weights.
    Random,
    /// By a hash of the request (header, cookie, source address): the same key, the same
    /// endpoint, and few keys move when endpoints come and go.
    RingHash,
}

impl Policy {
    /// The policy for a cluster's `lb_policy`; `None` for one chosen elsewhere
    /// (`CLUSTER_PROVIDED`: original destination).
    pub fn of(lb_policy: i32) -> Option<Self> {
        match LbPolicy::try_from(lb_policy).ok()? {
            LbPolicy::RoundRobin => Some(Policy::RoundRobin),
            LbPolicy::LeastRequest => Some(Policy::LeastRequest),
            LbPolicy::Random => Some(Policy::Random),
            LbPolicy::RingHash | LbPolicy::Maglev => Some(Policy::RingHash),
            _ => None,
        }
    }
}

/// The endpoints of one cluster and the state of its policy.
#[derive(Debug)]
pub struct Balancer {
    hosts: Vec<Host>,
    policy: Policy,
    /// Round robin: host indexes in a weighted order.
    schedule: Vec<usize>,
    /// Ring hash: (point, host index), sorted by point.
    ring: Vec<(u64, usize)>,
    next: AtomicUsize,
    seed: AtomicU64,
    outlier: Option<crate::outlier::OutlierPolicy>,
}

fn hash_of(value: impl Hash) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// The usable endpoints of an assignment: those with a socket address and not marked
/// unhealthy or draining.
pub fn hosts(assignment: &ClusterLoadAssignment) -> Vec<Host> {
    let mut out = Vec::new();
    for locality in &assignment.endpoints {
        for lb in &locality.lb_endpoints {
            let usable = ![HealthStatus::Unhealthy as i32, HealthStatus::Draining as i32]
                .contains(&lb.health_status);
            let Some(HostIdentifier::Endpoint(endpoint)) = &lb.host_identifier else { continue };
            let Some(address::Address::SocketAddress(socket)) =
                endpoint.address.as_ref().and_then(|a| a.address.as_ref())
            else {
                continue;
            };
            let Some(socket_address::PortSpecifier::PortValue(port)) = socket.port_specifier else {
                continue;
            };
            let (Ok(ip), Ok(port)) = (socket.address.parse(), u16::try_from(port)) else {
                continue;
            };
            if usable {
                out.push(Host {
                    address: SocketAddr::new(ip, port),
                    weight: lb.load_balancing_weight.as_ref().map_or(1, |w| w.value.max(1)),
                    active: AtomicU64::new(0),
                    mesh: mesh_identity(lb.metadata.as_ref()),
                    health: crate::outlier::HostHealth::default(),
                });
            }
        }
    }
    out
}

impl Balancer {
    /// A balancer over `hosts` with `policy`.
    pub fn new(hosts: Vec<Host>, policy: Policy) -> Self {
        let schedule = if policy == Policy::RoundRobin { schedule(&hosts) } else { Vec::new() };
        let ring = if policy == Policy::RingHash { ring(&hosts) } else { Vec::new() };
        let seed = hash_of(hosts.iter().map(|h| h.address).collect::<Vec<_>>()) | 1;
        Self {
            hosts,
            policy,
            schedule,
            ring,
            next: AtomicUsize::new(0),
            seed: AtomicU64::new(seed),
            outlier: None,
        }
    }

    /// The same balancer, ejecting failing endpoints by `policy`.
    pub fn with_outlier_detection(mut self, policy: Option<crate::outlier::OutlierPolicy>) -> Self {
        self.outlier = policy;
        self
    }

    /// Records how a request to host `index` ended (for outlier detection).
    pub fn record(&self, index: usize, outcome: crate::policy::Outcome) {
        if let Some(policy) = &self.outlier {
            let health: Vec<&crate::outlier::HostHealth> =
                self.hosts.iter().map(|h| &h.health).collect();
            policy.record(&health, index, outcome);
        }
    }

    /// Takes over the outlier records of the endpoints `older` also has.
    pub fn carry_from(&self, older: &Balancer) {
        for host in &self.hosts {
            if let Some(old) = older.hosts.iter().find(|h| h.address == host.address) {
                host.health.carry_from(&old.health);
            }
        }
    }

    /// Every endpoint of the cluster, ejected ones included, as indexed by picks.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// Picks an endpoint; `key` is the request's hash for ring hash (without one, any).
    /// `None` when the cluster has no usable endpoint.
    pub fn pick(&self, key: Option<u64>) -> Option<&Host> {
        self.pick_index(key).and_then(|i| self.hosts.get(i))
    }

    /// Like [`Balancer::pick`], the host's index in [`Balancer::hosts`]. Ejected endpoints
    /// are passed over unless too few would be left (then all are used: panic mode).
    pub fn pick_index(&self, key: Option<u64>) -> Option<usize> {
        let first = self.pick_any(key)?;
        let Some(outlier) = &self.outlier else { return Some(first) };
        let now = crate::outlier::now_ms();
        let ejected = |i: usize| self.hosts[i].health.is_ejected(now);
        if !ejected(first) {
            return Some(first);
        }
        let usable = self.hosts.iter().filter(|h| !h.health.is_ejected(now)).count();
        if usable == 0 || (usable as f64) * 100.0 < outlier.panic_percent * self.hosts.len() as f64
        {
            return Some(first);
        }
        for _ in 0..self.hosts.len() {
            let next = self.pick_any(key)?;
            if !ejected(next) {
                return Some(next);
            }
        }
        // Consistent hashing keeps picking the same one: take the next usable host.
        (1..self.hosts.len()).map(|d| (first + d) % self.hosts.len()).find(|i| !ejected(*i))
    }

    fn pick_any(&self, key: Option<u64>) -> Option<usize> {
        if self.hosts.is_empty() {
            return None;
        }
        let index = match (self.policy, key) {
            (Policy::RoundRobin, _) => {
                let turn = self.next.fetch_add(1, Ordering::Relaxed);
                self.schedule[turn % self.schedule.len()]
            }
            (Policy::Random, _) | (Policy::RingHash, None) => self.weighted_random(),
            (Policy::LeastRequest, _) => {
                let (a, b) = (self.weighted_random(), self.weighted_random());
                let load = |i: usize| self.hosts[i].active.load(Ordering::Relaxed);
                if load(b) < load(a) { b } else { a }
            }
            (Policy::RingHash, Some(key)) => {
                let at = self.ring.partition_point(|(point, _)| *point < key);
                self.ring[at % self.ring.len()].1
            }
        };
        Some(index)
    }

    /// A pseudo-random number (xorshift; quality enough to spread load, not for secrets).
    fn random(&self) -> u64 {
        let mut x = self.seed.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.seed.store(x, Ordering::Relaxed);
        x
    }

    fn weighted_random(&self) -> usize {
        let total: u64 = self.hosts.iter().map(|h| u64::from(h.weight)).sum();
        let mut point = self.random() % total.max(1);
        for (i, host) in self.hosts.iter().enumerate() {
            let weight = u64::from(host.weight);
            if point < weight {
                return i;
            }
            point -= weight;
        }
        0
    }
}

/// A round-robin order in which each host appears in proportion to its weight, spread out
/// (smooth weighted round robin, computed once).
fn schedule(hosts: &[Host]) -> Vec<usize> {
    let divisor = hosts.iter().map(|h| h.weight).fold(0, gcd).max(1);
    let mut weights: Vec<i64> = hosts.iter().map(|h| i64::from(h.weight / divisor)).collect();
    let mut total: i64 = weights.iter().sum();
    if usize::try_from(total).unwrap_or(usize::MAX) > MAX_SCHEDULE {
        let scale = total as f64 / MAX_SCHEDULE as f64;
        for w in &mut weights {
            *w = ((*w as f64 / scale).round() as i64).max(1);
        }
        total = weights.iter().sum();
    }
    let mut current = vec![0i64; hosts.len()];
    let mut out = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for _ in 0..total {
        for (c, w) in current.iter_mut().zip(&weights) {
            *c += w;
        }
        let Some((best, _)) =
            current.iter().enumerate().max_by_key(|(i, c)| (**c, std::cmp::Reverse(*i)))
        else {
            break;
        };
        current[best] -= total;
        out.push(best);
    }
    out
}

/// Points for each host in proportion to its weight, hashed from its address and replica
/// number. A host's points do not depend on the other hosts (until the ring would pass
/// [`MAX_RING`] and is scaled), so when one goes only its keys move.
fn ring(hosts: &[Host]) -> Vec<(u64, usize)> {
    let wanted: u64 = hosts.iter().map(|h| u64::from(h.weight) * POINTS_PER_WEIGHT).sum();
    let scale = (wanted as f64 / MAX_RING as f64).max(1.0);
    let mut ring = Vec::new();
    for (i, host) in hosts.iter().enumerate() {
        let points = ((u64::from(host.weight) * POINTS_PER_WEIGHT) as f64 / scale).ceil() as u64;
        for replica in 0..points.max(1) {
            ring.push((hash_of((host.address, replica)), i));
        }
    }
    ring.sort_unstable();
    ring
}
