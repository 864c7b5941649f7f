//! The data plane: one proxy per pod (uid 1337) that gets its identity from mesh-ca and its
//! configuration from mesh-pilot, and carries all of the app's TCP and HTTP traffic with mTLS
//! between sidecars.
//!
//! No panics on the data path. It arrives with issues 6 and 7; until then it holds no code.
