//! Collectives of the in-process communicator, with four ranks as threads.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;

use ckpt::dist::{all_gather_flag, Communicator, InProcessComm, SingleProcess};

const WORLD: usize = 4;

/// Runs `body` on every rank in its own thread and returns the results by rank.
fn on_every_rank<T, F>(body: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(InProcessComm) -> T + Send + Sync + 'static,
{
    let body = Arc::new(body);
    let handles: Vec<_> = InProcessComm::group(WORLD)
        .unwrap()
        .into_iter()
        .map(|comm| {
            let body = Arc::clone(&body);
            thread::spawn(move || body(comm))
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

#[test]
fn all_gather_returns_every_rank_value_in_rank_order() {
    let results = on_every_rank(|comm| {
        let mine = format!("rank{}", comm.rank()).into_bytes();
        let first = comm.all_gather(&mine).unwrap();
        // A second round reuses the group.
        let second = comm.all_gather(&[comm.rank() as u8; 3]).unwrap();
        (first, second)
    });
    for (first, second) in results {
        let expected: Vec<Vec<u8>> = (0..WORLD)
            .map(|r| format!("rank{r}").into_bytes())
            .collect();
        assert_eq!(first, expected);
        assert_eq!(
            second,
            (0..WORLD).map(|r| vec![r as u8; 3]).collect::<Vec<_>>()
        );
    }
}

#[test]
fn broadcast_copies_a_large_buffer_from_rank_zero_to_all() {
    let results = on_every_rank(|comm| {
        let mut buffer = if comm.is_main_process() {
            (0..8 * 1024 * 1024u32)
                .map(|i| (i % 253) as u8)
                .collect::<Vec<u8>>()
        } else {
            b"stale".to_vec()
        };
        comm.broadcast(&mut buffer).unwrap();
        buffer
    });
    let expected: Vec<u8> = (0..8 * 1024 * 1024u32).map(|i| (i % 253) as u8).collect();
    for buffer in results {
        assert!(buffer == expected, "every rank holds rank 0's bytes");
    }
}

#[test]
fn barrier_releases_only_after_every_rank_arrived() {
    let arrived = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&arrived);
    let seen = on_every_rank(move |comm| {
        counter.fetch_add(1, Ordering::SeqCst);
        comm.barrier().unwrap();
        let seen = counter.load(Ordering::SeqCst);
        comm.barrier().unwrap();
        seen
    });
    assert_eq!(seen, vec![WORLD; WORLD]);
}

#[test]
fn ranks_calling_different_collectives_get_an_error_not_a_hang() {
    let results = on_every_rank(|comm| {
        if comm.rank() == 2 {
            comm.barrier()
        } else {
            comm.all_gather(b"x").map(|_| ())
        }
    });
    for result in &results {
        let error = result.as_ref().unwrap_err();
        assert!(error.to_string().contains("disagree"), "{error}");
    }
}

#[test]
fn rank_leaving_early_fails_the_others_instead_of_hanging() {
    let results = on_every_rank(|comm| {
        if comm.rank() == 3 {
            drop(comm);
            return Ok(Vec::new());
        }
        comm.all_gather(b"x")
    });
    for result in &results[..3] {
        let error = result.as_ref().unwrap_err();
        assert!(error.to_string().contains("rank 3 left"), "{error}");
    }
}

#[test]
fn flags_gather_as_booleans() {
    let results = on_every_rank(|comm| all_gather_flag(&comm, comm.rank() != 1).unwrap());
    for flags in results {
        assert_eq!(flags, vec![true, false, true, true]);
    }
}

#[test]
fn single_process_is_rank_zero_of_one() {
    let comm = SingleProcess;
    assert!(comm.is_main_process());
    assert_eq!(comm.world_size(), 1);
    assert_eq!(comm.all_gather(b"v").unwrap(), vec![b"v".to_vec()]);
    let mut buffer = b"kept".to_vec();
    comm.broadcast(&mut buffer).unwrap();
    assert_eq!(buffer, b"kept");
    comm.barrier().unwrap();
}

#[test]
fn empty_group_is_rejected() {
    let err = InProcessComm::group(0).unwrap_err();
    assert!(matches!(err.root(), ckpt::Error::Invalid { .. }), "{err:?}");
}
