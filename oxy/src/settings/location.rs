//! Finds the line and column of a YAML path in the settings text, for error messages.

use super::errors::PathSegment;
use saphyr_parser::{Event, Parser, StrInput};

/// 1-based line and column of the node at `path`, or of its deepest ancestor present in
/// the text (a value that came from a default has no line of its own).
pub fn locate(text: &str, path: &[PathSegment]) -> Option<(usize, usize)> {
    (0..=path.len())
        .rev()
        .find_map(|len| locate_exact(text, &path[..len]))
}

fn locate_exact(text: &str, path: &[PathSegment]) -> Option<(usize, usize)> {
    let mut events = Events(Parser::new_from_str(text));
    loop {
        if let (Event::DocumentStart(_), _) = events.next()? {
            break;
        }
    }
    events.descend(path)
}

struct Events<'a>(Parser<'a, StrInput<'a>>);

impl<'a> Events<'a> {
    fn next(&mut self) -> Option<(Event<'a>, (usize, usize))> {
        let (event, span) = self.0.next_event()?.ok()?;
        Some((event, (span.start.line(), span.start.col() + 1)))
    }

    /// Reads the next node and follows `path` into it.
    fn descend(&mut self, path: &[PathSegment]) -> Option<(usize, usize)> {
        let (event, at) = self.next()?;
        let Some((first, rest)) = path.split_first() else {
            return match event {
                Event::MappingEnd | Event::SequenceEnd => None,
                _ => Some(at),
            };
        };
        match (event, first) {
            (Event::MappingStart(..), PathSegment::Key(wanted)) => loop {
                match self.next()? {
                    (Event::MappingEnd, _) => return None,
                    (Event::Scalar(key, ..), _) if key == wanted.as_str() => {
                        return self.descend(rest);
                    }
                    (key, _) => {
                        self.skip_rest(key)?;
                        let (value, _) = self.next()?;
                        self.skip_rest(value)?;
                    }
                }
            },
            (Event::SequenceStart(..), PathSegment::Index(wanted)) => {
                for _ in 0..*wanted {
                    match self.next()? {
                        (Event::SequenceEnd, _) => return None,
                        (item, _) => self.skip_rest(item)?,
                    }
                }
                self.descend(rest)
            }
            _ => None,
        }
    }

    /// Skips what is left of a node whose first event was `event`.
    fn skip_rest(&mut self, event: Event<'a>) -> Option<()> {
        if !matches!(event, Event::MappingStart(..) | Event::SequenceStart(..)) {
            return Some(());
        }
        let mut depth = 1usize;
        while depth > 0 {
            match self.next()?.0 {
                Event::MappingStart(..) | Event::SequenceStart(..) => depth += 1,
                Event::MappingEnd | Event::SequenceEnd => depth -= 1,
                _ => {}
            }
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> PathSegment {
        PathSegment::Key(k.into())
    }

    const TEXT: &str = "server:\n  worker_threads: 2\nendpoints:\n  - name: a\n    listen: [127.0.0.1:1]\n  - name: b\n    listen:\n      - 127.0.0.1:2\n      - nope\n";

    #[test]
    fn finds_nested_keys_and_indexes() {
        assert_eq!(
            locate(TEXT, &[key("server"), key("worker_threads")]),
            Some((2, 19))
        );
        let path = [
            key("endpoints"),
            PathSegment::Index(1),
            key("listen"),
            PathSegment::Index(1),
        ];
        assert_eq!(locate(TEXT, &path), Some((9, 9)));
        let path = [
            key("endpoints"),
            PathSegment::Index(0),
            key("listen"),
            PathSegment::Index(0),
        ];
        assert_eq!(locate(TEXT, &path), Some((5, 14)));
    }

    #[test]
    fn falls_back_to_the_deepest_ancestor() {
        let path = [key("endpoints"), PathSegment::Index(1), key("tls")];
        assert_eq!(locate(TEXT, &path), Some((6, 5)));
    }

    #[test]
    fn broken_text_falls_back_to_what_parses() {
        assert_eq!(
            locate("a: [", &[key("a"), PathSegment::Index(3)]),
            Some((1, 4))
        );
        assert_eq!(locate("a: 1\n: : :", &[key("x")]), Some((1, 1)));
        assert_eq!(locate("", &[key("x")]), None);
    }
}
