//! What the pilot's tests share: the small mesh of `tests/data/mesh`.

use std::path::Path;

use mesh_pilot::model::Snapshot;
use mesh_pilot::source::local;

/// The test mesh (two versions of `hello`, a TCP `db`, a VirtualService, a DestinationRule),
/// numbered as the first published snapshot.
pub fn mesh() -> Snapshot {
    let (mut snapshot, rejected) =
        local::read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/mesh"));
    assert!(rejected.is_empty(), "the test mesh is valid: {rejected:?}");
    snapshot.version = 1;
    snapshot
}
