//! An HTX connection: many flow-controlled streams over one Noise-keyed byte stream.
//!
//! One task writes (seals frames in order, rekeying on the frame, byte and time thresholds) and
//! one reads (opens frames, enforces windows and stream-id parity, dispatches). Client streams are
//! odd, server streams even. A sender never has more unacknowledged bytes in flight than the
//! stream window and the connection window allow; a receiver that sees more closes the
//! connection.
//!
//! Every queue is bounded, so a peer cannot make this side hold memory it does not choose to:
//! STREAM data waiting for the writer never exceeds the connection window (the peer may only
//! return credit for data the writer has already taken), control frames (WINDOW_UPDATE, FIN,
//! stream CLOSE) are capped in bytes, PING echoes in number, open streams in number, KEY_UPDATEs
//! by how often the key schedule allows them, and the handshake by a deadline. A peer that
//! breaks a bound is cut off with a CLOSE whose code ([`CloseCode`]) says which.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker, ready};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{mpsc, oneshot};

use tokio::sync::watch;

use crate::frame::{DEFAULT_MAX_FRAME, FrameType, Opener, Sealer, decode_stream, encode_stream};
use crate::handshake::{self, SessionKeys, StaticKey};
use crate::{CloseCode, HtxError};

/// Connection settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Initial credit of each stream, bytes (the spec's 32,768; larger is allowed).
    pub stream_window: u32,
    /// Initial credit of the connection, bytes (the spec's 65,535; larger is allowed).
    pub connection_window: u32,
    /// Largest data in one STREAM frame.
    pub max_chunk: usize,
    /// Rekey after this many frames in one direction.
    pub rekey_frames: u64,
    /// Rekey after this many bytes in one direction.
    pub rekey_bytes: u64,
    /// Rekey after this long in one direction.
    pub rekey_after: Duration,
    /// A ping must be answered within this.
    pub ping_timeout: Duration,
    /// Most streams the peer may have open at once; one more cuts it off
    /// ([`CloseCode::TooManyStreams`]).
    pub max_streams: usize,
    /// The handshake must complete within this ([`CloseCode::HandshakeTimeout`]).
    pub handshake_timeout: Duration,
    /// Most PING echoes waiting for the writer; a peer that pings faster than it reads is cut
    /// off ([`CloseCode::PingFlood`]).
    pub max_pending_pings: usize,
    /// Most bytes of control frames (WINDOW_UPDATE, FIN, stream CLOSE) waiting for the writer
    /// ([`CloseCode::NotReading`] beyond).
    pub max_queued_control: usize,
    /// How long a connection that was closed or cut off still tries to deliver its queued
    /// frames (the CLOSE last) before the transport is dropped.
    pub close_linger: Duration,
}

impl Config {
    /// The most bytes of frames (payload and framing) that can wait for the writer at once:
    /// STREAM data up to the connection window, plus the control and PING bounds. The writer's
    /// own buffer adds at most [`WRITE_BATCH`] and one frame.
    pub fn queue_bound(&self) -> usize {
        self.connection_window as usize
            + self.connection_window.div_ceil(16) as usize * FRAME_OVERHEAD
            + self.max_queued_control
            + self.max_pending_pings * (9 + FRAME_OVERHEAD)
    }
}

/// Bytes a frame adds around its payload: the 10-byte header, the 16-byte tag, and the 11-byte
/// STREAM prefix counted as framing.
const FRAME_OVERHEAD: usize = 10 + 16 + 11;

/// The writer coalesces queued frames into writes of up to this many bytes.
pub const WRITE_BATCH: usize = 256 << 10;

impl Default for Config {
    fn default() -> Self {
        Config {
            stream_window: 32_768,
            connection_window: 65_535,
            max_chunk: 16_384,
            rekey_frames: 1 << 16,
            rekey_bytes: 8 << 30,
            rekey_after: Duration::from_secs(3600),
            ping_timeout: Duration::from_secs(5),
            max_streams: 4096,
            handshake_timeout: Duration::from_secs(10),
            max_pending_pings: 64,
            max_queued_control: 64 << 10,
            close_linger: Duration::from_secs(5),
        }
    }
}

/// Flow-control credit that senders wait on.
#[derive(Debug, Default)]
struct Credit {
    state: Mutex<CreditState>,
}

#[derive(Debug, Default)]
struct CreditState {
    available: u64,
    /// Senders waiting for credit.
    waiting: Vec<Waker>,
}

impl CreditState {
    fn wait(&mut self, waker: &Waker) {
        if !self.waiting.iter().any(|w| w.will_wake(waker)) {
            self.waiting.push(waker.clone());
        }
    }
}

impl Credit {
    fn new(initial: u32) -> Arc<Credit> {
        Arc::new(Credit {
            state: Mutex::new(CreditState {
                available: initial as u64,
                waiting: Vec::new(),
            }),
        })
    }

    fn add(&self, n: u64) {
        let waiting = {
            let mut state = self.state.lock().expect("credit lock");
            state.available += n;
            std::mem::take(&mut state.waiting)
        };
        waiting.into_iter().for_each(Waker::wake);
    }

    fn available(&self) -> u64 {
        self.state.lock().expect("credit lock").available
    }

