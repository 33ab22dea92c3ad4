//! Jobs: tasks submitted as a unit, each named, whose `after` lists name other tasks of the job
//! (or ids of tasks submitted before). A job file is TOML (`[[task]]` tables) and the API takes the
//! same as JSON (`{"tasks": [...]}`); each task is a spec as [`crate::spec::SpecInput`] reads it.
//!
//! Owns the checks — every task named, names unique, every name in an `after` list known, no
//! cycle — and the order: tasks come out with each after the ones it depends on, so that their
//! ids are known when the dependent is signed. An error names the task, the name or the cycle.
//!
//! ```toml
//! [[task]]
//! name = "fetch"
//! program = "sh"
//! args = ["-c", "echo data"]
//!
//! [[task]]
//! name = "count"
//! after = ["fetch"]
//! program = "sh"
//! args = ["-c", "wc -c < $TASKSWARM_INPUT_FETCH"]
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use taskswarm_protocol::TaskId;

use crate::spec::{After, NewTask, SpecError, SpecInput};

/// The most tasks in one job.
pub const MAX_TASKS: usize = 10_000;

/// A job as written: its tasks (`[[task]]` in TOML, `"tasks"` in JSON).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobInput {
    /// The tasks, in any order.
    #[serde(alias = "task")]
    pub tasks: Vec<SpecInput>,
}

/// A job ready to submit: its tasks in dependency order, with their names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Job {
    /// Each task's name, in submission order.
    pub names: Vec<String>,
    /// The tasks, each after the tasks it depends on.
    pub tasks: Vec<NewTask>,
}

impl Job {
    /// The ids of tasks outside the job that its tasks depend on.
    pub fn external(&self) -> Vec<TaskId> {
        let mut ids: Vec<TaskId> = self
            .tasks
            .iter()
            .flat_map(|t| t.after.iter())
            .filter_map(|a| match a {
                After::Task(id) => Some(*id),
                After::Earlier(_) => None,
            })
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }
}

/// Reads a job file in TOML.
pub fn parse_toml(text: &str) -> Result<Job, SpecError> {
    let input: JobInput = toml::from_str(text).map_err(|e| SpecError {
        field: String::new(),
        message: format!("not a job file: {}", e.message()),
    })?;
    check(input)
}

/// Reads a job in JSON.
pub fn parse_json(body: &[u8]) -> Result<Job, SpecError> {
    let input: JobInput = serde_json::from_slice(body).map_err(|e| SpecError {
        field: String::new(),
        message: format!("not a job: {e}"),
    })?;
    check(input)
}

/// Checks a job and puts its tasks in dependency order.
pub fn check(input: JobInput) -> Result<Job, SpecError> {
    let error = |field: String, message: String| SpecError { field, message };
    if input.tasks.is_empty() {
        return Err(error("tasks".into(), "a job has at least one task".into()));
    }
    if input.tasks.len() > MAX_TASKS {
        return Err(error(
            "tasks".into(),
            format!("a job has at most {MAX_TASKS} tasks"),
        ));
    }
    // Names first: each task has one, and no two share it.
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    for (i, task) in input.tasks.iter().enumerate() {
        let Some(name) = &task.name else {
            return Err(error(
                format!("tasks[{i}].name"),
                "every task of a job needs a name".into(),
            ));
        };
        if index.insert(name.clone(), i).is_some() {
            return Err(error(
                format!("tasks[{i}].name"),
                format!("two tasks are named {name:?}"),
            ));
        }
    }
    // Each `after` entry is a task of the job or the id of one submitted before.
    let mut inside: Vec<Vec<usize>> = vec![Vec::new(); input.tasks.len()];
    let mut outside: Vec<Vec<TaskId>> = vec![Vec::new(); input.tasks.len()];
    for (i, task) in input.tasks.iter().enumerate() {
        for dep in &task.after {
            if let Some(&j) = index.get(dep) {
                if j == i {
                    return Err(error(
                        format!("tasks[{i}].after"),
                        format!("{dep:?} cannot run after itself"),
                    ));
                }
                inside[i].push(j);
            } else if let Ok(id) = dep.parse::<TaskId>() {
                outside[i].push(id);
            } else {
                return Err(error(
                    format!("tasks[{i}].after"),
                    format!("{dep:?} names no task of this job (nor is it a task id)"),
                ));
            }
        }
    }
    let order = dependency_order(&inside).map_err(|cycle| {
        let names: Vec<&str> = cycle
            .iter()
            .map(|&i| input.tasks[i].name.as_deref().unwrap_or("?"))
            .collect();
        error(
            "tasks".into(),
            format!("the job has a cycle: {}", names.join(" → ")),
        )
    })?;
    let mut position = vec![0; input.tasks.len()];
    for (at, &i) in order.iter().enumerate() {
        position[i] = at;
    }
    let mut specs: Vec<Option<SpecInput>> = input.tasks.into_iter().map(Some).collect();
    let mut job = Job {
        names: Vec::with_capacity(order.len()),
        tasks: Vec::with_capacity(order.len()),
    };
    for &i in &order {
        let Some(mut spec) = specs[i].take() else {
            continue;
        };
        spec.after.clear();
        let name = spec.name.clone().unwrap_or_default();
        let mut task = spec
            .into_task()
            .map_err(|e| e.within(&format!("tasks[{i}]")))?;
        task.after = inside[i]
            .iter()
            .map(|&j| After::Earlier(position[j]))
            .chain(outside[i].iter().map(|id| After::Task(*id)))
            .collect();
        job.names.push(name);
        job.tasks.push(task);
    }
    Ok(job)
}

