//! Filter tests: examples, errors with positions, and property tests (printing and
//! re-parsing agree; evaluation matches an independent reference on generated messages).

use std::collections::HashMap;

use proptest::prelude::*;
use servicebus_wire::{CorrelationFilter, Filter, RuleAction, RuleDescription, TypedValue};

use super::ast::{BinaryOp, Expr, Property, Scope};
use super::value::{Properties, PropertiesMut, SystemProperty, Value};
use super::*;

/// A message for tests: user properties by lower-cased name, system properties.
#[derive(Debug, Clone, Default)]
struct Msg {
    user: HashMap<String, Value>,
    system: HashMap<&'static str, Value>,
}

impl Msg {
    fn with(mut self, name: &str, v: Value) -> Self {
        self.user.insert(name.to_ascii_lowercase(), v);
        self
    }
    fn sys(mut self, p: SystemProperty, v: &str) -> Self {
        self.system.insert(p.name(), Value::String(v.into()));
        self
    }
}

impl Properties for Msg {
    fn system(&self, p: SystemProperty) -> Option<Value> {
        self.system.get(p.name()).cloned()
    }
    fn user(&self, name: &str) -> Option<Value> {
        self.user.get(&name.to_ascii_lowercase()).cloned()
    }
}

impl PropertiesMut for Msg {
    fn set_user(&mut self, name: &str, value: Value) {
        self.user.insert(name.to_ascii_lowercase(), value);
    }
    fn remove_user(&mut self, name: &str) {
        self.user.remove(&name.to_ascii_lowercase());
    }
    fn set_system(&mut self, p: SystemProperty, value: Option<String>) {
        match value {
            Some(v) => self.system.insert(p.name(), Value::String(v)),
            None => self.system.remove(p.name()),
        };
    }
}

fn sql(expression: &str) -> RuleDescription {
    RuleDescription::sql(expression)
}

fn matches(expression: &str, msg: &Msg) -> bool {
    compile(&sql(expression))
        .unwrap_or_else(|e| panic!("{expression}: {e}"))
        .matches(msg)
        .unwrap()
}

#[test]
fn documented_examples() {
    let m = Msg::default()
        .with("color", Value::String("red".into()))
        .with("quantity", Value::Int(12))
        .with("price", Value::Double(2.5))
        .with("flag", Value::Bool(true))
        .sys(SystemProperty::Label, "heartbeat")
        .sys(SystemProperty::To, "node-a");
    for (e, want) in [
        ("color = 'red'", true),
        ("Color = 'red'", true),
        ("color = 'Red'", false),
        ("user.color = 'red' AND quantity > 10", true),
        ("quantity * price >= 30", true),
        ("quantity % 5 = 2 OR missing = 1", true),
        ("missing = 1", false),
        ("NOT missing = 1", false),
        ("missing IS NULL AND color IS NOT NULL", true),
        ("EXISTS(color) AND NOT EXISTS(missing)", true),
        ("sys.Label <> 'heartbeat'", false),
        ("sys.subject = 'heartbeat'", true),
        ("sys.To IN ('node-b', 'node-a')", true),
        ("color NOT IN ('blue', 'green')", true),
        ("color IN ('blue', missing)", false),
        ("NOT (color IN ('blue', missing))", false),
        (
            "color LIKE 'r_d' AND color LIKE '%e%' AND color NOT LIKE 'b%'",
            true,
        ),
        ("'100%' LIKE '100!%' ESCAPE '!'", true),
        ("'1000' LIKE '100!%' ESCAPE '!'", false),
        ("flag = TRUE", true),
        ("flag", true),
        ("quantity = 12.0", true),
        ("quantity = '12'", false),
        ("-quantity < -11 AND +price = 2.5", true),
        ("[color] = 'red' AND \"quantity\" = 12", true),
        ("1 = 1", true),
        ("1=0", false),
        ("property('color') = 'red' AND p('sys.To') = 'node-a'", true),
        ("newid() IS NOT NULL", true),
        ("NULL = NULL", false),
        ("missing = 1 OR 1 = 1", true),
        ("1.5E1 = 15", true),
    ] {
        assert_eq!(matches(e, &m), want, "{e}");
    }
}