    fn wake_all(&self) {
        let waiting = std::mem::take(&mut self.state.lock().expect("credit lock").waiting);
        waiting.into_iter().for_each(Waker::wake);
    }
}

/// A frame waiting for the writer.
struct Outgoing {
    kind: FrameType,
    stream: u32,
    payload: Vec<u8>,
    class: Class,
}

/// Which bound a queued frame counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// STREAM data: this many bytes of flow-control credit (bounded by the connection window).
    Data(u32),
    /// The echo of a peer's PING (bounded in number).
    Echo,
    /// Any other frame (bounded in bytes).
    Control,
}

impl Outgoing {
    fn size(&self) -> usize {
        self.payload.len() + FRAME_OVERHEAD
    }
}

/// Data (and whether it ends the stream) delivered to a stream.
type Chunk = Result<(Vec<u8>, bool), HtxError>;

#[derive(Debug)]
struct StreamEntry {
    data: mpsc::UnboundedSender<Chunk>,
    send_credit: Arc<Credit>,
    /// Bytes received beyond the credit the reader has returned.
    outstanding: u64,
    next_offset: u64,
}

struct Shared {
    config: Config,
    client: bool,
    out: mpsc::UnboundedSender<Outgoing>,
    streams: Mutex<HashMap<u32, StreamEntry>>,
    next_id: AtomicU32,
    connection_credit: Arc<Credit>,
    /// Bytes received on all streams beyond the connection credit returned.
    connection_outstanding: Mutex<u64>,
    /// Bytes consumed by readers but not yet returned to the peer as connection credit.
    connection_unacked: Mutex<u64>,
    incoming: Mutex<Option<mpsc::UnboundedSender<HtxStream>>>,
    pings: Mutex<HashMap<[u8; 8], oneshot::Sender<()>>>,
    ping_counter: std::sync::atomic::AtomicU64,
    /// Held while a new stream takes its id and queues its first frame.
    open_order: Mutex<()>,
    /// The highest stream id the peer has opened (lower unknown ids were closed here).
    highest_peer_stream: Mutex<u32>,
    key_updates_sent: std::sync::atomic::AtomicU64,
    key_updates_received: std::sync::atomic::AtomicU64,
    closed: AtomicBool,
    /// Set once the connection is closed: the writer then lingers at most `close_linger`.
    closed_signal: watch::Sender<bool>,
    error: Mutex<Option<HtxError>>,
    /// Bytes of frames waiting for the writer (all classes), and the most there ever were.
    queued: AtomicUsize,
    queued_peak: AtomicUsize,
    /// Bytes of control frames waiting for the writer.
    queued_control: AtomicUsize,
    /// PING echoes waiting for the writer.
    pending_echoes: AtomicUsize,
    /// PINGs from the peer this side has answered.
    pings_echoed: AtomicU64,
    /// STREAM data bytes the writer has taken from the queue: the peer can have received no
    /// more, so it may return no more connection credit than this.
    data_taken: AtomicU64,
    /// Connection credit the peer has returned.
    credit_returned: AtomicU64,
}

impl Shared {
    /// Queue a control frame (bounded in bytes).
    fn send(&self, kind: FrameType, stream: u32, payload: Vec<u8>) -> Result<(), HtxError> {
        self.enqueue(Outgoing {
            kind,
            stream,
            payload,
            class: Class::Control,
        })
    }

