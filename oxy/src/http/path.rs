//! Request paths as an origin resolves them, for rules that match paths: `/%61dmin`,
//! `//admin` and `/x/../admin` all name `/admin`.

/// `path` with percent-encoded unreserved characters decoded (`%61` is `a`), runs of `/`
/// merged and `.` and `..` segments removed (RFC 3986 §5.2.4, §6.2.2). Other escapes
/// stay as they are: `%2F` is data, not a separator.
pub fn normalize(path: &str) -> String {
    let decoded = decode_unreserved(path);
    let mut segments: Vec<&str> = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            segment => segments.push(segment),
        }
    }
    let directory = [".", "..", ""]
        .iter()
        .any(|last| decoded.rsplit('/').next() == Some(last));
    let mut normalized = format!("/{}", segments.join("/"));
    if directory && !segments.is_empty() {
        normalized.push('/');
    }
    normalized
}

fn decode_unreserved(path: &str) -> String {
    let mut decoded = String::with_capacity(path.len());
    let mut rest = path;
    while let Some(at) = rest.find('%') {
        decoded.push_str(&rest[..at]);
        let byte = (rest.get(at + 1..at + 3)).and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match byte {
            Some(b) if b.is_ascii_alphanumeric() || b"-._~".contains(&b) => {
                decoded.push(char::from(b));
                rest = &rest[at + 3..];
            }
            _ => {
                decoded.push('%');
                rest = &rest[at + 1..];
            }
        }
    }
    decoded.push_str(rest);
    decoded
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn paths_normalize_as_origins_resolve_them() {
        for (path, normalized) in [
            ("/", "/"),
            ("/admin", "/admin"),
            ("/%61dmin/x", "/admin/x"),
            ("//admin", "/admin"),
            ("/./admin", "/admin"),
            ("/x/../admin", "/admin"),
            ("/../../admin", "/admin"),
            ("/a/b/", "/a/b/"),
            ("/a/b/.", "/a/b/"),
            ("/a/%2Fb", "/a/%2Fb"),
            ("/a%2", "/a%2"),
            ("/%E2%82%AC", "/%E2%82%AC"),
            ("", "/"),
        ] {
            assert_eq!(normalize(path), normalized, "{path}");
        }
    }
}
