//! The benchmark's picture: for each workload, how many tasks every peer was running over time,
//! with chaos and kills marked, drawn as an SVG. The curves come from the tasks' own histories
//! (when each attempt started and when the next transition ended it, or its peer was killed), not
//! from sampling, so a short task counts as much as a long one. Tasks too short for their start to
//! be recorded (no-op tasks end before the start notice reaches their record) are drawn instead as
//! tasks finished per second on each peer.

use std::path::Path;
use taskswarm::TaskState;

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
    /// The peers of its testnet, in start order.
    pub(crate) peer_ids: Vec<String>,
}

/// The position of a peer id among the testnet's peers.
fn index_of(peer_ids: &[String], id: Option<&String>) -> Option<usize> {
    id.and_then(|id| peer_ids.iter().position(|x| x == id))
}

/// Running tasks per peer over time, as steps: for each peer, `(ms since the run began, running)`
/// at every change. An attempt on a peer that was killed while it ran ends at the kill.
pub(crate) fn running_steps(
    views: &[TaskView],
    peer_ids: &[String],
    span_ms: (u64, u64),
    marks: &[Mark],
) -> Vec<Vec<(u64, i64)>> {
    let mut changes: Vec<Vec<(u64, i64)>> = vec![Vec::new(); peer_ids.len()];
    for view in views {
        for (k, t) in view.history.iter().enumerate() {
            if t.state != TaskState::Running {
                continue;
            }
            let Some(p) = index_of(peer_ids, t.peer.as_ref()) else {
                continue;
            };
            let mut end = view.history.get(k + 1).map_or(span_ms.1, |next| next.at_ms);
            if let Some(kill) = marks
                .iter()
                .filter(|m| m.what == "kill" && m.peers.contains(&(p + 1)))
                .map(|m| m.at_ms)
                .find(|&at| at > t.at_ms && at < end)
            {
                end = kill;
            }
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

/// The mean time from a recorded start to the next transition, over every recorded start (0 if
/// there is none): below a few milliseconds, running counts say nothing and rates are drawn.
fn mean_run_ms(views: &[TaskView]) -> f64 {
    let runs: Vec<u64> = views
        .iter()
        .flat_map(|v| {
            v.history
                .windows(2)
                .filter(|w| w[0].state == TaskState::Running)
                .map(|w| w[1].at_ms.saturating_sub(w[0].at_ms))
        })
        .collect();
    if runs.is_empty() {
        return 0.0;
    }
    runs.iter().sum::<u64>() as f64 / runs.len() as f64
}

/// Tasks finished per second on each peer, in bins of `bin_ms`, as steps.
pub(crate) fn finished_rate(
    views: &[TaskView],
    peer_ids: &[String],
    span_ms: (u64, u64),
    bin_ms: u64,
) -> Vec<Vec<(u64, i64)>> {
    let bins = (span_ms.1.saturating_sub(span_ms.0) / bin_ms + 1) as usize;
    let mut counts = vec![vec![0i64; bins]; peer_ids.len()];
    for view in views {
        let Some(end) = view
            .history
            .iter()
            .rev()
            .find(|t| t.state == TaskState::Completed)
        else {
            continue;
        };
        let Some(p) = index_of(peer_ids, view.executed_by.as_ref()) else {
            continue;
        };
        let bin = (end.at_ms.clamp(span_ms.0, span_ms.1) - span_ms.0) / bin_ms;
        counts[p][bin as usize] += 1;
    }
    counts
        .into_iter()
        .map(|c| {
            c.into_iter()
                .enumerate()
                .map(|(b, n)| (b as u64 * bin_ms, n * 1000 / bin_ms as i64))
                .collect()
        })
        .collect()
}

/// Draws the panels into an SVG at `path`.
pub(crate) fn draw(path: &Path, panels: &[Panel<'_>]) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let height = 280 * panels.len().max(1) as u32;
    let root = SVGBackend::new(path, (1100, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let areas = root.split_evenly((panels.len().max(1), 1));
    for (panel, area) in panels.iter().zip(areas) {
        draw_panel(&area, panel).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    root.present()
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
    Ok(())
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    panel: &Panel<'_>,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let peer_ids = &panel.peer_ids;
    let mut steps = running_steps(panel.views, peer_ids, panel.span_ms, &panel.marks);
    let mut y_desc = "running tasks";
    if mean_run_ms(panel.views) < 10.0 {
        steps = finished_rate(panel.views, peer_ids, panel.span_ms, 250);
        y_desc = "tasks finished per second";
    }
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
        .y_label_area_size(55)
        .build_cartesian_2d(0f64..length_s.max(0.001), 0f64..top)?;
    chart
        .configure_mesh()
        .x_desc("seconds since the workload began")
        .y_desc(y_desc)
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
            state: state.parse().unwrap(),
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
        let steps = running_steps(&views, &ids, (1000, 1100), &[]);
        assert_eq!(steps[0], vec![(0, 0), (10, 1), (20, 2), (30, 1), (40, 0)]);
        assert_eq!(steps[1], vec![(0, 0), (50, 1), (100, 0)]);
        // Peer b killed at 1070: its attempt ends there.
        let kill = Mark {
            at_ms: 1070,
            what: "kill",
            peers: vec![2],
        };
        let steps = running_steps(&views, &ids, (1000, 1100), &[kill]);
        assert_eq!(steps[1], vec![(0, 0), (50, 1), (70, 0)]);
    }

    #[test]
    fn finished_tasks_are_binned_per_peer_as_a_rate() {
        let done = |peer: &str, at_ms| {
            let mut view: TaskView = serde_json::from_value(serde_json::json!({
                "id": "", "state": "completed", "kind": "handler", "exit_code": null,
                "stdout": null, "stderr": null, "output": null, "error": null,
                "executed_by": peer, "holder": null, "lease_epoch": 0, "origin": "",
                "home": [], "submitted_ms": 0, "duration_ms": null, "attempts": [],
                "history": []
            }))
            .unwrap();
            view.history = vec![at("completed", peer, at_ms)];
            view
        };
        let views = vec![done("a", 1010), done("a", 1020), done("b", 1300)];
        let ids = vec!["a".to_string(), "b".to_string()];
        let rate = finished_rate(&views, &ids, (1000, 1400), 250);
        assert_eq!(rate[0], vec![(0, 8), (250, 0)]);
        assert_eq!(rate[1], vec![(0, 0), (250, 4)]);
    }
}
