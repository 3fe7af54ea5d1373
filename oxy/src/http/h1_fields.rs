//! HTTP/1.1 heads as bytes, for the paths that read and write HTTP/1.1 without hyper
//! (`h1_server.rs`, `h1_connect.rs`, `h1_exchange.rs`): where a head ends, the fields
//! httparse read as a `HeaderMap` whose values share the bytes read, a `HeaderMap`
//! written back as field lines, and a response's status line and `Date`.

use bytes::{BufMut, Bytes};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri, Version};
use memchr::memmem::Finder;
use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::sync::LazyLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// Room a map of fields read has for those the pipeline adds (`Via`, say), so that it
/// does not grow then.
const ADDED_FIELDS: usize = 4;

/// The HTTP/1.1 request head at the start of `read` as request parts, and its length:
/// its target and field values share `read`'s bytes, its fields (at most `MAX`) fill
/// `map` (see [`field_map`]). `None` for a head that is incomplete, malformed or of
/// another version, or that has a field `refused` picks: hyper then reads the same
/// bytes and answers them as it always does.
pub(crate) fn request_head<const MAX: usize>(
    read: &Bytes,
    map: HeaderMap,
    refused: impl Fn(&HeaderName) -> bool,
) -> Option<(http::request::Parts, usize)> {
    let mut fields = [const { MaybeUninit::uninit() }; MAX];
    let mut parsed = httparse::Request::new(&mut []);
    let parsed_head = httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut parsed,
        read,
        &mut fields,
    );
    let httparse::Status::Complete(length) = parsed_head.ok()? else {
        return None;
    };
    if parsed.version != Some(1) {
        return None;
    }
    let method = Method::from_bytes(parsed.method?.as_bytes()).ok()?;
    let uri = Uri::from_maybe_shared(read.slice_ref(parsed.path?.as_bytes())).ok()?;
    let headers = field_map(read, parsed.headers, map, refused)?;
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.method = method;
    parts.uri = uri;
    parts.version = Version::HTTP_11;
    parts.headers = headers;
    Some((parts, length))
}

/// The fields httparse read from `section` added to `map` (empty: a new one, or one
/// whose room is used again), their values sharing its bytes; `None` for a name or
/// value the `http` crate refuses, or a name `refused` picks.
pub(crate) fn field_map(
    section: &Bytes,
    fields: &[httparse::Header<'_>],
    mut map: HeaderMap,
    refused: impl Fn(&HeaderName) -> bool,
) -> Option<HeaderMap> {
    map.reserve(fields.len() + ADDED_FIELDS);
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
        if !left_out(name) {
            write_field(head, name.as_str().as_bytes(), value.as_bytes());
        }
    }
}

/// Writes one field line: `name: value` and CRLF.
pub(crate) fn write_field(head: &mut impl BufMut, name: &[u8], value: &[u8]) {
    head.put_slice(name);
    head.put_slice(b": ");
    head.put_slice(value);
    head.put_slice(b"\r\n");
}

/// The length of the section at the start of `read` (a head, or a trailer section)
/// through the empty line that ends it, if that is there.
pub(crate) fn section_length(read: &[u8]) -> Option<usize> {
    if read.starts_with(b"\r\n") {
        return Some(2);
    }
    if read.starts_with(b"\n") {
        return Some(1);
    }
    // Lines end in CRLF, or in LF alone (RFC 9112 §2.2): the section ends at the first
    // LF followed by CRLF (the usual form, found in one pass) or by LF (looked for only
    // before that).
    static LF_CRLF: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\n\r\n"));
    static LF_LF: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\n\n"));
    let crlf = LF_CRLF.find(read);
    let lf = LF_LF.find(&read[..crlf.map_or(read.len(), |at| at + 1)]);
    lf.map(|at| at + 2).or(crlf.map(|at| at + 3))
}