#[test]
fn errors_say_where() {
    for (e, position, needle) in [
        ("color = ", 9, "expected an expression"),
        ("color = 'red", 9, "unterminated string"),
        ("a = 1 AND", 10, "expected an expression"),
        ("a == 1", 4, "expected an expression"),
        ("(a = 1", 7, "expected ')'"),
        ("a IS 1", 6, "expected NULL"),
        ("a IN 1", 6, "expected '('"),
        ("a LIKE 'x' ESCAPE 'ab'", 19, "exactly one character"),
        ("a = 1 b", 7, "expected an operator"),
        ("a # 1", 3, "unexpected character '#'"),
        ("a = 99999999999999999999", 5, "Int64 range"),
        ("foo(1)", 1, "unknown function"),
        ("", 1, "empty"),
    ] {
        let err = parse_expression(e).expect_err(e);
        assert_eq!(err.position, position, "{e}: {err}");
        assert!(err.message.contains(needle), "{e}: {err}");
    }
    let e = compile(&sql("sys.Nope = 1")).unwrap_err();
    assert!(
        e.to_string()
            .contains("'sys.Nope' is not a system property"),
        "{e}"
    );
    let e = compile(&sql("a = @x")).unwrap_err();
    assert!(e.to_string().contains("@x"), "{e}");
    let e = compile(&sql("a = ")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "the SQL filter expression is invalid at position 5: expected an expression, found the end"
    );
}

#[test]
fn parameters_bind_by_name() {
    let rule = RuleDescription {
        filter: Filter::Sql {
            expression: "color = @c AND n > @N".into(),
            compatibility_level: 20,
            parameters: vec![
                ("@c".into(), TypedValue::string("red")),
                (
                    "@n".into(),
                    TypedValue {
                        type_name: "int".into(),
                        type_ns: String::new(),
                        text: "5".into(),
                    },
                ),
            ],
            requires_preprocessing: None,
        },
        action: RuleAction::Empty,
        name: None,
    };
    let compiled = compile(&rule).unwrap();
    assert!(
        compiled
            .matches(
                &Msg::default()
                    .with("color", Value::String("red".into()))
                    .with("n", Value::Int(6))
            )
            .unwrap()
    );
    assert!(
        !compiled
            .matches(
                &Msg::default()
                    .with("color", Value::String("red".into()))
                    .with("n", Value::Int(5))
            )
            .unwrap()
    );
}

#[test]
fn evaluation_errors_are_reported() {
    let m = Msg::default().with("n", Value::Int(0));
    assert_eq!(
        compile(&sql("10 / n = 1")).unwrap().matches(&m),
        Err(EvalError::DivideByZero)
    );
    assert_eq!(
        compile(&sql("9223372036854775807 + 1 = 0"))
            .unwrap()
            .matches(&m),
        Err(EvalError::Overflow)
    );
    assert!(
        !compile(&sql("10.0 / n = 1")).unwrap().matches(&m).unwrap(),
        "double division by zero is infinity"
    );
}

#[test]
fn correlation_filters() {
    let rule = RuleDescription {
        filter: Filter::Correlation(CorrelationFilter {
            to: Some("node-a".into()),
            label: Some("reply".into()),
            properties: vec![
                ("kind".into(), TypedValue::string("response")),
                (
                    "n".into(),
                    TypedValue {
                        type_name: "double".into(),
                        type_ns: String::new(),
                        text: "7".into(),
                    },
                ),
            ],
            ..Default::default()
        }),
        action: RuleAction::Empty,
        name: None,
    };
    let c = compile(&rule).unwrap();
    let m = Msg::default()
        .sys(SystemProperty::To, "node-a")
        .sys(SystemProperty::Label, "reply")
        .with("KIND", Value::String("response".into()))
        .with("n", Value::Int(7));
    assert!(c.matches(&m).unwrap());
    assert!(
        !c.matches(&m.clone().sys(SystemProperty::To, "Node-A"))
            .unwrap(),
        "case-sensitive values"
    );
    assert!(!c.matches(&m.clone().with("n", Value::Int(8))).unwrap());
    let mut without = m;
    without.user.remove("kind");
    assert!(!c.matches(&without).unwrap(), "a named property must exist");
    let empty = RuleDescription {
        filter: Filter::Correlation(CorrelationFilter::default()),
        action: RuleAction::Empty,
        name: None,
    };
    assert!(compile(&empty).unwrap().matches(&Msg::default()).unwrap());
}

