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
        serde_path_to_error::deserialize(de).map_err(|e| fail(vec![type_error(text, e)]))?
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

/// A syntax or type error from serde, with its path and the line serde_yaml saw.
fn type_error(text: &str, e: serde_path_to_error::Error<serde_yaml::Error>) -> ConfigError {
    let path: Vec<PathSegment> = e
        .path()
        .iter()
        .filter_map(|seg| match seg {
            serde_path_to_error::Segment::Map { key } => Some(PathSegment::Key(key.clone())),
            serde_path_to_error::Segment::Seq { index } => Some(PathSegment::Index(*index)),
            _ => None,
        })
        .collect();
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
