//! ATOM management: `PUT`/`GET`/`DELETE` of queues, topics, subscriptions and rules, and
//! the list feeds. A thin translation between HTTP and the broker.

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use servicebus_wire::EntityKind;
use servicebus_wire::atom::{self, ENTRY_CONTENT_TYPE, EntryContent, EntryMeta, FEED_CONTENT_TYPE};

use super::target::Target;
use super::{ApiError, AppState, RequestContext};
use crate::auth::{Need, Right};
use crate::broker::{EntityView, Page, PutOutcome};
use crate::config::MissingEntityGet;
use crate::model::RuleRecord;

/// Page size when `$top` is absent.
const DEFAULT_TOP: usize = 100;

/// The rights a management request needs.
pub(super) fn need(target: &Target, method: &Method) -> Need {
    match (target, method) {
        (Target::NamespaceInfo, _) => Need::AnyValidToken,
        (Target::Rules(..), &Method::GET) => Need::Either(Right::Manage, Right::Listen),
        _ => Need::Right(Right::Manage),
    }
}

/// Serves an authorized management request. (One arm per route and method, each a few
/// lines of translation: long as a table is, split it would scatter the table.)
pub(super) async fn handle(
    state: &AppState,
    ctx: &RequestContext,
    method: &Method,
    target: &Target,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let broker = &state.broker;
    let update = headers.contains_key(header::IF_MATCH);
    match (method, target) {
        (&Method::GET, Target::NamespaceInfo) => {
            let now = broker.clock().now();
            let url = format!("{}{}{}", ctx.base(), ctx.raw_path, ctx.version_suffix());
            let meta = EntryMeta {
                url: &url,
                title: &state.namespace,
                published: now,
                updated: now,
                author: Some(&state.namespace),
                xml_base: None,
            };
            Ok(entry_response(
                StatusCode::OK,
                atom::entry(&meta, &atom::namespace_info(&state.namespace, now)),
            ))
        }
        (&Method::GET, Target::ListQueues | Target::ListTopics) => {
            let (kind, title) = if *target == Target::ListQueues {
                (EntityKind::Queue, "Queues")
            } else {
                (EntityKind::Topic, "Topics")
            };
            let (skip, top) = paging(ctx)?;
            let page = broker.list_entities(kind, skip, top)?;
            Ok(entity_feed(state, ctx, title, &page, skip, top, |v| {
                format!("{}/{}", ctx.base(), v.record.name)
            }))
        }
        (&Method::GET, Target::Subscriptions(topic)) => {
            let (skip, top) = paging(ctx)?;
            let page = broker.list_subscriptions(topic, skip, top)?;
            Ok(entity_feed(
                state,
                ctx,
                "Subscriptions",
                &page,
                skip,
                top,
                |v| listed_id(ctx, &v.record.name),
            ))
        }
        (&Method::GET, Target::Rules(topic, sub)) => {
            let (skip, top) = paging(ctx)?;
            let page = broker.list_rules(topic, sub, skip, top)?;
            let entries: Vec<String> = page
                .items
                .iter()
                .map(|r| rule_entry(ctx, r, &listed_id(ctx, &r.name), true))
                .collect();
            Ok(feed_response(ctx, "Rules", &entries, skip, top, page.total))
        }
        (&Method::GET, Target::Entity(path)) => match broker.get_entity(path)? {
            Some(view) => Ok(entry_response(
                StatusCode::OK,
                entity_entry(state, ctx, &view, &own_url(ctx), false),
            )),
            None => missing(state, ctx),
        },
        (&Method::GET, Target::Subscription(topic, sub)) => {
            match broker.get_subscription(topic, sub)? {
                Some(view) => Ok(entry_response(
                    StatusCode::OK,
                    entity_entry(state, ctx, &view, &own_url(ctx), false),
                )),
                None => missing(state, ctx),
            }
        }
        (&Method::GET, Target::Rule(topic, sub, rule)) => {
            match broker.get_rule(topic, sub, rule)? {
                Some(record) => Ok(entry_response(
                    StatusCode::OK,
                    rule_entry(ctx, &record, &own_url(ctx), false),
                )),
                None => missing(state, ctx),
            }
        }
        (&Method::PUT, Target::Entity(path)) => {
            let EntryContent::Entity(parsed) = parse_body(body)? else {
                return Err(ApiError::bad_request(format!(
                    "'{path}' is a queue or topic path, but the body is a RuleDescription"
                )));
            };
            let (outcome, view) = broker.put_entity(path, parsed, update).await?;
            Ok(put_response(state, ctx, outcome, view))
        }
        (&Method::PUT, Target::Subscription(topic, sub)) => {
            let EntryContent::Entity(parsed) = parse_body(body)? else {
                return Err(ApiError::bad_request(
                    "a subscription path needs a SubscriptionDescription, not a RuleDescription",
                ));
            };
            let (outcome, view) = broker.put_subscription(topic, sub, parsed, update).await?;
            Ok(put_response(state, ctx, outcome, view))
        }
        (&Method::PUT, Target::Rule(topic, sub, name)) => {
            let EntryContent::Rule(rule) = parse_body(body)? else {
                return Err(ApiError::bad_request("a rule path needs a RuleDescription"));
            };
            let (outcome, record) = broker.put_rule(topic, sub, name, rule, update).await?;
            Ok(entry_response(
                status_of(outcome),
                rule_entry(ctx, &record, &own_url(ctx), false),
            ))
        }
        (&Method::DELETE, Target::Entity(path)) => {
            broker.delete_entity(path).await?;
            Ok(StatusCode::OK.into_response())
        }
        (&Method::DELETE, Target::Subscription(topic, sub)) => {
            broker.delete_subscription(topic, sub).await?;
            Ok(StatusCode::OK.into_response())
        }
        (&Method::DELETE, Target::Rule(topic, sub, rule)) => {
            broker.delete_rule(topic, sub, rule).await?;
            Ok(StatusCode::OK.into_response())
        }
        _ => Err(ApiError::method_not_allowed(method, target.template())),
    }
}