    /// Queue a frame, cutting the peer off if it would break its class's bound.
    fn enqueue(&self, frame: Outgoing) -> Result<(), HtxError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(self.error());
        }
        let size = frame.size();
        match frame.class {
            // Flow control bounds data: see `data_taken`.
            Class::Data(_) => {}
            Class::Echo => {
                let pending = self.pending_echoes.fetch_add(1, Ordering::AcqRel);
                if pending >= self.config.max_pending_pings {
                    self.pending_echoes.fetch_sub(1, Ordering::AcqRel);
                    return Err(self.cut_off(
                        CloseCode::PingFlood,
                        format!("{pending} PING echoes unsent: the peer pings without reading"),
                    ));
                }
            }
            Class::Control => {
                let queued = self.queued_control.fetch_add(size, Ordering::AcqRel) + size;
                if queued > self.config.max_queued_control {
                    self.queued_control.fetch_sub(size, Ordering::AcqRel);
                    return Err(self.cut_off(
                        CloseCode::NotReading,
                        format!("{queued} bytes of control frames unsent: the peer is not reading"),
                    ));
                }
            }
        }
        let queued = self.queued.fetch_add(size, Ordering::AcqRel) + size;
        self.queued_peak.fetch_max(queued, Ordering::AcqRel);
        self.out.send(frame).map_err(|_| self.error())
    }

    /// The writer took `frame` from the queue.
    fn taken(&self, frame: &Outgoing) {
        let size = frame.size();
        self.queued.fetch_sub(size, Ordering::AcqRel);
        match frame.class {
            Class::Data(credit) => {
                self.data_taken.fetch_add(credit as u64, Ordering::AcqRel);
            }
            Class::Echo => {
                self.pending_echoes.fetch_sub(1, Ordering::AcqRel);
            }
            Class::Control => {
                self.queued_control.fetch_sub(size, Ordering::AcqRel);
            }
        }
    }

    /// Cut the peer off: queue a CLOSE that says why (past every bound, once), then fail
    /// locally. Returns the error, for the caller to pass on.
    fn cut_off(&self, code: CloseCode, reason: String) -> HtxError {
        let error = HtxError::CutOff { code, reason };
        self.close_with(&error);
        error
    }

    /// Queue the CLOSE for `error` unless the connection already ended, then fail with it.
    fn close_with(&self, error: &HtxError) {
        if !self.closed.load(Ordering::Acquire) {
            let mut payload = error.close_code().code().to_be_bytes().to_vec();
            let reason = match error {
                HtxError::Closed(reason) | HtxError::CutOff { reason, .. } => reason.clone(),
                other => other.to_string(),
            };
            payload.extend_from_slice(&reason.as_bytes()[..reason.len().min(1024)]);
            let frame = Outgoing {
                kind: FrameType::Close,
                stream: 0,
                payload,
                class: Class::Control,
            };
            self.queued.fetch_add(frame.size(), Ordering::AcqRel);
            self.queued_control
                .fetch_add(frame.size(), Ordering::AcqRel);
            let _ = self.out.send(frame);
        }
        self.fail(error.clone());
    }

    fn error(&self) -> HtxError {
        self.error
            .lock()
            .expect("error lock")
            .clone()
            .unwrap_or_else(|| HtxError::Closed("connection closed".into()))
    }

    /// Close everything with `error`: wake every waiter, fail every stream.
    fn fail(&self, error: HtxError) {
        {
            let mut slot = self.error.lock().expect("error lock");
            if slot.is_none() {
                *slot = Some(error.clone());
            }
        }
        self.closed.store(true, Ordering::Release);
        self.closed_signal.send_replace(true);
        for (_, entry) in self.streams.lock().expect("streams lock").drain() {
            let _ = entry.data.send(Err(error.clone()));
            entry.send_credit.wake_all();
        }
        self.connection_credit.wake_all();
        self.incoming.lock().expect("incoming lock").take();
        self.pings.lock().expect("pings lock").clear();
    }

    /// A stream object; `register` puts it in the stream table at once (peer-opened streams),
    /// otherwise its first frame does (so new streams reach the wire in id order).
    fn new_stream(self: &Arc<Self>, id: u32, register: bool) -> HtxStream {
        let (tx, rx) = mpsc::unbounded_channel();
        let send_credit = Credit::new(self.config.stream_window);
        let entry = StreamEntry {
            data: tx,
            send_credit: send_credit.clone(),
            outstanding: 0,
            next_offset: 0,
        };
        let unregistered = if register {
            self.streams.lock().expect("streams lock").insert(id, entry);
            None
        } else {
            Some(entry)
        };
        HtxStream {
            id,
            shared: self.clone(),
            data: rx,
            send_credit,
            unregistered,
            send_offset: 0,
            unacknowledged: 0,
            finished: false,
            ended: false,
            pending: Vec::new(),
            pending_at: 0,
        }
    }

    /// Send a STREAM frame for `stream`, first giving it an id and a table entry if it has
    /// none: ids are taken and first frames queued under one lock, so the peer sees new
    /// streams in increasing id order.
    fn send_stream(
        &self,
        stream: &mut HtxStream,
        credit: u32,
        payload_of: impl FnOnce() -> Vec<u8>,
    ) -> Result<(), HtxError> {
        let data = |stream, payload| Outgoing {
            kind: FrameType::Stream,
            stream,
            payload,
            class: Class::Data(credit),
        };
        match stream.unregistered.take() {
            None => self.enqueue(data(stream.id, payload_of())),
            Some(entry) => {
                let _order = self.open_order.lock().expect("open order lock");
                let id = self.next_id.fetch_add(2, Ordering::Relaxed);
                stream.id = id;
                self.streams.lock().expect("streams lock").insert(id, entry);
                self.enqueue(data(id, payload_of()))
            }
        }
    }
}

/// One end of an HTX connection.
#[derive(Clone)]
pub struct Connection {
    shared: Arc<Shared>,
    incoming: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<HtxStream>>>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("client", &self.shared.client)
            .finish_non_exhaustive()
    }
}

/// Handshake as the initiator over `io` and start the connection.
pub async fn connect<S>(
    io: S,
    local: &StaticKey,
    remote: &[u8; 32],
    prologue: &[u8],
    config: Config,
) -> Result<Connection, HtxError>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    connect_with_hello(io, local, remote, prologue, &[], config).await
}

/// Like [`connect`], sending `hello` (e.g. an access ticket) encrypted in the handshake.
pub async fn connect_with_hello<S>(
    mut io: S,
    local: &StaticKey,
    remote: &[u8; 32],
    prologue: &[u8],
    hello: &[u8],
    config: Config,
) -> Result<Connection, HtxError>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let keys = within_deadline(
        &config,
        handshake::initiate(&mut io, local, remote, prologue, hello),
    )
    .await?;
    Ok(Connection::start(io, keys, true, config))
}

/// Who connected: the initiator's static key and the hello it sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The initiator's static public key.
    pub key: [u8; 32],
    /// Its hello (empty if none).
    pub hello: Vec<u8>,
}