/// The tasks in an order where each comes after its dependencies (`deps[i]` lists task `i`'s), or
/// a cycle: the tasks on it, the first repeated at the end.
fn dependency_order(deps: &[Vec<usize>]) -> Result<Vec<usize>, Vec<usize>> {
    // 0: not visited, 1: on the current path, 2: done.
    let mut mark = vec![0u8; deps.len()];
    let mut order = Vec::with_capacity(deps.len());
    for start in 0..deps.len() {
        if mark[start] != 0 {
            continue;
        }
        // An explicit stack of (task, next dependency to look at), so a long chain does not
        // overflow the call stack.
        let mut path: Vec<(usize, usize)> = vec![(start, 0)];
        mark[start] = 1;
        while let Some(&mut (task, ref mut next)) = path.last_mut() {
            if let Some(&dep) = deps[task].get(*next) {
                *next += 1;
                match mark[dep] {
                    0 => {
                        mark[dep] = 1;
                        path.push((dep, 0));
                    }
                    1 => {
                        let from = path.iter().position(|(t, _)| *t == dep).unwrap_or(0);
                        let mut cycle: Vec<usize> = path[from..].iter().map(|(t, _)| *t).collect();
                        cycle.reverse();
                        cycle.insert(0, dep);
                        return Err(cycle);
                    }
                    _ => {}
                }
            } else {
                mark[task] = 2;
                order.push(task);
                path.pop();
            }
        }
    }
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIAMOND: &str = r#"
[[task]]
name = "d"
after = ["b", "c"]
program = "cat"

[[task]]
name = "b"
after = ["a"]
program = "true"

[[task]]
name = "a"
program = "true"

[[task]]
name = "c"
after = ["a"]
handler = "echo"
"#;

    #[test]
    fn a_job_comes_out_in_dependency_order() {
        let job = parse_toml(DIAMOND).unwrap();
        assert_eq!(job.names, ["a", "b", "c", "d"]);
        assert!(job.tasks[0].after.is_empty());
        assert_eq!(job.tasks[1].after, [After::Earlier(0)]);
        assert_eq!(job.tasks[3].after, [After::Earlier(1), After::Earlier(2)]);
        assert_eq!(job.tasks[3].name.as_deref(), Some("d"));
        assert!(job.external().is_empty());
    }

    #[test]
    fn a_cycle_is_named() {
        let job = r#"
[[task]]
name = "a"
after = ["c"]
program = "true"
[[task]]
name = "b"
after = ["a"]
program = "true"
[[task]]
name = "c"
after = ["b"]
program = "true"
"#;
        let err = parse_toml(job).unwrap_err();
        assert_eq!(err.message, "the job has a cycle: a → b → c → a");
    }

    #[test]
    fn unknown_names_duplicates_and_nameless_tasks_are_rejected() {
        let err = |json: &str| parse_json(json.as_bytes()).unwrap_err();
        let e = err(r#"{"tasks": [{"name": "a", "program": "x", "after": ["zz"]}]}"#);
        assert_eq!(e.field, "tasks[0].after");
        assert!(e.message.contains("\"zz\" names no task"), "{e}");
        let e = err(r#"{"tasks": [{"name": "a", "program": "x"}, {"name": "a", "program": "y"}]}"#);
        assert_eq!(e.field, "tasks[1].name");
        let e = err(r#"{"tasks": [{"program": "x"}]}"#);
        assert_eq!(e.field, "tasks[0].name");
        let e = err(r#"{"tasks": [{"name": "a", "program": "x", "after": ["a"]}]}"#);
        assert!(e.message.contains("after itself"), "{e}");
        let e = err(r#"{"tasks": []}"#);
        assert_eq!(e.field, "tasks");
        let e = err(r#"{"tasks": [{"name": "a b", "program": "x"}]}"#);
        assert_eq!(e.field, "tasks[0].name");
    }

    #[test]
    fn an_id_outside_the_job_is_an_external_dependency() {
        let id = "ab".repeat(32);
        let json = format!(r#"{{"tasks": [{{"name": "a", "program": "x", "after": ["{id}"]}}]}}"#);
        let job = parse_json(json.as_bytes()).unwrap();
        let id: TaskId = id.parse().unwrap();
        assert_eq!(job.tasks[0].after, [After::Task(id)]);
        assert_eq!(job.external(), [id]);
    }
}
