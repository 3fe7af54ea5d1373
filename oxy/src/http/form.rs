//! Streaming form inspection: body taps that parse `multipart/form-data` (with `multer`)
//! and `application/x-www-form-urlencoded` as they stream and show each field to a
//! [`FormInspector`], so a firewall can block an upload by a field without buffering it.

use super::body_tap::{BodyTap, TapVerdict};
use async_trait::async_trait;
use bytes::Bytes;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// A form field as inspectors see it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FormField {
    /// The field's name.
    pub name: String,
    /// The uploaded file's name, for file fields.
    pub file_name: Option<String>,
    /// The part's content type, when given.
    pub content_type: Option<String>,
}

/// Sees form fields as they stream.
pub trait FormInspector: Send + 'static {
    /// Runs when a field starts. The default returns [`TapVerdict::Continue`].
    fn on_field(&mut self, field: &FormField) -> TapVerdict {
        let _ = field;
        TapVerdict::Continue
    }

    /// Runs for each chunk of a field's value, in order (a value may come in several
    /// chunks). The default returns [`TapVerdict::Continue`].
    fn on_field_chunk(&mut self, field: &FormField, chunk: &[u8]) -> TapVerdict {
        let _ = (field, chunk);
        TapVerdict::Continue
    }
}

/// Longest `name=value` pair of a urlencoded form held while it streams in.
const MAX_URLENCODED_PAIR: usize = 1 << 20;

/// A tap for the form body `content_type` announces, or `None` when it is not a form.
pub fn form_tap(content_type: &str, inspector: Box<dyn FormInspector>) -> Option<Box<dyn BodyTap>> {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        return Some(Box::new(UrlencodedTap {
            pending: Vec::new(),
            field: FormField::default(),
            inspector,
        }));
    }
    if essence.eq_ignore_ascii_case("multipart/form-data") {
        let boundary = multer::parse_boundary(content_type).ok()?;
        return Some(Box::new(MultipartTap::start(boundary, inspector)));
    }
    None
}

/// Parses a multipart body in a task fed chunk by chunk.
struct MultipartTap {
    feed: Option<mpsc::Sender<Result<Bytes, std::io::Error>>>,
    verdict: Arc<Mutex<Option<String>>>,
    parser: Option<JoinHandle<()>>,
}

impl MultipartTap {
    fn start(boundary: String, mut inspector: Box<dyn FormInspector>) -> Self {
        let (feed, chunks) = mpsc::channel::<Result<Bytes, std::io::Error>>(2);
        let verdict = Arc::new(Mutex::new(None));
        let found = verdict.clone();
        let parser = tokio::spawn(async move {
            let stream = futures_util::stream::unfold(chunks, |mut chunks| async move {
                chunks.recv().await.map(|chunk| (chunk, chunks))
            });
            let mut multipart = multer::Multipart::new(stream, boundary);
            let blocked = async {
                while let Some(mut field) = multipart.next_field().await.map_err(malformed)? {
                    let info = FormField {
                        name: field.name().unwrap_or_default().to_string(),
                        file_name: field.file_name().map(str::to_string),
                        content_type: field.content_type().map(ToString::to_string),
                    };
                    if let TapVerdict::Block(reason) = inspector.on_field(&info) {
                        return Err(reason);
                    }
                    while let Some(chunk) = field.chunk().await.map_err(malformed)? {
                        if let TapVerdict::Block(reason) = inspector.on_field_chunk(&info, &chunk) {
                            return Err(reason);
                        }
                    }
                }
                Ok(())
            };
            if let Err(reason) = blocked.await {
                *found.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason);
            }
        });
        Self {
            feed: Some(feed),
            verdict,
            parser: Some(parser),
        }
    }

    fn verdict(&self) -> TapVerdict {
        match &*self.verdict.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(reason) => TapVerdict::Block(reason.clone()),
            None => TapVerdict::Continue,
        }
    }
}

fn malformed(e: multer::Error) -> String {
    format!("malformed multipart form: {e}")
}

#[async_trait]
impl BodyTap for MultipartTap {
    async fn on_chunk(&mut self, chunk: &Bytes) -> TapVerdict {
        if let Some(feed) = &self.feed {
            // A closed feed means the parser stopped: its verdict says why.
            let _ = feed.send(Ok(chunk.clone())).await;
            tokio::task::yield_now().await;
        }
        self.verdict()
    }

    async fn on_end(&mut self) -> TapVerdict {
        self.feed = None;
        if let Some(parser) = self.parser.take()
            && parser.await.is_err()
        {
            return TapVerdict::Block("the form inspector failed".into());
        }
        self.verdict()
    }
}

/// Splits a urlencoded body into `name=value` pairs as it streams.
struct UrlencodedTap {
    pending: Vec<u8>,
    /// The field shown to the inspector, its name's buffer reused for every field.
    field: FormField,
    inspector: Box<dyn FormInspector>,
}

impl UrlencodedTap {
    fn inspect_pair(&mut self, pair: &[u8]) -> TapVerdict {
        // Most pairs need no decoding: show them as they are, without the decoder.
        if memchr::memchr2(b'%', b'+', pair).is_none()
            && let Some((name, value)) = split_pair(pair)
        {
            return self.inspect_field(name, value);
        }
        for (name, value) in form_urlencoded::parse(pair) {
            if let TapVerdict::Block(reason) = self.inspect_field(&name, value.as_bytes()) {
                return TapVerdict::Block(reason);
            }
        }
        TapVerdict::Continue
    }

