//! Answers to recent writes, kept so a write retried after a lost answer
//! (a leader deposed mid-call) is answered, not applied twice.

use super::*;

/// What the state keeps of a write's answer for its retries: a meeting id
/// where the answer is a meeting (it is rebuilt from the state), the whole
/// answer only where that is small. Keeping full answers cost a copy of
/// every meeting and decision for the whole retention window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecentAnswer {
    Scheduled(u64),
    Moved(u64),
    Other(Box<Response>),
}

impl RecentAnswer {
    pub(super) fn of(answer: &Response) -> RecentAnswer {
        match answer {
            Ok(Output::Scheduled { meeting, .. }) => RecentAnswer::Scheduled(meeting.id),
            Ok(Output::Moved { meeting, .. }) => RecentAnswer::Moved(meeting.id),
            other => RecentAnswer::Other(Box::new(other.clone())),
        }
    }
}

/// Recent answers by op id, and the same ids by time for pruning.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecentAnswers {
    /// Compact answers (see [`RecentAnswer`]).
    pub(super) compact: BTreeMap<u64, RecentAnswer>,
    /// Full answers, as states written before compact answers kept them;
    /// they expire like the others.
    pub(super) full: BTreeMap<u64, Response>,
    pub(super) by_time: BTreeSet<(u64, u64)>,
}

impl ClusterState {
    /// The answer to a retried write, rebuilt from what its first attempt
    /// kept: the meeting as it is now, with the decision that placed it.
    pub(super) fn replay(&self, answer: &RecentAnswer) -> Response {
        match answer {
            RecentAnswer::Other(r) => (**r).clone(),
            RecentAnswer::Scheduled(id) => {
                let (meeting, decision) = self.meeting_with_decision(*id, |d| d.first())?;
                Ok(Output::Scheduled { meeting, decision })
            }
            RecentAnswer::Moved(id) => {
                let (meeting, decision) = self.meeting_with_decision(*id, |d| d.last())?;
                Ok(Output::Moved { meeting, decision })
            }
        }
    }

    pub(super) fn expire_recent_ops(&mut self, now_ms: u64) {
        let horizon = now_ms.saturating_sub(RECENT_OP_RETENTION_MS);
        while let Some(&(at, id)) = self.answers.by_time.first() {
            if at > horizon {
                break;
            }
            self.answers.by_time.remove(&(at, id));
            self.answers.compact.remove(&id);
            self.answers.full.remove(&id);
        }
    }
}
