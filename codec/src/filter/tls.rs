//! TLS as a filter: rustls is sans-IO (records in, records out), so it sits below the codec
//! like any other filter, with the socket and the reactor elsewhere.

use std::io::{self, Read};
use std::sync::Arc;

use bytes::{Buf, BufMut, BytesMut};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, Connection, ServerConfig, ServerConnection};

use super::{Filter, FilterError};

/// Plaintext taken out of rustls per step.
const STEP: usize = 16 * 1024;

/// Room in the plaintext buffer worth filling before growing it: what a stream transport
/// leaves free before each read.
const MIN_SPARE: usize = 4 * 1024;

/// One TLS connection (client or server side) as a filter: wire bytes are TLS records,
/// plain bytes are the application data. The handshake runs through the same calls: while
/// [`is_handshaking`](Filter::is_handshaking), the transport holds the session's writes
/// back and flushes only the handshake's own records.
///
/// Certificates are verified as the rustls configuration says: a client built with
/// `ClientConfig::builder().with_root_certificates(..)` checks the server's chain and name.
///
/// ```
/// use std::sync::Arc;
/// use bytes::BytesMut;
/// use getty_codec::filter::{Filter, TlsFilter};
/// use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
///
/// // A self-signed certificate for "localhost", made for this example.
/// let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
/// let der = CertificateDer::from(cert.cert.der().to_vec());
/// let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der()));
/// let server_config = rustls::ServerConfig::builder()
///     .with_no_client_auth()
///     .with_single_cert(vec![der.clone()], key)
///     .unwrap();
/// let mut roots = rustls::RootCertStore::empty();
/// roots.add(der).unwrap();
/// let client_config = rustls::ClientConfig::builder()
///     .with_root_certificates(roots)
///     .with_no_client_auth();
///
/// let mut server = TlsFilter::server(Arc::new(server_config)).unwrap();
/// let mut client = TlsFilter::client(Arc::new(client_config), "localhost").unwrap();
/// // Shuttle records between the two until the handshake is done.
/// let (mut to_server, mut to_client, mut plain) = (BytesMut::new(), BytesMut::new(), BytesMut::new());
/// while client.is_handshaking() || server.is_handshaking() {
///     client.flush(&mut to_server).unwrap();
///     server.decode(&mut to_server, &mut plain, 1024).unwrap();
///     server.flush(&mut to_client).unwrap();
///     client.decode(&mut to_client, &mut plain, 1024).unwrap();
/// }
/// client.encode(b"hello over tls", &mut to_server).unwrap();
/// client.flush(&mut to_server).unwrap();
/// assert!(!to_server.windows(5).any(|w| w == b"hello")); // encrypted on the wire
/// server.decode(&mut to_server, &mut plain, 1024).unwrap();
/// assert_eq!(&plain[..], b"hello over tls");
/// ```
pub struct TlsFilter {
    connection: Connection,
    /// The peer sent something TLS cannot accept: rustls queued a fatal alert, and no
    /// application data may follow it.
    failed: bool,
    /// The peer sent `close_notify`: its stream has ended.
    peer_closed: bool,
}

impl TlsFilter {
    /// The server side of a connection.
    ///
    /// See the [type-level example](TlsFilter).
    pub fn server(config: Arc<ServerConfig>) -> Result<Self, FilterError> {
        let connection = ServerConnection::new(config)
            .map_err(|e| FilterError::internal("tls", e))?
            .into();
        Ok(Self::with(connection))
    }

    /// The client side of a connection to `server_name` (a DNS name or an IP address): the
    /// name is sent as SNI and the server's certificate must be valid for it.
    ///
    /// See the [type-level example](TlsFilter).
    pub fn client(config: Arc<ClientConfig>, server_name: &str) -> Result<Self, FilterError> {
        let name = ServerName::try_from(server_name.to_owned()).map_err(|e| {
            FilterError::internal("tls", format!("server name {server_name:?}: {e}"))
        })?;
        let connection = ClientConnection::new(config, name)
            .map_err(|e| FilterError::internal("tls", e))?
            .into();
        Ok(Self::with(connection))
    }

    fn with(mut connection: Connection) -> Self {
        // The transport bounds what it hands over (a batch at a time) and writes the
        // records out after every call, so rustls need not bound it again.
        connection.set_buffer_limit(None);
        TlsFilter {
            connection,
            failed: false,
            peer_closed: false,
        }
    }

    /// The rustls connection: the peer's certificates, the negotiated ALPN protocol and
    /// version, the SNI name a client asked for (on the server side), ...
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    /// # let der = rustls::pki_types::CertificateDer::from(cert.cert.der().to_vec());
    /// # let mut roots = rustls::RootCertStore::empty();
    /// # roots.add(der).unwrap();
    /// let config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    /// let tls = getty_codec::filter::TlsFilter::client(Arc::new(config), "localhost").unwrap();
    /// assert!(tls.connection().peer_certificates().is_none()); // no handshake yet
    /// ```
    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    /// Writes every record rustls has ready to `wire`.
    fn write_records(&mut self, wire: &mut BytesMut) -> Result<(), FilterError> {
        let mut sink = wire.writer();
        while self.connection.wants_write() {
            self.connection
                .write_tls(&mut sink)
                .map_err(|e| FilterError::internal("tls", e))?;
        }
        Ok(())
    }

