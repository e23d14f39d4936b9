//! Leader loops: work the leader commits on a timer, with the time taken
//! from the log (the command carries none; `apply` reads the entry's time).

pub mod metadata;
pub mod sla;
pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

use crate::licensing::service_date;
use crate::raft::Replica;
use crate::state::{AccountCommand, Command, LedgerCommand, Output, SweepAccounts, SweepLedger};

/// While leader, commits an account sweep whenever some active account's
/// twelve months without a meeting have run out. Checked every `every`;
/// nothing is written when there is nothing to disable.
pub async fn account_sweep_loop(replica: Arc<Replica>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (active, disabled) = replica.local_state(|s| {
            let active = s.accounts.by_id.values().filter(|a| a.is_active()).count();
            (active, s.accounts.by_id.len() - active)
        });
        metrics::gauge!("fjord_host_accounts", "state" => "active").set(active as f64);
        metrics::gauge!("fjord_host_accounts", "state" => "disabled").set(disabled as f64);
        if !replica.is_leader() {
            continue;
        }
        let today = service_date(crate::raft::now_ms());
        let due = replica.local_state(|s| {
            s.accounts
                .by_id
                .values()
                .any(|a| a.is_active() && a.inactive_from() <= today)
        });
        if !due {
            continue;
        }
        match replica
            .write(Command::Account(AccountCommand::Sweep(SweepAccounts {})))
            .await
        {
            Ok(Output::AccountsSwept { disabled }) => {
                metrics::counter!("fjord_accounts_disabled_inactive_total")
                    .increment(disabled.len() as u64);
                tracing::info!(
                    disabled = disabled.len(),
                    "host accounts without a meeting for twelve months disabled"
                );
            }
            Ok(other) => tracing::warn!(?other, "account sweep answered unexpectedly"),
            Err(e) => tracing::warn!(error = %e, "account sweep not committed; retrying next tick"),
        }
    }
}

/// While leader, drops usage-ledger rows older than the audit window that
/// a closed period has billed; every replica exports the ledger's gauges.
pub async fn ledger_sweep_loop(replica: Arc<Replica>, every: Duration, audit_window_days: u32) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = crate::raft::now_ms();
        let cutoff = now.saturating_sub(u64::from(audit_window_days) * 86_400_000);
        let (rows, open, revision, due) = replica.local_state(|s| {
            let l = &s.ledger;
            let billed = l
                .closed_periods
                .iter()
                .map(|p| p.revision)
                .max()
                .unwrap_or(0);
            let due = l
                .sessions
                .front()
                .is_some_and(|r| r.end_ms < cutoff && r.revision <= billed);
            (l.sessions.len(), l.open_sessions(), l.revision, due)
        });
        metrics::gauge!("fjord_ledger_rows").set(rows as f64);
        metrics::gauge!("fjord_ledger_open_sessions").set(open as f64);
        metrics::gauge!("fjord_ledger_revision").set(revision as f64);
        if !due || !replica.is_leader() {
            continue;
        }
        match replica
            .write(Command::Ledger(LedgerCommand::Sweep(SweepLedger {
                audit_window_days,
            })))
            .await
        {
            Ok(Output::LedgerSwept { dropped }) => {
                metrics::counter!("fjord_ledger_rows_dropped_total").increment(dropped);
                tracing::info!(dropped, "ledger rows past the audit window dropped");
            }
            Ok(other) => tracing::warn!(?other, "ledger sweep answered unexpectedly"),
            Err(e) => tracing::warn!(error = %e, "ledger sweep not committed; retrying next tick"),
        }
    }
}
