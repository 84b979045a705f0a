//! A handler's pause meets a TLS handshake and a burst of handle writes: the handshake
//! still completes, and a resume from another thread is never refused (both once failed,
//! found by a hostile review).

mod common;

use std::net::TcpStream;
use std::sync::mpsc::{self, Sender};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use getty::codec::rustls;
use getty::codec::{Bytes, LengthFieldCodec};
use getty::tcp::TcpServer;
use getty::{tls, Handler, Session};

const LIMIT: Duration = Duration::from_secs(60);

fn certs() -> (String, String) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    (made.cert.pem(), made.signing_key.serialize_pem())
}

struct PauseAtOpen {
    handles: Sender<getty::SessionHandle<LengthFieldCodec>>,
    events: Sender<String>,
}
impl Handler<LengthFieldCodec> for PauseAtOpen {
    fn on_open(&mut self, s: &mut Session<LengthFieldCodec>) -> std::io::Result<()> {
        s.pause_reading();
        let _ = self.handles.send(s.handle().unwrap());
        Ok(())
    }
    fn on_message(&mut self, s: &mut Session<LengthFieldCodec>, msg: Bytes) {
        let _ = self.events.send(format!("message {:?}", msg));
        let _ = s.write(msg);
    }
    fn on_error(&mut self, _: &mut Session<LengthFieldCodec>, e: &getty::Error) {
        let _ = self.events.send(format!("error {e}"));
    }
    fn on_close(&mut self, _: &mut Session<LengthFieldCodec>) {
        let _ = self.events.send("close".into());
    }
}

/// A handler that pauses in on_open (waiting for offloaded work) still lets the TLS
/// handshake complete: only delivery waits for the resume.
#[test]
fn tls_handshake_completes_while_the_handler_paused() {
    watchdog(LIMIT, || {
        let (chain, key) = certs();
        let (htx, handles) = mpsc::channel();
        let (etx, events) = mpsc::channel();
        let server = TcpServer::builder()
            .tls(tls::server_config(chain.as_bytes(), key.as_bytes()).unwrap())
            .session_options(
                getty::SessionOptions::default().handshake_timeout(Duration::from_secs(2)),
            )
            .bind("127.0.0.1:0", move |_| {
                Ok((
                    LengthFieldCodec::default(),
                    PauseAtOpen {
                        handles: htx.clone(),
                        events: etx.clone(),
                    },
                ))
            })
            .unwrap();
        let addr = server.local_addr();
        let server = Running::serve("pause-tls-pause", server);
        let config: Arc<rustls::ClientConfig> = tls::client_config(chain.as_bytes()).unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut conn = rustls::ClientConnection::new(config, name).unwrap();
        let mut sock: TcpStream = connect(addr);
        sock.set_read_timeout(Some(Duration::from_secs(4))).unwrap();
        let handle = handles.recv_timeout(STEP).unwrap();
        // The handshake, while the server's handler holds its pause (never resumed here
        // until the handshake is done or has failed).
        let mut outcome = Ok(());
        while conn.is_handshaking() {
            if let Err(e) = conn.complete_io(&mut sock) {
                outcome = Err(e);
                break;
            }
        }
        let seen: Vec<String> = events.try_iter().collect();
        let _ = handle.resume_reading();
        eprintln!("handshake outcome while paused: {outcome:?}; server events: {seen:?}");
        assert!(
            outcome.is_ok(),
            "the TLS handshake did not complete while the handler paused: {outcome:?}, server: {seen:?}"
        );
        server.stop();
    });
}

struct PauseOnGo {
    handles: Sender<getty::SessionHandle<LengthFieldCodec>>,
    events: Sender<String>,
}
impl Handler<LengthFieldCodec> for PauseOnGo {
    fn on_message(&mut self, s: &mut Session<LengthFieldCodec>, msg: Bytes) {
        if &msg[..] == b"go" {
            s.pause_reading();
            let _ = self.handles.send(s.handle().unwrap());
        } else {
            let _ = self.events.send(format!("message {:?}", msg));
            let _ = s.write(msg);
        }
    }
}

/// The pattern of `Session::pause_reading`'s own doc example: pause in on_message, write
/// the results from another thread through the handle, then `let _ =
/// handle.resume_reading()`. With the reactor behind the writer (4,096 writes in flight),
/// the resume must still arrive: refused, it would leave the session paused for ever (a
/// paused session is not read-idle, so nothing would end it).
#[test]
fn resume_after_a_burst_of_handle_writes_is_not_lost() {
    watchdog(LIMIT, || {
        let (htx, handles) = mpsc::channel();
        let (etx, events) = mpsc::channel();
        let server = TcpServer::builder()
            .bind("127.0.0.1:0", move |_| {
                Ok((
                    LengthFieldCodec::default(),
                    PauseOnGo {
                        handles: htx.clone(),
                        events: etx.clone(),
                    },
                ))
            })
            .unwrap();
        let addr = server.local_addr();
        let server = Running::serve("pause-resume", server);
        let mut peer = connect(addr);
        peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        std::io::Write::write_all(&mut peer, &frame(b"go")).unwrap();
        let handle = handles.recv_timeout(STEP).unwrap();
        // The reactor is busy for a moment (other sessions' work), as the worker finishes.
        server
            .handle()
            .execute(|_| std::thread::sleep(Duration::from_millis(500)))
            .unwrap();
        let mut written = 0;
        for _ in 0..4096 {
            if handle.write(Bytes::from_static(b"w")).is_ok() {
                written += 1;
            }
        }
        let resumed = handle.resume_reading(); // the doc example ignores this result
        eprintln!("{written} writes posted; resume_reading: {resumed:?}");
        for _ in 0..written {
            assert_eq!(read_frame(&mut peer), b"w");
        }
        std::io::Write::write_all(&mut peer, &frame(b"next")).unwrap();
        let mut header = [0u8; 4];
        let got = std::io::Read::read_exact(&mut peer, &mut header);
        assert!(
            got.is_ok(),
            "the session stayed paused after the worker's resume ({resumed:?}): {got:?}; \
             server events: {:?}",
            events.try_iter().collect::<Vec<_>>()
        );
        server.stop();
    });
}