/// Handshake as the responder over `io` and start the connection; also returns who connected.
pub async fn accept<S>(
    mut io: S,
    local: &StaticKey,
    prologue: &[u8],
    config: Config,
) -> Result<(Connection, Peer), HtxError>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let mut keys = within_deadline(&config, handshake::respond(&mut io, local, prologue)).await?;
    let peer = Peer {
        key: keys.remote_static,
        hello: std::mem::take(&mut keys.hello),
    };
    Ok((Connection::start(io, keys, false, config), peer))
}

/// Run a handshake within the configured deadline. A stalled handshake has no keys yet to
/// seal a CLOSE with: the transport is simply dropped.
async fn within_deadline(
    config: &Config,
    handshake: impl Future<Output = Result<SessionKeys, HtxError>>,
) -> Result<SessionKeys, HtxError> {
    tokio::time::timeout(config.handshake_timeout, handshake)
        .await
        .map_err(|_| HtxError::CutOff {
            code: CloseCode::HandshakeTimeout,
            reason: format!("no handshake within {:?}", config.handshake_timeout),
        })?
}

impl Connection {
    fn start<S>(io: S, keys: SessionKeys, client: bool, config: Config) -> Connection
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (reader, writer) = tokio::io::split(io);
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let (incoming_tx, incoming_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            connection_credit: Credit::new(config.connection_window),
            config,
            client,
            out: out_tx,
            streams: Mutex::new(HashMap::new()),
            next_id: AtomicU32::new(if client { 1 } else { 2 }),
            connection_outstanding: Mutex::new(0),
            connection_unacked: Mutex::new(0),
            incoming: Mutex::new(Some(incoming_tx)),
            pings: Mutex::new(HashMap::new()),
            ping_counter: std::sync::atomic::AtomicU64::new(1),
            highest_peer_stream: Mutex::new(0),
            open_order: Mutex::new(()),
            key_updates_sent: std::sync::atomic::AtomicU64::new(0),
            key_updates_received: std::sync::atomic::AtomicU64::new(0),
            closed: AtomicBool::new(false),
            closed_signal: watch::Sender::new(false),
            error: Mutex::new(None),
            queued: AtomicUsize::new(0),
            queued_peak: AtomicUsize::new(0),
            queued_control: AtomicUsize::new(0),
            pending_echoes: AtomicUsize::new(0),
            pings_echoed: AtomicU64::new(0),
            data_taken: AtomicU64::new(0),
            credit_returned: AtomicU64::new(0),
        });
        let sealer = Sealer::new(keys.send);
        let opener = Opener::new(
            keys.recv,
            DEFAULT_MAX_FRAME.max(shared.config.max_chunk + 11 + 7 + 16),
        );
        tokio::spawn(write_loop(shared.clone(), writer, out_rx, sealer));
        tokio::spawn(read_loop(shared.clone(), reader, opener));
        Connection {
            shared,
            incoming: Arc::new(tokio::sync::Mutex::new(incoming_rx)),
        }
    }

    /// Open a new stream (it gets its id when it first sends).
    pub fn open(&self) -> Result<HtxStream, HtxError> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(self.shared.error());
        }
        Ok(self.shared.new_stream(0, false))
    }

    /// The next stream the peer opens; `None` once the connection is closed.
    pub async fn accept(&self) -> Option<HtxStream> {
        self.incoming.lock().await.recv().await
    }

    /// Send a PING and wait for its echo; the connection is closed if none comes in time.
    pub async fn ping(&self) -> Result<Duration, HtxError> {
        let token = self
            .shared
            .ping_counter
            .fetch_add(1, Ordering::Relaxed)
            .to_be_bytes();
        let (tx, rx) = oneshot::channel();
        self.shared
            .pings
            .lock()
            .expect("pings lock")
            .insert(token, tx);
        let started = Instant::now();
        let mut payload = vec![0u8];
        payload.extend_from_slice(&token);
        self.shared.send(FrameType::Ping, 0, payload)?;
        match tokio::time::timeout(self.shared.config.ping_timeout, rx).await {
            Ok(Ok(())) => Ok(started.elapsed()),
            Ok(Err(_)) => Err(self.shared.error()),
            Err(_) => Err(self.shared.cut_off(
                CloseCode::PingTimeout,
                format!("no PING echo within {:?}", self.shared.config.ping_timeout),
            )),
        }
    }

    /// Close the connection with a reason.
    pub fn close(&self, reason: &str) {
        self.shared
            .close_with(&HtxError::Closed(reason.to_string()));
    }

    /// Close the connection with a typed reason the peer can act on (e.g. a refusal).
    pub fn close_with(&self, code: CloseCode, reason: &str) {
        self.shared.close_with(&HtxError::CutOff {
            code,
            reason: reason.to_string(),
        });
    }

    /// Bytes of frames waiting for this side's writer now.
    pub fn queued_bytes(&self) -> usize {
        self.shared.queued.load(Ordering::Acquire)
    }

    /// The most bytes of frames that ever waited for this side's writer at once: what a peer
    /// that stops reading made this connection hold (see [`Config::queue_bound`]).
    pub fn queued_peak(&self) -> usize {
        self.shared.queued_peak.load(Ordering::Acquire)
    }

    /// Streams open on this side of the connection (opened or accepted, not yet dropped).
    pub fn open_streams(&self) -> usize {
        self.shared.streams.lock().expect("streams lock").len()
    }

    /// PINGs the peer sent that this side answered: whether, and how often, the peer checks
    /// that the connection is alive (a router PINGs a host's attach connection once it has
    /// admitted it).
    pub fn pings_echoed(&self) -> u64 {
        self.shared.pings_echoed.load(Ordering::Relaxed)
    }

    /// Key updates (sent, received) so far.
    pub fn key_updates(&self) -> (u64, u64) {
        (
            self.shared.key_updates_sent.load(Ordering::Relaxed),
            self.shared.key_updates_received.load(Ordering::Relaxed),
        )
    }

    /// Whether `other` is a handle to this same connection.
    pub fn same_as(&self, other: &Connection) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    /// Why the connection ended, once it has.
    pub fn error(&self) -> Option<HtxError> {
        self.shared.error.lock().expect("error lock").clone()
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    shared: Arc<Shared>,
    mut writer: W,
    mut out: mpsc::UnboundedReceiver<Outgoing>,
    mut sealer: Sealer,
) {
    let mut buffer = Vec::with_capacity(64 << 10);
    let mut bytes_under_key = 0u64;
    let mut keyed_at = Instant::now();
    // Once the connection is closed, queued frames (the CLOSE last) get `close_linger` to reach
    // a peer that may not be reading at all; then the transport is dropped.
    let mut closed = shared.closed_signal.subscribe();
    let linger = shared.config.close_linger;
    let lingered = async move {
        let _ = closed.wait_for(|closed| *closed).await;
        tokio::time::sleep(linger).await;
    };
    tokio::pin!(lingered);
    while let Some(first) = out.recv().await {
        buffer.clear();
        let mut next = Some(first);
        // Coalesce whatever is already queued into one write.
        while let Some(frame) = next.take() {
            shared.taken(&frame);
            let before = buffer.len();
            sealer.seal(frame.kind, frame.stream, 0, &frame.payload, &mut buffer);
            bytes_under_key += (buffer.len() - before) as u64;
            let config = &shared.config;
            if sealer.counter() >= config.rekey_frames
                || bytes_under_key >= config.rekey_bytes
                || keyed_at.elapsed() >= config.rekey_after
            {
                sealer.seal(FrameType::KeyUpdate, 0, 0, &[], &mut buffer);
                sealer.rekey();
                shared.key_updates_sent.fetch_add(1, Ordering::Relaxed);
                bytes_under_key = 0;
                keyed_at = Instant::now();
            }
            if buffer.len() < WRITE_BATCH {
                next = out.try_recv().ok();
            }
        }
        let write = async {
            writer.write_all(&buffer).await?;
            writer.flush().await
        };
        let written = tokio::select! {
            written = write => written,
            () = &mut lingered => return,
        };
        if let Err(err) = written {
            shared.fail(HtxError::Io(err.to_string()));
            return;
        }
        if shared.closed.load(Ordering::Acquire) && out.is_empty() {
            let _ = writer.shutdown().await;
            return;
        }
    }
}

