//! The layer kinds of real architectures, one module each: its analytic cost and its reference
//! forward and backward (generic over [`Scalar`](crate::reference::Scalar), so the same code
//! computes on `f64` and measures on the counting scalar), side by side so that `verify` holds
//! them to each other. Shapes are in each module's comment; the shape rule itself is in
//! [`Layer::after`](crate::spec::Layer::after) and [`Layer::join`](crate::spec::Layer::join).
//!
//! A kind is dispatched in one place per stage: `cost::Step::new` (the ledger),
//! `reference::Network` (the reference engine) and the fast engine's graph path
//! (`engine::graph`, with one kernel file per kind: `norm`, `gap`, `padpool`). Dense layers,
//! convolutions and max/average pooling, the kinds the first networks were made of
//! ([`Kind::is_classic`]), keep their cost in [`crate::cost`] and their reference code in
//! [`crate::reference`].
//!
//! Every function takes a batch of B examples laid out row-major, one example after another.
//!
//! [`Kind::is_classic`]: crate::spec::Kind::is_classic

pub mod batchnorm;
pub mod dropout;
pub mod globalpool;
pub mod join;
pub mod zeropad;
