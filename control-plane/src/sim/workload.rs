//! The simulation's clients: what they write and how they send it.

use super::*;

/// What a media node journaled, as the simulation's node keeps it.
#[derive(Debug, Default)]
pub(super) struct UsageJournal {
    pub(super) events: Vec<UsageEvent>,
    pub(super) open: Vec<(u64, u64)>,
}

impl World {
    pub(super) fn pick_command(&mut self) -> Command {
        // Institutions, the price table and licences first, then a mix.
        let first = INSTITUTIONS.len() as u64;
        if self.next_write <= first {
            let (name, residency) = INSTITUTIONS[self.next_write as usize - 1];
            return Command::Institution(InstitutionCommand::Create(CreateInstitution {
                name: name.into(),
                residency: residency.into(),
                home_region: None,
                max_participants: 500,
            }));
        }
        if self.next_write == first + 1 {
            return load_price_table();
        }
        if self.next_write <= 2 * first + 1 {
            let name = INSTITUTIONS[(self.next_write - first - 2) as usize].0;
            return self.set_licence(name);
        }
        let roll = self.rng.below(100);
        if self.media_nodes.len() < 2 || (roll < 8 && self.media_nodes.len() < 8) {
            let region = REGIONS[self.rng.below(REGIONS.len())];
            let id = format!("{region}-{}", self.media_nodes.len() + 1);
            self.media_nodes.push((id.clone(), region));
            return Command::Node(NodeCommand::Register(RegisterNode {
                id,
                region: region.into(),
                address: "127.0.0.1:7000".into(),
                capacity: 20 + self.rng.below(80) as u32,
                certificate: Vec::new(),
                boot: NODE_BOOT,
            }));
        }
        let node = self.media_nodes[self.rng.below(self.media_nodes.len())]
            .0
            .clone();
        match roll {
            0..=39 => Command::Meeting(MeetingCommand::Schedule(ScheduleMeeting {
                request_id: None,
                institution: INSTITUTIONS[self.rng.below(INSTITUTIONS.len())].0.into(),
                participants: 2 + self.rng.below(30) as u32,
                start_ms: None,
                duration_ms: 3_600_000,
                access: Default::default(),
                kind: Default::default(),
                host: Host::OnBehalf,
            })),
            40..=51 if !self.meetings.is_empty() => {
                let id = self.meetings[self.rng.below(self.meetings.len())];
                Command::Meeting(MeetingCommand::End(EndMeeting { id }))
            }
            52..=71 => Command::Node(NodeCommand::Heartbeat(Heartbeat {
                id: node,
                participants: self.rng.below(50) as u32,
                seen_ms: None,
                sent_ms: None,
            })),
            72..=78 => Command::Node(NodeCommand::SetDraining(SetNodeDraining {
                id: node,
                draining: self.rng.below(2) == 0,
                evacuate: self.rng.below(2) == 0,
            })),
            79..=81 => Command::Node(NodeCommand::ExpireLeases(ExpireLeases { lease_ms: 5_000 })),
            82..=94 => self.usage_report(node),
            95..=97 => {
                let name = INSTITUTIONS[self.rng.below(INSTITUTIONS.len())].0;
                self.set_licence(name)
            }
            98 => load_price_table(),
            _ => Command::Node(NodeCommand::ExpireLeases(ExpireLeases { lease_ms: 5_000 })),
        }
    }

    /// A new licence version: the operator's, or the institution admin's
    /// report of FTE and student licences.
    pub(super) fn set_licence(&mut self, institution: &str) -> Command {
        Command::Licence(LicenceCommand::Set(SetLicence {
            institution: institution.into(),
            effective: None,
            terms: LicenceTerms {
                tier: Tier::Education,
                staff_fte_centi: 1_000 + self.rng.below(200_000) as u64,
                student_licences: self.rng.below(1_000) as u32,
                add_ons: Default::default(),
                agreement_start: jiff::civil::date(2026, 10, 1),
                agreement_contact: format!("agreement@{institution}.example"),
                technical_contact: format!("https://alerts.{institution}.example/fjord"),
                allow_overage: self.rng.below(2) == 0,
            },
            reporter: if self.rng.below(3) == 0 {
                Reporter::InstitutionAdmin
            } else {
                Reporter::Operator
            },
        }))
    }

