//! Licences end to end over real gRPC with TLS: an operator records and
//! reads a licence, the tier is enforced at scheduling (300 yes, 301 no,
//! webinars by tier), notice ends the agreement, institution admins see
//! and report only their own, and price tables load as new versions.

mod common;

use std::time::Duration;

use common::*;
use fjord_proto::v1 as pb;
use pb::licence_service_client::LicenceServiceClient;
use tonic::Code;

fn terms(tier: &str, add_ons: &[&str]) -> pb::LicenceTerms {
    pb::LicenceTerms {
        tier: tier.into(),
        staff_fte: "6120.5".into(),
        student_licences: 2000,
        add_ons: add_ons.iter().map(|a| a.to_string()).collect(),
        agreement_start: "2025-10-01".into(),
        agreement_contact: "avtale@uio.example".into(),
        technical_contact: "https://alerts.uio.example/fjord".into(),
        staff_licences: 0,
        allow_overage: false,
    }
}

async fn get(
    client: &fjord_control_plane::client::Client,
    institution: &str,
) -> Result<pb::Licence, tonic::Status> {
    client
        .call(|ch| {
            let institution = institution.to_string();
            async move {
                LicenceServiceClient::new(ch)
                    .get_licence(pb::GetLicenceRequest { institution })
                    .await
            }
        })
        .await
        .map(|r| r.into_inner().licence.unwrap())
}

async fn schedule_kind(
    client: &fjord_control_plane::client::Client,
    participants: u32,
    webinar: bool,
) -> Result<pb::ScheduleMeetingResponse, tonic::Status> {
    schedule_request(
        client,
        pb::ScheduleMeetingRequest {
            institution: "uio".into(),
            participants,
            duration_ms: 3_600_000,
            webinar,
            ..Default::default()
        },
    )
    .await
}

type Client = fjord_control_plane::client::Client;

async fn notice(
    c: &Client,
    date: &str,
) -> Result<tonic::Response<pb::LicenceResponse>, tonic::Status> {
    c.call(|ch| {
        let req = pb::GiveNoticeRequest {
            institution: "uio".into(),
            date: date.to_string(),
        };
        async move { LicenceServiceClient::new(ch).give_notice(req).await }
    })
    .await
}

