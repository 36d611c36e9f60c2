//! A small namespace-aware XML tree, read with quick-xml.
//!
//! Service Bus clients serialise the same description in several ways (default namespaces,
//! `ns0:` prefixes, `i:type`, `p4:type` or `xsi:type`), so everything here is matched by
//! namespace URI and local name, never by prefix.

use std::sync::Arc;

use quick_xml::NsReader;
use quick_xml::events::Event;
use quick_xml::name::ResolveResult;

use crate::error::WireError;

/// The namespace of Service Bus descriptions.
pub const SB_NS: &str = "http://schemas.microsoft.com/netservices/2010/10/servicebus/connect";
/// The XML Schema instance namespace (`i:type`, `xsi:type`).
pub const XSI_NS: &str = "http://www.w3.org/2001/XMLSchema-instance";
/// The XML Schema namespace used for typed values (`d6p1:string`).
pub const XSD_NS: &str = "http://www.w3.org/2001/XMLSchema";

/// Deepest element nesting accepted. Service Bus documents nest about ten deep; the bound
/// keeps a hostile document from costing more than its size (and the tree's drop, which
/// recurses, from overflowing a thread's stack).
pub const MAX_DEPTH: usize = 64;
/// Most namespace declarations accepted in one document (the captured clients use up to 6).
pub const MAX_NAMESPACE_DECLARATIONS: usize = 256;

/// The prefix-to-namespace bindings in scope at an element: a chain shared with its parent
/// and siblings, so a declaration costs once however many elements it covers.
#[derive(Debug, Clone, Default)]
pub struct Scope(Option<Arc<Binding>>);

#[derive(Debug)]
struct Binding {
    prefix: String,
    uri: String,
    parent: Option<Arc<Binding>>,
}

impl Scope {
    /// The namespace URI bound to `prefix` (empty for the default namespace), innermost first.
    pub fn resolve(&self, prefix: &str) -> Option<&str> {
        let mut at = self.0.as_deref();
        while let Some(binding) = at {
            if binding.prefix == prefix {
                return Some(&binding.uri);
            }
            at = binding.parent.as_deref();
        }
        None
    }

    fn bind(&mut self, prefix: String, uri: String) {
        let parent = self.0.take();
        self.0 = Some(Arc::new(Binding {
            prefix,
            uri,
            parent,
        }));
    }
}

impl PartialEq for Scope {
    /// Scopes are equal when they hold the same bindings in the same order.
    fn eq(&self, other: &Self) -> bool {
        let (mut a, mut b) = (self.0.as_deref(), other.0.as_deref());
        loop {
            match (a, b) {
                (None, None) => return true,
                (Some(x), Some(y)) if std::ptr::eq(x, y) => return true,
                (Some(x), Some(y)) if x.prefix == y.prefix && x.uri == y.uri => {
                    a = x.parent.as_deref();
                    b = y.parent.as_deref();
                }
                _ => return false,
            }
        }
    }
}

/// One element: its namespace and local name, attributes, children and direct text.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Element {
    /// Namespace URI, empty when unbound.
    pub ns: String,
    /// Local name without prefix.
    pub name: String,
    /// Attributes as (namespace URI, local name, unescaped value).
    pub attrs: Vec<(String, String, String)>,
    /// Child elements in document order.
    pub children: Vec<Element>,
    /// Concatenated text directly inside this element, unescaped.
    pub text: String,
    /// Prefix-to-namespace bindings in scope here, used to resolve QName attribute values
    /// such as `i:type="d6p1:string"`.
    pub scope: Scope,
}

impl Element {
    /// The first child with this local name (any namespace).
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// The value of an attribute by namespace URI and local name.
    pub fn attr(&self, ns: &str, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, l, _)| n == ns && l == name)
            .map(|(_, _, v)| v.as_str())
    }

    /// The local part of the `xsi:type` attribute (`SqlFilter` from `i:type="SqlFilter"`,
    /// `string` from `p4:type="l28:string"`).
    pub fn instance_type(&self) -> Option<&str> {
        let value = self.attr(XSI_NS, "type")?;
        Some(value.rsplit(':').next().unwrap_or(value))
    }

    /// Trimmed text of this element.
    pub fn trimmed_text(&self) -> &str {
        self.text.trim()
    }
}

