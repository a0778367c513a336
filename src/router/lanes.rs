//! Per-key serial execution: jobs with the same key run one after another, in submission
//! order; jobs with different keys run in parallel.
//!
//! A key's queue exists only while it has work: the first job spawns a runner task, which
//! drains the queue and removes it when empty, under the same lock that `push` takes, so no job
//! can be left behind in a queue without a runner.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use tokio_util::task::TaskTracker;

pub type Handler<J> = Arc<dyn Fn(J) -> BoxFuture<'static, ()> + Send + Sync>;

pub struct Lanes<J> {
    queues: Mutex<HashMap<String, VecDeque<J>>>,
    handler: Handler<J>,
    tracker: TaskTracker,
}

impl<J: Send + 'static> Lanes<J> {
    pub fn new(handler: Handler<J>) -> Arc<Lanes<J>> {
        Arc::new(Lanes {
            queues: Mutex::new(HashMap::new()),
            handler,
            tracker: TaskTracker::new(),
        })
    }

    pub fn push(self: &Arc<Self>, key: &str, job: J) {
        let mut queues = self.queues.lock().expect("lanes lock");
        if let Some(queue) = queues.get_mut(key) {
            queue.push_back(job);
            return;
        }
        queues.insert(key.to_string(), VecDeque::from([job]));
        drop(queues);
        let lanes = self.clone();
        let key = key.to_string();
        self.tracker.spawn(async move { lanes.run(key).await });
    }

    async fn run(self: Arc<Self>, key: String) {
        loop {
            let job = {
                let mut queues = self.queues.lock().expect("lanes lock");
                let next = queues.get_mut(&key).and_then(|queue| queue.pop_front());
                match next {
                    Some(job) => job,
                    None => {
                        queues.remove(&key);
                        return;
                    }
                }
            };
            (self.handler)(job).await;
        }
    }

    /// Jobs queued or running, over all keys (running ones count while their key is present).
    pub fn busy_keys(&self) -> usize {
        self.queues.lock().expect("lanes lock").len()
    }

    /// Wait until every queued job has run. New pushes during the wait are waited for too.
    pub async fn drain(&self) {
        loop {
            self.tracker.close();
            self.tracker.wait().await;
            self.tracker.reopen();
            if self.busy_keys() == 0 {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn serial_per_key_parallel_across_keys() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let seen: Arc<Mutex<Vec<(String, u32)>>> = Arc::default();
        let running: Arc<AtomicUsize> = Arc::default();
        let most_running: Arc<AtomicUsize> = Arc::default();
        let (record, now, most) = (seen.clone(), running.clone(), most_running.clone());
        let handler: Handler<(String, u32)> = Arc::new(move |(key, n)| {
            let (record, now, most) = (record.clone(), now.clone(), most.clone());
            Box::pin(async move {
                let at_once = now.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(at_once, Ordering::SeqCst);
                // Later jobs sleep less: without serialisation they would overtake.
                tokio::time::sleep(Duration::from_millis(u64::from(20 - n))).await;
                record.lock().unwrap().push((key, n));
                now.fetch_sub(1, Ordering::SeqCst);
            })
        });
        let lanes = Lanes::new(handler);
        for n in 0..20 {
            for key in ["a", "b", "c"] {
                lanes.push(key, (key.to_string(), n));
            }
        }
        lanes.drain().await;
        let seen = seen.lock().unwrap().clone();
        for key in ["a", "b", "c"] {
            let order: Vec<u32> = seen
                .iter()
                .filter(|(k, _)| k == key)
                .map(|(_, n)| *n)
                .collect();
            assert_eq!(
                order,
                (0..20).collect::<Vec<_>>(),
                "key {key} kept its order"
            );
        }
        assert!(
            most_running.load(Ordering::SeqCst) >= 2,
            "keys ran side by side"
        );
        assert_eq!(lanes.busy_keys(), 0);
    }
}
