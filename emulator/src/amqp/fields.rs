//! Reading request bodies: AMQP maps whose keys are strings (or symbols, from some
//! clients), with integers of any width.

use fe2o3_amqp_types::primitives::{OrderedMap, Symbol, Value};

/// A field of a map keyed by strings or symbols.
pub(crate) fn field<'a>(map: &'a OrderedMap<Value, Value>, key: &str) -> Option<&'a Value> {
    map.get(&Value::String(key.to_string()))
        .or_else(|| map.get(&Value::Symbol(Symbol::from(key))))
}

/// A string (or symbol) field.
pub(crate) fn text(map: &OrderedMap<Value, Value>, key: &str) -> Option<String> {
    match field(map, key)? {
        Value::String(s) => Some(s.clone()),
        Value::Symbol(s) => Some(s.0.clone()),
        _ => None,
    }
}

/// An integer of any width.
pub(crate) fn as_i64(v: &Value) -> Option<i64> {
    Some(match v {
        Value::Long(n) => *n,
        Value::Int(n) => i64::from(*n),
        Value::Short(n) => i64::from(*n),
        Value::Byte(n) => i64::from(*n),
        Value::Ulong(n) => i64::try_from(*n).unwrap_or(i64::MAX),
        Value::Uint(n) => i64::from(*n),
        Value::Ushort(n) => i64::from(*n),
        Value::Ubyte(n) => i64::from(*n),
        _ => return None,
    })
}

/// An integer field of any width.
pub(crate) fn integer(map: &OrderedMap<Value, Value>, key: &str) -> Option<i64> {
    field(map, key).and_then(as_i64)
}
