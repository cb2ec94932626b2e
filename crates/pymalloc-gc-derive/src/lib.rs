//! `#[derive(Trace)]` for `pymalloc_gc::Trace`.
//!
//! Every field is traced, except those marked `#[trace(skip)]`; every type
//! parameter gets a `Trace` bound. The generated `NAME` is the type's name.

use proc_macro::TokenStream;
use proc_macro2::{Literal, TokenStream as TokenStream2};
use quote::{format_ident, quote};
use syn::{parse_macro_input, Data, DeriveInput, Fields, GenericParam};

/// Derives `pymalloc_gc::Trace` by tracing every field not marked
/// `#[trace(skip)]`.
#[proc_macro_derive(Trace, attributes(trace))]
pub fn derive_trace(input: TokenStream) -> TokenStream {
    let mut input = parse_macro_input!(input as DeriveInput);
    match expand(&mut input) {
        Ok(ts) => ts.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

fn skipped(attrs: &[syn::Attribute]) -> syn::Result<bool> {
    let mut skip = false;
    for a in attrs {
        if a.path().is_ident("trace") {
            a.parse_nested_meta(|m| {
                if m.path.is_ident("skip") {
                    skip = true;
                    Ok(())
                } else {
                    Err(m.error("expected `skip`"))
                }
            })?;
        }
    }
    Ok(skip)
}

/// Statements tracing the fields, bound by the names `binds`.
fn trace_fields(fields: &Fields) -> syn::Result<(TokenStream2, TokenStream2)> {
    let mut pat = Vec::new();
    let mut body = Vec::new();
    for (i, f) in fields.iter().enumerate() {
        let bind = format_ident!("__f{}", i);
        let skip = skipped(&f.attrs)?;
        match &f.ident {
            Some(id) => pat.push(quote!(#id: #bind)),
            None => pat.push(quote!(#bind)),
        }
        if !skip {
            body.push(quote!(::pymalloc_gc::Trace::trace(#bind, __tracer);));
        } else {
            body.push(quote!(let _ = #bind;));
        }
    }
    let pat = match fields {
        Fields::Named(_) => quote!({ #(#pat),* }),
        Fields::Unnamed(_) => quote!(( #(#pat),* )),
        Fields::Unit => quote!(),
    };
    Ok((pat, quote!(#(#body)*)))
}

fn expand(input: &mut DeriveInput) -> syn::Result<TokenStream2> {
    for p in &mut input.generics.params {
        if let GenericParam::Type(t) = p {
            t.bounds.push(syn::parse_quote!(::pymalloc_gc::Trace));
        }
    }
    let name = &input.ident;
    let arms = match &input.data {
        Data::Struct(s) => {
            let (pat, body) = trace_fields(&s.fields)?;
            quote!(#name #pat => { #body })
        }
        Data::Enum(e) => {
            let mut arms = Vec::new();
            for v in &e.variants {
                let vid = &v.ident;
                let (pat, body) = trace_fields(&v.fields)?;
                arms.push(quote!(#name::#vid #pat => { #body }));
            }
            quote!(#(#arms,)*)
        }
        Data::Union(u) => return Err(syn::Error::new(u.union_token.span, "Trace cannot be derived for unions")),
    };
    let cname = std::ffi::CString::new(name.to_string()).expect("identifiers have no NUL");
    let lit = Literal::c_string(&cname);
    let (impl_g, ty_g, where_c) = input.generics.split_for_impl();
    Ok(quote! {
        // SAFETY: the derived trace visits every field not marked
        // `#[trace(skip)]`, each exactly once.
        unsafe impl #impl_g ::pymalloc_gc::Trace for #name #ty_g #where_c {
            #[allow(unused_variables)]
            #[inline]
            fn trace(&self, __tracer: &mut ::pymalloc_gc::Tracer<'_>) {
                #[allow(unreachable_patterns)]
                match self {
                    #arms
                    _ => {}
                }
            }
            const NAME: &'static ::core::ffi::CStr = #lit;
        }
    })
}
