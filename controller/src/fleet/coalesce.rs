//! Calls about one instance, coalesced into calls about many: when a thousand lifecycle events
//! arrive at once, each handler asks about its own instance, and AWS would be asked a thousand
//! times what one `DescribeAutoScalingInstances` or one `CreateTags` can answer or do. A
//! caller joins the open batch of its kind, or opens one and, after a short window, makes the
//! call for everyone in it; each gets the shared answer.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;

use super::FleetError;

pub type Shared<V> = Arc<Result<V, FleetError>>;

struct Open<V> {
    ids: Arc<Mutex<Vec<String>>>,
    done: watch::Receiver<Option<Shared<V>>>,
}

pub struct Coalescer<K, V> {
    open: Mutex<HashMap<K, Open<V>>>,
    window: Duration,
    /// The most ids one call takes.
    max: usize,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded sections only push and move ids; a panic there leaves them consistent.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl<K: Eq + Hash + Clone, V> Coalescer<K, V> {
    pub fn new(window: Duration, max: usize) -> Self {
        Coalescer {
            open: Mutex::new(HashMap::new()),
            window,
            max: max.max(1),
        }
    }

    /// The answer of the call `fetch` makes for the batch `id` joins (batches of one `kind`
    /// only: writes of one value, say).
    pub async fn call<F, Fut>(&self, kind: K, id: String, fetch: F) -> Shared<V>
    where
        F: FnOnce(Vec<String>) -> Fut,
        Fut: Future<Output = Result<V, FleetError>>,
    {
        let joined = {
            let mut open = lock(&self.open);
            match open.get(&kind) {
                Some(batch) => {
                    let mut ids = lock(&batch.ids);
                    ids.push(id.clone());
                    let done = batch.done.clone();
                    if ids.len() >= self.max {
                        // Full: the next caller opens another.
                        drop(ids);
                        open.remove(&kind);
                    }
                    Some(done)
                }
                None => None,
            }
        };
        if let Some(mut done) = joined {
            return match done.wait_for(Option::is_some).await {
                Ok(answer) => answer.clone().unwrap_or_else(|| abandoned(&id)),
                Err(_) => abandoned(&id),
            };
        }
        let ids = Arc::new(Mutex::new(vec![id]));
        let (tx, rx) = watch::channel(None);
        lock(&self.open).insert(
            kind.clone(),
            Open {
                ids: ids.clone(),
                done: rx,
            },
        );
        tokio::time::sleep(self.window).await;
        {
            let mut open = lock(&self.open);
            if open.get(&kind).is_some_and(|o| Arc::ptr_eq(&o.ids, &ids)) {
                open.remove(&kind);
            }
        }
        let batch = std::mem::take(&mut *lock(&ids));
        let answer = Arc::new(fetch(batch).await);
        // Followers that gave up no longer listen; nothing to do about them.
        let _ = tx.send(Some(answer.clone()));
        answer
    }
}

/// The caller leading the batch was dropped (its handler cancelled) before answering.
fn abandoned<V>(id: &str) -> Shared<V> {
    Arc::new(Err(FleetError {
        operation: "coalesced call",
        subject: id.to_string(),
        message: "the call for this batch was abandoned; try again".into(),
        transient: true,
        code: None,
    }))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn concurrent_callers_share_one_call_up_to_the_batch_size() {
        let coalescer = Arc::new(Coalescer::<(), Vec<String>>::new(
            Duration::from_millis(50),
            4,
        ));
        let calls = Arc::new(AtomicUsize::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for n in 0..10 {
            let (coalescer, calls) = (coalescer.clone(), calls.clone());
            tasks.spawn(async move {
                let id = format!("i-{n}");
                let answer = coalescer
                    .call((), id.clone(), |ids| async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        Ok(ids)
                    })
                    .await;
                let ids = answer.as_ref().as_ref().unwrap().clone();
                assert!(ids.contains(&id) && ids.len() <= 4, "{ids:?}");
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
        // 10 callers, at most 4 a call.
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn kinds_are_never_mixed_and_errors_reach_every_caller() {
        let coalescer = Arc::new(Coalescer::<&'static str, usize>::new(
            Duration::from_millis(50),
            100,
        ));
        let a = {
            let c = coalescer.clone();
            tokio::spawn(async move {
                c.call("a", "i-1".into(), |ids| async move { Ok(ids.len()) })
                    .await
            })
        };
        let b = {
            let c = coalescer.clone();
            tokio::spawn(async move {
                c.call("b", "i-2".into(), |_| async move {
                    Err(FleetError {
                        operation: "CreateTags",
                        subject: "i-2".into(),
                        message: "throttled".into(),
                        transient: true,
                        code: None,
                    })
                })
                .await
            })
        };
        assert_eq!(*a.await.unwrap().as_ref().as_ref().unwrap(), 1);
        assert!(b.await.unwrap().as_ref().is_err());
    }

    #[tokio::test]
    async fn a_leader_dropped_before_answering_fails_its_followers_instead_of_hanging() {
        let coalescer = Arc::new(Coalescer::<(), ()>::new(Duration::from_millis(50), 100));
        let leader = {
            let c = coalescer.clone();
            tokio::spawn(async move {
                c.call((), "i-1".into(), |_| std::future::pending()).await;
            })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        let follower = {
            let c = coalescer.clone();
            tokio::spawn(async move { c.call((), "i-2".into(), |_| async { Ok(()) }).await })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        leader.abort();
        let answer = follower.await.unwrap();
        assert!(answer.as_ref().as_ref().is_err_and(|e| e.transient));
    }
}
