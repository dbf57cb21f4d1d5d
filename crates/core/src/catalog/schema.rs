//! Checks a value against a model's request schema, as strictly as the
//! upstream's zod validators do.
//!
//! Issues come in zod's shape (`path`, `code`, `message`, plus code-specific
//! fields) because that is what the upstream's 400 bodies carry: the
//! simulator answers with them as they are, and the library words them for
//! people. Defaults are never validated or applied.

use base64::Engine as _;
use serde_json::{Map, Value};

/// Longest quoted value echoed in a message; request values can be huge.
const MAX_ECHO_CHARS: usize = 80;

/// One zod-style validation issue.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Issue {
    /// Property names and array indices from the body's root.
    pub path: Vec<Value>,
    /// zod issue code (`invalid_type`, `invalid_enum_value`, ...).
    pub code: &'static str,
    /// Human-readable message, worded as zod words it.
    pub message: String,
    /// Code-specific fields (`expected`, `received`, `minimum`, ...).
    pub extra: Vec<(&'static str, Value)>,
}

impl Issue {
    /// An issue at `path` with zod's `code` and `message`.
    pub fn new(path: &[Value], code: &'static str, message: impl Into<String>) -> Self {
        Self { path: path.to_vec(), code, message: message.into(), extra: Vec::new() }
    }

    /// Adds one of the code's own fields (`expected`, `received`, ...).
    pub fn with(mut self, key: &'static str, value: impl Into<Value>) -> Self {
        self.extra.push((key, value.into()));
        self
    }

    /// The field the issue is about, as a reader writes it: `duration`,
    /// `image_list[2]`, `keyframes.frame0.url`; `body` for the body itself.
    pub fn field(&self) -> String {
        let mut field = String::new();
        for step in &self.path {
            match step {
                Value::Number(index) => field.push_str(&format!("[{index}]")),
                Value::String(name) if field.is_empty() => field.push_str(name),
                Value::String(name) => {
                    field.push('.');
                    field.push_str(name);
                }
                other => field.push_str(&other.to_string()),
            }
        }
        if field.is_empty() { "body".to_owned() } else { field }
    }

