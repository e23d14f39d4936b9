//! Leader loops: work the leader commits on a timer, with the time taken
//! from the log (the command carries none; `apply` reads the entry's time).

use std::sync::Arc;
use std::time::Duration;

use crate::licensing::service_date;
use crate::raft::Replica;
use crate::state::{AccountCommand, Command, Output, SweepAccounts};

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