#[test]
fn actions_set_and_remove() {
    let rule = RuleDescription {
        filter: Filter::True,
        action: RuleAction::Sql { expression: "SET tagged = 'yes'; SET n = n * 2 REMOVE drop; SET sys.Label = 'x' + ''; SET sys.To = 'b';".into(), compatibility_level: 20, parameters: vec![] },
        name: None,
    };
    assert!(compile(&rule).is_ok());
    let rule = RuleDescription {
        action: RuleAction::Sql {
            expression: "SET tagged = 'yes'; SET n = n * 2 REMOVE drop; SET sys.To = 'b'".into(),
            compatibility_level: 20,
            parameters: vec![],
        },
        ..rule
    };
    let c = compile(&rule).unwrap();
    assert!(c.has_action());
    let mut m = Msg::default()
        .with("n", Value::Int(4))
        .with("drop", Value::Bool(true));
    c.apply(&mut m).unwrap();
    assert_eq!(m.user("tagged"), Some(Value::String("yes".into())));
    assert_eq!(m.user("n"), Some(Value::Int(8)));
    assert_eq!(m.user("drop"), None);
    assert_eq!(
        m.system(SystemProperty::To),
        Some(Value::String("b".into()))
    );
    for (bad, needle) in [
        ("SET sys.SequenceNumber = 1", "cannot be changed"),
        ("SET", "property name"),
        ("DROP x", "expected SET or REMOVE"),
        ("", "no statement"),
    ] {
        let r = RuleDescription {
            filter: Filter::True,
            action: RuleAction::Sql {
                expression: bad.into(),
                compatibility_level: 20,
                parameters: vec![],
            },
            name: None,
        };
        let e = compile(&r).unwrap_err().to_string();
        assert!(e.contains(needle), "{bad}: {e}");
    }
    let many = "SET a = 1; ".repeat(33);
    assert!(
        parse_statements(&many)
            .unwrap_err()
            .message
            .contains("at most 32")
    );
}

// ---- property tests ----

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-zA-Z_][a-zA-Z0-9_]{0,6}",
        1 => "[ -~]{1,6}",
        1 => prop::sample::select(vec!["and", "Null", "like", "sys", "user", "newid", "a]b"]).prop_map(String::from),
    ]
}

fn literal() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        any::<f64>()
            .prop_filter("finite", |d| d.is_finite())
            .prop_map(Value::Double),
        "[ -~]{0,8}".prop_map(Value::String),
    ]
}

fn property() -> impl Strategy<Value = Property> {
    (prop::bool::ANY, name()).prop_map(|(sys, name)| Property {
        scope: if sys { Scope::System } else { Scope::User },
        name,
    })
}

