//! Slow-start batches (upstream's `slowStartBatch`): run `count` calls in batches of
//! 1, 2, 4, ... in parallel, stopping after the first batch with a failure, so a quota or
//! admission error costs one failed call instead of `count`.

use std::future::Future;

/// Runs `f(0..count)` in doubling parallel batches starting at `initial`. Returns how many
/// succeeded and the first error, if any.
pub async fn slow_start_batch<E, F, Fut>(
    count: usize,
    initial: usize,
    mut f: F,
) -> (usize, Option<E>)
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = Result<(), E>>,
{
    let mut done = 0;
    let mut ok = 0;
    let mut batch = initial.max(1).min(count);
    while done < count {
        let calls: Vec<_> = (done..done + batch).map(&mut f).collect();
        done += batch;
        let mut first_err = None;
        for r in futures::future::join_all(calls).await {
            match r {
                Ok(()) => ok += 1,
                Err(e) => {
                    if first_err.is_none() {
                        first_err = Some(e);
                    }
                }
            }
        }
        if first_err.is_some() {
            return (ok, first_err);
        }
        batch = (batch * 2).min(count - done);
    }
    (ok, None)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stops_after_the_failing_batch() {
        let (ok, err) = slow_start_batch(10, 1, |i| async move {
            if i == 2 {
                Err(i)
            } else {
                Ok(())
            }
        })
        .await;
        // batches: [0], [1,2] -> stop.
        assert_eq!((ok, err), (2, Some(2)));
        let (ok, err) = slow_start_batch::<(), _, _>(10, 1, |_| async { Ok(()) }).await;
        assert_eq!((ok, err), (10, None));
    }
}
