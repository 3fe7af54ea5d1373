//! HTTP/1.1 header fields as bytes, for the paths that read and write HTTP/1.1 without
//! hyper (`h1_connect.rs`, `h1_exchange.rs`): the fields httparse read, as a
//! `HeaderMap` whose values share the bytes read, and a `HeaderMap` written back as
//! field lines.

use bytes::{BufMut, Bytes};
use http::{HeaderMap, HeaderName, HeaderValue};

/// The fields httparse read from `section` as a map, their values sharing its bytes;
/// `None` for a name or value the `http` crate refuses, or a name `refused` picks.
pub(crate) fn field_map(
    section: &Bytes,
    fields: &[httparse::Header<'_>],
    refused: impl Fn(&HeaderName) -> bool,
) -> Option<HeaderMap> {
    let mut map = HeaderMap::with_capacity(fields.len());
    for field in fields {
        let name = HeaderName::from_bytes(field.name.as_bytes()).ok()?;
        if refused(&name) {
            return None;
        }
        let value = HeaderValue::from_maybe_shared(section.slice_ref(field.value)).ok()?;
        map.append(name, value);
    }
    Some(map)
}

/// Writes `headers` to `head` as field lines (`name: value` and CRLF, names in lower
/// case, as hyper writes them), without those `left_out` picks.
pub(crate) fn write_fields(
    head: &mut impl BufMut,
    headers: &HeaderMap,
    left_out: impl Fn(&HeaderName) -> bool,
) {
    for (name, value) in headers {
        if left_out(name) {
            continue;
        }
        head.put_slice(name.as_str().as_bytes());
        head.put_slice(b": ");
        head.put_slice(value.as_bytes());
        head.put_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_read_share_the_bytes_and_are_written_back_as_lines() {
        let section = Bytes::from_static(b"Host: a\r\nX-Two: 2\r\nX-Two: 3\r\n\r\n");
        let mut fields = [httparse::EMPTY_HEADER; 4];
        let httparse::Status::Complete((_, fields)) =
            httparse::parse_headers(&section, &mut fields).unwrap()
        else {
            panic!("a whole section");
        };
        let map = field_map(&section, fields, |_| false).unwrap();
        assert_eq!(map.get_all("x-two").iter().count(), 2);
        assert!(field_map(&section, fields, |name| name == "x-two").is_none());

        let mut head = Vec::new();
        write_fields(&mut head, &map, |name| name == http::header::HOST);
        assert_eq!(head, b"x-two: 2\r\nx-two: 3\r\n");
    }
}
