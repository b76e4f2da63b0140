//! The WAN emulation under real quinn endpoints: a QUIC handshake pays the
//! emulated round trip, and quinn's RTT estimate reads it.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use testkit::netem::{LinkProfile, Wan};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[tokio::test]
async fn quic_handshake_pays_the_emulated_round_trip() {
    // A real quinn connection between two emulated sockets 25 ms apart
    // each way: the handshake takes at least one 50 ms round trip and
    // quinn's RTT estimate lands near 50 ms.
    let wan = Wan::new(vec![]).unwrap();
    wan.set_link(ip("127.0.0.1"), ip("127.0.0.2"), LinkProfile::delay(25.0))
        .unwrap();
    let pki = edge_node::tls::DevPki::new().unwrap();
    let tls = pki.material(&["edge.test".to_string()]).unwrap();
    let server_sock = std::net::UdpSocket::bind("127.0.0.2:0").unwrap();
    server_sock.set_nonblocking(true).unwrap();
    let server_addr = server_sock.local_addr().unwrap();
    let server = quinn::Endpoint::new_with_abstract_socket(
        quinn::EndpointConfig::default(),
        Some(
            tls.server_config(
                control::certs::ClientCerts::new(
                    pki.client_cert(&["edge.test".to_string()]).unwrap(),
                )
                .unwrap(),
            )
            .unwrap(),
        ),
        wan.wrap(server_sock).unwrap(),
        Arc::new(quinn::TokioRuntime),
    )
    .unwrap();
    let client_sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    client_sock.set_nonblocking(true).unwrap();
    let mut client = quinn::Endpoint::new_with_abstract_socket(
        quinn::EndpointConfig::default(),
        None,
        wan.wrap(client_sock).unwrap(),
        Arc::new(quinn::TokioRuntime),
    )
    .unwrap();
    client.set_default_client_config(tls.relay_client_config().unwrap());
    let accept = tokio::spawn(async move { server.accept().await.unwrap().await.unwrap() });
    let started = std::time::Instant::now();
    let conn = client
        .connect(server_addr, "edge.test")
        .unwrap()
        .await
        .unwrap();
    let took = started.elapsed();
    let _server_conn = accept.await.unwrap();
    assert!(took >= Duration::from_millis(50), "handshake took {took:?}");
    let rtt = conn.rtt();
    assert!(
        (Duration::from_millis(45)..Duration::from_millis(80)).contains(&rtt),
        "rtt {rtt:?}"
    );
}
