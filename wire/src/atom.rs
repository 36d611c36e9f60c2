//! ATOM entries and feeds around descriptions, and the Service Bus XML error body.

use std::fmt::Write as _;

use chrono::{DateTime, SecondsFormat, Utc};

use crate::description::{EntityDescription, EntityKind, ParsedDescription};
use crate::error::WireError;
use crate::rule::RuleDescription;
use crate::xml::{self, SB_NS, escape, escape_attr};

/// The Atom namespace.
pub const ATOM_NS: &str = "http://www.w3.org/2005/Atom";
/// `Content-Type` of an entry response.
pub const ENTRY_CONTENT_TYPE: &str = "application/atom+xml;type=entry;charset=utf-8";
/// `Content-Type` of a feed response.
pub const FEED_CONTENT_TYPE: &str = "application/atom+xml;type=feed;charset=utf-8";
/// `Content-Type` of an error response.
pub const ERROR_CONTENT_TYPE: &str = "application/xml; charset=utf-8";

/// What a management `PUT` carried.
#[derive(Debug, Clone, PartialEq)]
pub enum EntryContent {
    /// A queue, topic or subscription description.
    Entity(ParsedDescription),
    /// A rule description.
    Rule(RuleDescription),
}

/// Parses a management request body: an Atom `<entry>` whose `<content>` holds one
/// description (a bare description element is accepted too).
///
/// # Errors
///
/// [`WireError::Xml`] for malformed XML, [`WireError::MissingContent`], [`WireError::ForeignNamespace`]
/// or [`WireError::UnknownDescription`] for a document that is not an entry with a known
/// description, [`WireError::Value`] for bad values.
pub fn parse_entry(body: &str) -> Result<EntryContent, WireError> {
    let root = xml::parse(body)?;
    let description = if root.name == "entry" && root.ns == ATOM_NS {
        let content = root.child("content").ok_or(WireError::MissingContent {
            title: None,
            missing: "<content> element",
        })?;
        content.children.first().ok_or(WireError::MissingContent {
            title: None,
            missing: "description",
        })?
    } else {
        &root
    };
    if description.ns != SB_NS && !description.ns.is_empty() {
        return Err(WireError::ForeignNamespace {
            element: description.name.clone(),
            namespace: SB_NS,
        });
    }
    if description.name == "RuleDescription" {
        return RuleDescription::parse(description).map(EntryContent::Rule);
    }
    let kind = EntityKind::from_element_name(&description.name)
        .ok_or_else(|| WireError::UnknownDescription(description.name.clone()))?;
    EntityDescription::parse(kind, description).map(EntryContent::Entity)
}

/// One entry of a list feed: its title (the entity's own name) and content.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedEntry {
    /// `<title>`.
    pub title: String,
    /// The description it holds.
    pub content: EntryContent,
}

/// Reads a response that is either one entry or a feed: the entries it holds (none for the
/// service's empty "not found" feed).
///
/// # Errors
///
/// [`WireError`] when the XML or a description in it is malformed.
pub fn parse_entries(body: &str) -> Result<Vec<FeedEntry>, WireError> {
    let root = xml::parse(body)?;
    let entries: Vec<&xml::Element> = match root.name.as_str() {
        "entry" => vec![&root],
        "feed" => root.children.iter().filter(|c| c.name == "entry").collect(),
        other => {
            return Err(WireError::UnexpectedRoot(other.to_string()));
        }
    };
    entries
        .into_iter()
        .map(|e| {
            let title = e
                .child("title")
                .map(|t| t.trimmed_text().to_string())
                .unwrap_or_default();
            let description = e
                .child("content")
                .and_then(|c| c.children.first())
                .ok_or_else(|| WireError::MissingContent {
                    title: Some(title.clone()),
                    missing: "description",
                })?;
            let content = if description.name == "RuleDescription" {
                EntryContent::Rule(RuleDescription::parse(description)?)
            } else {
                let kind = EntityKind::from_element_name(&description.name)
                    .ok_or_else(|| WireError::UnknownDescription(description.name.clone()))?;
                EntryContent::Entity(EntityDescription::parse(kind, description)?)
            };
            Ok(FeedEntry { title, content })
        })
        .collect()
}