async fn read_loop<R: AsyncRead + Unpin>(shared: Arc<Shared>, mut reader: R, mut opener: Opener) {
    let result: Result<(), HtxError> = async {
        let mut frame = Vec::with_capacity(DEFAULT_MAX_FRAME);
        // What the peer sent under its current key: a KEY_UPDATE before it reached half of any
        // rekey threshold is a flood (each one costs a key derivation here).
        let (mut frames_under_key, mut bytes_under_key) = (0u64, 0u64);
        let mut keyed_at = Instant::now();
        loop {
            let mut len = [0u8; 3];
            match reader.read_exact(&mut len).await {
                Ok(_) => {}
                Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof => {
                    return Err(HtxError::Closed("the peer closed the transport".into()));
                }
                Err(err) => return Err(HtxError::Io(err.to_string())),
            }
            let total = opener.frame_len(len)?;
            frame.clear();
            frame.extend_from_slice(&len);
            frame.resize(total, 0);
            reader
                .read_exact(&mut frame[3..])
                .await
                .map_err(|e| HtxError::Truncated {
                    what: "frame",
                    len: if e.kind() == std::io::ErrorKind::UnexpectedEof {
                        0
                    } else {
                        total
                    },
                })?;
            let opened = opener.open(&frame)?;
            if opened.kind != FrameType::KeyUpdate {
                frames_under_key += 1;
                bytes_under_key += total as u64;
            }
            match opened.kind {
                FrameType::Stream => on_stream(&shared, opened.stream, &opened.payload)?,
                FrameType::WindowUpdate => {
                    if opened.payload.len() != 5 {
                        return Err(HtxError::Malformed {
                            what: "WINDOW_UPDATE",
                            reason: "not 5 bytes".into(),
                        });
                    }
                    let credit =
                        u32::from_be_bytes(opened.payload[1..5].try_into().expect("4 bytes"))
                            as u64;
                    match opened.payload[0] {
                        0 => {
                            // The peer can only have consumed data the writer took from the
                            // queue; more credit would let the queue outgrow the window.
                            let returned =
                                shared.credit_returned.fetch_add(credit, Ordering::AcqRel) + credit;
                            let taken = shared.data_taken.load(Ordering::Acquire);
                            if returned > taken {
                                return Err(HtxError::CutOff {
                                    code: CloseCode::FlowControl,
                                    reason: format!(
                                        "{returned} bytes of credit returned for {taken} sent"
                                    ),
                                });
                            }
                            shared.connection_credit.add(credit)
                        }
                        1 => {
                            let credit_target = shared
                                .streams
                                .lock()
                                .expect("streams lock")
                                .get(&opened.stream)
                                .map(|s| s.send_credit.clone());
                            if let Some(target) = credit_target {
                                let window = shared.config.stream_window as u64;
                                if target.available() + credit > window {
                                    return Err(HtxError::CutOff {
                                        code: CloseCode::FlowControl,
                                        reason: format!(
                                            "stream {} credit beyond its {window}-byte window",
                                            opened.stream
                                        ),
                                    });
                                }
                                target.add(credit);
                            }
                        }
                        other => {
                            return Err(HtxError::Malformed {
                                what: "WINDOW_UPDATE",
                                reason: format!("scope {other}"),
                            });
                        }
                    }
                }
                FrameType::Ping => {
                    if opened.payload.len() != 9 {
                        return Err(HtxError::Malformed {
                            what: "PING",
                            reason: "not 9 bytes".into(),
                        });
                    }
                    let token: [u8; 8] = opened.payload[1..].try_into().expect("8 bytes");
                    if opened.payload[0] == 0 {
                        let mut echo = vec![1u8];
                        echo.extend_from_slice(&token);
                        shared.enqueue(Outgoing {
                            kind: FrameType::Ping,
                            stream: 0,
                            payload: echo,
                            class: Class::Echo,
                        })?;
                        shared.pings_echoed.fetch_add(1, Ordering::Relaxed);
                    } else if let Some(waiter) =
                        shared.pings.lock().expect("pings lock").remove(&token)
                    {
                        let _ = waiter.send(());
                    }
                }
                FrameType::KeyUpdate => {
                    let config = &shared.config;
                    if frames_under_key * 2 < config.rekey_frames
                        && bytes_under_key * 2 < config.rekey_bytes
                        && keyed_at.elapsed() * 2 < config.rekey_after
                    {
                        return Err(HtxError::CutOff {
                            code: CloseCode::KeyUpdateFlood,
                            reason: format!(
                                "KEY_UPDATE after {frames_under_key} frames and {bytes_under_key} \
                                 bytes"
                            ),
                        });
                    }
                    (frames_under_key, bytes_under_key) = (0, 0);
                    keyed_at = Instant::now();
                    opener.rekey();
                    shared.key_updates_received.fetch_add(1, Ordering::Relaxed);
                }
                FrameType::Close => {
                    let reason =
                        String::from_utf8_lossy(opened.payload.get(2..).unwrap_or_default())
                            .into_owned();
                    if opened.stream == 0 {
                        let code = match opened.payload.get(..2) {
                            Some(&[a, b]) => CloseCode::from_code(u16::from_be_bytes([a, b])),
                            _ => CloseCode::Protocol,
                        };
                        return Err(match code {
                            CloseCode::Normal => HtxError::Closed(reason),
                            code => HtxError::ClosedByPeer { code, reason },
                        });
                    }
                    if let Some(entry) = shared
                        .streams
                        .lock()
                        .expect("streams lock")
                        .remove(&opened.stream)
                    {
                        let _ = entry
                            .data
                            .send(Err(HtxError::Closed(format!("stream reset: {reason}"))));
                    }
                }
            }
        }
    }
    .await;
    if let Err(error) = result {
        // Tell the peer why, best effort, before failing locally.
        shared.close_with(&error);
    }
    // Keep reading (and discarding) until the peer ends its side or the linger passes: a
    // socket closed with unread input sends a reset, which would destroy the CLOSE (and
    // anything else queued) before the peer could read it.
    let mut sink = vec![0u8; 16 << 10];
    let _ = tokio::time::timeout(shared.config.close_linger, async {
        while let Ok(1..) = reader.read(&mut sink).await {}
    })
    .await;
}