    /// A node's usage report, as a node sends it: one to three new events
    /// (a participant joins a meeting or an open one leaves), with every
    /// event after the last acknowledgement it saw. The node reads that
    /// from a replica's applied state, which may lag (a resend), and now
    /// and then resends a few acknowledged ones too (an answer it lost).
    pub(super) fn usage_report(&mut self, node: String) -> Command {
        let at_ms = self.clock_ms();
        let meeting = match self.meetings.len() {
            // A meeting the state no longer knows: kept, unattributed.
            0 => 1_000_000,
            n => self.meetings[self.rng.below(n)],
        };
        let new = 1 + self.rng.below(3);
        let journal = self.journals.entry(node.clone()).or_default();
        for _ in 0..new {
            let seq = journal.events.len() as u64 + 1;
            let leave = !journal.open.is_empty() && self.rng.below(2) == 0;
            let (meeting, participant, kind) = if leave {
                let (m, p) = journal.open.remove(self.rng.below(journal.open.len()));
                (m, p, UsageEventKind::Left)
            } else {
                let p = self.next_participant;
                self.next_participant += 1;
                journal.open.push((meeting, p));
                (meeting, p, UsageEventKind::Joined)
            };
            journal.events.push(UsageEvent {
                seq,
                boot: NODE_BOOT,
                at_ms,
                meeting,
                participant,
                kind,
                features: 0,
                reason: SessionEnd::Left,
                minutes: 0,
                good_minutes: 0,
                join_ok: false,
                join_latency_ms: 0,
            });
            self.report.usage_events += 1;
        }
        let seen_acked = self
            .replicas
            .values()
            .nth(self.rng.below(self.replicas.len().max(1)))
            .map_or(0, |r| {
                r.applied
                    .read()
                    .expect("state lock")
                    .state
                    .ledger
                    .acked_seq(&node)
            });
        let resend = if self.rng.below(4) == 0 {
            1 + self.rng.below(3) as u64
        } else {
            0
        };
        let journal = &self.journals[&node];
        let from = (seen_acked.saturating_sub(resend) as usize).min(journal.events.len() - 1);
        Command::Ledger(LedgerCommand::Record(RecordUsage {
            node,
            events: journal.events[from..].to_vec(),
        }))
    }

    /// The commands' wall clock: simulated time plus the jumps so far.
    pub(super) fn clock_ms(&self) -> u64 {
        (EPOCH_MS + self.now()).saturating_add_signed(self.clock_offset_ms)
    }

    pub(super) fn client_write(&mut self) {
        let command = self.pick_command();
        let op_id = self.next_write;
        self.next_write += 1;
        // Usually the leader; sometimes whoever (a stale client), which
        // must refuse.
        let target = match self.leader() {
            Some(l) if self.rng.below(10) != 0 => Some(l),
            _ => {
                let ids: Vec<NodeId> = self.replicas.keys().copied().collect();
                (!ids.is_empty()).then(|| ids[self.rng.below(ids.len())])
            }
        };
        let now_ms = self.clock_ms();
        let request = Request {
            now_ms,
            seed: self.rng.next_u64(),
            strategy: Default::default(),
            op_id,
            command: command.clone(),
        };
        let invoked_ms = self.now();
        let index = {
            let mut h = self.history.lock().expect("history lock");
            h.push(WriteRecord {
                op_id,
                command,
                invoked_ms,
                acked_ms: None,
                ack: Ack::Pending,
            });
            h.len() - 1
        };
        let Some(target) = target else {
            self.history.lock().expect("history lock")[index].ack = Ack::Refused;
            return;
        };
        let raft = self.replicas[&target].raft.clone();
        let history = self.history.clone();
        let start = self.start;
        tokio::spawn(async move {
            let result = tokio::time::timeout(
                Duration::from_secs(3),
                raft.client_write(Proposal {
                    requests: vec![request],
                }),
            )
            .await;
            let ack = match result {
                Ok(Ok(resp)) => match resp.data.into_iter().next() {
                    Some(answer) => Ack::Applied {
                        index: resp.log_id.index,
                        answer: Box::new(answer.map_err(|e| e.to_string())),
                    },
                    None => Ack::Unknown,
                },
                Ok(Err(e)) if e.forward_to_leader().is_some() => Ack::Refused,
                _ => Ack::Unknown,
            };
            let mut h = history.lock().expect("history lock");
            h[index].acked_ms = Some(start.elapsed().as_millis() as u64);
            h[index].ack = ack;
        });
    }
}

/// The boot number every simulated media node registers and reports with.
pub(super) const NODE_BOOT: u64 = 1;

pub(super) fn load_price_table() -> Command {
    Command::Licence(LicenceCommand::LoadPriceTable(LoadPriceTable {
        table: PriceTable::builtin(),
        only_if_none: true,
    }))
}