/// Wraps a description in the entry a client `PUT`s.
pub fn request_entry(description_xml: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="utf-8"?><entry xmlns="{ATOM_NS}"><content type="application/xml">{description_xml}</content></entry>"#
    )
}

/// The links and metadata of one entry.
#[derive(Debug, Clone)]
pub struct EntryMeta<'a> {
    /// Absolute URL of the entity (also the self link).
    pub url: &'a str,
    /// `<title>`: the entity's own name (last segment for subscriptions and rules).
    pub title: &'a str,
    /// `<published>`.
    pub published: DateTime<Utc>,
    /// `<updated>`.
    pub updated: DateTime<Utc>,
    /// `<author><name>`: the namespace (omitted for subscriptions and rules).
    pub author: Option<&'a str>,
    /// `xml:base` when the entry sits in a feed.
    pub xml_base: Option<&'a str>,
}

/// Writes an entry around already-serialised content.
pub fn entry(meta: &EntryMeta<'_>, content: &str) -> String {
    let mut out = format!(r#"<entry xmlns="{ATOM_NS}""#);
    if let Some(base) = meta.xml_base {
        let _ = write!(out, r#" xml:base="{}""#, escape_attr(base));
    }
    let url = escape_attr(meta.url);
    let _ = write!(
        out,
        r#"><id>{url}</id><title type="text">{}</title><published>{}</published><updated>{}</updated>"#,
        escape(meta.title),
        atom_time(meta.published),
        atom_time(meta.updated)
    );
    if let Some(author) = meta.author {
        let _ = write!(out, "<author><name>{}</name></author>", escape(author));
    }
    let _ = write!(
        out,
        r#"<link rel="self" href="{url}"/><content type="application/xml">{content}</content></entry>"#
    );
    out
}

/// Writes a feed of already-serialised entries, with a `next` link while entries remain.
pub fn feed(
    title: &str,
    url: &str,
    updated: DateTime<Utc>,
    entries: &[String],
    next: Option<&str>,
) -> String {
    let url = escape_attr(url);
    let mut out = format!(
        r#"<feed xmlns="{ATOM_NS}"><title type="text">{}</title><id>{url}</id><updated>{}</updated><link rel="self" href="{url}"/>"#,
        escape(title),
        atom_time(updated)
    );
    if let Some(next) = next {
        let _ = write!(out, r#"<link rel="next" href="{}"/>"#, escape_attr(next));
    }
    for e in entries {
        out.push_str(e);
    }
    out.push_str("</feed>");
    out
}

/// The service's answer to a `GET` of a missing entity: a "publicly listed services" feed
/// with no entry (contract 4.9).
pub fn empty_discovery_feed(updated: DateTime<Utc>, tracking_id: &str) -> String {
    format!(
        r#"<feed xmlns="{ATOM_NS}"><title type="text">Publicly Listed Services</title><subtitle type="text">This is the list of publicly-listed services currently available.</subtitle><id>uuid:{tracking_id};id=1</id><updated>{}</updated><generator>Service Bus 1.1</generator></feed>"#,
        atom_time(updated)
    )
}

/// The Service Bus error body: `<Error><Code>..</Code><Detail>..</Detail></Error>`.
pub fn error_body(code: u16, detail: &str) -> String {
    format!(
        "<Error><Code>{code}</Code><Detail>{}</Detail></Error>",
        escape(detail)
    )
}

/// The namespace information entry content (contract 4.8).
pub fn namespace_info(name: &str, created: DateTime<Utc>) -> String {
    let t = crate::time::format_timestamp(created);
    format!(
        r#"<NamespaceInfo xmlns="{SB_NS}" xmlns:i="http://www.w3.org/2001/XMLSchema-instance"><CreatedTime>{t}</CreatedTime><MessagingSKU>Standard</MessagingSKU><ModifiedTime>{t}</ModifiedTime><Name>{}</Name><NamespaceType>Messaging</NamespaceType></NamespaceInfo>"#,
        escape(name)
    )
}

fn atom_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}
