//! xDS: the ADS client ([`client`]) and the configuration it maintains ([`store`]).

pub mod client;
pub mod store;
