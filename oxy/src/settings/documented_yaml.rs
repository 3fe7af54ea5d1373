//! Writes a settings value as YAML with each setting's doc comment above it.

use super::{DocMap, Settings};
use serde_yaml::Value;
use std::fmt::Write;

/// The YAML of `settings`, every documented setting preceded by its `///` lines as
/// `#` comments, and every empty list of settings structs followed by a commented example.
pub fn to_documented_yaml<S: Settings>(settings: &S) -> Result<String, serde_yaml::Error> {
    let value = serde_yaml::to_value(settings)?;
    let mut docs = DocMap::default();
    settings.add_docs(&[], &mut docs);
    let mut writer = Writer {
        docs: &docs,
        out: String::new(),
    };
    let mut path = Vec::new();
    match &value {
        Value::Mapping(m) if !m.is_empty() => writer.mapping(m, &mut path, 0, true),
        other => writer.scalar_line(other, "", 0),
    }
    Ok(writer.out)
}

struct Writer<'a> {
    docs: &'a DocMap,
    out: String,
}

impl Writer<'_> {
    fn comments(&mut self, path: &[String], indent: usize) {
        for line in self.docs.comments(path) {
            let pad = " ".repeat(indent);
            if line.is_empty() {
                let _ = writeln!(self.out, "{pad}#");
            } else {
                let _ = writeln!(self.out, "{pad}# {line}");
            }
        }
    }

    fn mapping(
        &mut self,
        map: &serde_yaml::Mapping,
        path: &mut Vec<String>,
        indent: usize,
        top: bool,
    ) {
        for (i, (key, value)) in map.iter().enumerate() {
            let key = inline_scalar(key);
            if top && i > 0 {
                self.out.push('\n');
            }
            path.push(key.clone());
            self.comments(path, indent);
            let pad = " ".repeat(indent);
            match value {
                Value::Mapping(m) if !m.is_empty() => {
                    let _ = writeln!(self.out, "{pad}{key}:");
                    self.mapping(m, path, indent + 2, false);
                }
                Value::Sequence(s) if !s.is_empty() => {
                    let _ = writeln!(self.out, "{pad}{key}:");
                    self.sequence(s, path, indent + 2);
                }
                Value::Sequence(_) => {
                    let _ = writeln!(self.out, "{pad}{key}: []");
                    self.example(path, indent + 2);
                }
                other => self.scalar_line(other, &format!("{key}: "), indent),
            }
            path.pop();
        }
    }

    fn sequence(&mut self, seq: &[Value], path: &mut Vec<String>, indent: usize) {
        let pad = " ".repeat(indent);
        for (i, item) in seq.iter().enumerate() {
            path.push(i.to_string());
            match item {
                Value::Mapping(m) if !m.is_empty() => {
                    let _ = writeln!(self.out, "{pad}-");
                    self.mapping(m, path, indent + 2, false);
                }
                Value::Sequence(s) if !s.is_empty() => {
                    let _ = writeln!(self.out, "{pad}-");
                    self.sequence(s, path, indent + 2);
                }
                other => self.scalar_line(other, "- ", indent),
            }
            path.pop();
        }
    }

    /// A commented-out example element under an empty list, when one is known.
    fn example(&mut self, path: &mut Vec<String>, indent: usize) {
        let Some(example) = self.docs.example(path) else {
            return;
        };
        let mut inner = Writer {
            docs: self.docs,
            out: String::new(),
        };
        inner.sequence(std::slice::from_ref(example), path, 0);
        let pad = " ".repeat(indent);
        let _ = writeln!(self.out, "{pad}# For example:");
        for line in inner.out.lines() {
            let _ = writeln!(self.out, "{pad}# {line}");
        }
    }

    fn scalar_line(&mut self, value: &Value, prefix: &str, indent: usize) {
        let pad = " ".repeat(indent);
        let _ = writeln!(self.out, "{pad}{prefix}{}", inline_scalar(value));
    }
}

/// A scalar (or empty collection) as one line of YAML, quoted where YAML needs it.
fn inline_scalar(value: &Value) -> String {
    match value {
        Value::Mapping(m) if m.is_empty() => "{}".into(),
        Value::Sequence(s) if s.is_empty() => "[]".into(),
        Value::String(s) if s.contains(['\n', '\r']) => double_quoted(s),
        other => serde_yaml::to_string(other)
            .map(|s| s.trim_end().to_string())
            .unwrap_or_else(|_| "null".into()),
    }
}

/// A YAML double-quoted string, for text that would otherwise need a block scalar.
fn double_quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
