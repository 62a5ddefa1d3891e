//! Background services of `wharf serve`.
//!
//! In the embedded store, promotion of due jobs and expiry of leases run inside the store's
//! writer thread at their exact deadlines (see [`crate::store::sqlite`]); what remains here is
//! periodic work that no request waits for.

pub mod pruner;