    fn inspect_field(&mut self, name: &str, value: &[u8]) -> TapVerdict {
        self.field.name.clear();
        self.field.name.push_str(name);
        match self.inspector.on_field(&self.field) {
            TapVerdict::Continue => self.inspector.on_field_chunk(&self.field, value),
            block => block,
        }
    }
}

/// A pair without escapes as its name and value, as the decoder would give them; `None`
/// for an empty pair or one that is not UTF-8 (the decoder then replaces what is not).
fn split_pair(pair: &[u8]) -> Option<(&str, &[u8])> {
    if pair.is_empty() {
        return None;
    }
    let pair = std::str::from_utf8(pair).ok()?;
    let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
    Some((name, value.as_bytes()))
}

#[async_trait]
impl BodyTap for UrlencodedTap {
    /// Linear in the chunk: each pair is inspected where it lies, and only a pair cut by
    /// the chunk's end is copied to wait for the rest.
    async fn on_chunk(&mut self, chunk: &Bytes) -> TapVerdict {
        let mut start = 0;
        for end in memchr::memchr_iter(b'&', chunk) {
            let verdict = if self.pending.is_empty() {
                self.inspect_pair(&chunk[start..end])
            } else {
                let mut pair = std::mem::take(&mut self.pending);
                pair.extend_from_slice(&chunk[start..end]);
                let verdict = self.inspect_pair(&pair);
                pair.clear();
                self.pending = pair;
                verdict
            };
            if let TapVerdict::Block(reason) = verdict {
                return TapVerdict::Block(reason);
            }
            start = end + 1;
        }
        self.pending.extend_from_slice(&chunk[start..]);
        if self.pending.len() > MAX_URLENCODED_PAIR {
            return TapVerdict::Block("a form field is longer than 1 MiB".into());
        }
        TapVerdict::Continue
    }

    async fn on_end(&mut self) -> TapVerdict {
        let rest = std::mem::take(&mut self.pending);
        self.inspect_pair(&rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records fields and blocks a field named `evil`.
    struct Recorder(Arc<Mutex<Vec<String>>>);

    impl FormInspector for Recorder {
        fn on_field(&mut self, field: &FormField) -> TapVerdict {
            self.0
                .lock()
                .unwrap()
                .push(format!("field {} {:?}", field.name, field.file_name));
            if field.name == "evil" {
                TapVerdict::Block("evil field".into())
            } else {
                TapVerdict::Continue
            }
        }

        fn on_field_chunk(&mut self, field: &FormField, chunk: &[u8]) -> TapVerdict {
            self.0.lock().unwrap().push(format!(
                "{}={}",
                field.name,
                String::from_utf8_lossy(chunk)
            ));
            TapVerdict::Continue
        }
    }

    async fn run(content_type: &str, chunks: &[&str]) -> (TapVerdict, Vec<String>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut tap = form_tap(content_type, Box::new(Recorder(seen.clone()))).unwrap();
        for chunk in chunks {
            if let TapVerdict::Block(reason) = tap.on_chunk(&Bytes::from(chunk.to_string())).await {
                return (TapVerdict::Block(reason), seen.lock().unwrap().clone());
            }
        }
        let verdict = tap.on_end().await;
        (verdict, seen.lock().unwrap().clone())
    }

    #[tokio::test]
    async fn urlencoded_fields_are_seen_across_chunk_boundaries() {
        let (verdict, seen) = run(
            "application/x-www-form-urlencoded",
            &["a=1&na", "me=J%C3%B6rg+X&", "c="],
        )
        .await;
        assert_eq!(verdict, TapVerdict::Continue);
        assert_eq!(
            seen,
            [
                "field a None",
                "a=1",
                "field name None",
                "name=Jörg X",
                "field c None",
                "c="
            ]
        );
        let (verdict, _) = run("application/x-www-form-urlencoded", &["ok=1&evil=2&more=3"]).await;
        assert_eq!(verdict, TapVerdict::Block("evil field".into()));
    }

    #[tokio::test]
    async fn multipart_fields_and_files_are_seen_and_blocked() {
        let body = "--XX\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nhello\r\n--XX\r\nContent-Disposition: form-data; name=\"upload\"; filename=\"a.txt\"\r\nContent-Type: text/plain\r\n\r\nfile body\r\n--XX--\r\n";
        let (head, tail) = body.split_at(40);
        let (verdict, seen) = run("multipart/form-data; boundary=XX", &[head, tail]).await;
        assert_eq!(verdict, TapVerdict::Continue);
        assert!(seen.contains(&"field title None".to_string()), "{seen:?}");
        assert!(
            seen.contains(&"field upload Some(\"a.txt\")".to_string()),
            "{seen:?}"
        );
        assert_eq!(
            seen.iter()
                .filter(|s| s.starts_with("upload="))
                .map(|s| &s[7..])
                .collect::<String>(),
            "file body"
        );

        let evil = body.replace("name=\"title\"", "name=\"evil\"");
        let (verdict, _) = run("multipart/form-data; boundary=XX", &[&evil]).await;
        assert_eq!(verdict, TapVerdict::Block("evil field".into()));
        let (verdict, _) = run("multipart/form-data; boundary=XX", &["--XX\r\ngarbage"]).await;
        assert!(
            matches!(verdict, TapVerdict::Block(r) if r.starts_with("malformed multipart form"))
        );
        assert!(form_tap("text/plain", Box::new(Recorder(Default::default()))).is_none());
    }
}