    /// Moves decrypted bytes into `plain`, at most `room` of them. Returns how many.
    ///
    /// Only into the capacity `plain` has while it has a worthwhile amount ([`MIN_SPARE`]),
    /// else by growing it, if `grow` is set: the transport sizes its read buffer for the
    /// frame it is reading (with room to spare), and a step past the end would reallocate
    /// a large frame's buffer at twice its size (and copy all of it). A buffer without room
    /// grows only when nothing was taken in this call yet, so that the caller, handed what
    /// fitted, makes room its own way first; and it does grow then, so that every call
    /// takes something when there is plaintext.
    fn take_plaintext(
        &mut self,
        plain: &mut BytesMut,
        room: usize,
        grow: bool,
    ) -> Result<usize, FilterError> {
        let start = plain.len();
        let spare = plain.capacity() - start;
        let step = match room.min(STEP) {
            step if spare >= step.min(MIN_SPARE) => step.min(spare),
            step if grow => step,
            _ => return Ok(0),
        };
        plain.resize(start + step, 0);
        let result = self.connection.reader().read(&mut plain[start..]);
        let n = match result {
            Ok(n) => n,
            // No plaintext now, or the peer's close_notify was seen (Ok(0) then): the
            // socket's EOF ends the session.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            // EOF without close_notify: a truncation, but the socket's EOF says the rest.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => 0,
            Err(e) => {
                plain.truncate(start);
                self.failed = true;
                return Err(FilterError::malformed("tls", e));
            }
        };
        plain.truncate(start + n);
        Ok(n)
    }

    fn feed_records(&mut self, wire: &mut BytesMut) -> Result<usize, FilterError> {
        let mut records = &wire[..];
        let taken = self.connection.read_tls(&mut records).map_err(|e| {
            self.failed = true;
            FilterError::malformed("tls", e)
        })?;
        wire.advance(taken);
        let processed = self.connection.process_new_packets();
        if let Ok(state) = &processed {
            self.peer_closed |= state.peer_has_closed();
        }
        if let Err(e) = processed {
            // rustls has queued the alert RFC 8446 §6 asks for (decode_error,
            // bad_record_mac, ...): `flush` writes it.
            self.failed = true;
            return Err(
                if self.connection.is_handshaking() || refuses_handshake(&e) {
                    FilterError::handshake("tls", e)
                } else {
                    FilterError::malformed("tls", e)
                },
            );
        }
        Ok(taken)
    }
}

/// Whether `error` is the peer's refusal of the handshake, even one that came after this
/// side's part of it was done: under TLS 1.3 a client has finished when the server checks
/// its certificate, and the server's alert (certificate required, unknown CA, ...) comes
/// after. It is still a failed handshake (a client's dial failed), not a broken stream.
fn refuses_handshake(error: &rustls::Error) -> bool {
    use rustls::AlertDescription as Alert;
    matches!(
        error,
        rustls::Error::AlertReceived(
            Alert::HandshakeFailure
                | Alert::BadCertificate
                | Alert::UnsupportedCertificate
                | Alert::CertificateRevoked
                | Alert::CertificateExpired
                | Alert::CertificateUnknown
                | Alert::UnknownCA
                | Alert::AccessDenied
                | Alert::CertificateRequired
                // RFC 8446 §6.2: a handshake's signature or Finished failed to verify (a
                // certificate signed by another key).
                | Alert::DecryptError
        )
    )
}

impl Filter for TlsFilter {
    fn decode(
        &mut self,
        wire: &mut BytesMut,
        plain: &mut BytesMut,
        limit: usize,
    ) -> Result<(), FilterError> {
        let mut produced = 0;
        loop {
            if produced < limit {
                produced += self.take_plaintext(plain, limit - produced, produced == 0)?;
            }
            // rustls stops wanting records while its plaintext buffer is full: then the
            // rest waits in `wire` until the codec has made room.
            let fed = if !wire.is_empty() && self.connection.wants_read() {
                self.feed_records(wire)?
            } else {
                0
            };
            if fed == 0 {
                if produced < limit {
                    self.take_plaintext(plain, limit - produced, produced == 0)?;
                }
                return Ok(());
            }
        }
    }

    fn encode(&mut self, plain: &[u8], wire: &mut BytesMut) -> Result<(), FilterError> {
        if self.failed {
            return Err(FilterError::internal(
                "tls",
                "no application data may follow a fatal alert",
            ));
        }
        io::Write::write_all(&mut self.connection.writer(), plain)
            .map_err(|e| FilterError::internal("tls", e))?;
        self.write_records(wire)
    }

    fn flush(&mut self, wire: &mut BytesMut) -> Result<(), FilterError> {
        self.write_records(wire)
    }

    fn is_handshaking(&self) -> bool {
        self.connection.is_handshaking()
    }

    fn can_send(&self) -> bool {
        !self.failed
    }

    fn peer_closed(&self) -> Option<bool> {
        Some(self.peer_closed)
    }

    fn close(&mut self, wire: &mut BytesMut) {
        self.connection.send_close_notify();
        let _ = self.write_records(wire);
    }
}