fn on_stream(shared: &Arc<Shared>, id: u32, payload: &[u8]) -> Result<(), HtxError> {
    let (fin, offset, data) = decode_stream(payload)?;
    let mut streams = shared.streams.lock().expect("streams lock");
    if !streams.contains_key(&id) {
        let peer_parity = if shared.client { 0 } else { 1 };
        if id == 0 {
            return Err(HtxError::Malformed {
                what: "STREAM frame",
                reason: "stream 0 carries no data".into(),
            });
        }
        if id % 2 != peer_parity {
            // One of ours: either already closed here (late data is dropped) or never opened.
            if id < shared.next_id.load(Ordering::Relaxed) {
                return Ok(());
            }
            return Err(HtxError::Malformed {
                what: "STREAM frame",
                reason: format!("stream {id} was never opened"),
            });
        }
        let mut highest = shared.highest_peer_stream.lock().expect("stream ids lock");
        if id <= *highest {
            // The peer's stream, already closed here: drop late data.
            return Ok(());
        }
        if streams.len() >= shared.config.max_streams {
            return Err(HtxError::CutOff {
                code: CloseCode::TooManyStreams,
                reason: format!(
                    "more than {} streams open: the peer opens streams without finishing them",
                    shared.config.max_streams
                ),
            });
        }
        *highest = id;
        drop(highest);
        drop(streams);
        let stream = shared.new_stream(id, true);
        let incoming = shared.incoming.lock().expect("incoming lock").clone();
        if let Some(incoming) = incoming {
            let _ = incoming.send(stream);
        }
        streams = shared.streams.lock().expect("streams lock");
    }
    let entry = streams.get_mut(&id).expect("stream registered above");
    if offset != entry.next_offset {
        return Err(HtxError::Malformed {
            what: "STREAM frame",
            reason: format!("offset {offset}, expected {}", entry.next_offset),
        });
    }
    entry.next_offset += data.len() as u64;
    entry.outstanding += data.len() as u64;
    if entry.outstanding > shared.config.stream_window as u64 {
        return Err(HtxError::CutOff {
            code: CloseCode::FlowControl,
            reason: format!("stream {id} exceeded its window"),
        });
    }
    {
        let mut connection = shared.connection_outstanding.lock().expect("window lock");
        *connection += data.len() as u64;
        if *connection > shared.config.connection_window as u64 {
            return Err(HtxError::CutOff {
                code: CloseCode::FlowControl,
                reason: "connection window exceeded".into(),
            });
        }
    }
    let _ = entry.data.send(Ok((data.to_vec(), fin)));
    Ok(())
}

