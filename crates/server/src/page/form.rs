//! The start-a-generation form: its fields come from the model's schema in
//! the catalog, and a posted form becomes the same JSON body a member would
//! send to `POST /v2/video/generations`.

use aimlvid::catalog::{self, Family, MediaKind, ParamType, Parameter};
use serde_json::{Map, Value};

/// The extend models, offered first.
pub(crate) fn model_choices() -> Vec<ModelChoice> {
    let mut models: Vec<_> = catalog::models().collect();
    models.sort_by_key(|m| (m.family != Family::Extend, m.family.as_str(), m.id.as_str()));
    models
        .into_iter()
        .map(|m| ModelChoice { id: m.id.clone(), family: m.family.as_str().to_owned() })
        .collect()
}

/// A model in the picker.
#[derive(Debug, Clone)]
pub(crate) struct ModelChoice {
    pub(crate) id: String,
    pub(crate) family: String,
}

/// How a field is drawn.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Widget {
    /// A long text (the prompt).
    TextArea,
    /// One line of text.
    Text,
    /// A number, with its bounds and step.
    Number { min: Option<f64>, max: Option<f64>, step: &'static str },
    /// One of a list of values.
    Choice(Vec<String>),
    /// Yes, no, or the model's default.
    YesNo,
    /// A media URL, or a file to upload instead.
    Media { accept: &'static str, list: bool },
    /// JSON, for lists and objects.
    Json,
}

/// One field of the form.
#[derive(Debug, Clone)]
pub(crate) struct Field {
    pub(crate) name: String,
    pub(crate) required: bool,
    pub(crate) widget: Widget,
    pub(crate) help: String,
    /// What the field holds when the form is drawn.
    pub(crate) value: String,
}

impl Field {
    /// The form control's name.
    pub(crate) fn input_name(&self) -> String {
        format!("p.{}", self.name)
    }

    /// The file control's name, for media.
    pub(crate) fn file_name(&self) -> String {
        format!("file.{}", self.name)
    }
}

/// The fields of `model`'s form, filled from `values` (a previous post,
/// or "extend again"'s clip).
pub(crate) fn fields(model: &catalog::ModelSpec, values: &Map<String, Value>) -> Vec<Field> {
    model
        .parameters
        .iter()
        .map(|p| Field {
            name: p.name.clone(),
            required: p.required,
            widget: widget(p),
            help: help(p),
            value: values.get(&p.name).map(as_text).unwrap_or_default(),
        })
        .collect()
}

fn widget(p: &Parameter) -> Widget {
    if let Some(kind) = p.media {
        let accept = match kind {
            MediaKind::Image => "image/*",
            MediaKind::Video => "video/*",
            MediaKind::Audio => "audio/*",
            _ => "*/*",
        };
        return Widget::Media { accept, list: p.is_list() };
    }
    if !p.allowed.is_empty() {
        return Widget::Choice(p.allowed.iter().map(as_text).collect());
    }
    match p.ty {
        ParamType::Boolean => Widget::YesNo,
        ParamType::Integer => Widget::Number { min: p.minimum, max: p.maximum, step: "1" },
        ParamType::Number => Widget::Number { min: p.minimum, max: p.maximum, step: "any" },
        ParamType::Array | ParamType::Object => Widget::Json,
        _ if p.name.contains("prompt") => Widget::TextArea,
        _ => Widget::Text,
    }
}

fn help(p: &Parameter) -> String {
    let mut parts = Vec::new();
    if let Some(text) = p.schema.get("description").and_then(Value::as_str) {
        parts.push(text.to_owned());
    }
    if let Some(default) = &p.default {
        parts.push(format!("default {}", as_text(default)));
    }
    match (p.minimum, p.maximum) {
        (Some(lo), Some(hi)) => parts.push(format!("{lo} to {hi}")),
        (Some(lo), None) => parts.push(format!("at least {lo}")),
        (None, Some(hi)) => parts.push(format!("at most {hi}")),
        (None, None) => {}
    }
    parts.join(" · ")
}

/// A JSON value as a form shows it: strings bare, the rest as JSON.
fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Why a posted form is not a request.
#[derive(Debug, thiserror::Error, PartialEq)]
pub(crate) enum FormError {
    #[error("choose a model from the list")]
    UnknownModel,
    #[error("{field}: {problem}")]
    Field { field: String, problem: String },
}

/// A posted field: text, or an uploaded file (already a `data:` URI).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Posted {
    Text(String),
    File(String),
}

