//! `fjord sla ...`: offline SLO tooling (the live figures are under
//! `fjord ctl sla`).

use std::path::PathBuf;

use clap::{Args, Subcommand};
use fjord_control_plane::sla::{rules, SloConfig};

#[derive(Args)]
pub struct SlaArgs {
    #[command(subcommand)]
    command: SlaCommand,
}

#[derive(Subcommand)]
enum SlaCommand {
    /// Print Prometheus recording and alerting rules for the SLOs:
    /// multiwindow, multi-burn-rate alerts (page: 1 h/5 m at 14.4x, 6 h/30 m
    /// at 6x; ticket: 1 d/2 h at 3x, 3 d/6 h at 1x for a 30-day window).
    Rules(RulesArgs),
}

#[derive(Args)]
struct RulesArgs {
    /// The SLO window in days (the burn factors follow from it).
    #[arg(long, default_value_t = SloConfig::default().window_days)]
    window_days: u32,
    /// Events the long window must hold before an institution can be paged.
    #[arg(long, default_value_t = SloConfig::default().min_events_to_page)]
    min_events_to_page: u64,
    /// Write the rules here instead of standard output.
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run(args: SlaArgs) -> anyhow::Result<()> {
    match args.command {
        SlaCommand::Rules(a) => {
            let cfg = SloConfig {
                window_days: a.window_days,
                min_events_to_page: a.min_events_to_page,
                ..SloConfig::default()
            };
            cfg.validate()?;
            let text = rules::render(&cfg);
            match a.out {
                Some(path) => std::fs::write(&path, text)
                    .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?,
                None => print!("{text}"),
            }
            Ok(())
        }
    }
}