fn expr() -> impl Strategy<Value = Expr> {
    let leaf = prop_oneof![
        literal().prop_map(Expr::Literal),
        property().prop_map(Expr::Property),
        "[a-zA-Z0-9_]{1,5}".prop_map(Expr::Parameter),
        property().prop_map(Expr::Exists),
        Just(Expr::NewId),
    ];
    leaf.prop_recursive(4, 32, 4, |inner| {
        let op = prop::sample::select(vec![
            BinaryOp::Add,
            BinaryOp::Subtract,
            BinaryOp::Multiply,
            BinaryOp::Divide,
            BinaryOp::Modulo,
            BinaryOp::Equal,
            BinaryOp::NotEqual,
            BinaryOp::Greater,
            BinaryOp::GreaterOrEqual,
            BinaryOp::Less,
            BinaryOp::LessOrEqual,
            BinaryOp::And,
            BinaryOp::Or,
        ]);
        prop_oneof![
            (op, inner.clone(), inner.clone()).prop_map(|(op, l, r)| Expr::Binary(
                op,
                Box::new(l),
                Box::new(r)
            )),
            inner.clone().prop_map(|e| Expr::Not(Box::new(e))),
            // A minus before a numeric literal is part of the literal, so never generated.
            inner
                .clone()
                .prop_filter("not a numeric literal", |e| !matches!(
                    e,
                    Expr::Literal(Value::Int(_) | Value::Double(_))
                ))
                .prop_map(|e| Expr::Negate(Box::new(e))),
            (inner.clone(), any::<bool>()).prop_map(|(e, negated)| Expr::IsNull {
                expr: Box::new(e),
                negated
            }),
            (
                inner.clone(),
                prop::collection::vec(inner.clone(), 1..4),
                any::<bool>()
            )
                .prop_map(|(e, list, negated)| Expr::In {
                    expr: Box::new(e),
                    list,
                    negated
                }),
            (
                inner.clone(),
                inner.clone(),
                prop::option::of(any::<char>()),
                any::<bool>()
            )
                .prop_map(|(e, p, escape, negated)| Expr::Like {
                    expr: Box::new(e),
                    pattern: Box::new(p),
                    escape,
                    negated
                }),
            inner.prop_map(|e| Expr::PropertyOf(Box::new(e))),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// The canonical printer and the parser agree: print, re-parse, same tree.
    #[test]
    fn printing_and_reparsing_agree(e in expr()) {
        let printed = e.to_string();
        let parsed = parse_expression(&printed).map_err(|err| TestCaseError::fail(format!("{printed}: {err}")))?;
        prop_assert_eq!(&parsed, &e, "printed as {}", printed);
        prop_assert_eq!(parsed.to_string(), printed);
    }
}

// Reference evaluation over a small language of predicates whose leaves are computed with
// Rust's own operators. Truth values are 0 (false), 1 (unknown), 2 (true): AND is min,
// OR is max, NOT is 2 - x. Independent of the evaluator's match-based logic.

#[derive(Debug, Clone)]
enum Pred {
    Cmp(usize, BinaryOp, i64),
    Like(usize, String),
    InList(usize, Vec<i64>, bool),
    IsNull(usize),
    Sum(usize, usize, i64),
    And(Box<Pred>, Box<Pred>),
    Or(Box<Pred>, Box<Pred>),
    Not(Box<Pred>),
}

const INTS: [&str; 3] = ["a", "b", "c"];
const STRS: [&str; 2] = ["s", "t"];

#[derive(Debug, Clone)]
struct Generated {
    ints: [Option<i64>; 3],
    strs: [Option<String>; 2],
}

impl Generated {
    fn msg(&self) -> Msg {
        let mut m = Msg::default();
        for (i, v) in self.ints.iter().enumerate() {
            if let Some(v) = v {
                m = m.with(INTS[i], Value::Int(*v));
            }
        }
        for (i, v) in self.strs.iter().enumerate() {
            if let Some(v) = v {
                m = m.with(&STRS[i].to_uppercase(), Value::String(v.clone()));
            }
        }
        m
    }
}

fn pred() -> impl Strategy<Value = Pred> {
    let cmp = prop::sample::select(vec![
        BinaryOp::Equal,
        BinaryOp::NotEqual,
        BinaryOp::Greater,
        BinaryOp::GreaterOrEqual,
        BinaryOp::Less,
        BinaryOp::LessOrEqual,
    ]);
    let leaf = prop_oneof![
        (0..3usize, cmp, -3i64..4).prop_map(|(i, op, c)| Pred::Cmp(i, op, c)),
        (0..2usize, "[xy%_]{0,4}").prop_map(|(i, p)| Pred::Like(i, p)),
        (
            0..3usize,
            prop::collection::vec(-3i64..4, 1..4),
            any::<bool>()
        )
            .prop_map(|(i, l, n)| Pred::InList(i, l, n)),
        (0..3usize).prop_map(Pred::IsNull),
        (0..3usize, 0..3usize, -6i64..7).prop_map(|(i, j, c)| Pred::Sum(i, j, c)),
    ];
    leaf.prop_recursive(4, 24, 2, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(l, r)| Pred::And(Box::new(l), Box::new(r))),
            (inner.clone(), inner.clone()).prop_map(|(l, r)| Pred::Or(Box::new(l), Box::new(r))),
            inner.prop_map(|p| Pred::Not(Box::new(p))),
        ]
    })
}

