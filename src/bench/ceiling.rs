//! `ringseed bench ceiling`: how fast this box moves bytes over loopback TCP from memory, with the
//! socket settings the engine and the bench use (TCP_NODELAY, default buffer sizes, 256 KiB
//! sends like one upload job, 256 KiB or 64 KiB receives like a bench leecher). No disk, no
//! protocol: what a seeder would reach if serving cost nothing.
//!
//! One sender thread and one receiver thread, each with its own io_uring, optionally pinned to
//! the cores a seeder and a leecher would use.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use io_uring::IoUring;

use crate::uring::{Op, UserData, ops};

/// What to measure.
#[derive(Debug, Clone)]
pub struct CeilingOptions {
    /// TCP connections (as many as the bench's peers).
    pub conns: usize,
    pub duration: Duration,
    /// Bytes per send (the engine's upload job size).
    pub send_size: usize,
    /// Cores of the sender and the receiver thread.
    pub cpus: Option<(usize, usize)>,
}

impl Default for CeilingOptions {
    fn default() -> Self {
        CeilingOptions {
            conns: 1,
            duration: Duration::from_secs(5),
            send_size: 256 << 10,
            cpus: None,
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct CeilingReport {
    pub conns: usize,
    pub bytes: u64,
    /// From the first send to the last byte received.
    pub seconds: f64,
    pub gib_per_s: f64,
    /// CPU seconds of the sender's thread (what a seeder with nothing else to do would use).
    pub sender_cpu_seconds: f64,
    pub receiver_cpu_seconds: f64,
    pub sender_cpu_seconds_per_gib: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum CeilingError {
    #[error("connections must be 1 … 100 000 (got {0})")]
    Conns(usize),
    #[error("setting up loopback connections: {0}")]
    Io(#[from] std::io::Error),
    #[error("a ceiling thread panicked")]
    Panicked,
}

/// Streams bytes from memory over `opts.conns` loopback connections for `opts.duration`.
pub fn run(opts: &CeilingOptions) -> Result<CeilingReport, CeilingError> {
    if opts.conns == 0 || opts.conns > 100_000 {
        return Err(CeilingError::Conns(opts.conns));
    }
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    let addr = listener.local_addr()?;
    let mut senders = Vec::with_capacity(opts.conns);
    let mut receivers = Vec::with_capacity(opts.conns);
    // Connect and accept in turn, so the accept backlog never overflows.
    for _ in 0..opts.conns {
        let client = TcpStream::connect(addr)?;
        let (server, _) = listener.accept()?;
        client.set_nodelay(true)?;
        server.set_nodelay(true)?;
        senders.push(OwnedFd::from(server));
        receivers.push(OwnedFd::from(client));
    }
    let recv_size = if opts.conns <= 256 {
        256 << 10
    } else {
        64 << 10
    };
    let payload: Arc<Vec<u8>> = Arc::new((0..opts.send_size).map(|i| i as u8).collect());
    let started = Instant::now();
    let deadline = started + opts.duration;
    let cpus = opts.cpus;
    let send_thread = std::thread::Builder::new()
        .name("rsceiling-send".into())
        .spawn(move || {
            if let Some((c, _)) = cpus {
                pin(c);
            }
            send_loop(&senders, &payload, deadline)
        })?;
    let recv_thread = std::thread::Builder::new()
        .name("rsceiling-recv".into())
        .spawn(move || {
            if let Some((_, c)) = cpus {
                pin(c);
            }
            recv_loop(&receivers, recv_size)
        })?;
    let sent = send_thread.join().map_err(|_| CeilingError::Panicked)??;
    let received = recv_thread.join().map_err(|_| CeilingError::Panicked)??;
    let seconds = received
        .last_byte
        .saturating_duration_since(started)
        .as_secs_f64()
        .max(1e-9);
    let gib = received.bytes as f64 / (1u64 << 30) as f64;
    Ok(CeilingReport {
        conns: opts.conns,
        bytes: received.bytes,
        seconds,
        gib_per_s: gib / seconds,
        sender_cpu_seconds: sent.cpu_seconds,
        receiver_cpu_seconds: received.cpu_seconds,
        sender_cpu_seconds_per_gib: sent.cpu_seconds / gib.max(1e-9),
    })
}

fn pin(core: usize) {
    let mut set = nix::sched::CpuSet::new();
    if set.set(core).is_ok() {
        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
    }
}

struct Sent {
    cpu_seconds: f64,
}

struct Received {
    bytes: u64,
    last_byte: Instant,
    cpu_seconds: f64,
}

/// Waits for at least one completion and collects all there are as (connection, result).
fn wait_completions(ring: &mut IoUring, done: &mut Vec<(usize, i32)>) -> std::io::Result<()> {
    match ring.submit_and_wait(1) {
        Ok(_) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
        Err(e) => return Err(e),
    }
    done.clear();
    // Each ring carries one kind of operation, so the slot alone names the connection.
    done.extend(
        ring.completion()
            .filter_map(|c| Some((UserData::decode(c.user_data())?.slot, c.result()))),
    );
    Ok(())
}

fn ring(conns: usize) -> std::io::Result<IoUring> {
    crate::uring::build_ring((conns.next_power_of_two() as u32).clamp(64, 4096))
}

/// Keeps one send of `payload` in flight per connection until the deadline, then shuts each
/// connection's write side so the receiver sees the end.
fn send_loop(fds: &[OwnedFd], payload: &[u8], deadline: Instant) -> std::io::Result<Sent> {
    let mut ring = ring(fds.len())?;
    let post = |ring: &mut IoUring, i: usize| {
        let e = ops::send(
            fds[i].as_raw_fd(),
            payload,
            libc::MSG_NOSIGNAL,
            UserData::new(Op::Send, 0, i),
        );
        // SAFETY: `payload` is borrowed for the whole loop, which returns only when no send is
        // in flight.
        unsafe { crate::uring::push(ring, &e) };
    };
    for i in 0..fds.len() {
        post(&mut ring, i);
    }
    let mut in_flight = fds.len();
    let mut done = Vec::new();
    while in_flight > 0 {
        wait_completions(&mut ring, &mut done)?;
        let over = Instant::now() >= deadline;
        for &(i, res) in &done {
            if res > 0 && !over {
                post(&mut ring, i);
            } else {
                in_flight -= 1;
                let _ = nix::sys::socket::shutdown(
                    fds[i].as_raw_fd(),
                    nix::sys::socket::Shutdown::Write,
                );
            }
        }
    }
    Ok(Sent {
        cpu_seconds: super::procstat::this_thread_cpu_seconds().unwrap_or(0.0),
    })
}

/// Reads every connection to its end, counting bytes.
fn recv_loop(fds: &[OwnedFd], recv_size: usize) -> std::io::Result<Received> {
    let mut ring = ring(fds.len())?;
    let mut bufs: Vec<Vec<u8>> = (0..fds.len()).map(|_| vec![0u8; recv_size]).collect();
    let post = |ring: &mut IoUring, bufs: &mut [Vec<u8>], i: usize| {
        let e = ops::recv(
            fds[i].as_raw_fd(),
            &mut bufs[i],
            UserData::new(Op::Recv, 0, i),
        );
        // SAFETY: each receive buffer is a separate heap allocation that is neither resized nor
        // dropped before the loop ends, and the loop ends only when no receive is in flight.
        unsafe { crate::uring::push(ring, &e) };
    };
    for i in 0..fds.len() {
        post(&mut ring, &mut bufs, i);
    }
    let mut in_flight = fds.len();
    let mut bytes = 0u64;
    let mut last_byte = Instant::now();
    let mut done = Vec::new();
    while in_flight > 0 {
        wait_completions(&mut ring, &mut done)?;
        for &(i, res) in &done {
            if res > 0 {
                bytes += res as u64;
                last_byte = Instant::now();
                post(&mut ring, &mut bufs, i);
            } else {
                in_flight -= 1;
            }
        }
    }
    Ok(Received {
        bytes,
        last_byte,
        cpu_seconds: super::procstat::this_thread_cpu_seconds().unwrap_or(0.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_over_a_few_connections_and_ends() {
        let r = run(&CeilingOptions {
            conns: 3,
            duration: Duration::from_millis(200),
            ..CeilingOptions::default()
        })
        .unwrap();
        assert!(r.bytes > 0);
        assert!(r.gib_per_s > 0.0);
        assert_eq!(r.conns, 3);
    }

    #[test]
    fn zero_connections_is_an_error() {
        assert!(matches!(
            run(&CeilingOptions {
                conns: 0,
                ..CeilingOptions::default()
            }),
            Err(CeilingError::Conns(0))
        ));
    }
}
