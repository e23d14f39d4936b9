//! `fjord ctl licence ...` and `fjord ctl price-table ...`.

use clap::Subcommand;
use serde_json::{json, Value};

use fjord_control_plane::client::Client;
use fjord_proto::v1 as pb;
use pb::licence_service_client::LicenceServiceClient;

use super::{fmt_time, usage, Failure};

#[derive(Subcommand)]
pub enum LicenceCmd {
    /// Record a new version of an institution's licence (history is kept;
    /// nothing is overwritten). Institution admins may change only FTE,
    /// student licences and contact points.
    Set {
        name: String,
        /// education (staff and students, no time limit) or basic (time-limited meetings).
        #[arg(long)]
        tier: String,
        /// Staff full-time equivalents, up to two decimals; one licence per started FTE.
        #[arg(long)]
        staff_fte: String,
        /// Student licences.
        #[arg(long, default_value_t = 0)]
        students: u32,
        /// An add-on from the price table (repeat for several), e.g. large-meeting-1000.
        #[arg(long = "add-on")]
        add_ons: Vec<String>,
        /// First day of the agreement, YYYY-MM-DD (service time zone, Europe/Oslo).
        #[arg(long)]
        start: String,
        /// Contact point for the agreement: e-mail address or https URL.
        #[arg(long)]
        agreement_contact: String,
        /// Technical contact point (alerts go there): e-mail address or https URL.
        #[arg(long)]
        technical_contact: String,
        /// Day the change takes effect, YYYY-MM-DD; default today.
        #[arg(long)]
        effective: Option<String>,
        /// Activate host accounts beyond the licences held, billed as extra licences.
        #[arg(long)]
        allow_overage: bool,
    },
    /// The licence in force, the contract year, the last day to give notice
    /// and what happens on 1 October.
    Get { name: String },
    /// Every version of the licence, in the order it was recorded.
    History { name: String },
    /// Record written notice of termination received on DATE: before 15 June
    /// it ends the agreement on 1 October that year, else a year later.
    Notice {
        name: String,
        #[arg(long)]
        date: String,
    },
}

#[derive(Subcommand)]
pub enum PriceTableCmd {
    /// Load a price table (TOML) as a new version.
    Load { file: std::path::PathBuf },
    /// Show the price table in force.
    Get,
}

fn limits_json(l: &pb::Limits) -> Value {
    json!({"meeting_participants": l.meeting_participants,
           "webinar_attendees": l.webinar_attendees,
           "max_duration_s": l.max_duration_s, "warn_before_end_s": l.warn_before_end_s})
}

fn terms_json(t: &pb::LicenceTerms) -> Value {
    json!({"tier": t.tier, "staff_fte": t.staff_fte, "staff_licences": t.staff_licences,
           "student_licences": t.student_licences, "add_ons": t.add_ons,
           "agreement_start": t.agreement_start, "agreement_contact": t.agreement_contact,
           "technical_contact": t.technical_contact, "allow_overage": t.allow_overage})
}

fn version_json(v: &pb::LicenceVersion) -> Value {
    json!({"version": v.version, "effective": v.effective, "recorded_at_ms": v.recorded_at_ms,
           "terms": terms_json(&v.terms.clone().unwrap_or_default())})
}

fn limits_text(l: &pb::Limits) -> String {
    let webinars = match l.webinar_attendees {
        0 => "no webinars".to_string(),
        n => format!("webinars of {n}"),
    };
    let duration = match l.max_duration_s {
        0 => "no time limit".to_string(),
        s => format!(
            "meetings end after {} min (warning {} min before)",
            s / 60,
            l.warn_before_end_s / 60
        ),
    };
    format!(
        "meetings of {}, {webinars}, {duration}",
        l.meeting_participants
    )
}

fn licence_out(r: pb::LicenceResponse) -> (Value, String) {
    let l = r.licence.unwrap_or_default();
    let v = l.in_force.clone().unwrap_or_default();
    let t = v.terms.clone().unwrap_or_default();
    let s = l.status.clone().unwrap_or_default();
    let staff = l.staff_limits.unwrap_or_default();
    let student = l.student_limits.unwrap_or_default();
    let json = json!({
        "institution": l.institution, "in_force": version_json(&v), "versions": l.versions,
        "price_table": l.price_table,
        "status": {
            "on": s.on, "phase": s.phase,
            "contract_year": {"first_day": s.contract_year_first_day, "last_day": s.contract_year_last_day,
                              "days_covered": s.contract_year_days_covered, "days_in_year": s.contract_year_days},
            "renewal_date": s.renewal_date, "on_renewal_date": s.on_renewal_date,
            "last_day_to_give_notice": s.last_day_to_give_notice,
            "ends_on": s.ends_on, "notice_given_on": s.notice_given_on,
        },
        "staff_limits": limits_json(&staff), "student_limits": limits_json(&student),
    });
    let on_renewal = match s.on_renewal_date.as_str() {
        "renews" => format!("renews for the year to {}", {
            // The renewed year runs to the 30 September after the renewal date.
            let year: i32 = s
                .renewal_date
                .get(..4)
                .and_then(|y| y.parse().ok())
                .unwrap_or(0);
            format!("{}-09-30", year + 1)
        }),
        "ends" => "the agreement ends".to_string(),
        _ => "nothing (ended)".to_string(),
    };
    let mut text = format!(
        "{} ({} tier, version {} of {}, effective {}; price table {})\n",
        l.institution, t.tier, v.version, l.versions, v.effective, l.price_table
    );
    text += &format!(
        "  staff FTE {} = {} licences; student licences {}; add-ons: {}\n",
        t.staff_fte,
        t.staff_licences,
        t.student_licences,
        if t.add_ons.is_empty() {
            "none".to_string()
        } else {
            t.add_ons.join(", ")
        }
    );
    text += &format!(
        "  contacts: agreement {}, technical {}\n",
        t.agreement_contact, t.technical_contact
    );
    text += &format!(
        "  agreement since {}: {} on {}\n",
        t.agreement_start, s.phase, s.on
    );
    text += &format!(
        "  contract year {} to {} ({} of {} days)\n",
        s.contract_year_first_day,
        s.contract_year_last_day,
        s.contract_year_days_covered,
        s.contract_year_days
    );
    if !s.notice_given_on.is_empty() {
        text += &format!(
            "  notice given on {}: ends on {}\n",
            s.notice_given_on, s.ends_on
        );
    } else {
        text += &format!("  last day to give notice: {}\n", s.last_day_to_give_notice);
    }
    if s.phase != "ended" {
        text += &format!("  on {}: {on_renewal}\n", s.renewal_date);
    }
    text += &format!("  staff: {}\n", limits_text(&staff));
    text += &format!("  students: {}\n", limits_text(&student));
    (json, text)
}

