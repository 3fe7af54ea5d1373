//! `#[derive(OxyExt)]`: an application's identity and extension types, with defaults for
//! what it does not name.

use proc_macro2::TokenStream;
use quote::quote;
use syn::parse::{Parse, ParseStream};
use syn::{DeriveInput, Ident, LitStr, Token, Type, punctuated::Punctuated};

/// One `key = value` of `#[oxy(...)]`.
struct Pair {
    key: Ident,
    value: Value,
}

/// A string (`name`, `description`) or a type.
enum Value {
    Text(LitStr),
    Type(Box<Type>),
}

impl Parse for Pair {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let key = input.parse()?;
        input.parse::<Token![=]>()?;
        let value = if input.peek(LitStr) {
            Value::Text(input.parse()?)
        } else {
            Value::Type(Box::new(input.parse()?))
        };
        Ok(Self { key, value })
    }
}

/// The associated types an application may name, their attribute keys and defaults.
const TYPES: [(&str, &str, &str); 9] = [
    ("app_settings", "AppSettings", "::oxy::settings::NoSettings"),
    (
        "endpoint_settings",
        "EndpointAppSettings",
        "::oxy::settings::NoSettings",
    ),
    ("app_context", "AppContext", "()"),
    ("endpoint_context", "EndpointContext", "()"),
    ("connection_context", "IngressConnectionContext", "()"),
    ("request_context", "RequestContext", "()"),
    ("tunnel_context", "TunnelContext", "()"),
    ("ip_tunnel_context", "IpTunnelContext", "()"),
    ("dns_cache_item", "DnsCacheItem", "()"),
];

pub fn expand(input: DeriveInput) -> syn::Result<TokenStream> {
    let name = &input.ident;
    if !input.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &input.generics,
            "an application type has no generics",
        ));
    }
    let mut types: Vec<(String, Type)> = Vec::new();
    let mut app_name = quote!(::core::env!("CARGO_PKG_NAME"));
    let mut description = quote!(::core::env!("CARGO_PKG_DESCRIPTION"));
    let mut seen = std::collections::HashSet::new();
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("oxy")) {
        let pairs = attr.parse_args_with(Punctuated::<Pair, Token![,]>::parse_terminated)?;
        for pair in pairs {
            let key = pair.key.to_string();
            if !seen.insert(key.clone()) {
                return Err(syn::Error::new_spanned(
                    &pair.key,
                    format!("`{key}` is given twice"),
                ));
            }
            match (key.as_str(), pair.value) {
                ("name", Value::Text(text)) => app_name = quote!(#text),
                ("description", Value::Text(text)) => description = quote!(#text),
                ("name" | "description", Value::Type(ty)) => {
                    return Err(syn::Error::new_spanned(ty, "expected a string"));
                }
                (_, Value::Type(ty)) if TYPES.iter().any(|(k, _, _)| *k == key) => {
                    types.push((key, *ty));
                }
                _ => {
                    let keys: Vec<&str> = TYPES.iter().map(|(k, _, _)| *k).collect();
                    let message = format!(
                        "unknown key or value; expected name = \"..\", description = \"..\" or one of {} = Type",
                        keys.join(", ")
                    );
                    return Err(syn::Error::new_spanned(&pair.key, message));
                }
            }
        }
    }
    let mut associated = Vec::new();
    for (key, assoc, default) in TYPES {
        let assoc = syn::Ident::new(assoc, proc_macro2::Span::call_site());
        let ty = match types.iter().find(|(k, _)| k == key) {
            Some((_, ty)) => ty.clone(),
            None => syn::parse_str::<Type>(default)?,
        };
        associated.push(quote!(type #assoc = #ty;));
    }
    Ok(quote! {
        impl ::oxy::OxyExt for #name {
            const IDENTITY: ::oxy::app::Identity = ::oxy::app::Identity {
                name: #app_name,
                version: ::core::env!("CARGO_PKG_VERSION"),
                description: #description,
            };
            #(#associated)*
        }
    })
}
