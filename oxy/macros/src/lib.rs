//! Procedural macros of the Oxy framework, re-exported by the `oxy` crate.

mod ext;
mod metrics;
mod settings;

use proc_macro::TokenStream;

/// Turns a struct (or a unit-only enum) into an Oxy settings type.
///
/// On a struct with named fields it adds serde (both ways, `deny_unknown_fields`,
/// missing fields take their default), `Debug`, `Clone`, a `Default` impl that honours
/// `#[serde(default = "path")]` on fields, and an `oxy::settings::Settings` impl whose
/// field docs (the `///` comments) become YAML comments in `--generate-config` output.
///
/// On an enum whose variants carry no data it adds serde (variants in `snake_case`),
/// `Debug`, `Clone`, `Copy`, `PartialEq`, `Eq`, `Default` (mark one variant `#[default]`)
/// and the `Settings` impl.
#[proc_macro_attribute]
pub fn oxy_app_settings(args: TokenStream, input: TokenStream) -> TokenStream {
    settings::expand(args.into(), input.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Declares Prometheus metrics once, with help text and typed labels.
///
/// Put it on a module of body-less functions. Each function is a metric named
/// `<module>_<function>`; its doc comment is the help text; its arguments are the labels
/// (any type implementing `oxy::telemetry::metrics::LabelValue`); its return type is one
/// of `Counter`, `Gauge` or `Histogram` (buckets with `#[buckets(0.1, 1.0, ..)]`).
///
/// ```ignore
/// #[oxy::metrics]
/// pub mod firewall {
///     /// Requests blocked, by rule.
///     pub fn blocked_total(rule: &str) -> Counter;
/// }
/// firewall::blocked_total("no-admin").inc();
/// ```
#[proc_macro_attribute]
pub fn metrics(args: TokenStream, input: TokenStream) -> TokenStream {
    metrics::expand(args.into(), input.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Implements `oxy::OxyExt` for an application type: its identity from the package
/// (`CARGO_PKG_NAME`, `CARGO_PKG_VERSION`, `CARGO_PKG_DESCRIPTION`) and its extension
/// types, `()` (or `NoSettings` for settings) for those it does not name.
///
/// ```ignore
/// #[derive(OxyExt)]
/// #[oxy(endpoint_settings = AllowlistSettings, request_context = Option<Permit>)]
/// struct MyApp;
/// ```
///
/// Keys: `app_settings`, `endpoint_settings`, `app_context`, `endpoint_context`,
/// `connection_context`, `request_context`, `tunnel_context`, `ip_tunnel_context`,
/// `dns_cache_item`
/// (types), and `name`, `description` (strings, overriding the package's).
#[proc_macro_derive(OxyExt, attributes(oxy))]
pub fn derive_oxy_ext(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as syn::DeriveInput);
    ext::expand(input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}
