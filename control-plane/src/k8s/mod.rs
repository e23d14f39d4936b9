//! The Kubernetes integration (`fjord operator`): a pure
//! [`decide::decide`] from what the controller observed and what the
//! operator asked for to the actions to take — drain media nodes on a
//! cordoned machine, size media pools from the capacity reserved for the
//! coming hour, keep Raft membership in step with the control plane's
//! StatefulSet — and (to come) the executor that observes through the
//! Kubernetes API and the control plane and carries the actions out.

pub mod decide;

pub use decide::{decide, Action, Desired, Observed};