async fn load(
    c: &Client,
    toml: String,
) -> Result<tonic::Response<pb::LoadPriceTableResponse>, tonic::Status> {
    c.call(|ch| {
        let req = pb::LoadPriceTableRequest { toml: toml.clone() };
        async move { LicenceServiceClient::new(ch).load_price_table(req).await }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn licences_are_recorded_enforced_and_scoped_to_their_institution() {
    let cluster = Cluster::start(3, fast_config()).await;
    cluster.wait_leader(Duration::from_secs(10)).await;
    let ops = cluster.client();
    for (name, residency) in [("uio", "nordic"), ("ntnu", "nordic")] {
        ops.create_institution(pb::CreateInstitutionRequest {
            name: name.into(),
            residency: residency.into(),
            max_participants: 5000,
            home_region: String::new(),
        })
        .await
        .unwrap();
    }
    register_node(&cluster, "no-1", "nordic", 10_000).await;

    // No licence yet: scheduling is refused with the reason.
    let s = schedule_kind(&ops, 10, false).await.unwrap_err();
    assert_eq!(s.code(), Code::FailedPrecondition, "{s:?}");
    assert!(s.message().contains("no licence"), "{s:?}");

    let set = pb::SetLicenceRequest {
        institution: "uio".into(),
        terms: Some(terms("education", &[])),
        effective: String::new(),
    };
    let l = ops.set_licence(set.clone()).await.unwrap().licence.unwrap();
    let v = l.in_force.unwrap();
    let t = v.terms.unwrap();
    assert_eq!(
        (v.version, t.staff_licences, t.staff_fte.as_str()),
        (1, 6121, "6120.5")
    );
    assert_eq!(l.staff_limits.unwrap().meeting_participants, 300);
    assert_eq!(l.student_limits.unwrap().webinar_attendees, 0);
    let status = l.status.unwrap();
    assert_eq!(status.renewal_date.get(5..), Some("10-01"));
    assert_eq!(status.last_day_to_give_notice.get(5..), Some("06-14"));

    // The tier where it bites: 300 yes, 301 no; a staff webinar of 500.
    assert!(schedule_kind(&ops, 300, false).await.is_ok());
    let s = schedule_kind(&ops, 301, false).await.unwrap_err();
    assert_eq!(s.code(), Code::FailedPrecondition);
    assert!(s.message().contains("limit of 300"), "{s:?}");
    let w = schedule_kind(&ops, 500, true).await.unwrap();
    assert_eq!(w.meeting.unwrap().kind, "webinar");
    assert_eq!(
        schedule_kind(&ops, 501, true).await.unwrap_err().code(),
        Code::FailedPrecondition
    );

    // Bad input: a clear error naming the field, nothing recorded.
    for (field, bad) in [
        (
            "tier",
            pb::LicenceTerms {
                tier: "gold".into(),
                ..terms("education", &[])
            },
        ),
        (
            "staff_fte",
            pb::LicenceTerms {
                staff_fte: "1.234".into(),
                ..terms("education", &[])
            },
        ),
        (
            "agreement_start",
            pb::LicenceTerms {
                agreement_start: "2025-13-01".into(),
                ..terms("education", &[])
            },
        ),
        (
            "technical_contact",
            pb::LicenceTerms {
                technical_contact: "http://alerts.uio.example".into(),
                ..terms("education", &[])
            },
        ),
    ] {
        let s = ops
            .set_licence(pb::SetLicenceRequest {
                terms: Some(bad),
                ..set.clone()
            })
            .await
            .unwrap_err();
        assert_eq!(s.code(), Code::InvalidArgument, "{field}: {s:?}");
        assert!(s.message().contains(field), "{field}: {s:?}");
    }
    let s = ops
        .set_licence(pb::SetLicenceRequest {
            terms: Some(terms("education", &["platinum"])),
            ..set.clone()
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    assert_eq!(get(&ops, "uio").await.unwrap().versions, 1);

    // The invoice of the current contract year: 6,121 staff licences priced
    // band by band (1,000 × 90 kr + 4,000 × 75 kr + 1,121 × 60 kr) and
    // 2,000 student licences at 15 kr, for the whole year.
    let year = get(&ops, "uio").await.unwrap().status.unwrap();
    let period = format!(
        "{}..{}",
        year.contract_year_first_day, year.contract_year_last_day
    );
    let invoice = ops
        .call(|ch| {
            let req = pb::PreviewInvoiceRequest {
                institution: "uio".into(),
                period: period.clone(),
            };
            async move {
                pb::billing_service_client::BillingServiceClient::new(ch)
                    .preview_invoice(req)
                    .await
            }
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(invoice.currency, "NOK");
    assert_eq!(invoice.lines[0].kind, "annual_fee");
    assert_eq!(invoice.lines[0].quantity, 6121);
    assert_eq!(invoice.lines[0].yearly_minor, 45_726_000);
    assert_eq!(invoice.lines[1].yearly_minor, 3_000_000);
    assert_eq!(
        invoice.total_minor,
        invoice.lines.iter().map(|l| l.amount_minor).sum::<i64>()
    );

    // An institution admin: reads and reports its own, nothing else.
    let admin = cluster.client_with(&cluster.ca.institution_admin("uio", "desk").unwrap());
    assert_eq!(get(&admin, "uio").await.unwrap().institution, "uio");
    assert_eq!(
        get(&admin, "ntnu").await.unwrap_err().code(),
        Code::PermissionDenied
    );
    let mut report = terms("education", &[]);
    report.staff_fte = "6200".into();
    let l = admin
        .set_licence(pb::SetLicenceRequest {
            terms: Some(report),
            ..set.clone()
        })
        .await
        .unwrap()
        .licence
        .unwrap();
    assert_eq!(l.versions, 2);
    let s = admin
        .set_licence(pb::SetLicenceRequest {
            terms: Some(terms("education", &["large-meeting-1000"])),
            ..set.clone()
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
    assert_eq!(
        notice(&admin, "2026-06-01").await.unwrap_err().code(),
        Code::PermissionDenied
    );

    // History keeps both versions, in order.
    let h = ops
        .call(|ch| async move {
            LicenceServiceClient::new(ch)
                .licence_history(pb::GetLicenceRequest {
                    institution: "uio".into(),
                })
                .await
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        h.versions
            .iter()
            .map(|v| v.terms.as_ref().unwrap().staff_fte.clone())
            .collect::<Vec<_>>(),
        ["6120.5", "6200"]
    );

    // Notice dated 14 June 2026 ended the agreement on 1 October 2026,
    // which is past: the licence is no longer in force.
    let l = notice(&ops, "2026-06-14")
        .await
        .unwrap()
        .into_inner()
        .licence
        .unwrap();
    let s = l.status.unwrap();
    assert_eq!(s.ends_on, "2026-10-01");
    assert_eq!(s.notice_given_on, "2026-06-14");
    assert_eq!(
        notice(&ops, "2026-06-15").await.unwrap_err().code(),
        Code::FailedPrecondition
    );
    let s = schedule_kind(&ops, 10, false).await.unwrap_err();
    assert_eq!(s.code(), Code::FailedPrecondition);
    assert!(s.message().contains("not in force"), "{s:?}");

    // A new price table is a new version; a bad one is refused whole.
    let table = fjord_control_plane::licensing::price_table::BUILTIN_PRICE_TABLE
        .replace("version = \"builtin-1\"", "version = \"2027-1\"");
    let r = load(&ops, table.clone()).await.unwrap().into_inner();
    assert_eq!((r.version.as_str(), r.loaded), ("2027-1", true));
    let s = load(&ops, table.replace("currency = \"NOK\"", "currency = 12"))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    let s = load(&admin, table).await.unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied);
}