fn parse_body(body: &Bytes) -> Result<EntryContent, ApiError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::bad_request("the request body is not UTF-8"))?;
    if text.trim().is_empty() {
        return Err(ApiError::bad_request(
            "the request body is empty; expected an ATOM entry with a description",
        ));
    }
    Ok(atom::parse_entry(text)?)
}

fn status_of(outcome: PutOutcome) -> StatusCode {
    match outcome {
        PutOutcome::Created => StatusCode::CREATED,
        PutOutcome::Updated => StatusCode::OK,
    }
}

fn put_response(
    state: &AppState,
    ctx: &RequestContext,
    outcome: PutOutcome,
    mut view: EntityView,
) -> Response {
    // The service leaves AccessedAt and CountDetails out of a queue or topic create answer.
    view.runtime.detailed = outcome == PutOutcome::Updated;
    entry_response(
        status_of(outcome),
        entity_entry(state, ctx, &view, &own_url(ctx), false),
    )
}

/// The entry's id and self link: the request's own URL with its casing, plus `api-version`.
/// The `<id>` of an entry in a subscription or rule feed: the feed's path as requested,
/// then the name. Clients derive names from these ids case-sensitively, each from the
/// casing it requested with: PyPI `azure-servicebus` 0.21.1 asks for `/subscriptions` and
/// `/rules` and looks for them; the npm admin client asks for `/Subscriptions/` and `/Rules/`
/// and matches those (legacy `azure-sb` splits on `/`).
fn listed_id(ctx: &RequestContext, name: &str) -> String {
    format!(
        "{}{}/{name}",
        ctx.base(),
        ctx.raw_path.trim_end_matches('/')
    )
}

fn own_url(ctx: &RequestContext) -> String {
    format!("{}{}{}", ctx.base(), ctx.raw_path, ctx.version_suffix())
}

