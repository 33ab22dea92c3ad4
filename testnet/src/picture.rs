//! The benchmark's picture: for each workload, how many tasks every peer was running over time,
//! with chaos and kills marked, drawn as an SVG. The curves come from the tasks' own histories
//! (when each attempt started and when the next transition ended it), not from sampling, so a
//! short task counts as much as a long one.

use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;
use taskswarm::TaskView;

use crate::swarm::Mark;

/// One panel: a workload's run.
pub(crate) struct Panel<'a> {
    /// Its title.
    pub(crate) title: String,
    /// Its tasks' final views.
    pub(crate) views: &'a [TaskView],
    /// When the run began and ended (ms since the Unix epoch).
    pub(crate) span_ms: (u64, u64),
    /// What was done to peers meanwhile.
    pub(crate) marks: Vec<Mark>,
}

/// Running tasks per peer over time, as steps: for each peer, `(ms since the run began, running)`
/// at every change.
pub(crate) fn running_steps(
    views: &[TaskView],
    peer_ids: &[String],
    span_ms: (u64, u64),
) -> Vec<Vec<(u64, i64)>> {
    let mut changes: Vec<Vec<(u64, i64)>> = vec![Vec::new(); peer_ids.len()];
    for view in views {
        for (k, t) in view.history.iter().enumerate() {
            if t.state != "running" {
                continue;
            }
            let Some(p) = t
                .peer
                .as_ref()
                .and_then(|id| peer_ids.iter().position(|x| x == id))
            else {
                continue;
            };
            let end = view.history.get(k + 1).map_or(span_ms.1, |next| next.at_ms);
            let rel = |ms: u64| ms.clamp(span_ms.0, span_ms.1) - span_ms.0;
            changes[p].push((rel(t.at_ms), 1));
            changes[p].push((rel(end.max(t.at_ms)), -1));
        }
    }
    changes
        .into_iter()
        .map(|mut c| {
            // Ends before starts at the same moment, so a back-to-back hand-over does not spike.
            c.sort_by_key(|&(at, d)| (at, d));
            let mut running = 0;
            let mut steps = vec![(0, 0)];
            for (at, d) in c {
                running += d;
                steps.push((at, running));
            }
            steps
        })
        .collect()
}

/// Draws the panels into an SVG at `path`.
pub(crate) fn draw(path: &Path, panels: &[Panel<'_>], peer_ids: &[String]) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let height = 280 * panels.len().max(1) as u32;
    let root = SVGBackend::new(path, (1100, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let areas = root.split_evenly((panels.len().max(1), 1));
    for (panel, area) in panels.iter().zip(areas) {
        draw_panel(&area, panel, peer_ids).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    root.present()
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
    Ok(())
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    panel: &Panel<'_>,
    peer_ids: &[String],
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let steps = running_steps(panel.views, peer_ids, panel.span_ms);
    let length_s = (panel.span_ms.1.saturating_sub(panel.span_ms.0)) as f64 / 1000.0;
    let top = steps
        .iter()
        .flat_map(|s| s.iter().map(|&(_, r)| r))
        .max()
        .unwrap_or(1)
        .max(1) as f64
        + 0.5;
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(40)
        .build_cartesian_2d(0f64..length_s.max(0.001), 0f64..top)?;
    chart
        .configure_mesh()
        .x_desc("seconds since the workload began")
        .y_desc("running tasks")
        .draw()?;
    for (p, steps) in steps.iter().enumerate() {
        let color = Palette99::pick(p).to_rgba();
        let mut points = Vec::with_capacity(steps.len() * 2);
        let mut last = 0f64;
        for &(at, running) in steps {
            let x = at as f64 / 1000.0;
            points.push((x, last));
            points.push((x, running as f64));
            last = running as f64;
        }
        points.push((length_s, last));
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(format!("peer {}", p + 1))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
    }
    for mark in &panel.marks {
        let x = mark.at_ms.saturating_sub(panel.span_ms.0) as f64 / 1000.0;
        if x > length_s {
            continue;
        }
        let color = match mark.what {
            "kill" | "stop" | "partition" => RED,
            _ => GREEN,
        };
        chart.draw_series(std::iter::once(PathElement::new(
            vec![(x, 0.0), (x, top)],
            color.stroke_width(1),
        )))?;
        let peers: Vec<String> = mark.peers.iter().map(ToString::to_string).collect();
        chart.draw_series(std::iter::once(Text::new(
            format!("{} {}", mark.what, peers.join(",")),
            (x, top - 0.2),
            ("sans-serif", 12).into_font().color(&color),
        )))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use taskswarm::view::TransitionView;

    fn at(state: &str, peer: &str, at_ms: u64) -> TransitionView {
        TransitionView {
            state: state.into(),
            peer: Some(peer.into()),
            epoch: 0,
            at_ms,
            note: String::new(),
        }
    }

    #[test]
    fn steps_follow_starts_and_ends_per_peer() {
        let task = |history| TaskView {
            history,
            ..serde_json::from_value(serde_json::json!({
                "id": "", "state": "completed", "kind": "handler", "exit_code": null,
                "stdout": null, "stderr": null, "output": null, "error": null,
                "executed_by": null, "holder": null, "lease_epoch": 0, "origin": "",
                "home": [], "submitted_ms": 0, "duration_ms": null, "attempts": [],
                "history": []
            }))
            .unwrap()
        };
        let views = vec![
            task(vec![at("running", "a", 1010), at("completed", "a", 1030)]),
            task(vec![at("running", "a", 1020), at("waiting", "b", 1040)]),
            task(vec![at("running", "b", 1050)]),
        ];
        let ids = vec!["a".to_string(), "b".to_string()];
        let steps = running_steps(&views, &ids, (1000, 1100));
        assert_eq!(steps[0], vec![(0, 0), (10, 1), (20, 2), (30, 1), (40, 0)]);
        assert_eq!(steps[1], vec![(0, 0), (50, 1), (100, 0)]);
    }
}