fn generated() -> impl Strategy<Value = Generated> {
    (
        prop::array::uniform3(prop::option::of(-3i64..4)),
        prop::array::uniform2(prop::option::of("[xy]{0,3}")),
    )
        .prop_map(|(ints, strs)| Generated { ints, strs })
}

fn text(p: &Pred) -> String {
    let op = |op: BinaryOp| match op {
        BinaryOp::Equal => "=",
        BinaryOp::NotEqual => "!=",
        BinaryOp::Greater => ">",
        BinaryOp::GreaterOrEqual => ">=",
        BinaryOp::Less => "<",
        _ => "<=",
    };
    match p {
        Pred::Cmp(i, o, c) => format!("{} {} {c}", INTS[*i], op(*o)),
        Pred::Like(i, pat) => format!("{} LIKE '{pat}'", STRS[*i]),
        Pred::InList(i, l, n) => format!(
            "{} {}IN ({})",
            INTS[*i],
            if *n { "NOT " } else { "" },
            l.iter().map(i64::to_string).collect::<Vec<_>>().join(", ")
        ),
        Pred::IsNull(i) => format!("{} IS NULL", INTS[*i]),
        Pred::Sum(i, j, c) => format!("{} + {} = {c}", INTS[*i], INTS[*j]),
        Pred::And(l, r) => format!("({}) AND ({})", text(l), text(r)),
        Pred::Or(l, r) => format!("({}) or ({})", text(l), text(r)),
        Pred::Not(x) => format!("NOT ({})", text(x)),
    }
}

fn reference_like(s: &[char], p: &[char]) -> bool {
    match p.split_first() {
        None => s.is_empty(),
        Some(('%', rest)) => (0..=s.len()).any(|k| reference_like(&s[k..], rest)),
        Some(('_', rest)) => !s.is_empty() && reference_like(&s[1..], rest),
        Some((c, rest)) => s.first() == Some(c) && reference_like(&s[1..], rest),
    }
}

