//! Checks on the clients' history of writes at the end of a run.
//!
//! Each write is invoked at a simulated time and, if an answer came, was
//! acknowledged later with the log index it was committed at and the state
//! machine's answer. The history is linearizable when the writes can be
//! ordered by log index consistently with real time: a write acknowledged
//! before another was invoked sits at a lower index; no two writes share
//! an index; and the answers are those of that order (meeting ids, which
//! the state hands out in sequence, grow with the index). Every
//! acknowledged write is durable: its effect is in the healed state. And
//! the usage ledger is complete: every event a node journaled up to what
//! the ledger acknowledged is counted once.

use std::collections::BTreeMap;

use crate::state::{
    ClusterState, Command, InstitutionCommand, LedgerCommand, LicenceCommand, MeetingCommand,
    NodeCommand, Output, UsageEvent, UsageEventKind,
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
            (Command::Licence(LicenceCommand::Set(c)), _) => {
                let acknowledged = history
                    .iter()
                    .filter(|o| o.op_id <= w.op_id && is_acknowledged_licence(o, &c.institution))
                    .count();
                state
                    .licences
                    .by_institution
                    .get(&c.institution)
                    .map_or(0, |l| l.history.len())
                    < acknowledged
            }
            (Command::Ledger(LedgerCommand::Record(r)), Output::UsageAcked { acked_seq }) => {
                state.ledger.acked_seq(&r.node) < *acked_seq
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

fn is_acknowledged_licence(w: &WriteRecord, institution: &str) -> bool {
    matches!(&w.command, Command::Licence(LicenceCommand::Set(c)) if c.institution == institution)
        && matches!(&w.ack, Ack::Applied { answer, .. } if answer.is_ok())
}

/// Every `joined` event a node journaled up to what the ledger
/// acknowledged is one session in the healed ledger, and the ledger never
/// acknowledged an event the node had not journaled.
pub fn ledger_complete(
    journals: &BTreeMap<String, Vec<UsageEvent>>,
    state: &ClusterState,
) -> Vec<String> {
    let mut out = Vec::new();
    let mut sessions: BTreeMap<(&str, u64), usize> = BTreeMap::new();
    for s in &state.ledger.sessions {
        *sessions.entry((s.node.as_str(), s.join_seq)).or_default() += 1;
    }
    for (node, meetings) in &state.ledger.open {
        for o in meetings.values().flat_map(|p| p.values()) {
            *sessions.entry((node.as_str(), o.join_seq)).or_default() += 1;
        }
    }
    for (node, events) in journals {
        let acked = state.ledger.acked_seq(node);
        if acked > events.len() as u64 {
            out.push(format!(
                "{node}: the ledger acknowledged event {acked} of {} journaled",
                events.len()
            ));
        }
        for e in events.iter().take(acked as usize) {
            let rows = sessions.get(&(node.as_str(), e.seq)).copied().unwrap_or(0);
            if e.kind == UsageEventKind::Joined && rows != 1 {
                out.push(format!(
                    "{node}'s joined event {} is {rows} sessions in the ledger",
                    e.seq
                ));
            }
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

    fn usage(seq: u64, participant: u64, kind: UsageEventKind) -> UsageEvent {
        UsageEvent {
            seq,
            boot: 1,
            at_ms: 1_793_491_200_000 + seq,
            meeting: 7,
            participant,
            kind,
            features: 0,
            reason: crate::state::SessionEnd::Left,
            minutes: 0,
            good_minutes: 0,
            join_ok: false,
            join_latency_ms: 0,
        }
    }

    /// A node with three journaled events (two joins, one leave) that the
    /// real state machine took in, one of them twice (a resend).
    fn ledger_with_three_events() -> (BTreeMap<String, Vec<UsageEvent>>, ClusterState) {
        let journal = vec![
            usage(1, 1, UsageEventKind::Joined),
            usage(2, 2, UsageEventKind::Joined),
            usage(3, 1, UsageEventKind::Left),
        ];
        let mut state = ClusterState::default();
        let commands = [
            Command::Node(NodeCommand::Register(crate::state::RegisterNode {
                id: "no-1".into(),
                region: "nordic".into(),
                address: "127.0.0.1:9".into(),
                capacity: 10,
                certificate: Vec::new(),
                boot: 1,
            })),
            Command::Ledger(LedgerCommand::Record(crate::state::RecordUsage {
                node: "no-1".into(),
                events: journal[..2].to_vec(),
            })),
            Command::Ledger(LedgerCommand::Record(crate::state::RecordUsage {
                node: "no-1".into(),
                events: journal[1..].to_vec(),
            })),
        ];
        for (i, command) in commands.into_iter().enumerate() {
            let request = crate::state::Request {
                now_ms: 1_793_491_200_000,
                seed: 0,
                strategy: Default::default(),
                op_id: i as u64 + 1,
                command,
            };
            state.apply(&request).expect("applies");
        }
        (BTreeMap::from([("no-1".to_string(), journal)]), state)
    }

    #[test]
    fn a_ledger_that_took_every_event_once_is_complete() {
        let (journals, state) = ledger_with_three_events();
        assert_eq!(state.ledger.acked_seq("no-1"), 3);
        assert_eq!(ledger_complete(&journals, &state), Vec::<String>::new());
        assert_eq!(state.check_invariants(), Ok(()));
    }

    #[test]
    fn a_join_counted_twice_or_lost_is_reported() {
        let (journals, mut state) = ledger_with_three_events();
        let row = state.ledger.sessions[0].clone();
        state.ledger.sessions.push_back(row);
        let v = ledger_complete(&journals, &state);
        assert!(v.iter().any(|s| s.contains("is 2 sessions")), "{v:?}");
        let e = state.check_invariants().unwrap_err();
        assert!(e.contains("counted twice"), "{e}");

        let (journals, mut state) = ledger_with_three_events();
        state.ledger.open.clear();
        let v = ledger_complete(&journals, &state);
        assert!(v.iter().any(|s| s.contains("is 0 sessions")), "{v:?}");
    }

    #[test]
    fn an_acknowledgement_beyond_the_journal_is_reported() {
        let (mut journals, state) = ledger_with_three_events();
        journals.get_mut("no-1").unwrap().truncate(2);
        let v = ledger_complete(&journals, &state);
        assert!(
            v.iter().any(|s| s.contains("acknowledged event 3 of 2")),
            "{v:?}"
        );
    }
}
