//! End-to-end tests and benchmarks: bookinfo-style demo apps, the local cluster built from Linux
//! network namespaces, scenarios that run the real binaries, and side-by-side benchmarks.
//!
//! It drives the binaries from outside, as a user would. It arrives with the demo; until then it
//! holds no code.