/// The request body for `model` from posted fields (`p.NAME` text and
/// `file.NAME` uploads; an upload wins over a URL). Empty fields are left
/// out, so the model's defaults apply; values are typed by the schema.
pub(crate) fn body(model: &str, posted: &[(String, Posted)]) -> Result<Value, FormError> {
    let spec = catalog::model(model).ok_or(FormError::UnknownModel)?;
    let mut body = Map::new();
    body.insert("model".into(), Value::String(spec.id.clone()));
    for p in &spec.parameters {
        let file = posted.iter().find_map(|(name, v)| match v {
            Posted::File(uri) if name.strip_prefix("file.") == Some(p.name.as_str()) => Some(uri.clone()),
            _ => None,
        });
        let text = posted.iter().find_map(|(name, v)| match v {
            Posted::Text(text) if name.strip_prefix("p.") == Some(p.name.as_str()) => Some(text.trim()),
            _ => None,
        });
        let value = match (file, text) {
            (Some(uri), _) if p.is_list() => Value::Array(vec![Value::String(uri)]),
            (Some(uri), _) => Value::String(uri),
            (None, None | Some("")) => continue,
            (None, Some(text)) if p.media.is_some() && p.is_list() => {
                Value::Array(text.split_whitespace().map(|u| Value::String(u.to_owned())).collect())
            }
            (None, Some(text)) => typed(p, text)?,
        };
        body.insert(p.name.clone(), value);
    }
    Ok(Value::Object(body))
}

/// Form text as the parameter's type.
fn typed(p: &Parameter, text: &str) -> Result<Value, FormError> {
    let wrong = |expected: &str| FormError::Field {
        field: p.name.clone(),
        problem: format!("{text:?} is not {expected}"),
    };
    if !p.allowed.is_empty() {
        // A choice's value as the schema wrote it (`5` the number, `"5"` the string).
        return p
            .allowed
            .iter()
            .find(|a| as_text(a) == text)
            .cloned()
            .ok_or_else(|| wrong("one of the choices"));
    }
    Ok(match p.ty {
        ParamType::String => Value::String(text.to_owned()),
        ParamType::Integer => text.parse::<i64>().map(Value::from).map_err(|_| wrong("a whole number"))?,
        ParamType::Number => text
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .ok_or_else(|| wrong("a number"))?,
        ParamType::Boolean => match text {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => return Err(wrong("yes or no")),
        },
        ParamType::Array | ParamType::Object => {
            serde_json::from_str(text).map_err(|_| wrong("JSON of that shape"))?
        }
        _ => serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXTEND: &str = "google/veo3-1-fast-extend-video";

    #[test]
    fn the_extend_models_come_first_and_every_model_is_offered() {
        let choices = model_choices();
        assert_eq!(choices[0].family, "extend");
        assert_eq!(choices.len(), catalog::models().count());
        assert!(choices.iter().any(|c| c.id == EXTEND));
    }

    #[test]
    fn fields_follow_the_schema() {
        let spec = catalog::model(EXTEND).unwrap();
        let fields = fields(spec, &Map::new());
        let widget = |name: &str| fields.iter().find(|f| f.name == name).map(|f| f.widget.clone());
        assert_eq!(widget("prompt"), Some(Widget::TextArea));
        assert_eq!(widget("video_url"), Some(Widget::Media { accept: "video/*", list: false }));
        assert!(matches!(widget("resolution"), Some(Widget::Choice(c)) if c.contains(&"720p".to_owned())));
        assert_eq!(widget("generate_audio"), Some(Widget::YesNo));
    }

    #[test]
    fn a_posted_form_becomes_a_typed_body_and_an_upload_wins_over_a_url() {
        let posted = vec![
            ("p.prompt".to_owned(), Posted::Text(" a fox runs ".into())),
            ("p.video_url".to_owned(), Posted::Text("https://example.com/a.mp4".into())),
            ("file.video_url".to_owned(), Posted::File("data:video/mp4;base64,AAAA".into())),
            ("p.generate_audio".to_owned(), Posted::Text("false".into())),
            ("p.resolution".to_owned(), Posted::Text(String::new())),
        ];
        let body = body(EXTEND, &posted).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "model": EXTEND, "prompt": "a fox runs",
                "video_url": "data:video/mp4;base64,AAAA", "generate_audio": false,
            })
        );
        let bad = vec![("p.generate_audio".to_owned(), Posted::Text("maybe".into()))];
        assert!(
            matches!(super::body(EXTEND, &bad), Err(FormError::Field { field, .. }) if field == "generate_audio")
        );
        assert_eq!(super::body("no/such", &[]), Err(FormError::UnknownModel));
    }
}