/// Writes a response's status line: `reason` when the answer carries one of its own
/// (an upstream's), else the status's canonical reason, else none.
pub(crate) fn write_status_line(
    head: &mut impl BufMut,
    status: StatusCode,
    reason: Option<&hyper::ext::ReasonPhrase>,
) {
    head.put_slice(b"HTTP/1.1 ");
    head.put_slice(status.as_str().as_bytes());
    head.put_u8(b' ');
    match reason {
        Some(reason) => head.put_slice(reason.as_bytes()),
        None => head.put_slice(status.canonical_reason().unwrap_or("").as_bytes()),
    }
    head.put_slice(b"\r\n");
}

/// Writes a `Date` field line with the time now.
pub(crate) fn write_date(head: &mut impl BufMut) {
    with_http_date(|date| write_field(head, b"date", date));
}

/// Calls `f` with the time now as an HTTP date, formatted once a second on each thread
/// (as hyper keeps its own).
fn with_http_date(f: impl FnOnce(&[u8])) {
    thread_local! {
        static CACHED: RefCell<CachedDate> = const { RefCell::new(CachedDate::new()) };
    }
    CACHED.with_borrow_mut(|cached| f(cached.at(SystemTime::now()).as_bytes()));
}

/// An HTTP date and the second it was formatted for.
struct CachedDate {
    second: u64,
    text: String,
}

impl CachedDate {
    const fn new() -> Self {
        Self {
            second: u64::MAX,
            text: String::new(),
        }
    }

    /// `now` as an HTTP date, formatted again only when its second is not the last one's.
    fn at(&mut self, now: SystemTime) -> &str {
        let second = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        if self.second != second {
            self.text = httpdate::fmt_http_date(now);
            self.second = second;
        }
        &self.text
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
        let map = field_map(&section, fields, HeaderMap::new(), |_| false).unwrap();
        assert_eq!(map.get_all("x-two").iter().count(), 2);
        assert!(field_map(&section, fields, HeaderMap::new(), |name| name == "x-two").is_none());

        let mut head = Vec::new();
        write_fields(&mut head, &map, |name| name == http::header::HOST);
        assert_eq!(head, b"x-two: 2\r\nx-two: 3\r\n");
    }

    #[test]
    fn a_section_ends_at_its_first_empty_line_after_crlf_or_lf() {
        assert_eq!(section_length(b"\r\nrest"), Some(2));
        assert_eq!(
            section_length(b"HTTP/1.1 200 OK\r\na: b\r\n\r\nbody\n\n"),
            Some(25)
        );
        assert_eq!(
            section_length(b"HTTP/1.1 200 OK\na: b\n\nbody\r\n\r\n"),
            Some(22)
        );
        assert_eq!(section_length(b"HTTP/1.1 200 OK\na: b\r\n\r\n"), Some(24));
        assert_eq!(section_length(b"HTTP/1.1 200 OK\r\na: b\r\n"), None);
        assert_eq!(section_length(b"HTTP/1.1 200 OK\r\na: b\r\n\r"), None);
    }

    #[test]
    fn the_date_is_now_to_the_second() {
        let mut date = String::new();
        with_http_date(|text| date = String::from_utf8(text.to_vec()).expect("ASCII"));
        let at = httpdate::parse_http_date(&date).expect("an HTTP date");
        // Formatted this second or the one before (a second may have begun since).
        let age = SystemTime::now()
            .duration_since(at)
            .expect("not in the future");
        assert!(
            age < std::time::Duration::from_secs(2),
            "{date} is {age:?} old"
        );
    }

    #[test]
    fn the_cached_date_is_formatted_again_when_the_second_changes() {
        let start = UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        let mut cached = CachedDate::new();
        assert_eq!(cached.at(start), "Tue, 14 Nov 2023 22:13:20 GMT");
        let later_that_second = start + std::time::Duration::from_millis(999);
        assert_eq!(
            cached.at(later_that_second),
            "Tue, 14 Nov 2023 22:13:20 GMT"
        );
        let next_second = start + std::time::Duration::from_secs(1);
        assert_eq!(cached.at(next_second), "Tue, 14 Nov 2023 22:13:21 GMT");
    }
}
