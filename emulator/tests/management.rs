//! ATOM management over HTTP: every operation and its error cases.

mod common;

use common::*;

const QUEUE_RESPONSE_ORDER: [&str; 24] = [
    "LockDuration",
    "MaxSizeInMegabytes",
    "RequiresDuplicateDetection",
    "RequiresSession",
    "DefaultMessageTimeToLive",
    "DeadLetteringOnMessageExpiration",
    "DuplicateDetectionHistoryTimeWindow",
    "MaxDeliveryCount",
    "EnableBatchedOperations",
    "SizeInBytes",
    "MessageCount",
    "IsAnonymousAccessible",
    "AuthorizationRules",
    "Status",
    "CreatedAt",
    "UpdatedAt",
    "AccessedAt",
    "SupportOrdering",
    "CountDetails",
    "AutoDeleteOnIdle",
    "EnablePartitioning",
    "EntityAvailabilityStatus",
    "EnableExpress",
    "MaxMessageSizeInKilobytes",
];

#[tokio::test]
async fn queue_lifecycle() {
    let server = Server::memory().await;
    let c = server.client();

    let created = c
        .put(
            "/Orders?api-version=2021-05",
            queue("<LockDuration>PT30S</LockDuration><MaxDeliveryCount>5</MaxDeliveryCount>"),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(
        created.content_type(),
        "application/atom+xml;type=entry;charset=utf-8"
    );
    let entry = created.xml();
    assert_eq!(
        text(&entry, "id"),
        format!("http://{}/Orders?api-version=2021-05", server.addr)
    );
    assert_eq!(text(&entry, "title"), "Orders");
    let d = created.description();
    assert_eq!(d.name, "QueueDescription");
    // Create answers leave out AccessedAt and CountDetails, like the service.
    let without: Vec<&str> = QUEUE_RESPONSE_ORDER
        .iter()
        .copied()
        .filter(|n| *n != "AccessedAt" && *n != "CountDetails")
        .collect();
    assert_eq!(child_names(&d), without);
    assert_eq!(text(&d, "LockDuration"), "PT30S");
    assert_eq!(text(&d, "MaxDeliveryCount"), "5");
    assert_eq!(
        text(&d, "DefaultMessageTimeToLive"),
        "P10675199DT2H48M5.4775807S"
    );
    assert_eq!(text(&d, "MaxSizeInMegabytes"), "1024");
    assert_eq!(text(&d, "Status"), "Active");

    // Again, in any case: 409.
    for path in ["/Orders", "/orders"] {
        let again = c.put(path, queue("")).await;
        assert_eq!(again.status, 409, "{path}");
        assert!(
            again.detail().starts_with("SubCode=40900"),
            "{}",
            again.body
        );
    }
    // A topic cannot take a queue's name either.
    assert_eq!(c.put("/ORDERS", topic("")).await.status, 409);

    // Get, with runtime fields, in the response order; the id echoes the request's casing.
    let got = c.get("/oRDers?api-version=2021-05").await;
    assert_eq!(got.status, 200);
    assert_eq!(
        text(&got.xml(), "id"),
        format!("http://{}/oRDers?api-version=2021-05", server.addr)
    );
    assert_eq!(text(&got.xml(), "title"), "Orders");
    let d = got.description();
    assert_eq!(child_names(&d), QUEUE_RESPONSE_ORDER);
    let counts = d.child("CountDetails").unwrap();
    assert_eq!(
        child_names(counts),
        [
            "ActiveMessageCount",
            "DeadLetterMessageCount",
            "ScheduledMessageCount",
            "TransferMessageCount",
            "TransferDeadLetterMessageCount"
        ]
    );
    assert_eq!(text(&d, "AccessedAt"), "0001-01-01T00:00:00Z");

    // Update replaces the whole description; omitted settings revert to defaults.
    let updated = c.update("/orders", queue("<MaxDeliveryCount>9</MaxDeliveryCount><SizeInBytes>77</SizeInBytes><CreatedAt>2000-01-01T00:00:00Z</CreatedAt>")).await;
    assert_eq!(updated.status, 200, "{}", updated.body);
    let d = updated.description();
    assert_eq!(text(&d, "MaxDeliveryCount"), "9");
    assert_eq!(text(&d, "LockDuration"), "PT1M");
    assert_eq!(
        text(&d, "SizeInBytes"),
        "0",
        "read-only elements are ignored"
    );
    assert_ne!(text(&d, "CreatedAt"), "2000-01-01T00:00:00.000Z");
    // Creation-only settings cannot change.
    let refused = c
        .update("/orders", queue("<RequiresSession>true</RequiresSession>"))
        .await;
    assert_eq!(refused.status, 400);
    assert!(
        refused
            .detail()
            .contains("RequiresSession cannot be changed"),
        "{}",
        refused.body
    );
    // Update of a missing entity.
    assert_eq!(c.update("/nothere", queue("")).await.status, 404);

    // Delete, then delete again, then get: empty feed.
    assert_eq!(c.delete("/ORDERS").await.status, 200);
    let again = c.delete("/orders").await;
    assert_eq!(again.status, 404);
    assert!(again.detail().contains("does not exist"), "{}", again.body);
    let missing = c.get("/orders").await;
    assert_eq!(missing.status, 200);
    assert_eq!(
        missing.content_type(),
        "application/atom+xml;type=feed;charset=utf-8"
    );
    let feed = missing.xml();
    assert_eq!(feed.name, "feed");
    assert_eq!(text(&feed, "title"), "Publicly Listed Services");
    assert!(feed.child("entry").is_none());
}

#[tokio::test]
async fn topic_subscriptions_and_rules() {
    let server = Server::memory().await;
    let c = server.client();

    // A subscription of a missing topic.
    assert_eq!(
        c.put("/news/Subscriptions/s1", subscription(""))
            .await
            .status,
        404
    );
    let t = c.put("/news", topic("<DefaultMessageTimeToLive>PT2H</DefaultMessageTimeToLive><MaxSizeInMegabytes>2048</MaxSizeInMegabytes>")).await;
    assert_eq!(t.status, 201, "{}", t.body);
    assert_eq!(
        t.xml().child("author").map(|a| text(a, "name")).as_deref(),
        Some("sbemulatorns")
    );
    let d = t.description();
    assert_eq!(text(&d, "DefaultMessageTimeToLive"), "PT2H");
    assert_eq!(text(&d, "MaxSizeInMegabytes"), "2048");

    // New subscription: $Default TrueFilter.
    let s = c
        .put(
            "/news/Subscriptions/s1",
            subscription(
                "<LockDuration>PT45S</LockDuration><AutoDeleteOnIdle>PT2H</AutoDeleteOnIdle>",
            ),
        )
        .await;
    assert_eq!(s.status, 201, "{}", s.body);
    assert_eq!(text(&s.xml(), "title"), "s1");
    assert!(s.xml().child("author").is_none());
    let d = s.description();
    assert_eq!(
        child_names(&d),
        [
            "LockDuration",
            "RequiresSession",
            "DefaultMessageTimeToLive",
            "DeadLetteringOnMessageExpiration",
            "DeadLetteringOnFilterEvaluationExceptions",
            "MessageCount",
            "MaxDeliveryCount",
            "EnableBatchedOperations",
            "Status",
            "CreatedAt",
            "UpdatedAt",
            "AccessedAt",
            "CountDetails",
            "AutoDeleteOnIdle",
            "EntityAvailabilityStatus",
        ]
    );
    assert_eq!(text(&d, "AutoDeleteOnIdle"), "PT2H");
    assert_eq!(
        c.put("/news/subscriptions/S1", subscription(""))
            .await
            .status,
        409
    );
    let default_rule = c.get("/news/Subscriptions/s1/Rules/%24Default").await;
    assert_eq!(default_rule.status, 200, "{}", default_rule.body);
    let r = default_rule.description();
    assert_eq!(
        r.child("Filter").unwrap().instance_type(),
        Some("TrueFilter")
    );
    assert_eq!(text(r.child("Filter").unwrap(), "SqlExpression"), "1=1");
    assert_eq!(
        r.child("Action").unwrap().instance_type(),
        Some("EmptyRuleAction")
    );
    assert_eq!(child_names(&r), ["Filter", "Action", "CreatedAt", "Name"]);
    assert_eq!(text(&r, "Name"), "$Default");

    // DefaultRuleDescription takes its name.
    let with_rule = subscription(
        r#"<DefaultRuleDescription><Filter i:type="SqlFilter"><SqlExpression>color = 'red'</SqlExpression></Filter><Action i:type="EmptyRuleAction"/><Name>initial</Name></DefaultRuleDescription>"#,
    );
    assert_eq!(c.put("/news/Subscriptions/s2", with_rule).await.status, 201);
    let rules = c.get("/news/Subscriptions/s2/Rules").await;
    assert_eq!(rules.titles(), ["initial"]);

    // Rules: create, conflict, get, update, delete; a rule of a missing subscription.
    let corr = rule(
        r#"<Filter i:type="CorrelationFilter"><CorrelationId>c1</CorrelationId><Properties><KeyValueOfstringanyType><Key>n</Key><Value i:type="d6p1:int" xmlns:d6p1="http://www.w3.org/2001/XMLSchema">7</Value></KeyValueOfstringanyType></Properties></Filter><Action i:type="EmptyRuleAction"/><Name>ignored</Name>"#,
    );
    let created = c
        .put("/news/Subscriptions/s1/Rules/byCorrelation", corr.clone())
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let f = created.description();
    assert_eq!(text(&f, "Name"), "byCorrelation");
    let filter = f.child("Filter").unwrap();
    assert_eq!(filter.instance_type(), Some("CorrelationFilter"));
    assert_eq!(text(filter, "CorrelationId"), "c1");
    let value = filter.child("Properties").unwrap().children[0]
        .child("Value")
        .unwrap();
    assert_eq!(value.instance_type(), Some("int"));
    assert_eq!(value.text, "7");
    assert_eq!(
        c.put("/news/Subscriptions/s1/Rules/bycorrelation", corr.clone())
            .await
            .status,
        409
    );
    assert_eq!(
        c.put("/news/Subscriptions/nosub/Rules/r", corr.clone())
            .await
            .status,
        404
    );
    let sql_action = rule(
        r#"<Filter i:type="SqlFilter"><SqlExpression>n &gt; 5</SqlExpression></Filter><Action i:type="SqlRuleAction"><SqlExpression>SET tagged = 'yes'</SqlExpression></Action>"#,
    );
    let updated = c
        .update("/news/Subscriptions/s1/Rules/byCorrelation", sql_action)
        .await;
    assert_eq!(updated.status, 200, "{}", updated.body);
    assert!(
        updated
            .body
            .contains("<SqlExpression>n &gt; 5</SqlExpression>"),
        "{}",
        updated.body
    );
    assert!(
        updated
            .body
            .contains("<SqlExpression>SET tagged = 'yes'</SqlExpression>"),
        "{}",
        updated.body
    );
    assert_eq!(
        c.update("/news/Subscriptions/s1/Rules/nope", corr)
            .await
            .status,
        404
    );
    assert_eq!(
        c.get("/news/Subscriptions/s1/Rules/").await.titles(),
        ["$Default", "byCorrelation"]
    );
    assert_eq!(
        c.delete("/news/subscriptions/s1/rules/%24Default")
            .await
            .status,
        200
    );
    assert_eq!(
        c.delete("/news/subscriptions/s1/rules/$Default")
            .await
            .status,
        404
    );
    assert_eq!(
        c.get("/news/Subscriptions/s1/Rules").await.titles(),
        ["byCorrelation"]
    );

    // The topic counts its subscriptions and answers in the service's order.
    let t = c.get("/news").await.description();
    assert_eq!(text(&t, "SubscriptionCount"), "2");
    assert_eq!(
        child_names(&t),
        [
            "DefaultMessageTimeToLive",
            "MaxSizeInMegabytes",
            "RequiresDuplicateDetection",
            "DuplicateDetectionHistoryTimeWindow",
            "EnableBatchedOperations",
            "SizeInBytes",
            "FilteringMessagesBeforePublishing",
            "IsAnonymousAccessible",
            "AuthorizationRules",
            "Status",
            "CreatedAt",
            "UpdatedAt",
            "AccessedAt",
            "SupportOrdering",
            "CountDetails",
            "SubscriptionCount",
            "AutoDeleteOnIdle",
            "EnablePartitioning",
            "EntityAvailabilityStatus",
            "EnableSubscriptionPartitioning",
            "EnableExpress",
            "MaxMessageSizeInKilobytes",
        ]
    );
    assert_eq!(c.get("/news/Subscriptions/").await.titles(), ["s1", "s2"]);

    // Delete a subscription, then the topic with the rest; a recreated topic is empty.
    assert_eq!(c.delete("/news/Subscriptions/s2").await.status, 200);
    assert_eq!(c.delete("/news/Subscriptions/s2").await.status, 404);
    assert_eq!(c.get("/news/Subscriptions/s2").await.xml().name, "feed");
    assert_eq!(c.delete("/news").await.status, 200);
    assert_eq!(c.put("/news", topic("")).await.status, 201);
    assert_eq!(
        c.get("/news/Subscriptions").await.titles(),
        Vec::<String>::new()
    );
    assert_eq!(
        c.get("/news/Subscriptions/s1/Rules/byCorrelation")
            .await
            .xml()
            .name,
        "feed"
    );
    assert_eq!(c.get("/gone/Subscriptions").await.status, 404);
}

#[tokio::test]
async fn list_feeds_page_with_next_links() {
    let server = Server::memory().await;
    let c = server.client();
    for name in ["q3", "q1", "a/b/q2", "Q0"] {
        assert_eq!(c.put(&format!("/{name}"), queue("")).await.status, 201);
    }
    c.put("/t1", topic("")).await;
    let all = c.get("/$Resources/Queues?api-version=2021-05").await;
    assert_eq!(all.titles(), ["a/b/q2", "Q0", "q1", "q3"]);
    let feed = all.xml();
    assert_eq!(text(&feed, "title"), "Queues");
    assert!(
        feed.children
            .iter()
            .all(|l| l.name != "link" || l.attr("", "rel") != Some("next"))
    );
    let first = feed.children.iter().find(|e| e.name == "entry").unwrap();
    assert_eq!(
        first.attr("http://www.w3.org/XML/1998/namespace", "base"),
        Some(
            format!(
                "http://{}/$Resources/Queues?api-version=2021-05",
                server.addr
            )
            .as_str()
        )
    );
    assert_eq!(
        text(first, "id"),
        format!("http://{}/a/b/q2?api-version=2021-05", server.addr)
    );

    let page = c
        .get("/%24Resources/queues?%24skip=1&%24top=2&api-version=2021-05")
        .await;
    assert_eq!(page.titles(), ["Q0", "q1"]);
    let next = page
        .xml()
        .children
        .iter()
        .find(|l| l.name == "link" && l.attr("", "rel") == Some("next"))
        .map(|l| l.attr("", "href").unwrap().to_string());
    assert_eq!(
        next.as_deref(),
        Some(
            format!(
                "http://{}/%24Resources/queues?$skip=3&$top=2&api-version=2021-05",
                server.addr
            )
            .as_str()
        )
    );
    assert_eq!(
        c.get("/$Resources/Queues?$skip=3&$top=2").await.titles(),
        ["q3"]
    );
    assert_eq!(c.get("/$Resources/Topics").await.titles(), ["t1"]);
    let bad = c.get("/$Resources/Queues?$top=many").await;
    assert_eq!(bad.status, 400);
    assert!(bad.detail().contains("$top"), "{}", bad.body);
}

#[tokio::test]
async fn bad_requests_say_what_is_wrong() {
    let server = Server::memory().await;
    let c = server.client();
    let cases: [(&str, String, &str); 9] = [
        ("/q", "<entry><content>".into(), "malformed XML"),
        (
            "/q",
            queue("<LockDuration>soon</LockDuration>"),
            "LockDuration",
        ),
        (
            "/q",
            queue("<LockDuration>PT10M</LockDuration>"),
            "between PT5S and PT5M",
        ),
        (
            "/q",
            queue("<MaxDeliveryCount>-1</MaxDeliveryCount>"),
            "MaxDeliveryCount",
        ),
        (
            "/q",
            queue("<RequiresSession>yes</RequiresSession>"),
            "true or false",
        ),
        (
            "/q",
            queue("<MaxSizeInMegabytes>1000</MaxSizeInMegabytes>"),
            "MaxSizeInMegabytes",
        ),
        ("/bad*name", queue(""), "is not allowed"),
        ("/q", String::new(), "body is empty"),
        (
            "/q",
            entry(
                "<Widget xmlns=\"http://schemas.microsoft.com/netservices/2010/10/servicebus/connect\"/>",
            ),
            "Widget",
        ),
    ];
    for (path, body, needle) in cases {
        let r = c.put(path, body.clone()).await;
        assert_eq!(r.status, 400, "{path} {body}: {}", r.body);
        let detail = r.detail();
        assert!(detail.starts_with("SubCode=40000."), "{detail}");
        assert!(detail.contains(needle), "{needle} not in {detail}");
    }
    let long = format!("/{}", "x".repeat(261));
    assert_eq!(c.put(&long, queue("")).await.status, 400);
    c.put("/t", topic("")).await;
    assert_eq!(
        c.put("/t/Subscriptions/bad$name", subscription(""))
            .await
            .status,
        400
    );
    assert_eq!(c.put("/t/Subscriptions/s", queue("")).await.status, 400);
    assert_eq!(c.put("/t/Subscriptions/s", rule("")).await.status, 400);
    c.put("/t/Subscriptions/s", subscription("")).await;
    let bad_filter = c
        .put(
            "/t/Subscriptions/s/Rules/r",
            rule(r#"<Filter i:type="MagicFilter"/>"#),
        )
        .await;
    assert_eq!(bad_filter.status, 400);
    assert!(bad_filter.detail().contains("unknown filter type"));
    // SQL is checked when the rule is created, with the position of the error.
    let bad_sql = c.put("/t/Subscriptions/s/Rules/r", rule(r#"<Filter i:type="SqlFilter"><SqlExpression>color = 'red' AND</SqlExpression></Filter>"#)).await;
    assert_eq!(bad_sql.status, 400);
    assert!(
        bad_sql
            .detail()
            .contains("the SQL filter expression is invalid at position 18"),
        "{}",
        bad_sql.body
    );
    let bad_action = c.put("/t/Subscriptions/s/Rules/r", rule(r#"<Filter i:type="TrueFilter"/><Action i:type="SqlRuleAction"><SqlExpression>SET sys.SequenceNumber = 1</SqlExpression></Action>"#)).await;
    assert_eq!(bad_action.status, 400);
    assert!(
        bad_action.detail().contains("cannot be changed"),
        "{}",
        bad_action.body
    );
    let bad_default = c.put("/t/Subscriptions/s9", subscription(r#"<DefaultRuleDescription><Filter i:type="SqlFilter"><SqlExpression>sys.Nope = 1</SqlExpression></Filter></DefaultRuleDescription>"#)).await;
    assert_eq!(bad_default.status, 400);
    assert!(
        bad_default.detail().contains("not a system property"),
        "{}",
        bad_default.body
    );
    assert_eq!(
        c.get("/t/Subscriptions/s9").await.xml().name,
        "feed",
        "nothing created"
    );
    // Unknown elements are ignored, as the service does.
    let lenient = c
        .put(
            "/q2",
            queue("<Frobnicate>1</Frobnicate><MaxDeliveryCount>3</MaxDeliveryCount>"),
        )
        .await;
    assert_eq!(lenient.status, 201, "{}", lenient.body);
    assert_eq!(text(&lenient.description(), "MaxDeliveryCount"), "3");
    // Unsupported methods and runtime paths answer in the error format.
    assert_eq!(
        c.send("POST", "/q2", None, &[], Some(c.token()))
            .await
            .status,
        405
    );
    assert_eq!(
        c.send("PATCH", "/$Resources/Queues", None, &[], Some(c.token()))
            .await
            .status,
        405
    );
}

#[tokio::test]
async fn namespace_info_and_health() {
    let server = Server::memory().await;
    let c = server.client();
    let health = c.send("GET", "/health", None, &[], None).await;
    assert_eq!(
        (health.status, health.body.as_str()),
        (200, r#"{"status":"healthy"}"#)
    );
    let info = c.get("/$namespaceinfo?api-version=2021-05").await;
    assert_eq!(info.status, 200);
    let d = info.description();
    assert_eq!(d.name, "NamespaceInfo");
    assert_eq!(text(&d, "Name"), "sbemulatorns");
    assert_eq!(text(&d, "MessagingSKU"), "Standard");
}

#[tokio::test]
async fn restart_keeps_entities() {
    let dir = tempfile::tempdir().unwrap();
    let settings = || emulator::Settings {
        location: emulator::store::Location::Directory(dir.path().join("data")),
        ..emulator::Settings::in_memory()
    };
    let server = Server::start(settings()).await;
    let c = server.client();
    c.put(
        "/keep",
        topic("<DefaultMessageTimeToLive>PT3H</DefaultMessageTimeToLive>"),
    )
    .await;
    c.put(
        "/keep/Subscriptions/s",
        subscription("<MaxDeliveryCount>4</MaxDeliveryCount>"),
    )
    .await;
    c.put(
        "/keep/Subscriptions/s/Rules/r",
        rule(r#"<Filter i:type="SqlFilter"><SqlExpression>a = 1</SqlExpression></Filter>"#),
    )
    .await;
    server.stop().await;

    let server = Server::start(settings()).await;
    let c = server.client();
    assert_eq!(
        text(
            &c.get("/keep").await.description(),
            "DefaultMessageTimeToLive"
        ),
        "PT3H"
    );
    assert_eq!(
        text(
            &c.get("/keep/Subscriptions/s").await.description(),
            "MaxDeliveryCount"
        ),
        "4"
    );
    assert_eq!(
        c.get("/keep/Subscriptions/s/Rules").await.titles(),
        ["$Default", "r"]
    );
    server.stop().await;
}
