//! Named internal events: each one counts (`fjord_*` metrics) and, where an
//! operator would want it, logs.

use crate::placement::Outcome;
use crate::state::{Command, Output, Response, StateError};

/// Called once per applied command on every replica.
pub fn command_applied(cmd: &Command, resp: &Response) {
    let outcome = match resp {
        Ok(_) => "ok",
        Err(e) => e.code(),
    };
    metrics::counter!("fjord_commands_applied_total", "command" => cmd.kind(), "outcome" => outcome)
        .increment(1);
    match resp {
        Ok(Output::Scheduled { decision, .. }) | Ok(Output::Moved { decision, .. }) => {
            placement(&decision.outcome)
        }
        Ok(Output::Evacuated { moved, .. }) => {
            metrics::counter!("fjord_meetings_evacuated_total").increment(moved.len() as u64);
        }
        Err(StateError::NoCapacity { decision, .. }) => placement(&decision.outcome),
        Ok(Output::NodesDown { nodes, replaced }) if !nodes.is_empty() => {
            metrics::counter!("fjord_nodes_lease_expired_total").increment(nodes.len() as u64);
            metrics::counter!("fjord_meetings_replaced_total").increment(replaced.len() as u64);
        }
        _ => {}
    }
}

fn placement(o: &Outcome) {
    let outcome = match o {
        Outcome::Placed { .. } => "placed",
        Outcome::Cascaded { .. } => "cascaded",
        Outcome::Refused { .. } => "refused",
    };
    metrics::counter!("fjord_placements_total", "outcome" => outcome).increment(1);
}
