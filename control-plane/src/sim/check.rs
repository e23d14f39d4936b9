//! Checks on the clients' history of writes at the end of a run.
//!
//! Each write is invoked at a simulated time and, if an answer came, was
//! acknowledged later with the log index it was committed at and the state
//! machine's answer. The history is linearizable when the writes can be
//! ordered by log index consistently with real time: a write acknowledged
//! before another was invoked sits at a lower index; no two writes share
//! an index; and the answers are those of that order (meeting ids, which
//! the state hands out in sequence, grow with the index). Every
//! acknowledged write is durable: its effect is in the healed state.

use std::collections::BTreeMap;

use crate::state::{
    ClusterState, Command, InstitutionCommand, MeetingCommand, NodeCommand, Output,
};

/// How a write ended, as its client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ack {
    /// No answer yet.
    Pending,
    /// Committed at `index`; the state machine answered `answer`.
    Applied {
        index: u64,
        answer: Box<Result<Output, String>>,
    },
    /// Refused before it reached the log (not the leader).
    Refused,
    /// No answer (timeout, crash): it may or may not have been applied.
    Unknown,
}

#[derive(Debug, Clone)]
pub struct WriteRecord {
    pub op_id: u64,
    pub command: Command,
    pub invoked_ms: u64,
    pub acked_ms: Option<u64>,
    pub ack: Ack,
}

impl WriteRecord {
    fn index(&self) -> Option<u64> {
        match &self.ack {
            Ack::Applied { index, .. } => Some(*index),
            _ => None,
        }
    }
}

/// Violations of linearizability in the acknowledged writes.
pub fn linearizable(history: &[WriteRecord]) -> Vec<String> {
    let mut out = Vec::new();
    let acked: Vec<&WriteRecord> = history.iter().filter(|w| w.index().is_some()).collect();
    // No two writes at one index.
    let mut at: BTreeMap<u64, u64> = BTreeMap::new();
    for w in &acked {
        let index = w.index().expect("filtered");
        if let Some(other) = at.insert(index, w.op_id) {
            out.push(format!(
                "writes {other} and {} both acknowledged at index {index}",
                w.op_id
            ));
        }
    }
    // Real time: anything acknowledged before a write was invoked sits
    // below it. Walk writes by invocation, keeping the highest index
    // acknowledged so far.
    let mut by_ack: Vec<&WriteRecord> = acked.clone();
    by_ack.sort_by_key(|w| w.acked_ms);
    let mut by_invoke: Vec<&WriteRecord> = acked.clone();
    by_invoke.sort_by_key(|w| w.invoked_ms);
    let mut done = 0;
    let mut highest: Option<(u64, u64)> = None; // (index, op)
    for w in by_invoke {
        while done < by_ack.len() && by_ack[done].acked_ms < Some(w.invoked_ms) {
            let i = by_ack[done].index().expect("filtered");
            if highest.is_none_or(|(h, _)| i > h) {
                highest = Some((i, by_ack[done].op_id));
            }
            done += 1;
        }
        let index = w.index().expect("filtered");
        if let Some((h, op)) = highest {
            if index <= h {
                out.push(format!(
                    "write {} invoked after write {op} was acknowledged at index {h}, yet committed at index {index}",
                    w.op_id
                ));
            }
        }
    }
    // Answers in log order: meeting ids grow with the index.
    let mut scheduled: Vec<(u64, u64, u64)> = acked
        .iter()
        .filter_map(|w| match &w.ack {
            Ack::Applied { index, answer } => match answer.as_ref() {
                Ok(Output::Scheduled { meeting, .. }) => Some((*index, meeting.id, w.op_id)),
                _ => None,
            },
            _ => None,
        })
        .collect();
    scheduled.sort();
    for pair in scheduled.windows(2) {
        if pair[1].1 <= pair[0].1 {
            out.push(format!(
                "meeting ids out of log order: write {} at index {} got {}, write {} at index {} got {}",
                pair[0].2, pair[0].0, pair[0].1, pair[1].2, pair[1].0, pair[1].1
            ));
        }
    }
    out
}

/// Acknowledged writes whose effect is missing from the healed state.
pub fn durable(history: &[WriteRecord], state: &ClusterState) -> Vec<String> {
    let mut out = Vec::new();
    for w in history {
        let Ack::Applied { index, answer } = &w.ack else {
            continue;
        };
        let Ok(answer) = answer.as_ref() else {
            continue;
        };
        let missing = match (&w.command, answer) {
            (Command::Institution(InstitutionCommand::Create(c)), _) => {
                state.institutions.get(&c.name).is_none()
            }
            (Command::Node(NodeCommand::Register(r)), _) => state.nodes.get(&r.id).is_none(),
            (Command::Meeting(MeetingCommand::Schedule(_)), Output::Scheduled { meeting, .. }) => {
                // Still there, or ended by a later write (ended meetings
                // stay until pruned, long after a simulated run).
                state.meetings.get(&meeting.id).is_none()
            }
            _ => false,
        };
        if missing {
            out.push(format!(
                "write {} acknowledged at index {index} is missing from the healed state: {:?}",
                w.op_id, w.command
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{CreateInstitution, InstitutionCommand};

    fn write(op_id: u64, invoked_ms: u64, acked_ms: u64, index: u64) -> WriteRecord {
        WriteRecord {
            op_id,
            command: Command::Institution(InstitutionCommand::Create(CreateInstitution {
                name: format!("i{op_id}"),
                residency: "nordic".into(),
                home_region: None,
                max_participants: 10,
            })),
            invoked_ms,
            acked_ms: Some(acked_ms),
            ack: Ack::Applied {
                index,
                answer: Box::new(Err("x".into())),
            },
        }
    }

    #[test]
    fn concurrent_writes_may_commit_in_either_order() {
        assert!(linearizable(&[write(1, 0, 10, 5), write(2, 5, 8, 4)]).is_empty());
    }

    #[test]
    fn a_write_invoked_after_an_acknowledgement_must_follow_it() {
        let v = linearizable(&[write(1, 0, 10, 5), write(2, 11, 20, 4)]);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].contains("write 2 invoked after write 1"), "{v:?}");
    }

    #[test]
    fn two_writes_at_one_index_are_a_violation() {
        let v = linearizable(&[write(1, 0, 10, 5), write(2, 1, 9, 5)]);
        assert!(
            v.iter().any(|s| s.contains("both acknowledged at index 5")),
            "{v:?}"
        );
    }

    #[test]
    fn an_acknowledged_institution_missing_from_the_state_is_reported() {
        let mut w = write(1, 0, 10, 5);
        w.ack = Ack::Applied {
            index: 5,
            answer: Box::new(Ok(Output::None)),
        };
        let v = durable(&[w], &ClusterState::default());
        assert_eq!(v.len(), 1, "{v:?}");
    }
}
