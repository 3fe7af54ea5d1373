//! [`StreamSearch`]: finds a byte string in a body that arrives in chunks, for body taps
//! and form inspectors, keeping only a needle's length of the past.

/// Looks for one needle in a stream of chunks, across chunk boundaries.
#[derive(Debug, Clone)]
pub struct StreamSearch {
    needle: Vec<u8>,
    /// The last bytes seen, at most `needle.len() - 1` of them once a chunk is judged.
    tail: Vec<u8>,
}

impl StreamSearch {
    /// A search for `needle` (an empty needle is found in any chunk).
    pub fn new(needle: impl Into<Vec<u8>>) -> Self {
        Self {
            needle: needle.into(),
            tail: Vec::new(),
        }
    }

    /// Whether the needle ends in `chunk` (it may start in earlier chunks).
    pub fn found_in(&mut self, chunk: &[u8]) -> bool {
        if self.needle.is_empty() {
            return true;
        }
        self.tail.extend_from_slice(chunk);
        if self
            .tail
            .windows(self.needle.len())
            .any(|w| w == self.needle)
        {
            self.tail.clear();
            return true;
        }
        let keep = self.needle.len() - 1;
        let drop = self.tail.len().saturating_sub(keep);
        self.tail.drain(..drop);
        false
    }

    /// Forgets the bytes seen, to search a new value (the next form field).
    pub fn reset(&mut self) {
        self.tail.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::StreamSearch;

    #[test]
    fn finds_needles_split_across_chunks() {
        let mut search = StreamSearch::new("secret");
        assert!(!search.found_in(b"this is a se"));
        assert!(!search.found_in(b"c"));
        assert!(search.found_in(b"ret value"));
        let mut search = StreamSearch::new("secret");
        assert!(!search.found_in(b"sec"));
        search.reset();
        assert!(!search.found_in(b"ret"));
        assert!(!StreamSearch::new("abc").found_in(b"ab"));
        assert!(StreamSearch::new("").found_in(b""));
    }
}
