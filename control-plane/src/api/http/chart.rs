//! The error-budget burn chart: budget left per SLO at the end of each day
//! of the SLO window, as an SVG drawn by plotters.

use plotters::prelude::*;

use crate::sla::report::SloView;
use crate::sla::DAY_MS;

const COLOURS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
];

/// The chart over the `window_days` ending at `now_ms`; the y axis is the
/// budget left in percent (clamped to -100 %).
pub fn budget_burn_svg(slos: &[SloView], now_ms: u64, window_days: u32) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (760, 300)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let last_day = (now_ms / DAY_MS) as i64;
        let first_day = last_day - i64::from(window_days) + 1;
        let mut chart = ChartBuilder::on(&root)
            .caption("Error budget left (%)", ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(45)
            .build_cartesian_2d(first_day - last_day..1i64, -100f64..100f64)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("days ago")
            .x_label_formatter(&|d| format!("{}", -d))
            .y_label_formatter(&|v| format!("{v:.0}"))
            .draw()
            .map_err(|e| e.to_string())?;
        for (i, slo) in slos.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            let points: Vec<(i64, f64)> = slo
                .budget_by_day
                .iter()
                .map(|(day_ms, left)| {
                    let d = (*day_ms / DAY_MS) as i64 - last_day;
                    (d, (*left as f64 / 10_000.0).clamp(-100.0, 100.0))
                })
                .collect();
            let name = slo.sli.as_str();
            // Dots as well as the line: a window with one day of data
            // still shows.
            chart
                .draw_series(points.iter().map(|p| Circle::new(*p, 3, colour.filled())))
                .map_err(|e| e.to_string())?;
            chart
                .draw_series(LineSeries::new(points, colour.stroke_width(2)))
                .map_err(|e| e.to_string())?
                .label(name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], colour.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::LowerLeft)
            .draw()
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sla::{Counts, Sli};

    #[test]
    fn the_chart_is_an_svg_with_a_line_per_slo() {
        let slo = |sli| SloView {
            sli,
            objective_ppm: 999_000,
            window: Counts::default(),
            measured_ppm: None,
            raw_measured_ppm: None,
            budget_left_ppm: 500_000,
            raw_budget_left_ppm: 500_000,
            budget_by_day: vec![(10 * DAY_MS, 1_000_000), (11 * DAY_MS, 500_000)],
            burning: vec![],
        };
        let svg = budget_burn_svg(
            &[slo(Sli::Availability), slo(Sli::JoinSuccess)],
            11 * DAY_MS + 5,
            30,
        )
        .unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..50.min(svg.len())]);
        assert!(svg.contains("availability") && svg.contains("join_success"));
        assert!(svg.matches("<polyline").count() >= 2, "{svg}");
    }
}
