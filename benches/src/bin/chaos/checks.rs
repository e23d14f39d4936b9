//! The checks after a schedule: meetings, participants and the ledger.

use super::*;

pub(crate) fn region_of(node: &str) -> Option<&'static str> {
    NODES.iter().find(|(n, _)| *n == node).map(|(_, r)| *r)
}

pub(crate) fn allowed(residency: &str) -> &'static [&'static str] {
    match residency {
        "nordic" => &["nordic"],
        _ => &["eu", "nordic"],
    }
}

pub(crate) async fn get_meeting(cp: &Client, id: u64) -> Result<pb::Meeting, tonic::Status> {
    let call = cp.call(|ch| async move {
        pb::meeting_service_client::MeetingServiceClient::new(ch)
            .get_meeting(pb::GetMeetingRequest { id })
            .await
    });
    match tokio::time::timeout(Duration::from_secs(5), call).await {
        Ok(r) => r?
            .into_inner()
            .meeting
            .ok_or_else(|| tonic::Status::internal("empty answer")),
        Err(_) => Err(tonic::Status::deadline_exceeded("5 s")),
    }
}

/// The nodes carrying a meeting.
pub(crate) fn carriers(m: &pb::Meeting) -> Vec<String> {
    if m.shares.is_empty() {
        vec![m.node_id.clone()]
    } else {
        m.shares.iter().map(|s| s.node_id.clone()).collect()
    }
}

