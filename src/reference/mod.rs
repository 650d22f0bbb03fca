//! The reference engine: plain loops, written once over a [`Scalar`].
//!
//! Run on `f64` it computes; run on [`Counted`] it measures the operations it performs, which
//! `verify` compares with the analytic ledger. It favours reading like the equations over speed;
//! the fast engine is checked against it.

mod activation;
mod conv;
pub mod counting;
mod dense;
mod loss;
mod network;
mod optim;
mod pool;
mod scalar;

pub use conv::{conv_bias_grad, conv_forward, conv_input_grad, conv_weight_grad};
pub use counting::Counted;
pub use dense::{dense_bias_grad, dense_delta, dense_forward, dense_input_grad, dense_weight_grad};
pub use loss::loss;
pub use network::{Grads, Network, Trace};
pub use optim::{Hyper, OptimizerState};
pub use pool::{avgpool_forward, avgpool_input_grad, maxpool_forward, maxpool_input_grad};
pub use scalar::{Phase, Scalar, Tally};
