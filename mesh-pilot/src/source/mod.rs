//! Config sources: where services, workloads and routing config come from. Each source turns
//! what it reads into a [`Snapshot`](crate::model::Snapshot) and reports the objects it left
//! out, naming the object, the field and the reason.

pub mod kube;
pub mod local;

/// An object left out of the model, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    /// `file:line (document n)`, or the Kubernetes object.
    pub origin: String,
    /// The problem.
    pub reason: String,
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.origin, self.reason)
    }
}