fn missing(state: &AppState, ctx: &RequestContext) -> Result<Response, ApiError> {
    match state.missing_get {
        MissingEntityGet::EmptyFeed => {
            let body = atom::empty_discovery_feed(
                state.broker.clock().now(),
                &uuid::Uuid::new_v4().to_string(),
            );
            Ok(with_type(StatusCode::OK, body, FEED_CONTENT_TYPE))
        }
        MissingEntityGet::NotFound => Err(ApiError::not_found(format!(
            "'{}' does not exist",
            ctx.decoded_path.trim_start_matches('/')
        ))),
    }
}

fn paging(ctx: &RequestContext) -> Result<(usize, usize), ApiError> {
    let number = |name: &str, default: usize| -> Result<usize, ApiError> {
        match ctx.param(name) {
            None | Some("") => Ok(default),
            Some(v) => v.parse().map_err(|_| {
                ApiError::bad_request(format!(
                    "the query parameter {name} must be a non-negative whole number, not '{v}'"
                ))
            }),
        }
    };
    Ok((number("$skip", 0)?, number("$top", DEFAULT_TOP)?))
}

fn entity_entry(
    state: &AppState,
    ctx: &RequestContext,
    view: &EntityView,
    url: &str,
    in_feed: bool,
) -> String {
    let kind = view.record.description.kind;
    let url = if in_feed {
        format!("{url}{}", ctx.version_suffix())
    } else {
        url.to_string()
    };
    let feed_url = ctx.url();
    let content = view.record.description.to_response_xml(&view.runtime);
    let meta = EntryMeta {
        url: &url,
        title: &view.record.name,
        published: view.record.created_at,
        updated: view.record.updated_at,
        author: (kind != EntityKind::Subscription).then_some(state.namespace.as_str()),
        xml_base: in_feed.then_some(feed_url.as_str()),
    };
    atom::entry(&meta, &content)
}

/// A feed of queues, topics or subscriptions; `url` gives each entry's own URL.
fn entity_feed(
    state: &AppState,
    ctx: &RequestContext,
    title: &str,
    page: &Page<EntityView>,
    skip: usize,
    top: usize,
    url: impl Fn(&EntityView) -> String,
) -> Response {
    let entries: Vec<String> = page
        .items
        .iter()
        .map(|v| entity_entry(state, ctx, v, &url(v), true))
        .collect();
    feed_response(ctx, title, &entries, skip, top, page.total)
}

fn rule_entry(ctx: &RequestContext, record: &RuleRecord, url: &str, in_feed: bool) -> String {
    let url = if in_feed {
        format!("{url}{}", ctx.version_suffix())
    } else {
        url.to_string()
    };
    let feed_url = ctx.url();
    let meta = EntryMeta {
        url: &url,
        title: &record.name,
        published: record.created_at,
        updated: record.created_at,
        author: None,
        xml_base: in_feed.then_some(feed_url.as_str()),
    };
    atom::entry(
        &meta,
        &record.rule.to_response_xml(&record.name, record.created_at),
    )
}

fn feed_response(
    ctx: &RequestContext,
    title: &str,
    entries: &[String],
    skip: usize,
    top: usize,
    total: usize,
) -> Response {
    let next = (skip + entries.len() < total).then(|| {
        let mut url = format!(
            "{}{}?$skip={}&$top={top}",
            ctx.base(),
            ctx.raw_path,
            skip + entries.len()
        );
        if let Some(v) = ctx.param("api-version") {
            url.push_str(&format!("&api-version={v}"));
        }
        url
    });
    let body = atom::feed(
        title,
        &ctx.url(),
        chrono::Utc::now(),
        entries,
        next.as_deref(),
    );
    with_type(StatusCode::OK, body, FEED_CONTENT_TYPE)
}

fn entry_response(status: StatusCode, body: String) -> Response {
    with_type(status, body, ENTRY_CONTENT_TYPE)
}

fn with_type(status: StatusCode, body: String, content_type: &'static str) -> Response {
    let mut response = (status, body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
