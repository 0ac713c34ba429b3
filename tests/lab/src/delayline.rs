//! A link made of two TAP devices and a copy loop per direction that delays and drops frames:
//! netem done in user space, for kernels built without the netem qdisc. Frames are real
//! Ethernet frames of the kernels' own stacks; only the wire between them is this process.

use std::collections::VecDeque;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::LabError;
use crate::netns::in_namespace;

/// How long a copy loop sleeps in poll(2) with nothing queued before it checks for stop.
const IDLE: Duration = Duration::from_millis(50);
/// Frames read in one go before due frames get written again, so a flood one way cannot hold
/// back what is due.
const BATCH: usize = 64;

/// `struct ifreq` as TUNSETIFF reads it: the name, the flags, and the rest of the union.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _rest: [u8; 22],
}

/// Creates TAP device `name` in namespace `ns` and returns its (non-blocking) file descriptor;
/// the device disappears when the descriptor is closed.
pub(crate) fn open_tap(ns: &str, name: &str) -> Result<OwnedFd, LabError> {
    let made = in_namespace(ns, || -> io::Result<OwnedFd> {
        // TUNSETIFF creates the device in the network namespace of the calling thread.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")?;
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            flags: 0,
            _rest: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        req.flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
        let fd = file.as_raw_fd();
        // SAFETY: `req` is a properly sized ifreq that outlives the call.
        if unsafe { libc::ioctl(fd, libc::TUNSETIFF, &mut req as *mut IfReq) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fcntl on a descriptor we own; no pointers involved.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        // SAFETY: as above.
        if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(OwnedFd::from(file))
    })?;
    made.map_err(|e| LabError::io(format!("cannot create TAP device {name} in {ns}"), e))
}

/// Delay and loss of one direction, changed while the link runs.
#[derive(Debug, Default)]
struct Impairment {
    delay_us: AtomicU64,
    loss_ppm: AtomicU32,
}

/// A running TAP-to-TAP link. Dropping it stops the copy loops and removes both devices.
#[derive(Debug)]
pub(crate) struct DelayLine {
    impairment: Arc<Impairment>,
    stop: Arc<AtomicBool>,
    pumps: Vec<JoinHandle<()>>,
}

impl DelayLine {
    /// Joins the two TAP devices.
    pub(crate) fn start(a: OwnedFd, b: OwnedFd, label: &str) -> Result<Self, LabError> {
        let (a, b) = (Arc::new(a), Arc::new(b));
        let impairment = Arc::new(Impairment::default());
        let stop = Arc::new(AtomicBool::new(false));
        let mut line = DelayLine {
            impairment,
            stop,
            pumps: Vec::new(),
        };
        for (from, to, seed) in [(a.clone(), b.clone(), 1), (b, a, 2)] {
            let (impairment, stop) = (line.impairment.clone(), line.stop.clone());
            // Different seeds per direction and per link, so losses are not correlated.
            let seed = seed ^ (line_seed() << 2);
            let pump = thread::Builder::new()
                .name(format!("lab link {label}"))
                .spawn(move || pump(&from, &to, &impairment, &stop, seed))
                .map_err(|e| LabError::io("cannot start a link thread", e))?;
            line.pumps.push(pump);
        }
        Ok(line)
    }

    /// Sets the delay added to each frame in each direction and the chance (0..=1) that a frame
    /// is dropped.
    pub(crate) fn set(&self, one_way: Duration, loss: f64) {
        let delay_us = u64::try_from(one_way.as_micros()).unwrap_or(u64::MAX);
        self.impairment.delay_us.store(delay_us, Ordering::SeqCst);
        let loss_ppm = (loss.clamp(0.0, 1.0) * 1e6).round() as u32;
        self.impairment.loss_ppm.store(loss_ppm, Ordering::SeqCst);
    }
}

impl Drop for DelayLine {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for pump in self.pumps.drain(..) {
            let _ = pump.join();
        }
    }
}

fn line_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0x9e37_79b9);
    nanos | 1
}

/// xorshift64*: enough to decide which frames to drop.
fn next_random(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

/// Copies frames from `from` to `to`, each one `delay` later, until `stop`.
fn pump(from: &OwnedFd, to: &OwnedFd, impairment: &Impairment, stop: &AtomicBool, seed: u64) {
    let mut rng = seed.max(1);
    let mut queue: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
    let mut buf = vec![0u8; 65_536];
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        while queue.front().is_some_and(|(due, _)| *due <= now) {
            let (_, frame) = queue.pop_front().expect("front exists");
            write_frame(to, &frame);
        }
        let wait = queue
            .front()
            .map_or(IDLE, |(due, _)| due.saturating_duration_since(now));
        let wait_ms = wait.min(IDLE).as_micros().div_ceil(1000) as libc::c_int;
        let mut pfd = libc::pollfd {
            fd: from.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        let ready = unsafe { libc::poll(&mut pfd, 1, wait_ms) };
        if ready <= 0 || pfd.revents & libc::POLLIN == 0 {
            continue;
        }
        for _ in 0..BATCH {
            // SAFETY: reads into a buffer we own, at most its length.
            let n = unsafe { libc::read(from.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
            // Read after the frame, so a frame sent after `set` always gets the new values.
            let delay = Duration::from_micros(impairment.delay_us.load(Ordering::SeqCst));
            let loss_ppm = u64::from(impairment.loss_ppm.load(Ordering::SeqCst));
            let frame = &buf[..n as usize];
            if loss_ppm > 0 && next_random(&mut rng) % 1_000_000 < loss_ppm {
                continue;
            }
            if delay.is_zero() && queue.is_empty() {
                write_frame(to, frame);
            } else {
                queue.push_back((Instant::now() + delay, frame.to_vec()));
            }
        }
    }
}

fn write_frame(to: &OwnedFd, frame: &[u8]) {
    // A frame the other side cannot take (device down, queue full) is lost, as on a wire.
    // SAFETY: writes from a slice we own, at most its length.
    let _ = unsafe { libc::write(to.as_raw_fd(), frame.as_ptr().cast(), frame.len()) };
}
