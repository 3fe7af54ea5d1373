//! Reads a settings file: YAML syntax and types first, then every semantic check.

use super::errors::{ConfigError, ConfigErrors, PathSegment, display_path};
use super::{ServerSettings, Settings, location, validate};
use std::path::{Path, PathBuf};

/// Loads and validates the settings file at `path`.
pub fn load_file<A: Settings + Default, E: Settings + Default>(
    path: &Path,
) -> Result<ServerSettings<A, E>, ConfigErrors> {
    let source_name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors {
        source_name: source_name.clone(),
        errors: vec![ConfigError {
            path: ".".into(),
            location: None,
            message: format!("cannot read the settings file: {e}"),
        }],
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    from_yaml_str_in(&text, &source_name, base)
}

/// Parses and validates settings from YAML text; `source_name` names it in errors.
/// An empty document means all defaults. Relative paths stay relative to the working
/// directory.
pub fn from_yaml_str<A: Settings + Default, E: Settings + Default>(
    text: &str,
    source_name: &str,
) -> Result<ServerSettings<A, E>, ConfigErrors> {
    from_yaml_str_in(text, source_name, Path::new(""))
}

/// Like [`from_yaml_str`], with relative file paths taken from `base`.
fn from_yaml_str_in<A: Settings + Default, E: Settings + Default>(
    text: &str,
    source_name: &str,
    base: &Path,
) -> Result<ServerSettings<A, E>, ConfigErrors> {
    let fail = |errors| ConfigErrors {
        source_name: source_name.to_string(),
        errors,
    };
    let is_empty = matches!(
        serde_yaml::from_str::<serde_yaml::Value>(text),
        Ok(serde_yaml::Value::Null)
    );
    let mut settings: ServerSettings<A, E> = if is_empty {
        ServerSettings::default()
    } else {
        let de = serde_yaml::Deserializer::from_str(text);
        match serde_path_to_error::deserialize(de) {
            Ok(settings) => settings,
            Err(first) => return Err(fail(type_errors::<A, E>(text, first))),
        }
    };
    resolve_paths(&mut settings, base);
    let problems = validate::validate(&settings);
    if problems.is_empty() {
        return Ok(settings);
    }
    let mut errors: Vec<ConfigError> = problems
        .into_iter()
        .map(|(path, message)| ConfigError {
            location: location::locate(text, &path),
            path: display_path(&path),
            message,
        })
        .collect();
    errors.sort_by_key(|e| e.location);
    Err(fail(errors))
}

/// Makes the framework's relative file paths relative to `base` (the settings file's
/// directory), so a settings file works from any working directory.
fn resolve_paths<A: Settings, E: Settings>(settings: &mut ServerSettings<A, E>, base: &Path) {
    let resolve = |path: &mut PathBuf| {
        if !path.as_os_str().is_empty() && path.is_relative() {
            *path = base.join(&*path);
        }
    };
    resolve(&mut settings.telemetry.audit.path);
    resolve(&mut settings.telemetry.address_file);
    resolve(&mut settings.server.pid_file);
    resolve(&mut settings.server.control_socket);
    resolve(&mut settings.dns.ca_file);
    for endpoint in &mut settings.endpoints {
        for cert in &mut endpoint.tls.certificates {
            resolve(&mut cert.chain);
            resolve(&mut cert.key);
        }
        resolve(&mut endpoint.tls.client_ca);
        resolve(&mut endpoint.tls.raw_public_key);
        resolve(&mut endpoint.http.client.raw_public_key);
        resolve(&mut endpoint.http.client.ca_file);
        endpoint.http.client.crl_files.iter_mut().for_each(resolve);
        resolve(&mut endpoint.tls_interception.ca_chain);
        resolve(&mut endpoint.tls_interception.ca_key);
    }
}

/// The most type errors and unknown keys reported for one file.
const MAX_TYPE_ERRORS: usize = 50;
/// The most times the document is parsed again to find them.
const MAX_ROUNDS: usize = 200;

/// Every type error and unknown key in `text`, `first` (the first serde met) included:
/// each offending node is taken out of the document (a list element replaced, then the
/// whole list if that is not enough) and the rest deserialized again, so one run reports
/// them all, in the file's order. A syntax error is reported alone.
fn type_errors<A: Settings + Default, E: Settings + Default>(
    text: &str,
    first: serde_path_to_error::Error<serde_yaml::Error>,
) -> Vec<ConfigError> {
    let mut path = error_path(&first);
    let mut errors = vec![type_error(text, first)];
    let Ok(mut document) = serde_yaml::from_str::<serde_yaml::Value>(text) else {
        return errors;
    };
    let mut taken: Vec<Vec<PathSegment>> = Vec::new();
    for _ in 0..MAX_ROUNDS {
        if errors.len() >= MAX_TYPE_ERRORS {
            break;
        }
        // A node taken out once that still fails takes its list with it; each node is
        // taken out once at most, so every round changes the document.
        let node = if taken.contains(&path) {
            path[..path.len().saturating_sub(1)].to_vec()
        } else {
            path.clone()
        };
        if node.is_empty() || taken.contains(&node) || !take_out(&mut document, &node, &taken) {
            break;
        }
        taken.push(node);
        match serde_path_to_error::deserialize::<_, ServerSettings<A, E>>(document.clone()) {
            Ok(_) => break,
            Err(next) => {
                path = error_path(&next);
                let error = type_error(text, next);
                if !errors.iter().any(|e| e.path == error.path) {
                    errors.push(error);
                }
            }
        }
    }
    errors.sort_by_key(|e| e.location);
    errors
}

/// Takes the node at `path` out of `document`: a map entry is removed (its default
/// applies); a list element is replaced by an earlier sibling not in `taken` (the paths
/// already taken out), or null. Whether there was one.
fn take_out(
    document: &mut serde_yaml::Value,
    path: &[PathSegment],
    taken: &[Vec<PathSegment>],
) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut node = document;
    for segment in parents {
        let next = match (segment, node) {
            (PathSegment::Key(key), serde_yaml::Value::Mapping(map)) => map.get_mut(key.as_str()),
            (PathSegment::Index(i), serde_yaml::Value::Sequence(list)) => list.get_mut(*i),
            _ => None,
        };
        let Some(next) = next else {
            return false;
        };
        node = next;
    }
    match (last, node) {
        (PathSegment::Key(key), serde_yaml::Value::Mapping(map)) => {
            map.remove(key.as_str()).is_some()
        }
        (PathSegment::Index(i), serde_yaml::Value::Sequence(list)) if *i < list.len() => {
            // An earlier sibling serde accepted stands in for the element, so the list
            // keeps its length and the next errors their indexes (and the stand-in adds
            // none of its own).
            let failed = |j: usize| {
                let mut sibling = parents.to_vec();
                sibling.push(PathSegment::Index(j));
                taken.contains(&sibling)
            };
            let stand_in = (0..*i).find(|&j| !failed(j));
            list[*i] = match stand_in {
                Some(j) => list[j].clone(),
                None => serde_yaml::Value::Null,
            };
            true
        }
        _ => false,
    }
}

/// The path of a serde error, in settings terms.
fn error_path(e: &serde_path_to_error::Error<serde_yaml::Error>) -> Vec<PathSegment> {
    e.path()
        .iter()
        .filter_map(|seg| match seg {
            serde_path_to_error::Segment::Map { key } => Some(PathSegment::Key(key.clone())),
            serde_path_to_error::Segment::Seq { index } => Some(PathSegment::Index(*index)),
            _ => None,
        })
        .collect()
}

/// A syntax or type error from serde, with its path and the line serde_yaml saw.
fn type_error(text: &str, e: serde_path_to_error::Error<serde_yaml::Error>) -> ConfigError {
    let path = error_path(&e);
    let inner = e.inner();
    let location = inner
        .location()
        .map(|l| (l.line(), l.column()))
        .or_else(|| location::locate(text, &path));
    let mut message = inner.to_string();
    if let Some(at) = message.rfind(" at line ") {
        message.truncate(at);
    }
    // serde_yaml prefixes the path it knows ("endpoints[0]: ..."); ours is printed already.
    if let Some((prefix, rest)) = message.split_once(": ")
        && !prefix.contains(' ')
    {
        message = rest.to_string();
    }
    ConfigError {
        path: display_path(&path),
        location,
        message,
    }
}