/// One stream of an HTX connection.
pub struct HtxStream {
    id: u32,
    shared: Arc<Shared>,
    data: mpsc::UnboundedReceiver<Chunk>,
    send_credit: Arc<Credit>,
    /// The table entry of a locally opened stream that has not sent yet.
    unregistered: Option<StreamEntry>,
    send_offset: u64,
    /// Bytes read but not yet returned to the peer as credit.
    unacknowledged: u64,
    finished: bool,
    ended: bool,
    /// Received data not yet handed to the reader, from `pending_at` on.
    pending: Vec<u8>,
    pending_at: usize,
}

impl std::fmt::Debug for HtxStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HtxStream")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl HtxStream {
    /// The stream's id (odd when the client opened it; 0 until it first sends).
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Bytes this side has sent on the stream.
    pub fn sent(&self) -> u64 {
        self.send_offset
    }

    /// Take up to `want` bytes of credit on both the stream and the connection, or register to
    /// be woken when either grows.
    fn poll_reserve(&self, cx: &mut Context<'_>, want: usize) -> Poll<Result<usize, HtxError>> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Poll::Ready(Err(self.shared.error()));
        }
        {
            let mut stream = self.send_credit.state.lock().expect("credit lock");
            let mut connection = self
                .shared
                .connection_credit
                .state
                .lock()
                .expect("credit lock");
            let take = (want as u64)
                .min(stream.available)
                .min(connection.available);
            if take > 0 {
                stream.available -= take;
                connection.available -= take;
                return Poll::Ready(Ok(take as usize));
            }
            if stream.available == 0 {
                stream.wait(cx.waker());
            }
            if connection.available == 0 {
                connection.wait(cx.waker());
            }
        }
        // A close that raced the registration has already woken everyone it could see.
        if self.shared.closed.load(Ordering::Acquire) {
            return Poll::Ready(Err(self.shared.error()));
        }
        Poll::Pending
    }

    /// Send up to one frame of `data` as credit allows; returns how much was sent.
    fn poll_send(&mut self, cx: &mut Context<'_>, data: &[u8]) -> Poll<Result<usize, HtxError>> {
        if self.finished {
            return Poll::Ready(Err(HtxError::Closed("stream already finished".into())));
        }
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let n = ready!(self.poll_reserve(cx, data.len().min(self.shared.config.max_chunk)))?;
        let offset = self.send_offset;
        let shared = self.shared.clone();
        shared.send_stream(self, n as u32, || encode_stream(false, offset, &data[..n]))?;
        self.send_offset += n as u64;
        Poll::Ready(Ok(n))
    }

    /// Send `data`, waiting for flow-control credit as needed.
    pub async fn write(&mut self, mut data: &[u8]) -> Result<(), HtxError> {
        if self.finished {
            return Err(HtxError::Closed("stream already finished".into()));
        }
        while !data.is_empty() {
            let n = std::future::poll_fn(|cx| self.poll_send(cx, data)).await?;
            data = &data[n..];
        }
        Ok(())
    }

    /// End the stream (FIN); later writes fail.
    fn finish_now(&mut self) -> Result<(), HtxError> {
        if !self.finished {
            self.finished = true;
            let offset = self.send_offset;
            let shared = self.shared.clone();
            shared.send_stream(self, 0, || encode_stream(true, offset, &[]))?;
        }
        Ok(())
    }

    /// End the stream (FIN).
    pub async fn finish(&mut self) -> Result<(), HtxError> {
        self.finish_now()
    }

    /// Make sure some received data is pending unless the stream ended; `Ok(false)` at its end.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<Result<bool, HtxError>> {
        // Nothing arrives before this side's first frame registers the stream; the channel's
        // sender lives in the stream until then, so this simply waits.
        loop {
            if self.pending_at < self.pending.len() {
                return Poll::Ready(Ok(true));
            }
            if self.ended {
                return Poll::Ready(Ok(false));
            }
            match ready!(self.data.poll_recv(cx)) {
                None => return Poll::Ready(Err(self.shared.error())),
                Some(Err(error)) => return Poll::Ready(Err(error)),
                Some(Ok((data, fin))) => {
                    self.ended = fin;
                    self.acknowledge(data.len() as u64)?;
                    self.pending = data;
                    self.pending_at = 0;
                }
            }
        }
    }

    /// The next data the peer sent, `None` once it finished the stream.
    pub async fn read(&mut self) -> Result<Option<Vec<u8>>, HtxError> {
        if !std::future::poll_fn(|cx| self.poll_fill(cx)).await? {
            return Ok(None);
        }
        let at = std::mem::take(&mut self.pending_at);
        let mut data = std::mem::take(&mut self.pending);
        data.drain(..at);
        Ok(Some(data))
    }

    /// Everything until the peer finishes the stream.
    pub async fn read_to_end(&mut self) -> Result<Vec<u8>, HtxError> {
        let mut all = Vec::new();
        while let Some(chunk) = self.read().await? {
            all.extend_from_slice(&chunk);
        }
        Ok(all)
    }

    /// Return credit for `n` consumed bytes: to the stream in batches of half its window (or at
    /// its end), to the connection in batches of a quarter of its window, independently, so
    /// streams that each hold a little credit can never starve each other.
    fn acknowledge(&mut self, n: u64) -> Result<(), HtxError> {
        self.unacknowledged += n;
        let threshold = (self.shared.config.stream_window as u64 / 2).max(1);
        if self.unacknowledged >= threshold || (self.ended && self.unacknowledged > 0) {
            let credit = self.unacknowledged;
            self.unacknowledged = 0;
            if let Some(entry) = self
                .shared
                .streams
                .lock()
                .expect("streams lock")
                .get_mut(&self.id)
            {
                entry.outstanding -= credit.min(entry.outstanding);
            }
            if !self.ended {
                let mut stream = vec![1u8];
                stream.extend_from_slice(&(credit as u32).to_be_bytes());
                self.shared.send(FrameType::WindowUpdate, self.id, stream)?;
            }
        }
        self.shared.consumed(n)
    }
}

