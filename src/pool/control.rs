//! The pool's part of respawn's control routes: the status document with a row per replica,
//! readiness by `min_ready`, restarts of one replica or rolling ones, metrics with a `replica`
//! label.

use std::future::Future;
use std::pin::Pin;

use respawn_core::{Generation, OperatorRestart, Phase};

use super::Pool;
use crate::proxy::control::{ReplicaControl, RestartAsked};
use crate::status::StatusDocument;

/// The pool, as the control routes see it.
#[derive(Clone, Debug)]
pub struct PoolControl {
    pool: Pool,
}

impl PoolControl {
    /// The control side of `pool`.
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }
}

impl ReplicaControl for PoolControl {
    fn fill_status(&self, document: &mut StatusDocument) {
        let pool = &self.pool;
        let replicas = pool.replica_statuses();
        let ready = pool.ready_count();
        document.state = if pool.is_ready() {
            Phase::Ready
        } else if pool.all_given_up() {
            Phase::Failed
        } else if let Some(r) = replicas
            .iter()
            .find(|r| matches!(r.state, Phase::Stopping | Phase::Stopped))
        {
            r.state
        } else if replicas
            .iter()
            .any(|r| matches!(r.state, Phase::Restarting | Phase::BackingOff))
        {
            Phase::Restarting
        } else {
            Phase::Starting
        };
        document.generation = Generation(replicas.iter().map(|r| r.generation.get()).sum());
        document.restarts = replicas.iter().map(|r| r.restarts).sum();
        document.pid = None;
        document.guardian_pid = None;
        document.in_flight = replicas.iter().map(|r| r.in_flight).sum();
        document.last_restart = replicas
            .iter()
            .filter_map(|r| r.last_restart.clone())
            .max_by_key(|r| r.at);
        document.uptime_s = pool
            .replicas()
            .iter()
            .filter_map(|s| s.state().borrow().uptime_s())
            .max();
        if document.last_error.is_none() {
            document.last_error = pool
                .replicas()
                .iter()
                .find_map(|s| s.state().borrow().last_error.clone());
        }
        document.ready_replicas = Some(u32::try_from(ready).unwrap_or(u32::MAX));
        document.replicas = Some(replicas);
    }

    fn ready(&self) -> Result<String, String> {
        let ready = self.pool.ready_count();
        let min = self.pool.config().min_ready.max(1);
        let line = format!(
            "{ready} of {} replicas ready (min {min})\n",
            self.pool.len()
        );
        if ready >= min {
            Ok(line)
        } else {
            Err(line)
        }
    }

    fn alive(&self) -> bool {
        !self.pool.all_given_up()
    }

    fn metrics(&self, name: &str) -> String {
        let texts: Vec<String> = self
            .pool
            .replicas()
            .iter()
            .enumerate()
            .map(|(index, supervisor)| {
                let state = supervisor.state().borrow().clone();
                // Every sample carries `server="NAME"`: the replica's label joins it there.
                let label = format!("{name}\",replica=\"{index}");
                supervisor
                    .metrics()
                    .render(&label, &state, supervisor.in_flight().count())
            })
            .collect();
        merge_families(&texts)
    }

    fn restart(
        &self,
        asked: RestartAsked,
    ) -> Pin<Box<dyn Future<Output = Result<serde_json::Value, String>>>> {
        let pool = self.pool.clone();
        Box::pin(async move {
            match asked {
                RestartAsked::Replica(replica) => {
                    let generation = pool
                        .restart_replica(replica, OperatorRestart::Manual)
                        .await
                        .map_err(|err| err.to_string())?;
                    Ok(serde_json::json!({
                        "restarting": true,
                        "replica": replica,
                        "generation": generation.get(),
                    }))
                }
                RestartAsked::Rolling | RestartAsked::Plain => {
                    let replicas = pool.len();
                    // The answer does not wait for the whole roll: it can take minutes.
                    actix_web::rt::spawn(async move {
                        pool.rolling_restart().await;
                    });
                    Ok(serde_json::json!({
                        "restarting": true,
                        "rolling": true,
                        "replicas": replicas,
                    }))
                }
            }
        })
    }
}

/// Joins Prometheus texts of the same metric families into one: each family once, its `# HELP`
/// and `# TYPE` from the first text, then the samples of every text in order (a family's lines
/// must stay together).
fn merge_families(texts: &[String]) -> String {
    let mut order: Vec<String> = Vec::new();
    let mut families: std::collections::HashMap<String, (Vec<&str>, Vec<&str>)> =
        std::collections::HashMap::new();
    for (index, text) in texts.iter().enumerate() {
        let mut family = String::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                family = rest.split(' ').next().unwrap_or_default().to_owned();
                if !families.contains_key(&family) {
                    order.push(family.clone());
                }
            }
            let entry = families.entry(family.clone()).or_default();
            if line.starts_with('#') {
                if index == 0 {
                    entry.0.push(line);
                }
            } else {
                entry.1.push(line);
            }
        }
    }
    let mut out = String::new();
    for family in order {
        if let Some((head, samples)) = families.get(&family) {
            for line in head.iter().chain(samples) {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_keep_one_head_and_every_replicas_samples_together() {
        let a = "# HELP x X.\n# TYPE x counter\nx{r=\"0\"} 1\n# HELP y Y.\n# TYPE y gauge\ny{r=\"0\"} 2\n";
        let b = "# HELP x X.\n# TYPE x counter\nx{r=\"1\"} 3\n# HELP y Y.\n# TYPE y gauge\ny{r=\"1\"} 4\n";
        assert_eq!(
            merge_families(&[a.to_owned(), b.to_owned()]),
            "# HELP x X.\n# TYPE x counter\nx{r=\"0\"} 1\nx{r=\"1\"} 3\n# HELP y Y.\n# TYPE y gauge\ny{r=\"0\"} 2\ny{r=\"1\"} 4\n"
        );
    }
}
