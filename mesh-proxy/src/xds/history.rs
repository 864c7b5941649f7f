//! What a config dump tells of each resource besides the resource itself: the update that
//! last changed it (Envoy's `version_info` and `last_updated` per resource), and the last
//! update of each type the proxy refused (Envoy's `error_state`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use envoy_types::pb::google::protobuf::Any;

/// The accepted update that last changed a resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// The response's `version_info`.
    pub version: Arc<str>,
    /// When the proxy accepted it.
    pub at: SystemTime,
}

/// Per resource name, the update that last changed it.
pub type Stamps = BTreeMap<String, Stamp>;

/// How a response's resources replace those held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Replace {
    /// All of them: what the response lacks is gone (listeners, clusters).
    Whole,
    /// Those it names; the others stay (routes, endpoints, secrets).
    Named,
}

/// Takes `decoded` into `held` as `replace` says, giving `stamp` to each resource that
/// `held` did not hold as it is: a state-of-the-world response repeats every resource, and
/// as in Envoy only those it changes take its version.
pub(super) fn take<T: PartialEq>(
    held: &mut BTreeMap<String, T>,
    stamps: &mut Stamps,
    decoded: BTreeMap<String, T>,
    replace: Replace,
    stamp: &Stamp,
) {
    for (name, resource) in &decoded {
        if held.get(name) != Some(resource) || !stamps.contains_key(name) {
            stamps.insert(name.clone(), stamp.clone());
        }
    }
    match replace {
        Replace::Whole => {
            *held = decoded;
            forget_gone(stamps, held);
        }
        Replace::Named => held.extend(decoded),
    }
}

/// Forgets the stamps of resources `now` no longer has (endpoints of a removed cluster,
/// secrets no listener names).
pub(super) fn forget_gone<T>(stamps: &mut Stamps, now: &BTreeMap<String, T>) {
    stamps.retain(|name, _| now.contains_key(name));
}

/// An update the proxy refused (NACKed), kept per type until an update of the type is
/// accepted.
#[derive(Clone, Debug)]
pub struct Rejection {
    /// The refused response's `version_info`.
    pub version: String,
    /// The resource refused and what was sent for it (a secret with its keys redacted);
    /// `None` when the refusal names no resource (a resource that does not decode, a type
    /// the proxy does not use).
    pub resource: Option<(String, Any)>,
    /// Why (the NACK's message).
    pub details: String,
    /// When.
    pub at: SystemTime,
}

/// The last refused update, by type URL.
pub type Rejections = BTreeMap<String, Rejection>;

/// Why a response was refused, and the resource if one was to blame.
#[derive(Debug)]
pub(super) struct Refusal {
    /// The NACK's message.
    pub(super) details: String,
    /// The resource's name and what was sent for it.
    pub(super) resource: Option<(String, Any)>,
}

impl Refusal {
    /// A refusal of the response as a whole.
    pub(super) fn whole(details: String) -> Self {
        Self { details, resource: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_an_update_changes_takes_its_version() {
        let at = SystemTime::UNIX_EPOCH;
        let v1 = Stamp { version: "1".into(), at };
        let v2 = Stamp { version: "2".into(), at: at + std::time::Duration::from_secs(1) };
        let (mut held, mut stamps) = (BTreeMap::new(), Stamps::new());
        let first = BTreeMap::from([("a".to_owned(), 1), ("b".to_owned(), 1)]);
        take(&mut held, &mut stamps, first, Replace::Whole, &v1);
        let second = BTreeMap::from([("a".to_owned(), 1), ("c".to_owned(), 2)]);
        take(&mut held, &mut stamps, second, Replace::Whole, &v2);
        assert_eq!(stamps["a"], v1, "unchanged: keeps the update that made it");
        assert_eq!(stamps["c"], v2, "new: the update that brought it");
        assert!(!stamps.contains_key("b") && !held.contains_key("b"), "gone: forgotten");
        let third = BTreeMap::from([("a".to_owned(), 3)]);
        take(&mut held, &mut stamps, third, Replace::Named, &v2);
        assert_eq!(stamps["a"], v2, "changed: the update that changed it");
        assert_eq!((held["a"], held["c"]), (3, 2), "what a named update leaves out stays");
    }
}
