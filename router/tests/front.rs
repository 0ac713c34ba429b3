//! The Betanet front over real loopback TCP: access tickets are checked before anything else,
//! used once, and every refusal closes the connection with a reason the visitor can read.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fog_htx::conn::{self, Connection};
use fog_htx::handshake::StaticKey;
use fog_htx::tickets;
use fog_proto::auth::Identity;
use fog_router::front::{self, FRONT_PROLOGUE, Front, hello, visitor_config};
use fog_router::{Gateway, GatewayConfig};
use tokio::net::{TcpListener, TcpStream};

async fn start_front() -> (std::net::SocketAddr, [u8; 32], [u8; 32]) {
    // No control plane: the gateway has no routes, so any admitted visitor is told the app is
    // not routed here; refusals before that are the ticket's.
    let gateway = Gateway::new(GatewayConfig::new("http://127.0.0.1:9".parse().unwrap()));
    let front = Front::new(gateway, &Identity::generate(), false).unwrap();
    let info = front.info("127.0.0.1:0");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(front::serve(listener, front, std::future::pending()));
    let key = |h: &str| hex::decode(h).unwrap().try_into().unwrap();
    (addr, key(&info.key), key(&info.ticket_key))
}

async fn visit(
    addr: std::net::SocketAddr,
    front_key: &[u8; 32],
    client: &StaticKey,
    hello: &[u8],
) -> Connection {
    let socket = TcpStream::connect(addr).await.unwrap();
    conn::connect_with_hello(
        socket,
        client,
        front_key,
        FRONT_PROLOGUE,
        hello,
        visitor_config(),
    )
    .await
    .unwrap()
}

/// Why the front closed the connection.
async fn refusal(connection: &Connection) -> String {
    tokio::time::timeout(Duration::from_secs(5), async {
        while connection.accept().await.is_some() {}
    })
    .await
    .expect("the front closes refused connections");
    connection
        .error()
        .expect("closed with a reason")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tickets_are_checked_once_and_refusals_say_why() {
    let (addr, front_key, ticket_key) = start_front().await;
    let hour = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 3600;
    let app_id = [7u8; 32];
    let client = StaticKey::generate();
    let ticket = tickets::ticket(&client.private, &ticket_key, &ticket_key, hour);

    // A valid ticket is accepted; the app is unknown here, which is the next check.
    let first = visit(addr, &front_key, &client, &hello(&app_id, &ticket)).await;
    let reason = refusal(&first).await;
    assert!(reason.contains("no app with this Betanet name"), "{reason}");

    // The same ticket again (same client key, same hour): a replay.
    let again = visit(addr, &front_key, &client, &hello(&app_id, &ticket)).await;
    let reason = refusal(&again).await;
    assert!(reason.contains("replay"), "{reason}");

    // A ticket made for another client key, a made-up ticket, no hello at all.
    let other = StaticKey::generate();
    let stolen = visit(addr, &front_key, &other, &hello(&app_id, &ticket)).await;
    assert!(refusal(&stolen).await.contains("not valid"));
    let made_up = visit(
        addr,
        &front_key,
        &StaticKey::generate(),
        &hello(&app_id, &[1; 32]),
    )
    .await;
    assert!(refusal(&made_up).await.contains("not valid"));
    let bare = visit(addr, &front_key, &StaticKey::generate(), &[]).await;
    assert!(refusal(&bare).await.contains("hello"));

    // A front key the visitor did not expect fails the handshake itself.
    let socket = TcpStream::connect(addr).await.unwrap();
    let wrong = conn::connect_with_hello(
        socket,
        &StaticKey::generate(),
        &StaticKey::generate().public,
        FRONT_PROLOGUE,
        &hello(&app_id, &ticket),
        visitor_config(),
    )
    .await;
    if let Ok(connection) = wrong {
        // XK's initiator finishes first; the front refuses at its last read.
        refusal(&connection).await;
    }
}
