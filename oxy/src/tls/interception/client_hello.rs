//! Reads the server name and ALPN list out of a TLS ClientHello handshake message (from
//! TLS records on TCP, or CRYPTO frames in a QUIC Initial). Hostile bytes give an error,
//! never a panic.

/// What a ClientHello asks for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientHello {
    /// The server name (SNI), lowercase ASCII; `None` when the client sent none.
    pub sni: Option<String>,
    /// The application protocols offered (ALPN), in the client's order.
    pub alpn: Vec<String>,
}

/// Why no ClientHello came out of some bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HelloError {
    /// The message continues past the bytes given.
    Incomplete,
    /// The bytes are not a ClientHello.
    Malformed(&'static str),
}

/// The biggest ClientHello accepted.
const MAX_HELLO: usize = 64 * 1024;
/// The `server_name` extension.
const SERVER_NAME: u16 = 0;
/// The `application_layer_protocol_negotiation` extension.
const ALPN: u16 = 16;

/// Parses `handshake`, which starts with a handshake message header (type, 24-bit
/// length) that must be a ClientHello.
pub fn parse_client_hello(handshake: &[u8]) -> Result<ClientHello, HelloError> {
    let mut header = Reader(handshake);
    let kind = header.u8().ok_or(HelloError::Incomplete)?;
    if kind != 1 {
        return Err(HelloError::Malformed("not a ClientHello"));
    }
    let length = header.bytes(3).ok_or(HelloError::Incomplete)?;
    let length =
        usize::from(length[0]) << 16 | usize::from(length[1]) << 8 | usize::from(length[2]);
    if length > MAX_HELLO {
        return Err(HelloError::Malformed("ClientHello too long"));
    }
    let body = header.bytes(length).ok_or(HelloError::Incomplete)?;
    parse_body(Reader(body)).ok_or(HelloError::Malformed("malformed ClientHello"))
}

fn parse_body(mut body: Reader<'_>) -> Option<ClientHello> {
    body.bytes(2 + 32)?; // legacy_version, random
    body.vector(1)?; // legacy_session_id
    body.vector(2)?; // cipher_suites
    body.vector(1)?; // legacy_compression_methods
    let mut hello = ClientHello::default();
    if body.0.is_empty() {
        return Some(hello);
    }
    let mut extensions = Reader(body.vector(2)?);
    while !extensions.0.is_empty() {
        let kind = extensions.u16()?;
        let data = Reader(extensions.vector(2)?);
        match kind {
            SERVER_NAME => hello.sni = server_name(data)?,
            ALPN => hello.alpn = protocols(data)?,
            _ => {}
        }
    }
    Some(hello)
}

/// The `host_name` entry of a `server_name` extension.
fn server_name(mut data: Reader<'_>) -> Option<Option<String>> {
    let mut list = Reader(data.vector(2)?);
    while !list.0.is_empty() {
        let kind = list.u8()?;
        let name = list.vector(2)?;
        if kind == 0 {
            let valid = !name.is_empty()
                && name.len() <= 253
                && name
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
            if !valid {
                return None;
            }
            return Some(Some(String::from_utf8_lossy(name).to_ascii_lowercase()));
        }
    }
    Some(None)
}

/// The protocol names of an ALPN extension.
fn protocols(mut data: Reader<'_>) -> Option<Vec<String>> {
    let mut list = Reader(data.vector(2)?);
    let mut names = Vec::new();
    while !list.0.is_empty() {
        let name = list.vector(1)?;
        if name.is_empty() {
            return None;
        }
        names.push(String::from_utf8_lossy(name).into_owned());
    }
    Some(names)
}

/// Reads big-endian fields off the front of a slice.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let (taken, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(taken)
    }

    fn u8(&mut self) -> Option<u8> {
        self.bytes(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.bytes(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    /// A vector with a `width`-byte (1 or 2) length prefix.
    fn vector(&mut self, width: usize) -> Option<&'a [u8]> {
        let length = match width {
            1 => usize::from(self.u8()?),
            _ => usize::from(self.u16()?),
        };
        self.bytes(length)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello with the given extensions (type, data).
    pub(crate) fn client_hello(extensions: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut body = vec![3, 3];
        body.extend([7; 32]);
        body.extend([0]); // session id
        body.extend([0, 2, 0x13, 0x01]); // one cipher suite
        body.extend([1, 0]); // null compression
        let mut ext = Vec::new();
        for (kind, data) in extensions {
            ext.extend(kind.to_be_bytes());
            ext.extend(u16::try_from(data.len()).unwrap().to_be_bytes());
            ext.extend(data);
        }
        body.extend(u16::try_from(ext.len()).unwrap().to_be_bytes());
        body.extend(ext);
        let mut message = vec![1];
        message.extend(&u32::try_from(body.len()).unwrap().to_be_bytes()[1..]);
        message.extend(body);
        message
    }

    pub(crate) fn sni(name: &str) -> (u16, Vec<u8>) {
        let mut entry = vec![0];
        entry.extend(u16::try_from(name.len()).unwrap().to_be_bytes());
        entry.extend(name.as_bytes());
        let mut data = u16::try_from(entry.len()).unwrap().to_be_bytes().to_vec();
        data.extend(entry);
        (SERVER_NAME, data)
    }

    pub(crate) fn alpn(names: &[&str]) -> (u16, Vec<u8>) {
        let mut list = Vec::new();
        for name in names {
            list.push(u8::try_from(name.len()).unwrap());
            list.extend(name.as_bytes());
        }
        let mut data = u16::try_from(list.len()).unwrap().to_be_bytes().to_vec();
        data.extend(list);
        (ALPN, data)
    }

    #[test]
    fn server_name_and_protocols() {
        let hello = client_hello(&[sni("Example.COM"), (23, vec![]), alpn(&["h2", "http/1.1"])]);
        let parsed = parse_client_hello(&hello).unwrap();
        assert_eq!(parsed.sni.as_deref(), Some("example.com"));
        assert_eq!(parsed.alpn, ["h2", "http/1.1"]);
    }

    #[test]
    fn every_truncation_is_incomplete_and_garbage_is_refused() {
        let hello = client_hello(&[sni("example.com"), alpn(&["h2"])]);
        for end in 0..hello.len() {
            assert_eq!(
                parse_client_hello(&hello[..end]),
                Err(HelloError::Incomplete)
            );
        }
        assert!(matches!(
            parse_client_hello(&[2, 0, 0, 0]),
            Err(HelloError::Malformed(_))
        ));
        let mut bad = hello.clone();
        let last = bad.len() - 1;
        bad[last - 3] = 0xff; // an ALPN length past the end
        assert!(parse_client_hello(&bad).is_err());
        let no_names = client_hello(&[sni("bad name")]);
        assert!(matches!(
            parse_client_hello(&no_names),
            Err(HelloError::Malformed(_))
        ));
    }

    #[test]
    fn no_extensions() {
        let hello = client_hello(&[]);
        assert_eq!(parse_client_hello(&hello), Ok(ClientHello::default()));
    }
}