/// Parses a whole document and returns its root element.
///
/// # Errors
///
/// [`WireError::Xml`] when the document is not well-formed or has no root element.
pub fn parse(input: &str) -> Result<Element, WireError> {
    let mut reader = NsReader::from_str(input);
    reader.config_mut().trim_text(false);
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut declarations = 0usize;
    loop {
        let position = reader.buffer_position();
        let (ns, event) = reader
            .read_resolved_event()
            .map_err(|e| xml_error(position, e))?;
        let ns = resolved(&ns);
        match event {
            Event::Start(ref start) | Event::Empty(ref start) => {
                let is_empty = matches!(event, Event::Empty(_));
                if stack.len() >= MAX_DEPTH {
                    return Err(WireError::Xml(format!(
                        "elements nest deeper than {MAX_DEPTH} levels"
                    )));
                }
                let mut element = Element {
                    ns,
                    name: String::from_utf8_lossy(start.local_name().as_ref()).into_owned(),
                    scope: stack.last().map(|p| p.scope.clone()).unwrap_or_default(),
                    ..Element::default()
                };
                for attr in start.attributes() {
                    let attr = attr.map_err(|e| WireError::Xml(format!("bad attribute: {e}")))?;
                    let key = attr.key;
                    let value = attr
                        .unescape_value()
                        .map_err(|e| WireError::Xml(format!("bad attribute value: {e}")))?
                        .into_owned();
                    if let Some(prefix) = key.as_namespace_binding() {
                        let prefix = match prefix {
                            quick_xml::name::PrefixDeclaration::Default => String::new(),
                            quick_xml::name::PrefixDeclaration::Named(p) => {
                                String::from_utf8_lossy(p).into_owned()
                            }
                        };
                        declarations += 1;
                        if declarations > MAX_NAMESPACE_DECLARATIONS {
                            return Err(WireError::Xml(format!(
                                "more than {MAX_NAMESPACE_DECLARATIONS} namespace declarations"
                            )));
                        }
                        element.scope.bind(prefix, value);
                        continue;
                    }
                    let (attr_ns, local) = reader.resolve_attribute(key);
                    element.attrs.push((
                        resolved(&attr_ns),
                        String::from_utf8_lossy(local.as_ref()).into_owned(),
                        value,
                    ));
                }
                if is_empty {
                    attach(&mut stack, &mut root, element)?;
                } else {
                    stack.push(element);
                }
            }
            Event::End(_) => {
                let element = stack
                    .pop()
                    .ok_or_else(|| WireError::Xml("unbalanced end tag".into()))?;
                attach(&mut stack, &mut root, element)?;
            }
            Event::Text(text) => {
                let text = text
                    .decode()
                    .map_err(|e| WireError::Xml(format!("bad text: {e}")))?;
                push_text(&mut stack, &text)?;
            }
            Event::CData(data) => {
                let text = data
                    .decode()
                    .map_err(|e| WireError::Xml(format!("bad CDATA: {e}")))?;
                push_text(&mut stack, &text)?;
            }
            Event::GeneralRef(reference) => {
                let resolved = if let Some(c) = reference
                    .resolve_char_ref()
                    .map_err(|e| WireError::Xml(format!("bad character reference: {e}")))?
                {
                    c.to_string()
                } else {
                    let name = reference
                        .decode()
                        .map_err(|e| WireError::Xml(format!("bad entity reference: {e}")))?;
                    quick_xml::escape::resolve_predefined_entity(&name)
                        .ok_or_else(|| WireError::Xml(format!("unknown entity &{name};")))?
                        .to_string()
                };
                push_text(&mut stack, &resolved)?;
            }
            Event::Eof => break,
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) | Event::DocType(_) => {}
        }
    }
    if !stack.is_empty() {
        return Err(WireError::Xml("document ended inside an element".into()));
    }
    root.ok_or_else(|| WireError::Xml("document has no root element".into()))
}

/// Resolves a QName value (`d6p1:string`) against an element's scope, returning the
/// namespace URI and local part.
pub fn resolve_qname<'a>(element: &'a Element, qname: &'a str) -> (Option<&'a str>, &'a str) {
    let (prefix, local) = match qname.split_once(':') {
        Some((p, l)) => (p, l),
        None => ("", qname),
    };
    (element.scope.resolve(prefix), local)
}

fn resolved(ns: &ResolveResult<'_>) -> String {
    match ns {
        ResolveResult::Bound(ns) => String::from_utf8_lossy(ns.as_ref()).into_owned(),
        ResolveResult::Unbound | ResolveResult::Unknown(_) => String::new(),
    }
}

