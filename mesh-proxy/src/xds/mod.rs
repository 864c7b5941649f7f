//! xDS: the ADS client ([`client`]) and the configuration it maintains ([`store`]), what it
//! checks in each resource (`checks`), and what changed when and what was refused
//! ([`history`]).

mod checks;
pub mod client;
pub mod history;
pub mod store;
