//! `#[oxy_app_settings]`: serde, `Default` and YAML documentation for settings types.

use proc_macro2::TokenStream;
use quote::quote;
use syn::{
    Attribute, Data, DeriveInput, Expr, ExprLit, Fields, GenericParam, Lit, LitStr, Meta,
    parse_quote, spanned::Spanned,
};

pub fn expand(args: TokenStream, input: TokenStream) -> syn::Result<TokenStream> {
    if !args.is_empty() {
        return Err(syn::Error::new(
            args.span(),
            "#[oxy_app_settings] takes no arguments",
        ));
    }
    let input: DeriveInput = syn::parse2(input)?;
    match &input.data {
        Data::Struct(_) => expand_struct(input),
        Data::Enum(_) => expand_enum(input),
        Data::Union(u) => Err(syn::Error::new(
            u.union_token.span,
            "#[oxy_app_settings] works on structs and enums",
        )),
    }
}

fn expand_struct(input: DeriveInput) -> syn::Result<TokenStream> {
    let Data::Struct(data) = &input.data else {
        unreachable!("checked by the caller")
    };
    let Fields::Named(fields) = &data.fields else {
        return Err(syn::Error::new(
            input.ident.span(),
            "#[oxy_app_settings] structs need named fields",
        ));
    };
    let name = &input.ident;
    let type_lines = doc_lines(&input.attrs);

    let mut defaults = Vec::new();
    let mut docs = Vec::new();
    for field in &fields.named {
        let Some(ident) = &field.ident else { continue };
        let serde = SerdeFieldAttrs::parse(&field.attrs)?;
        let default = match &serde.default_fn {
            Some(path) => {
                let path: syn::ExprPath = path.parse()?;
                quote!(#path())
            }
            None => quote!(::core::default::Default::default()),
        };
        defaults.push(quote!(#ident: #default));
        if serde.skip {
            continue;
        }
        let key = serde
            .rename
            .unwrap_or_else(|| ident.to_string().trim_start_matches("r#").to_string());
        let lines = doc_lines(&field.attrs);
        // A section whose type is a parameter (an application's settings) also shows
        // that type's own doc comment, which only the type knows.
        let ty = &field.ty;
        let generic = input
            .generics
            .type_params()
            .any(|p| p.ident == quote!(#ty).to_string());
        let type_docs = generic.then(
            || quote!(docs.append(key.clone(), <#ty as ::oxy::settings::Settings>::type_docs());),
        );
        docs.push(quote! {
            {
                let mut key = path.to_vec();
                key.push(::std::string::String::from(#key));
                docs.insert(key.clone(), &[#(#lines),*]);
                #type_docs
                ::oxy::settings::Settings::add_docs(&self.#ident, &key, docs);
            }
        });
    }

    let (_, ty_generics, _) = input.generics.split_for_impl();
    let default_generics = bounded(&input.generics, parse_quote!(::core::default::Default));
    let (default_impl, _, default_where) = default_generics.split_for_impl();
    let settings_generics = bounded(&default_generics, parse_quote!(::oxy::settings::Settings));
    let (settings_impl, _, settings_where) = settings_generics.split_for_impl();

    // Missing fields come from `Self::default()`, so type parameters must be `Default`.
    let params: Vec<_> = input
        .generics
        .type_params()
        .map(|p| p.ident.to_string())
        .collect();
    let serde_bounds = if params.is_empty() {
        quote!()
    } else {
        let ser = params
            .iter()
            .map(|p| format!("{p}: ::oxy::reexports::serde::Serialize"))
            .collect::<Vec<_>>()
            .join(", ");
        let de = params
            .iter()
            .map(|p| {
                format!("{p}: ::oxy::reexports::serde::Deserialize<'de> + ::core::default::Default")
            })
            .collect::<Vec<_>>()
            .join(", ");
        quote!(#[serde(bound(serialize = #ser, deserialize = #de))])
    };
    Ok(quote! {
        #[derive(
            ::core::fmt::Debug,
            ::core::clone::Clone,
            ::oxy::reexports::serde::Serialize,
            ::oxy::reexports::serde::Deserialize,
        )]
        #[serde(crate = "::oxy::reexports::serde", deny_unknown_fields, default)]
        #serde_bounds
        #input

        impl #default_impl ::core::default::Default for #name #ty_generics #default_where {
            fn default() -> Self {
                Self { #(#defaults),* }
            }
        }

        impl #settings_impl ::oxy::settings::Settings for #name #ty_generics #settings_where {
            fn add_docs(&self, path: &[::std::string::String], docs: &mut ::oxy::settings::DocMap) {
                #(#docs)*
            }

            fn example() -> ::std::option::Option<Self> {
                ::std::option::Option::Some(::core::default::Default::default())
            }

            fn type_docs() -> &'static [&'static str] {
                &[#(#type_lines),*]
            }
        }
    })
}

fn expand_enum(input: DeriveInput) -> syn::Result<TokenStream> {
    let Data::Enum(data) = &input.data else {
        unreachable!("checked by the caller")
    };
    if let Some(v) = data
        .variants
        .iter()
        .find(|v| !matches!(v.fields, Fields::Unit))
    {
        return Err(syn::Error::new(
            v.span(),
            "#[oxy_app_settings] enums have unit variants only (they are YAML strings)",
        ));
    }
    let name = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    Ok(quote! {
        #[derive(
            ::core::fmt::Debug,
            ::core::clone::Clone,
            ::core::marker::Copy,
            ::core::cmp::PartialEq,
            ::core::cmp::Eq,
            ::core::default::Default,
            ::oxy::reexports::serde::Serialize,
            ::oxy::reexports::serde::Deserialize,
        )]
        #[serde(crate = "::oxy::reexports::serde", rename_all = "snake_case")]
        #input

        impl #impl_generics ::oxy::settings::Settings for #name #ty_generics #where_clause {}
    })
}

/// The generics with `bound` added to every type parameter.
fn bounded(generics: &syn::Generics, bound: syn::TypeParamBound) -> syn::Generics {
    let mut generics = generics.clone();
    for param in &mut generics.params {
        if let GenericParam::Type(ty) = param {
            ty.bounds.push(bound.clone());
        }
    }
    generics
}

/// The `///` lines of an item, without the leading space rustdoc keeps.
fn doc_lines(attrs: &[Attribute]) -> Vec<String> {
    attrs
        .iter()
        .filter(|a| a.path().is_ident("doc"))
        .filter_map(|a| match &a.meta {
            Meta::NameValue(nv) => match &nv.value {
                Expr::Lit(ExprLit {
                    lit: Lit::Str(s), ..
                }) => Some(s.value()),
                _ => None,
            },
            _ => None,
        })
        .flat_map(|s| {
            s.lines()
                .map(|l| l.strip_prefix(' ').unwrap_or(l).trim_end().to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The serde field attributes that change a field's key or default.
#[derive(Default)]
struct SerdeFieldAttrs {
    rename: Option<String>,
    default_fn: Option<LitStr>,
    skip: bool,
}

impl SerdeFieldAttrs {
    fn parse(attrs: &[Attribute]) -> syn::Result<Self> {
        let mut out = Self::default();
        for attr in attrs.iter().filter(|a| a.path().is_ident("serde")) {
            attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("rename") {
                    out.rename = Some(meta.value()?.parse::<LitStr>()?.value());
                } else if meta.path.is_ident("default") {
                    if meta.input.peek(syn::Token![=]) {
                        out.default_fn = Some(meta.value()?.parse()?);
                    }
                } else if meta.path.is_ident("skip") {
                    out.skip = true;
                } else if meta.input.peek(syn::Token![=]) {
                    // Other `key = value` attributes (with, serialize_with, ...) pass through.
                    let _: Expr = meta.value()?.parse()?;
                } else if meta.input.peek(syn::token::Paren) {
                    let _content;
                    syn::parenthesized!(_content in meta.input);
                }
                Ok(())
            })?;
        }
        Ok(out)
    }
}