fn push_text(stack: &mut [Element], text: &str) -> Result<(), WireError> {
    match stack.last_mut() {
        Some(top) => {
            top.text.push_str(text);
            Ok(())
        }
        None if text.trim().is_empty() => Ok(()),
        None => Err(WireError::Xml("text outside the root element".into())),
    }
}

fn attach(
    stack: &mut [Element],
    root: &mut Option<Element>,
    element: Element,
) -> Result<(), WireError> {
    match stack.last_mut() {
        Some(parent) => parent.children.push(element),
        None if root.is_none() => *root = Some(element),
        None => return Err(WireError::Xml("more than one root element".into())),
    }
    Ok(())
}

fn xml_error(position: u64, e: quick_xml::Error) -> WireError {
    WireError::Xml(format!("near byte {position}: {e}"))
}

/// An `xs:boolean` element's text: `true` or `false`, any case.
pub(crate) fn boolean(name: &'static str, text: &str) -> Result<bool, WireError> {
    if text.eq_ignore_ascii_case("true") {
        Ok(true)
    } else if text.eq_ignore_ascii_case("false") {
        Ok(false)
    } else {
        Err(WireError::value(name, text, "expected true or false"))
    }
}

/// Escapes text for element content: `<`, `>` and `&` only, as the service writes it.
pub fn escape(text: &str) -> std::borrow::Cow<'_, str> {
    quick_xml::escape::partial_escape(text)
}

/// Escapes text for a double-quoted attribute value.
pub fn escape_attr(text: &str) -> std::borrow::Cow<'_, str> {
    quick_xml::escape::escape(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_prefixes_by_uri() {
        let doc = r#"<ns0:entry xmlns:ns0="http://www.w3.org/2005/Atom" xmlns="urn:x" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><ns0:content><A xsi:type="SqlFilter">a &amp; b&#65;</A></ns0:content></ns0:entry>"#;
        let root = parse(doc).unwrap();
        assert_eq!(root.ns, "http://www.w3.org/2005/Atom");
        assert_eq!(root.name, "entry");
        let a = &root.children[0].children[0];
        assert_eq!(a.ns, "urn:x");
        assert_eq!(a.instance_type(), Some("SqlFilter"));
        assert_eq!(a.text, "a & bA");
    }

    #[test]
    fn rejects_malformed() {
        assert!(parse("<a><b></a>").is_err());
        assert!(parse("").is_err());
        assert!(parse("<a/><b/>").is_err());
        assert!(parse("<a>&bogus;</a>").is_err());
    }

    #[test]
    fn nesting_and_declarations_are_bounded() {
        let deep = |n: usize| format!("{}{}", "<a>".repeat(n), "</a>".repeat(n));
        assert!(parse(&deep(MAX_DEPTH)).is_ok());
        assert!(
            parse(&deep(MAX_DEPTH + 1))
                .unwrap_err()
                .to_string()
                .contains("deeper")
        );
        assert!(parse(&deep(100_000)).is_err());
        let decls = |n: usize| {
            let attrs: String = (0..n).map(|i| format!(" xmlns:p{i}=\"urn:{i}\"")).collect();
            format!("<r{attrs}/>")
        };
        assert!(parse(&decls(MAX_NAMESPACE_DECLARATIONS)).is_ok());
        assert!(parse(&decls(MAX_NAMESPACE_DECLARATIONS + 1)).is_err());
    }

    #[test]
    fn siblings_share_their_parent_scope() {
        let children = "<c/>".repeat(1000);
        let doc = format!(r#"<r xmlns:a="urn:a" xmlns:b="urn:b">{children}</r>"#);
        let root = parse(&doc).unwrap();
        let first = root.children[0].scope.0.as_ref().unwrap();
        for c in &root.children {
            assert!(Arc::ptr_eq(c.scope.0.as_ref().unwrap(), first));
        }
        assert_eq!(root.children[999].scope.resolve("a"), Some("urn:a"));
        assert_eq!(root.children[999].scope.resolve("z"), None);
    }

    #[test]
    fn qname_values_resolve_in_scope() {
        let doc = r#"<V xmlns:p4="http://www.w3.org/2001/XMLSchema-instance" p4:type="l28:string" xmlns:l28="http://www.w3.org/2001/XMLSchema">red</V>"#;
        let v = parse(doc).unwrap();
        let t = v.attr(XSI_NS, "type").unwrap();
        assert_eq!(resolve_qname(&v, t), (Some(XSD_NS), "string"));
    }
}