pub(crate) async fn check_meetings(cp: &Client, acked: &[Acked], anomalies: &mut Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    for a in acked {
        let m = loop {
            match get_meeting(cp, a.id).await {
                Ok(m)
                    if a.ended
                        || m.state == pb::MeetingState::Placed as i32
                        || Instant::now() > deadline =>
                {
                    break Some(m)
                }
                Ok(_) => {}
                Err(s) if s.code() == tonic::Code::NotFound => break None,
                Err(_) if Instant::now() > deadline => break None,
                Err(_) => {}
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let Some(m) = m else {
            anomalies.push(format!("acknowledged meeting {} is missing", a.id));
            continue;
        };
        if m.institution != a.institution {
            anomalies.push(format!(
                "meeting {} belongs to {:?}, scheduled for {}",
                a.id, m.institution, a.institution
            ));
        }
        if a.ended {
            if m.state != pb::MeetingState::Ended as i32 {
                anomalies.push(format!("meeting {} was ended but is {:?}", a.id, m.state));
            }
            continue;
        }
        if m.state != pb::MeetingState::Placed as i32 {
            // Why, in the placement's own words: its decisions' triggers
            // and refusals, and how many nodes each rejected for what.
            let id = a.id;
            let explained = cp
                .call(|ch| async move {
                    pb::meeting_service_client::MeetingServiceClient::new(ch)
                        .explain_meeting(pb::ExplainMeetingRequest { id })
                        .await
                })
                .await
                .map(|r| {
                    r.into_inner()
                        .decisions
                        .iter()
                        .map(|d| {
                            let counts: Vec<String> = d
                                .rejection_counts
                                .iter()
                                .map(|c| format!("{}×{}", c.count, c.reason))
                                .collect();
                            format!("{} → {:?} [{}]", d.trigger, d.refusal, counts.join(", "))
                        })
                        .collect::<Vec<_>>()
                        .join("; ")
                })
                .unwrap_or_else(|e| format!("not explained: {e}"));
            anomalies.push(format!(
                "meeting {} unplaced 30 s after healing: {explained}",
                a.id
            ));
            continue;
        }
        let nodes = carriers(&m);
        let distinct: BTreeSet<&String> = nodes.iter().collect();
        if distinct.len() != nodes.len() {
            anomalies.push(format!(
                "meeting {} placed twice on one node: {nodes:?}",
                a.id
            ));
        }
        for n in &nodes {
            match region_of(n) {
                Some(r) if allowed(a.residency).contains(&r) => {}
                r => anomalies.push(format!(
                    "meeting {} of {} ({} residency) on {n} in {r:?}",
                    a.id, a.institution, a.residency
                )),
            }
        }
    }
}

pub(crate) async fn check_participants(
    cp: &Client,
    sessions: &[(u64, Session)],
    anomalies: &mut Vec<String>,
    report: &mut ScheduleReport,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    for (i, (meeting, s)) in sessions.iter().enumerate() {
        if s.ended().is_some() {
            report.participants_ended_with_reason += 1;
            continue;
        }
        // In its meeting: receiving media in its current join, and lately
        // (a node killed at the last moment leaves a join that received
        // once and never will again), on a node that carries the meeting.
        let ok = loop {
            let (g, received) = s.receiving();
            let receiving = received
                && s.stats
                    .last_received()
                    .is_some_and(|t| t.elapsed() < Duration::from_millis(500));
            let carried = match get_meeting(cp, *meeting).await {
                Ok(m) => carriers(&m).contains(&s.node()),
                Err(_) => false,
            };
            if g > 0 && receiving && carried {
                break true;
            }
            if s.ended().is_some() {
                report.participants_ended_with_reason += 1;
                break true;
            }
            if Instant::now() > deadline {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        if !ok {
            anomalies.push(format!(
                "participant {i} of meeting {meeting} is neither in it (on {:?}) nor ended with a reason",
                s.node()
            ));
        }
    }
}

pub(crate) async fn check_ledger(
    world: &World,
    acked: &[Acked],
    recorded: &BTreeMap<u64, Recorded>,
    report: &mut ScheduleReport,
) {
    let today = fjord_control_plane::licensing::service_date(fjord_control_plane::raft::now_ms());
    let period = format!(
        "{}..{}",
        today.yesterday().expect("date"),
        today.tomorrow().expect("date")
    );
    let mut rows: Vec<serde_json::Value> = Vec::new();
    for (institution, _) in INSTITUTIONS {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let u = world.ctl_json(&[
                "usage",
                "show",
                "--institution",
                institution,
                "--period",
                &period,
                "--sessions",
            ]);
            let open = u
                .as_ref()
                .and_then(|u| u["sessions"].as_array())
                .map(|s| s.iter().filter(|s| s["end"] == "open").count());
            if open == Some(0) {
                rows.extend(
                    u.expect("some")["sessions"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default(),
                );
                break;
            }
            if Instant::now() > deadline {
                report.anomalies.push(format!(
                    "{institution}: ledger sessions still open (or unreadable) 30 s after everyone left: {open:?}"
                ));
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    report.ledger_rows = rows.len() as u64;
    // Kept for a failing seed's post-mortem (with --keep).
    let _ = std::fs::write(
        world.dir.join("ledger.json"),
        serde_json::to_string_pretty(&json!({
            "rows": rows,
            "participants_ms": recorded.iter().map(|(m, r)| json!({
                "meeting": m, "in_meeting_ms": r.in_meeting.as_millis() as u64, "joins": r.joins,
                "participants": r.participants,
            })).collect::<Vec<_>>(),
        }))
        .unwrap_or_default(),
    );
    let mut seen = HashSet::new();
    let mut per_meeting: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    let mut sessions_of: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for r in &rows {
        let node = r["node_id"].as_str().unwrap_or_default().to_string();
        for key in ["join_seq", "left_seq"] {
            let seq = r[key].as_u64().unwrap_or(0);
            if seq > 0 && !seen.insert((node.clone(), seq)) {
                report
                    .anomalies
                    .push(format!("{node} sequence number {seq} counted twice"));
            }
        }
        let m = r["meeting_id"].as_u64().unwrap_or(0);
        let ms = r["end_ms"]
            .as_u64()
            .unwrap_or(0)
            .saturating_sub(r["start_ms"].as_u64().unwrap_or(0));
        sessions_of.entry(m).or_default().push(format!(
            "{node} {} ms {}",
            ms,
            r["end"].as_str().unwrap_or("?")
        ));
        let e = per_meeting.entry(m).or_default();
        e.0 += ms;
        if r["end"] == "failure" {
            e.1 += 1;
        }
    }
    let known: BTreeSet<u64> = acked.iter().map(|a| a.id).collect();
    for m in per_meeting.keys() {
        if !known.contains(m) && !recorded.contains_key(m) {
            // A meeting whose schedule was not acknowledged but committed
            // (the answer was lost) has no participants: no rows.
            report
                .anomalies
                .push(format!("ledger rows for meeting {m} nobody joined"));
        }
    }
    for (m, rec) in recorded {
        let (ledger_ms, failures) = per_meeting.get(m).copied().unwrap_or((0, 0));
        let own_ms = rec.in_meeting.as_millis() as u64;
        let joins = rec.joins;
        // Each join and leave agrees within a flush interval (joins
        // counts the re-joins too); a session a node's death closed ends
        // when the node was last heard, at most a summary interval and a
        // beat before the participants' last datagram, plus a second for
        // a busy two-core machine.
        let allowed =
            500 + (2 * joins + 4) * FLUSH_MS + failures * (LEASE_MS / 3 + HEARTBEAT_MS + 1000);
        let gap = ledger_ms.abs_diff(own_ms);
        report.ledger_worst_gap_ms = report.ledger_worst_gap_ms.max(gap);
        if gap > allowed {
            report.anomalies.push(format!(
                "meeting {m}: ledger {ledger_ms} ms, participants recorded {own_ms} ms (allowed ±{allowed} ms); \
                 ledger sessions: [{}]; participants: [{}]",
                sessions_of.get(m).map(|s| s.join(", ")).unwrap_or_default(),
                rec.participants.join(", ")
            ));
        }
    }
}
