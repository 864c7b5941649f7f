//! Config sources: where services, workloads and routing config come from. Each source turns
//! what it reads into a [`Snapshot`](crate::model::Snapshot) and reports the objects it left
//! out, naming the object, the field and the reason. Both keep an object's last valid version
//! in force when it turns invalid ([`Admission`]).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use mesh_api::ObjectRef;
use mesh_api::load::Loaded;

pub mod gateway_api;
pub mod kube;
pub mod local;

/// An object left out of the model, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    /// `file:line (document n)`, or the Kubernetes object.
    pub origin: String,
    /// The object, when it could be read far enough to name it.
    pub object: Option<ObjectRef>,
    /// Why it was left out: the load or validation error, naming the field.
    pub reason: String,
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.origin, self.reason)
    }
}

/// Validation with memory: an object that turns invalid keeps its last valid version in force,
/// as a user expects from `kubectl apply` being refused: a typo must not take a route away.
#[derive(Default)]
pub struct Admission {
    last_valid: HashMap<ObjectRef, Arc<Loaded>>,
}

impl Admission {
    /// The objects to build the model from: the valid ones, and for each invalid one its last
    /// valid version if there was one. Objects that vanished because their file no longer
    /// loads (`broken_files`) stay as they were. Returns them in a stable order, with what was
    /// refused.
    pub fn admit(
        &mut self,
        objects: Vec<Loaded>,
        broken_files: &HashSet<&str>,
    ) -> (Vec<Arc<Loaded>>, Vec<Rejected>) {
        let mut rejected = Vec::new();
        let mut current: HashMap<ObjectRef, Arc<Loaded>> = HashMap::new();
        let mut seen = HashSet::new();
        for loaded in objects {
            let key = loaded.resource.object_ref();
            seen.insert(key.clone());
            let errors = mesh_api::validate::resource(&loaded.resource);
            if errors.is_empty() {
                current.insert(key, Arc::new(loaded));
                continue;
            }
            let kept = self.last_valid.get(&key).cloned();
            let note = if kept.is_some() { " (its last valid version stays in force)" } else { "" };
            rejected.extend(errors.into_iter().map(|e| Rejected {
                origin: loaded.origin.to_string(),
                object: Some(key.clone()),
                reason: format!("{e}{note}"),
            }));
            if let Some(kept) = kept {
                current.insert(key, kept);
            }
        }
        for (key, loaded) in &self.last_valid {
            if !seen.contains(key) && broken_files.contains(loaded.origin.file.as_str()) {
                current.insert(key.clone(), loaded.clone());
            }
        }
        self.last_valid = current;
        // Shared, not copied: thousands of objects are read again on every change.
        let mut objects: Vec<Arc<Loaded>> = self.last_valid.values().cloned().collect();
        objects.sort_by(|a, b| {
            (&a.origin.file, a.origin.document).cmp(&(&b.origin.file, b.origin.document))
        });
        (objects, rejected)
    }
}
