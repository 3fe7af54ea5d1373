//! `#[metrics]`: Prometheus metrics declared as doc-commented, body-less functions.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use syn::{
    FnArg, ForeignItemFn, Item, ItemMod, LitFloat, Pat, ReturnType, Type, punctuated::Punctuated,
    spanned::Spanned,
};

pub fn expand(args: TokenStream, input: TokenStream) -> syn::Result<TokenStream> {
    if !args.is_empty() {
        return Err(syn::Error::new(
            args.span(),
            "#[metrics] takes no arguments",
        ));
    }
    let module: ItemMod = syn::parse2(input)?;
    let Some((_, items)) = &module.content else {
        return Err(syn::Error::new(
            module.span(),
            "#[metrics] needs an inline module: `mod name { ... }`",
        ));
    };
    let prefix = module.ident.to_string();
    let mut out = Vec::new();
    for item in items {
        match item {
            Item::Verbatim(tokens) => {
                out.push(expand_metric(&prefix, syn::parse2(tokens.clone())?)?)
            }
            other => out.push(quote!(#other)),
        }
    }
    let attrs = &module.attrs;
    let vis = &module.vis;
    let ident = &module.ident;
    Ok(quote! {
        #(#attrs)*
        #vis mod #ident {
            #[allow(unused_imports)]
            use super::*;
            #(#out)*
        }
    })
}

fn expand_metric(prefix: &str, f: ForeignItemFn) -> syn::Result<TokenStream> {
    let name = format!("{prefix}_{}", f.sig.ident);
    let help = f
        .attrs
        .iter()
        .filter(|a| a.path().is_ident("doc"))
        .filter_map(|a| match &a.meta {
            syn::Meta::NameValue(nv) => match &nv.value {
                syn::Expr::Lit(syn::ExprLit {
                    lit: syn::Lit::Str(s),
                    ..
                }) => Some(s.value().trim().to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect::<Vec<_>>()
        .join(" ");
    if help.is_empty() {
        return Err(syn::Error::new(
            f.sig.ident.span(),
            "a metric needs a doc comment: it is the Prometheus help text",
        ));
    }
    let mut buckets = None;
    for attr in f.attrs.iter().filter(|a| a.path().is_ident("buckets")) {
        let list =
            attr.parse_args_with(Punctuated::<LitFloat, syn::Token![,]>::parse_terminated)?;
        buckets = Some(list.into_iter().collect::<Vec<_>>());
    }
    let docs = f.attrs.iter().filter(|a| a.path().is_ident("doc"));

    let mut label_names = Vec::new();
    let mut label_idents = Vec::new();
    for arg in &f.sig.inputs {
        let FnArg::Typed(pat) = arg else {
            return Err(syn::Error::new(arg.span(), "metrics take no `self`"));
        };
        let Pat::Ident(ident) = &*pat.pat else {
            return Err(syn::Error::new(
                pat.span(),
                "label arguments must be plain names",
            ));
        };
        let label = ident.ident.to_string();
        if label.starts_with("__") || label == "le" || label == "quantile" {
            return Err(syn::Error::new(
                ident.span(),
                "Prometheus reserves this label name (`__*`, `le`, `quantile`)",
            ));
        }
        label_names.push(label);
        label_idents.push(ident.ident.clone());
    }

    let ReturnType::Type(_, ty) = &f.sig.output else {
        return Err(syn::Error::new(
            f.sig.span(),
            "a metric returns Counter, Gauge or Histogram",
        ));
    };
    let kind = match &**ty {
        Type::Path(p) => p.path.segments.last().map(|s| s.ident.to_string()),
        _ => None,
    };
    let (family, ctor, value) = match kind.as_deref() {
        Some("Counter") => (
            quote!(IntCounterVec),
            quote!(::oxy::telemetry::metrics::counter_family(#name, #help, &[#(#label_names),*])),
            quote!(Counter),
        ),
        Some("Gauge") => (
            quote!(IntGaugeVec),
            quote!(::oxy::telemetry::metrics::gauge_family(#name, #help, &[#(#label_names),*])),
            quote!(Gauge),
        ),
        Some("Histogram") => {
            let buckets = match buckets {
                Some(b) => quote!(::std::option::Option::Some(::std::vec![#(#b),*])),
                None => quote!(::std::option::Option::None),
            };
            (
                quote!(HistogramVec),
                quote!(::oxy::telemetry::metrics::histogram_family(#name, #help, &[#(#label_names),*], #buckets)),
                quote!(Histogram),
            )
        }
        _ => {
            return Err(syn::Error::new(
                ty.span(),
                "a metric returns Counter, Gauge or Histogram",
            ));
        }
    };
    let vis = &f.vis;
    let ident = &f.sig.ident;
    let inputs = &f.sig.inputs;
    let family_static = format_ident!("FAMILY");
    Ok(quote! {
        #(#docs)*
        #vis fn #ident(#inputs) -> ::oxy::telemetry::metrics::#value {
            static #family_static: ::std::sync::LazyLock<::oxy::reexports::prometheus::#family> =
                ::std::sync::LazyLock::new(|| #ctor);
            #family_static.with_label_values::<&str>(&[
                #(&*::oxy::telemetry::metrics::LabelValue::label_value(&#label_idents)),*
            ])
        }
    })
}
