//! Many WebTransport clients on one UDP socket (`proto::client::SharedEndpoint`),
//! the way the load generator holds thousands of sessions.

use e2e::{Server, Via};
use proto::client::{Client, SharedEndpoint, Trust};
use proto::{ServerMessage, Signal};

const BIN: &str = env!("CARGO_BIN_EXE_signal-server");

#[tokio::test]
async fn clients_sharing_one_endpoint_exchange_an_offer_and_answer() {
    let server = Server::start(BIN, &[]);
    let trust = Trust::CertificateHashes(server.hashes.clone());
    let endpoint = SharedEndpoint::new(&trust, Some("127.0.0.1".parse().expect("ip"))).expect("endpoint");
    let mut clients = Vec::new();
    for user in ["alice", "bob", "carol"] {
        let opts = server
            .options(Via::WebTransport, &server.token(user))
            .endpoint(endpoint.clone());
        clients.push(
            Client::connect(opts)
                .await
                .expect("connect through the shared endpoint"),
        );
    }
    assert_eq!(endpoint.open_connections(), 3, "one socket, three connections");

    let mut alice_room = clients[0].join("shared").await.expect("alice joins");
    let mut bob_room = clients[1].join("shared").await.expect("bob joins");
    let bob = clients[1].peer_id();
    let alice = clients[0].peer_id();
    alice_room
        .signal(
            bob,
            Signal::Offer {
                sdp: "v=0 offer".into(),
            },
        )
        .await
        .expect("send offer");
    let got = loop {
        match bob_room
            .recv_timeout(std::time::Duration::from_secs(10))
            .await
            .expect("bob hears")
        {
            ServerMessage::Signal { from, signal } => break (from, signal),
            _ => continue,
        }
    };
    assert_eq!(
        got,
        (
            alice,
            Signal::Offer {
                sdp: "v=0 offer".into()
            }
        )
    );
    bob_room
        .signal(
            alice,
            Signal::Answer {
                sdp: "v=0 answer".into(),
            },
        )
        .await
        .expect("send answer");
    let got = loop {
        match alice_room
            .recv_timeout(std::time::Duration::from_secs(10))
            .await
            .expect("alice hears")
        {
            ServerMessage::Signal { from, signal } => break (from, signal),
            _ => continue,
        }
    };
    assert_eq!(
        got,
        (
            bob,
            Signal::Answer {
                sdp: "v=0 answer".into()
            }
        )
    );

    // Closing one client leaves the others' connections on the socket open.
    drop(alice_room);
    clients.remove(0).close();
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while endpoint.open_connections() != 2 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the closed client's connection ends, the others stay");
}