    /// One of the code's own fields, such as `expected`.
    pub fn detail(&self, key: &str) -> Option<&Value> {
        self.extra.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// The issue as it appears in a 400 body's `errors` array.
    pub fn to_json(&self) -> Value {
        let mut map = Map::new();
        map.insert("code".into(), self.code.into());
        for (k, v) in &self.extra {
            map.insert((*k).into(), v.clone());
        }
        map.insert("path".into(), Value::Array(self.path.clone()));
        map.insert("message".into(), self.message.clone().into());
        Value::Object(map)
    }
}

/// Validates `value` against `schema`, appending issues. `field` is the
/// property name the value sits under (array items inherit their array's).
pub(super) fn check(
    schema: &Value,
    value: &Value,
    path: &mut Vec<Value>,
    field: Option<&str>,
    issues: &mut Vec<Issue>,
) {
    // Anything that is not a schema object constrains nothing.
    let Value::Object(schema) = schema else {
        return;
    };
    let ty = schema.get("type").and_then(Value::as_str);

    let nullable = schema.get("nullable").and_then(Value::as_bool) == Some(true);
    if value.is_null() && nullable {
        return;
    }
    // `{"nullable": true}` alone (an `anyOf` branch) is zod's `z.null()`.
    if nullable && schema.len() == 1 {
        issues.push(invalid_type(path, "null", type_name(value)));
        return;
    }

    for key in ["anyOf", "oneOf"] {
        if let Some(Value::Array(branches)) = schema.get(key) {
            let matched = branches.iter().any(|branch| {
                let mut scratch = Vec::new();
                check(branch, value, path, field, &mut scratch);
                scratch.is_empty()
            });
            if !matched {
                issues.push(Issue::new(path, "invalid_union", "Invalid input"));
                return;
            }
        }
    }
    if let Some(Value::Array(parts)) = schema.get("allOf") {
        for part in parts {
            check(part, value, path, field, issues);
        }
    }

    let Some(ty) = ty else {
        // Untyped schemas (e.g. an `anyOf` wrapper) only carry the checks above.
        check_enum(schema, value, path, issues);
        return;
    };
    if !type_matches(ty, value) {
        let received = if ty == "integer" && value.is_number() { "float" } else { type_name(value) };
        issues.push(invalid_type(path, ty, received));
        return;
    }
    check_enum(schema, value, path, issues);

    match value {
        Value::String(s) => check_string(schema, s, path, field, issues),
        Value::Number(n) => check_number(schema, n.as_f64().unwrap_or(0.0), path, issues),
        Value::Array(items) => check_array(schema, items, path, field, issues),
        Value::Object(map) => check_object(schema, map, path, issues),
        Value::Bool(_) | Value::Null => {}
    }
}

fn check_enum(schema: &Map<String, Value>, value: &Value, path: &[Value], issues: &mut Vec<Issue>) {
    let Some(Value::Array(options)) = schema.get("enum") else {
        return;
    };
    if options.iter().any(|o| json_eq(o, value)) {
        return;
    }
    let expected = options.iter().map(display).collect::<Vec<_>>().join(" | ");
    let received = display(value);
    issues.push(
        Issue::new(
            path,
            "invalid_enum_value",
            format!("Invalid enum value. Expected {expected}, received {received}"),
        )
        .with("expected", expected)
        .with("received", received),
    );
}

fn check_string(
    schema: &Map<String, Value>,
    s: &str,
    path: &[Value],
    field: Option<&str>,
    issues: &mut Vec<Issue>,
) {
    // JavaScript string length: UTF-16 code units.
    let len = s.encode_utf16().count() as f64;
    if let Some(min) = schema.get("minLength").and_then(Value::as_f64)
        && len < min
    {
        issues.push(too_small(
            path,
            "string",
            min,
            format!("String must contain at least {} character(s)", num(min)),
        ));
    }
    if let Some(max) = schema.get("maxLength").and_then(Value::as_f64)
        && len > max
    {
        issues.push(too_big(
            path,
            "string",
            max,
            format!("String must contain at most {} character(s)", num(max)),
        ));
    }
    // The upstream trims prompts and refuses empty ones.
    if field == Some("prompt") && s.trim().is_empty() {
        issues.push(too_small(path, "string", 1.0, "String must contain at least 1 character(s)"));
    }
    match schema.get("format").and_then(Value::as_str) {
        Some("uri") => {
            if let Err(issue) = check_uri(s, path, field.is_some_and(is_video_field)) {
                issues.push(issue);
            }
        }
        Some("uuid") if uuid::Uuid::try_parse(s).is_err() => {
            issues.push(Issue::new(path, "invalid_string", "Invalid uuid").with("validation", "uuid"));
        }
        _ => {}
    }
}

/// Fields whose `data:` URIs must hold a video (`video_url`, `mask_video_url`,
/// items of `video_urls`, ...).
fn is_video_field(name: &str) -> bool {
    name.ends_with("video_url") || name.ends_with("video_urls")
}

/// `format: uri`: an absolute `https://` URL or a base64 `data:` URI.
fn check_uri(s: &str, path: &[Value], video: bool) -> Result<(), Issue> {
    let url_issue = |message: String| Issue::new(path, "invalid_string", message).with("validation", "url");
    if let Some(rest) = strip_prefix_ignore_case(s, "data:") {
        return check_data_uri(rest, video).map_err(url_issue);
    }
    let url = url::Url::parse(s).map_err(|_| url_issue("Invalid url".to_owned()))?;
    if url.scheme() != "https" {
        return Err(url_issue(format!(
            "Invalid url: an HTTPS URL or a data: URI is required, got a {}: URL",
            truncate(url.scheme(), MAX_ECHO_CHARS)
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(url_issue("Invalid url: the HTTPS URL has no host".to_owned()));
    }
    Ok(())
}

/// Checks `<mime>;base64,<payload>` (what follows `data:`).
fn check_data_uri(rest: &str, video: bool) -> Result<(), String> {
    let malformed = || "Invalid data: URI; expected data:<mime type>;base64,<payload>".to_owned();
    let (header, payload) = rest.split_once(',').ok_or_else(malformed)?;
    let mut params = header.split(';');
    let mime = params.next().unwrap_or_default().trim();
    if !params.any(|p| p.trim().eq_ignore_ascii_case("base64")) {
        return Err(malformed());
    }
    let (kind, subtype) = mime.split_once('/').ok_or_else(malformed)?;
    if kind.is_empty() || subtype.is_empty() {
        return Err(malformed());
    }
    if video && !kind.eq_ignore_ascii_case("video") {
        return Err(format!(
            "Invalid data: URI: a video (data:video/...;base64,...) is required, got {}",
            quote(mime)
        ));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(payload)
        .map_err(|_| "Invalid data: URI: the payload is not valid base64".to_owned())?;
    if video && !infer::is_video(&bytes) {
        return Err("Invalid data: URI: the payload is not a recognizable video".to_owned());
    }
    Ok(())
}

fn check_number(schema: &Map<String, Value>, n: f64, path: &[Value], issues: &mut Vec<Issue>) {
    if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
        && n < min
    {
        issues.push(too_small(
            path,
            "number",
            min,
            format!("Number must be greater than or equal to {}", num(min)),
        ));
    }
    if let Some(min) = schema.get("exclusiveMinimum").and_then(Value::as_f64)
        && n <= min
    {
        issues.push(
            too_small(path, "number", min, format!("Number must be greater than {}", num(min)))
                .with("inclusive", false),
        );
    }
    if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
        && n > max
    {
        issues.push(too_big(
            path,
            "number",
            max,
            format!("Number must be less than or equal to {}", num(max)),
        ));
    }
    if let Some(max) = schema.get("exclusiveMaximum").and_then(Value::as_f64)
        && n >= max
    {
        issues.push(
            too_big(path, "number", max, format!("Number must be less than {}", num(max)))
                .with("inclusive", false),
        );
    }
}

fn check_array(
    schema: &Map<String, Value>,
    items: &[Value],
    path: &mut Vec<Value>,
    field: Option<&str>,
    issues: &mut Vec<Issue>,
) {
    let len = items.len() as f64;
    if let Some(min) = schema.get("minItems").and_then(Value::as_f64)
        && len < min
    {
        issues.push(too_small(
            path,
            "array",
            min,
            format!("Array must contain at least {} element(s)", num(min)),
        ));
    }
    if let Some(max) = schema.get("maxItems").and_then(Value::as_f64)
        && len > max
    {
        issues.push(too_big(
            path,
            "array",
            max,
            format!("Array must contain at most {} element(s)", num(max)),
        ));
    }
    if let Some(item_schema) = schema.get("items") {
        for (i, item) in items.iter().enumerate() {
            path.push(Value::from(i));
            check(item_schema, item, path, field, issues);
            path.pop();
        }
    }
}

fn check_object(
    schema: &Map<String, Value>,
    map: &Map<String, Value>,
    path: &mut Vec<Value>,
    issues: &mut Vec<Issue>,
) {
    let properties = schema.get("properties").and_then(Value::as_object);
    if let Some(Value::Array(required_names)) = schema.get("required") {
        for name in required_names.iter().filter_map(Value::as_str) {
            if !map.contains_key(name) {
                let expected = properties
                    .and_then(|p| p.get(name))
                    .and_then(|s| s.get("type"))
                    .and_then(Value::as_str)
                    .unwrap_or("unknown");
                path.push(Value::from(name));
                issues.push(required(path, expected));
                path.pop();
            }
        }
    }
    // Unknown properties are fine: zod strips them.
    if let Some(properties) = properties {
        for (name, prop_schema) in properties {
            if let Some(value) = map.get(name) {
                path.push(Value::from(name.as_str()));
                check(prop_schema, value, path, Some(name), issues);
                path.pop();
            }
        }
    }
}

fn type_matches(ty: &str, value: &Value) -> bool {
    match ty {
        "string" => value.is_string(),
        "number" => value.is_number(),
        "integer" => match value {
            Value::Number(n) => n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0),
            _ => false,
        },
        "boolean" => value.is_boolean(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        "null" => value.is_null(),
        // A type we do not know constrains nothing.
        _ => true,
    }
}

/// zod's name for a value's type.
pub(super) fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// JSON equality where `7` and `7.0` are the same number.
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

pub(super) fn invalid_type(path: &[Value], expected: &str, received: &str) -> Issue {
    Issue::new(path, "invalid_type", format!("Expected {expected}, received {received}"))
        .with("expected", expected)
        .with("received", received)
}

pub(super) fn required(path: &[Value], expected: &str) -> Issue {
    Issue::new(path, "invalid_type", "Required").with("expected", expected).with("received", "undefined")
}

fn too_small(path: &[Value], kind: &str, minimum: f64, message: impl Into<String>) -> Issue {
    Issue::new(path, "too_small", message)
        .with("minimum", js_number(minimum))
        .with("type", kind)
        .with("inclusive", true)
        .with("exact", false)
}

fn too_big(path: &[Value], kind: &str, maximum: f64, message: impl Into<String>) -> Issue {
    Issue::new(path, "too_big", message)
        .with("maximum", js_number(maximum))
        .with("type", kind)
        .with("inclusive", true)
        .with("exact", false)
}

/// A number as JavaScript prints it (`5`, not `5.0`).
fn num(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 { format!("{}", n as i64) } else { format!("{n}") }
}

/// A value as zod prints it in messages: strings single-quoted, the rest as JSON.
pub(super) fn display(value: &Value) -> String {
    match value {
        Value::String(s) => quote(s),
        Value::Number(n) => n.as_f64().map_or_else(|| n.to_string(), num),
        Value::Array(_) | Value::Object(_) => type_name(value).to_owned(),
        other => other.to_string(),
    }
}

pub(super) fn quote(s: &str) -> String {
    format!("'{}'", truncate(s, MAX_ECHO_CHARS))
}

/// At most `max` characters, marking the cut; never splits a character.
pub(super) fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_owned(),
    }
}

pub(super) fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &s[prefix.len()..])
}

/// A number as JSON carries it: whole numbers without a fraction.
fn js_number(n: f64) -> Value {
    if n.fract() == 0.0 && n.abs() < 9.0e15 { Value::from(n as i64) } else { Value::from(n) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bounds_lengths_and_items() {
        let schema = json!({
            "type": "object",
            "properties": {
                "n": {"type": "number", "minimum": 1, "maximum": 10},
                "s": {"type": "string", "minLength": 2, "maxLength": 3},
                "a": {"type": "array", "minItems": 1, "maxItems": 2,
                      "items": {"type": "integer"}},
                "o": {"type": "object", "nullable": true,
                      "properties": {"x": {"type": "integer"}}, "required": ["x"]},
                "u": {"anyOf": [{"type": "string", "format": "uri"},
                                {"type": "array", "items": {"type": "string"}}]},
                "id": {"type": "string", "format": "uuid"},
            },
        });
        let run = |value: Value| {
            let mut out = Vec::new();
            check(&schema, &value, &mut Vec::new(), None, &mut out);
            out.iter().map(|i| i.message.clone()).collect::<Vec<_>>()
        };
        assert!(run(json!({"n": 1, "s": "ab", "a": [1], "o": null, "u": ["x"]})).is_empty());
        assert_eq!(run(json!({"n": 0})), ["Number must be greater than or equal to 1"]);
        assert_eq!(run(json!({"n": 10.5})), ["Number must be less than or equal to 10"]);
        assert_eq!(run(json!({"s": "a"})), ["String must contain at least 2 character(s)"]);
        assert_eq!(run(json!({"s": "abcd"})), ["String must contain at most 3 character(s)"]);
        // Lengths count UTF-16 units, as JavaScript does: one emoji is two.
        assert_eq!(run(json!({"s": "😀😀"})), ["String must contain at most 3 character(s)"]);
        assert_eq!(run(json!({"a": []})), ["Array must contain at least 1 element(s)"]);
        assert_eq!(run(json!({"a": [1, 2, 3]})), ["Array must contain at most 2 element(s)"]);
        assert_eq!(run(json!({"a": [1, "x"]})), ["Expected integer, received string"]);
        assert_eq!(run(json!({"o": {}})), ["Required"]);
        assert_eq!(run(json!({"u": 5})), ["Invalid input"]);
        assert!(run(json!({"u": "https://example.com/x.png"})).is_empty());
        assert_eq!(run(json!({"id": "nope"})), ["Invalid uuid"]);
        assert!(run(json!({"id": "60ac7c34-3224-4b14-8e7d-0aa0db708325"})).is_empty());

        let mut out = Vec::new();
        check(&schema, &json!({"a": [1, "x"]}), &mut Vec::new(), None, &mut out);
        assert_eq!(out[0].path, vec![json!("a"), json!(1)]);
    }
}
