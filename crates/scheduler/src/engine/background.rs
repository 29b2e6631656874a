//! Beside the loop, so that a long pass never delays them: heartbeats, and the watch on the
//! store (wake-ups from other ferry processes, a SQLite file deleted or replaced, ownership of
//! the store lost during an outage).

use super::*;

/// How often the store is watched.
const WATCH_EVERY: Duration = Duration::from_millis(500);

impl Engine {
    /// Starts the heartbeat and the watch (once).
    pub(super) fn start_background(&mut self) {
        if !self.background.is_empty() {
            return;
        }
        let (store, clock) = (self.store.clone(), self.clock.clone());
        let worker = self.config.worker.clone();
        let every = self.config.heartbeat_interval;
        // Failures are not reported here: the loop reports an unreachable store once.
        let heartbeat = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let _ = store.heartbeat(&worker, millis(clock.now())).await;
            }
        });
        let (store, clock) = (self.store.clone(), self.clock.clone());
        let sender = self.sender.clone();
        let owner = self.owner.clone();
        let watch = tokio::spawn(async move {
            let mut seen = store.wake_count().await.ok();
            let mut tick = tokio::time::interval(WATCH_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut owner_checked = tokio::time::Instant::now();
            loop {
                tick.tick().await;
                if let Err(fault) = store.check_file() {
                    let _ = sender.send(Message::Fault(fault));
                    return;
                }
                if let Some(owner) = &owner
                    && owner_checked.elapsed() >= every
                {
                    owner_checked = tokio::time::Instant::now();
                    let now = millis(clock.now());
                    if let Err(lost @ StoreError::OwnershipLost { .. }) =
                        owner.verify(&store, now).await
                    {
                        let _ = sender.send(Message::Fault(lost));
                        return;
                    }
                }
                if let Ok(count) = store.wake_count().await
                    && seen != Some(count)
                {
                    if seen.is_some() {
                        let _ = sender.send(Message::Wake);
                    }
                    seen = Some(count);
                }
            }
        });
        self.background = vec![heartbeat.abort_handle(), watch.abort_handle()];
    }

    /// Another process changed the store: every run in memory is compared with the store and
    /// rebuilt if it differs, and queued runs are looked at again.
    pub(super) async fn resync_runs(&mut self) -> Result<(), EngineError> {
        self.stop_fenced_attempts().await?;
        self.watch_fenced_attempts().await?;
        let pks: Vec<i64> = self.runs.keys().copied().collect();
        for pk in pks {
            let stored_run = self.store.run_by_pk(pk).await?;
            let stored_tasks = self.store.task_instances(pk).await?;
            let Some(active) = self.runs.get(&pk) else {
                continue;
            };
            let same = stored_run
                .as_ref()
                .is_some_and(|r| r.state == active.run.state)
                && stored_tasks.len() == active.tasks.len()
                && stored_tasks.iter().zip(&active.tasks).all(|(s, m)| {
                    s.state == m.state && s.try_number == m.try_number && s.max_tries == m.max_tries
                });
            if same {
                continue;
            }
            self.runs.remove(&pk);
            if let Some(run) =
                stored_run.filter(|r| r.state().is_ok_and(|s| s == RunState::Running))
            {
                self.activate(run).await?;
            }
        }
        self.runs_changed = true;
        Ok(())
    }

    /// Stops the attempts whose task an operator cleared or marked (the task's lease in the
    /// store moved past the attempt's): their ends are then only recorded on the attempt.
    async fn stop_fenced_attempts(&mut self) -> Result<(), EngineError> {
        let mut runs: Vec<i64> = self.running.values().map(|slot| slot.run_pk).collect();
        runs.sort_unstable();
        runs.dedup();
        for pk in runs {
            let stored = self.store.task_instances(pk).await?;
            for task in stored {
                if let Some(slot) = self.running.get_mut(&task.id)
                    && task.lease != slot.lease
                    && slot.stop_reason.is_none()
                {
                    slot.stop(StopReason::Intervention, false);
                }
            }
        }
        Ok(())
    }
}
