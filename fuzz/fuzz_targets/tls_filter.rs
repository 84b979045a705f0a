//! The `TlsFilter` fed hostile bytes after a real handshake: a server reads what a genuine
//! client sent (application data in records), followed or interrupted by arbitrary bytes,
//! in arbitrary pieces under an arbitrary plain-bytes limit.
//!
//! Oracles:
//! - the cap: no `decode` call appends more plain bytes than its limit;
//! - integrity: the plain bytes are always a prefix of what the client sent (garbage never
//!   decrypts to data), and all of it when nothing hostile was mixed in;
//! - ending: a failed read marks the filter unable to send (the alert rustls queued is all
//!   that goes out), and once failed it stays failed.
#![no_main]

use std::sync::{Arc, OnceLock};

use arbitrary::Arbitrary;
use bytes::BytesMut;
use getty_codec::filter::{Filter, TlsFilter};
use getty_codec::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use getty_codec::rustls::{ClientConfig, RootCertStore, ServerConfig};
use getty_fuzz::pieces;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    messages: Vec<Vec<u8>>,
    /// Where the garbage goes into the client's records (wrapping), if anywhere.
    at: Option<u16>,
    garbage: Vec<u8>,
    limit: u16,
    sizes: Vec<u8>,
}

/// One certificate for the process: making one per input would cost more than the run.
fn configs() -> &'static (Arc<ServerConfig>, Arc<ClientConfig>) {
    static CONFIGS: OnceLock<(Arc<ServerConfig>, Arc<ClientConfig>)> = OnceLock::new();
    CONFIGS.get_or_init(|| {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let der = CertificateDer::from(cert.cert.der().to_vec());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der()));
        let server = ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![der.clone()], key)
            .unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(der).unwrap();
        let client = ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        (Arc::new(server), Arc::new(client))
    })
}

/// A client and a server that have finished their handshake.
fn connected() -> (TlsFilter, TlsFilter) {
    let (server_config, client_config) = configs();
    let mut server = TlsFilter::server(server_config.clone()).unwrap();
    let mut client = TlsFilter::client(client_config.clone(), "localhost").unwrap();
    let (mut to_server, mut to_client, mut plain) =
        (BytesMut::new(), BytesMut::new(), BytesMut::new());
    for _ in 0..10 {
        if !client.is_handshaking() && !server.is_handshaking() && to_server.is_empty() {
            return (client, server);
        }
        client.flush(&mut to_server).unwrap();
        server.decode(&mut to_server, &mut plain, 1024).unwrap();
        server.flush(&mut to_client).unwrap();
        client.decode(&mut to_client, &mut plain, 1024).unwrap();
    }
    panic!("the handshake did not finish");
}

fuzz_target!(|input: Input| {
    let (mut client, mut server) = connected();
    let mut wire = BytesMut::new();
    let mut sent = Vec::new();
    for message in &input.messages {
        client.encode(message, &mut wire).unwrap();
        sent.extend_from_slice(message);
    }
    client.flush(&mut wire).unwrap();
    let hostile = input.at.is_some() && !input.garbage.is_empty();
    if let Some(at) = input.at {
        let at = usize::from(at) % (wire.len() + 1);
        let tail = wire.split_off(at);
        wire.extend_from_slice(&input.garbage);
        wire.unsplit(tail);
    }

    let limit = usize::from(input.limit).max(1);
    let mut plain = BytesMut::new();
    let mut unread = BytesMut::new();
    let mut failed = false;
    'read: for chunk in pieces(&wire, &input.sizes) {
        unread.extend_from_slice(chunk);
        loop {
            let (wire_before, plain_before) = (unread.len(), plain.len());
            if server.decode(&mut unread, &mut plain, limit).is_err() {
                failed = true;
                break 'read;
            }
            let produced = plain.len() - plain_before;
            assert!(
                produced <= limit,
                "{produced} plain bytes over a limit of {limit}"
            );
            if unread.len() == wire_before && produced == 0 {
                break;
            }
        }
    }
    if failed {
        assert!(!server.can_send(), "failed but still sending");
        // Reading on after the failure (the transport would not) stays failed.
        let _ = server.decode(&mut BytesMut::from(&wire[..]), &mut plain, limit);
        assert!(!server.can_send(), "sending again after a failure");
    }
    assert!(
        sent.starts_with(&plain),
        "plain bytes the client never sent"
    );
    if !failed && !hostile {
        assert_eq!(
            plain.len(),
            sent.len(),
            "the client's data did not all arrive"
        );
    }
});
