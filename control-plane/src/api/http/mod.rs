//! The web side of a replica: the SLA dashboard (server-rendered HTML,
//! SVG charts, no JavaScript) over HTTPS with the replica's certificate.

pub mod chart;
pub mod dashboard;
