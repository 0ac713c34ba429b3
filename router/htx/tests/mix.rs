//! Mix relays over real loopback TCP: a strict 3-hop path delivers, holds traffic for its
//! delays, and none of its relays ever reads the inner bytes; failures are reported clearly.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fog_htx::conn::{self, Config};
use fog_htx::handshake::StaticKey;
use fog_htx::mix::{self, Hop, MixMode, Relay, RelayConfig};
use tokio::net::TcpListener;

/// Start a relay; returns it and everything it reads.
async fn relay(tap: bool) -> (Relay, Arc<Mutex<Vec<u8>>>) {
    let key = StaticKey::generate();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let config = RelayConfig {
        tap: tap.then(|| {
            Arc::new(move |bytes: &[u8]| record.lock().unwrap().extend_from_slice(bytes))
                as mix::Tap
        }),
        ..RelayConfig::default()
    };
    tokio::spawn(mix::serve_relay(
        listener,
        key.clone(),
        config,
        std::future::pending(),
    ));
    (
        Relay {
            addr,
            key: key.public,
        },
        seen,
    )
}

/// An HTX destination that answers every stream with "echo:" and what it read.
async fn destination() -> (String, StaticKey) {
    let key = StaticKey::generate();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server_key = key.clone();
    tokio::spawn(async move {
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            let key = server_key.clone();
            tokio::spawn(async move {
                let (connection, _) = conn::accept(socket, &key, b"fog-test", Config::default())
                    .await
                    .unwrap();
                while let Some(mut stream) = connection.accept().await {
                    tokio::spawn(async move {
                        let data = stream.read_to_end().await.unwrap();
                        let mut answer = b"echo:".to_vec();
                        answer.extend_from_slice(&data);
                        stream.write(&answer).await.unwrap();
                        stream.finish().await.unwrap();
                    });
                }
            });
        }
    });
    (addr, key)
}

async fn exchange(path: &[Hop], addr: &str, key: &StaticKey, message: &[u8]) -> Vec<u8> {
    let pipe = mix::dial(path, addr, Duration::from_secs(5)).await.unwrap();
    let connection = conn::connect(
        pipe,
        &StaticKey::generate(),
        &key.public,
        b"fog-test",
        Config::default(),
    )
    .await
    .unwrap();
    let mut stream = connection.open().unwrap();
    stream.write(message).await.unwrap();
    stream.finish().await.unwrap();
    stream.read_to_end().await.unwrap()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strict_three_hop_path_delivers_and_its_relays_see_only_ciphertext() {
    let mut relays = Vec::new();
    let mut taps = Vec::new();
    for _ in 0..5 {
        let (relay, seen) = relay(true).await;
        relays.push(relay);
        taps.push(seen);
    }
    let (addr, key) = destination().await;
    let path = mix::choose_path(
        MixMode::Strict { hops: 3 },
        b"test-seed",
        &key.public,
        &relays,
    )
    .unwrap();
    assert_eq!(path.len(), 3);
    let delays: Duration = path.iter().map(|h| h.delay).sum();

    let marker = b"fog-secret-marker-0123456789".repeat(40);
    let started = Instant::now();
    let answer = exchange(&path, &addr, &key, &marker).await;
    let elapsed = started.elapsed();
    let mut expected = b"echo:".to_vec();
    expected.extend_from_slice(&marker);
    assert_eq!(answer, expected, "the strict path delivers intact");
    // Every relay held the traffic for its delay on the way there and back.
    assert!(
        elapsed >= delays * 2,
        "round trip {elapsed:?} shorter than twice the path's delays {delays:?}"
    );

    // The relays on the path carried real traffic, yet none of it was readable.
    let on_path: Vec<usize> = path
        .iter()
        .map(|hop| relays.iter().position(|r| *r == hop.relay).unwrap())
        .collect();
    for (i, seen) in taps.iter().enumerate() {
        let seen = seen.lock().unwrap();
        if on_path.contains(&i) {
            assert!(seen.len() > marker.len(), "relay {i} carried the exchange");
        } else {
            assert!(seen.is_empty(), "relay {i} is not on the path");
        }
        assert!(
            !contains(&seen, b"fog-secret-marker"),
            "relay {i} read the inner plaintext"
        );
        assert!(!contains(&seen, b"echo:"), "relay {i} read the answer");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn balanced_and_direct_paths_deliver_and_same_seed_same_path() {
    let mut relays = Vec::new();
    for _ in 0..3 {
        relays.push(relay(false).await.0);
    }
    let (addr, key) = destination().await;
    for mode in [MixMode::Performance, MixMode::Balanced] {
        let path = mix::choose_path(mode, b"seed", &key.public, &relays).unwrap();
        assert_eq!(path.len(), mode.hops());
        assert_eq!(
            path,
            mix::choose_path(mode, b"seed", &key.public, &relays).unwrap()
        );
        let answer = exchange(&path, &addr, &key, b"hi").await;
        assert_eq!(answer, b"echo:hi");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_next_hop_or_a_wrong_relay_key_is_a_clear_error() {
    let (good, _) = relay(false).await;
    // The next hop does not listen.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = closed.local_addr().unwrap().to_string();
    drop(closed);
    let path = [Hop {
        relay: good.clone(),
        delay: Duration::ZERO,
    }];
    let err = match mix::dial(&path, &dead, Duration::from_secs(5)).await {
        Err(err) => err,
        Ok(_) => panic!("dialled a dead address"),
    };
    assert!(err.to_string().contains("refused to forward"), "{err}");
    // A relay that is not who the path says fails the handshake.
    let impostor = [Hop {
        relay: Relay {
            addr: good.addr.clone(),
            key: StaticKey::generate().public,
        },
        delay: Duration::ZERO,
    }];
    assert!(
        mix::dial(&impostor, &dead, Duration::from_secs(5))
            .await
            .is_err()
    );
}

/// Allows the addresses it holds.
struct Only(Vec<String>);

impl mix::Destinations for Only {
    fn allows<'a>(
        &'a self,
        addr: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + 'a>> {
        Box::pin(async move {
            if self.0.iter().any(|a| a == addr) {
                Ok(())
            } else {
                Err(format!("{addr} is not a known destination"))
            }
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_forwards_only_to_the_destinations_it_allows() {
    let (addr, key) = destination().await;
    // Something else listening on this machine that the relay must not reach.
    let other = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let other_addr = other.local_addr().unwrap().to_string();
    let relay_key = StaticKey::generate();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay = Relay {
        addr: listener.local_addr().unwrap().to_string(),
        key: relay_key.public,
    };
    let config = RelayConfig {
        destinations: Some(Arc::new(Only(vec![addr.clone()]))),
        ..RelayConfig::default()
    };
    tokio::spawn(mix::serve_relay(
        listener,
        relay_key,
        config,
        std::future::pending(),
    ));
    let path = [Hop {
        relay,
        delay: Duration::ZERO,
    }];
    let err = match mix::dial(&path, &other_addr, Duration::from_secs(5)).await {
        Err(err) => err,
        Ok(_) => panic!("the relay forwarded to an address it does not allow"),
    };
    assert!(
        err.to_string()
            .contains(&format!("{other_addr} is not a known destination")),
        "{err}"
    );
    let reached = tokio::time::timeout(Duration::from_millis(200), other.accept()).await;
    assert!(
        reached.is_err(),
        "the relay connected to the refused address"
    );
    // The allowed destination still works through the same relay.
    assert_eq!(exchange(&path, &addr, &key, b"ok").await, b"echo:ok");
}
