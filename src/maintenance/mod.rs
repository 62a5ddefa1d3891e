//! Background services of `wharf serve`.
//!
//! In the embedded store, promotion of due jobs and expiry of leases run inside the store's
//! writer thread at their exact deadlines (see [`crate::store::sqlite`]). On a store shared by
//! many nodes, the [`leader`] runs them; pruning runs on the leader too.

pub mod leader;
pub mod pruner;