pub async fn licence(client: &Client, c: LicenceCmd) -> Result<(Value, String), Failure> {
    match c {
        LicenceCmd::Set {
            name,
            tier,
            staff_fte,
            students,
            add_ons,
            start,
            agreement_contact,
            technical_contact,
            effective,
            allow_overage,
        } => {
            if tier != "education" && tier != "basic" {
                return Err(usage(format!("--tier {tier:?}: education or basic")));
            }
            let req = pb::SetLicenceRequest {
                institution: name,
                terms: Some(pb::LicenceTerms {
                    tier,
                    staff_fte,
                    student_licences: students,
                    add_ons,
                    agreement_start: start,
                    agreement_contact,
                    technical_contact,
                    staff_licences: 0,
                    allow_overage,
                }),
                effective: effective.unwrap_or_default(),
            };
            Ok(licence_out(client.set_licence(req).await?))
        }
        LicenceCmd::Get { name } => {
            let r = client
                .call(|ch| {
                    let institution = name.clone();
                    async move {
                        LicenceServiceClient::new(ch)
                            .get_licence(pb::GetLicenceRequest { institution })
                            .await
                    }
                })
                .await?
                .into_inner();
            Ok(licence_out(r))
        }
        LicenceCmd::History { name } => {
            let r = client
                .call(|ch| {
                    let institution = name.clone();
                    async move {
                        LicenceServiceClient::new(ch)
                            .licence_history(pb::GetLicenceRequest { institution })
                            .await
                    }
                })
                .await?
                .into_inner();
            let json = json!({"institution": r.institution, "notice_given_on": r.notice_given_on,
                "versions": r.versions.iter().map(version_json).collect::<Vec<_>>()});
            let mut text = format!(
                "{:<4} {:<11} {:<22} {:<10} {:>9} {:>8} {}\n",
                "VER", "EFFECTIVE", "RECORDED", "TIER", "STAFF_FTE", "STUDENTS", "ADD-ONS"
            );
            for v in &r.versions {
                let t = v.terms.clone().unwrap_or_default();
                text += &format!(
                    "{:<4} {:<11} {:<22} {:<10} {:>9} {:>8} {}\n",
                    v.version,
                    v.effective,
                    fmt_time(v.recorded_at_ms),
                    t.tier,
                    t.staff_fte,
                    t.student_licences,
                    t.add_ons.join(",")
                );
            }
            if !r.notice_given_on.is_empty() {
                text += &format!("notice given on {}\n", r.notice_given_on);
            }
            Ok((json, text))
        }
        LicenceCmd::Notice { name, date } => {
            let r = client
                .call(|ch| {
                    let req = pb::GiveNoticeRequest {
                        institution: name.clone(),
                        date: date.clone(),
                    };
                    async move { LicenceServiceClient::new(ch).give_notice(req).await }
                })
                .await?
                .into_inner();
            Ok(licence_out(r))
        }
    }
}

pub async fn price_table(client: &Client, c: PriceTableCmd) -> Result<(Value, String), Failure> {
    match c {
        PriceTableCmd::Load { file } => {
            let toml = std::fs::read_to_string(&file)
                .map_err(|e| usage(format!("{}: {e}", file.display())))?;
            let r = client
                .call(|ch| {
                    let req = pb::LoadPriceTableRequest { toml: toml.clone() };
                    async move { LicenceServiceClient::new(ch).load_price_table(req).await }
                })
                .await?
                .into_inner();
            let text = if r.loaded {
                format!("price table {} loaded\n", r.version)
            } else {
                format!("price table {} was already in force\n", r.version)
            };
            Ok((json!({"version": r.version, "loaded": r.loaded}), text))
        }
        PriceTableCmd::Get => {
            let r = client
                .call(|ch| async move {
                    LicenceServiceClient::new(ch)
                        .get_price_table(pb::GetPriceTableRequest {})
                        .await
                })
                .await?
                .into_inner();
            let table: Value = serde_json::from_str(&r.json).unwrap_or(Value::Null);
            let text = format!(
                "{}\n",
                serde_json::to_string_pretty(&table).unwrap_or_default()
            );
            Ok((table, text))
        }
    }
}