impl Shared {
    /// `n` bytes were consumed by a reader: return connection credit in batches.
    fn consumed(&self, n: u64) -> Result<(), HtxError> {
        let credit = {
            let mut outstanding = self.connection_outstanding.lock().expect("window lock");
            *outstanding -= n.min(*outstanding);
            let mut unacked = self.connection_unacked.lock().expect("window lock");
            *unacked += n;
            if *unacked < (self.config.connection_window as u64 / 4).max(1) {
                return Ok(());
            }
            std::mem::take(&mut *unacked)
        };
        let mut payload = vec![0u8];
        payload.extend_from_slice(&(credit as u32).to_be_bytes());
        self.send(FrameType::WindowUpdate, 0, payload)
    }
}

impl Drop for HtxStream {
    fn drop(&mut self) {
        // A stream dropped before it finished still ends for the peer: send the FIN it would
        // otherwise wait for forever (best effort; the queue is unbounded, so this never blocks).
        if !self.finished && self.unregistered.is_none() {
            let fin = encode_stream(true, self.send_offset, &[]);
            let _ = self.shared.send(FrameType::Stream, self.id, fin);
        }
        // Return the credit of data received but never read (what was read went back through
        // `acknowledge`), so the connection window does not shrink for good, then forget the
        // stream.
        let removed = self
            .shared
            .streams
            .lock()
            .expect("streams lock")
            .remove(&self.id);
        if let Some(entry) = removed {
            let unread = entry.outstanding.saturating_sub(self.unacknowledged);
            let _ = self.shared.consumed(unread);
        }
    }
}

fn io_error(error: HtxError) -> std::io::Error {
    let kind = match error {
        HtxError::Closed(_) | HtxError::ClosedByPeer { .. } => std::io::ErrorKind::ConnectionReset,
        HtxError::CutOff { .. } => std::io::ErrorKind::ConnectionAborted,
        HtxError::Io(_) => std::io::ErrorKind::BrokenPipe,
        _ => std::io::ErrorKind::InvalidData,
    };
    std::io::Error::new(kind, error)
}

/// A stream is a byte pipe: reads return what the peer sent (EOF at its FIN), writes wait for
/// flow-control credit, and shutdown sends FIN.
impl AsyncRead for HtxStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        if ready!(this.poll_fill(cx)).map_err(io_error)? {
            let available = &this.pending[this.pending_at..];
            let n = available.len().min(buf.remaining());
            buf.put_slice(&available[..n]);
            this.pending_at += n;
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for HtxStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.get_mut().poll_send(cx, buf).map_err(io_error)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        // Frames are queued to the connection's writer as they are made.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(self.get_mut().finish_now().map_err(io_error))
    }
}