fn reference(p: &Pred, g: &Generated) -> u8 {
    let known = |b: bool| if b { 2 } else { 0 };
    match p {
        Pred::Cmp(i, op, c) => match g.ints[*i] {
            None => 1,
            Some(v) => known(match op {
                BinaryOp::Equal => v == *c,
                BinaryOp::NotEqual => v != *c,
                BinaryOp::Greater => v > *c,
                BinaryOp::GreaterOrEqual => v >= *c,
                BinaryOp::Less => v < *c,
                _ => v <= *c,
            }),
        },
        Pred::Like(i, pat) => match &g.strs[*i] {
            None => 1,
            Some(s) => known(reference_like(
                &s.chars().collect::<Vec<_>>(),
                &pat.chars().collect::<Vec<_>>(),
            )),
        },
        Pred::InList(i, l, n) => match g.ints[*i] {
            None => 1,
            Some(v) => known(l.contains(&v) != *n),
        },
        Pred::IsNull(i) => known(g.ints[*i].is_none()),
        Pred::Sum(i, j, c) => match (g.ints[*i], g.ints[*j]) {
            (Some(a), Some(b)) => known(a + b == *c),
            _ => 1,
        },
        Pred::And(l, r) => reference(l, g).min(reference(r, g)),
        Pred::Or(l, r) => reference(l, g).max(reference(r, g)),
        Pred::Not(x) => 2 - reference(x, g),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Evaluation of parsed text matches the reference on generated messages.
    #[test]
    fn evaluation_matches_the_reference(p in pred(), g in generated()) {
        let source = text(&p);
        let expr = parse_expression(&source).map_err(|e| TestCaseError::fail(format!("{source}: {e}")))?;
        let got = match eval::evaluate(&expr, &g.msg(), &HashMap::new(), &like::Patterns::default()).unwrap().truth() {
            Some(true) => 2,
            Some(false) => 0,
            None => 1,
        };
        prop_assert_eq!(got, reference(&p, &g), "{}", source);
        let compiled = compile(&sql(&source)).unwrap();
        prop_assert_eq!(compiled.matches(&g.msg()).unwrap(), reference(&p, &g) == 2);
    }

    /// LIKE agrees with a recursive reference matcher.
    #[test]
    fn like_matches_the_reference(s in "[ab%_é]{0,12}", p in "[ab%_é]{0,10}") {
        let want = reference_like(&s.chars().collect::<Vec<_>>(), &p.chars().collect::<Vec<_>>());
        prop_assert_eq!(eval::like(&s, &p, None), want);
    }

    /// With an escape character, `!%` and `!_` are literal; the reference reads them so.
    #[test]
    fn like_with_an_escape_matches_the_reference(s in "[ab%_!]{0,10}", p in "[ab%_!]{0,10}") {
        let mut literal = Vec::new();
        let mut chars = p.chars();
        while let Some(c) = chars.next() {
            literal.push(if c == '!' { Some(chars.next().unwrap_or('!')) } else { None }.map_or(c, |l| match l {
                '%' => '\u{1}',
                '_' => '\u{2}',
                other => other,
            }));
        }
        let text: Vec<char> = s.chars().map(|c| match c { '%' => '\u{1}', '_' => '\u{2}', o => o }).collect();
        prop_assert_eq!(eval::like(&s, &p, Some('!')), reference_like(&text, &literal));
    }
}

/// A text and a pattern of tens of thousands of characters, a backtracking matcher's worst
/// case (each start fails only at the last character), match at once.
#[test]
fn long_like_patterns_cost_about_their_length() {
    let x = "a".repeat(32_000);
    for pattern in [
        format!("%{}b", "a".repeat(15_000)),
        format!("%{}b%", "a".repeat(15_000)),
        format!("%{}_b%", "a_".repeat(7_500)),
        format!("{}%b", "a".repeat(15_000)),
    ] {
        assert!(!eval::like(&x, &pattern, None), "{}", &pattern[..20]);
    }
    assert!(eval::like(&x, &format!("%{}", "a".repeat(15_000)), None));
    assert!(eval::like(&x, &format!("%{}%", "a_".repeat(7_500)), None));
}

/// Deep or long input is refused before it can exhaust a stack, and the longest accepted
/// tree is walked (evaluated, printed, dropped) on a test thread's 2 MiB stack.
#[test]
fn nesting_and_size_are_bounded() {
    for deep in [
        format!("{}1=1{}", "(".repeat(129), ")".repeat(129)),
        format!("{}a", "NOT ".repeat(129)),
        format!("{}1 = 1", "- ".repeat(129)),
        format!("{}1 = 1", "+".repeat(100_000)),
        format!("{}1=1{}", "(".repeat(100_000), ")".repeat(100_000)),
    ] {
        let e = parse_expression(&deep).unwrap_err();
        assert!(
            e.message.contains("128 levels") || e.message.contains("tokens"),
            "{}",
            e.message
        );
    }
    let long = format!("{}1 = 1", "1 + ".repeat(1100));
    // The deepest nesting allowed parses, prints and parses back.
    let deep = format!("{}1=1{}", "(".repeat(127), ")".repeat(127));
    let expr = parse_expression(&deep).unwrap();
    assert_eq!(parse_expression(&expr.to_string()).unwrap(), expr);
    assert!(
        parse_expression(&long)
            .unwrap_err()
            .message
            .contains("tokens")
    );
    // The largest tree allowed: a left-deep chain of about 1,000 nodes.
    let widest = format!("{}1 > 0", "1+".repeat(509));
    assert!(widest.len() <= 1024);
    let expr = parse_expression(&widest).unwrap();
    let printed = expr.to_string();
    assert_eq!(parse_expression(&printed).unwrap(), expr);
    let rule = compile(&sql(&widest)).unwrap();
    assert!(rule.matches(&Msg::default()).unwrap());
}
