//! OpenAI's video fields to a catalog model's parameters and back, read
//! from the model's schema in `aimlvid::catalog`: `seconds` is its
//! `duration`, `size` (`WIDTHxHEIGHT`) its `aspect_ratio` and `resolution`.
//! Pure, so each rule is unit-tested here.

use aimlvid::catalog::{ModelSpec, ParamType, Parameter};
use serde_json::Value;

/// A field the model cannot take: the message names what it allows.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Unfit {
    pub(crate) param: &'static str,
    pub(crate) message: String,
}

fn unfit(param: &'static str, message: String) -> Unfit {
    Unfit { param, message }
}

/// OpenAI's model names, as this API's ids. `with_image`: an
/// `input_reference` was given, so the image-to-video variant.
/// What Sora makes when `size` is left out (openai-python's `VideoCreateParams`).
pub(crate) const SORA_DEFAULT_SIZE: &str = "720x1280";

/// Whether `name` is one of OpenAI's own model names (`sora-2`, `sora-2-pro`,
/// their dated snapshots), not a catalog id.
pub(crate) fn is_openai_name(name: &str) -> bool {
    name.starts_with("sora-2")
}

pub(crate) fn model_id(name: &str, with_image: bool) -> String {
    // The dated snapshots (`sora-2-2025-10-06`) are the same models.
    let base = if name.starts_with("sora-2-pro") {
        "openai/sora-2-pro"
    } else if name.starts_with("sora-2") {
        "openai/sora-2"
    } else {
        return name.to_owned();
    };
    format!("{base}-{}", if with_image { "i2v" } else { "t2v" })
}

fn allowed_list(p: &Parameter) -> String {
    p.allowed
        .iter()
        .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `seconds` as the model's `duration`, in the type its schema declares.
pub(crate) fn duration(spec: &ModelSpec, seconds: &str) -> Result<(String, Value), Unfit> {
    let Some(p) = spec.parameter("duration") else {
        return Err(unfit("seconds", format!("Model '{}' takes no duration; omit `seconds`", spec.id)));
    };
    let bad = |why: String| {
        unfit("seconds", format!("Invalid 'seconds' {} for model '{}': {why}", shown(seconds), spec.id))
    };
    let n: f64 = seconds.trim().parse().map_err(|_| bad("expected a number of seconds".into()))?;
    if !p.allowed.is_empty() {
        // The enum may list numbers or strings of them.
        let hit = p
            .allowed
            .iter()
            .find(|v| v.as_f64().or_else(|| v.as_str().and_then(|s| s.parse().ok())) == Some(n));
        return match hit {
            Some(v) => Ok(("duration".into(), v.clone())),
            None => Err(bad(format!("it allows {}", allowed_list(p)))),
        };
    }
    let (lo, hi) = (p.minimum.unwrap_or(f64::MIN), p.maximum.unwrap_or(f64::MAX));
    if n < lo || n > hi {
        return Err(bad(format!(
            "it allows {} to {} seconds",
            p.minimum.unwrap_or(0.0),
            p.maximum.unwrap_or(f64::INFINITY)
        )));
    }
    let value = match p.ty {
        ParamType::Integer if n.fract() != 0.0 => return Err(bad("it allows whole seconds only".into())),
        ParamType::Integer => Value::from(n as i64),
        ParamType::String => Value::from(format!("{n}")),
        _ => serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number),
    };
    Ok(("duration".into(), value))
}

/// `WIDTHxHEIGHT`.
fn dimensions(size: &str) -> Option<(u32, u32)> {
    let (w, h) = size.trim().split_once(['x', 'X'])?;
    let (w, h) = (w.parse().ok()?, h.parse().ok()?);
    (w > 0 && h > 0).then_some((w, h))
}

/// `a:b` as a ratio.
fn ratio(text: &str) -> Option<f64> {
    let (a, b) = text.split_once(':')?;
    let (a, b): (f64, f64) = (a.parse().ok()?, b.parse().ok()?);
    (a > 0.0 && b > 0.0).then(|| a / b)
}

/// `720p` as 720 (`4k` as 2160).
fn lines(text: &str) -> Option<u32> {
    let t = text.to_ascii_lowercase();
    if t == "4k" {
        return Some(2160);
    }
    t.strip_suffix('p')?.parse().ok()
}

/// Sizes that fit each of a model's aspect ratios, to name in a refusal.
fn example_sizes(spec: &ModelSpec) -> String {
    // Every resolution the model takes (or 720 lines when it names none)
    // at every aspect ratio it takes.
    let shorts: Vec<u32> = spec
        .parameter("resolution")
        .map(|p| p.allowed.iter().filter_map(|v| v.as_str().and_then(lines)).collect())
        .filter(|l: &Vec<u32>| !l.is_empty())
        .unwrap_or_else(|| vec![720]);
    let ratios: Vec<&str> = spec
        .parameter("aspect_ratio")
        .map(|p| p.allowed.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    shorts
        .iter()
        .flat_map(|&short| ratios.iter().filter_map(move |r| size_of(r, short)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn size_of(aspect: &str, short: u32) -> Option<String> {
    let r = ratio(aspect)?;
    let long = |x: f64| ((short as f64 * x / 2.0).round() as u32) * 2;
    Some(if r >= 1.0 { format!("{}x{short}", long(r)) } else { format!("{short}x{}", long(1.0 / r)) })
}

/// `size` as the model's `aspect_ratio` and `resolution`: the ratio within
/// 2% of one it allows (1792x1024 is Sora's 16:9), the shorter side within
/// 10% of a resolution it allows (1024 lines is Sora's 1080p tier).
pub(crate) fn size(spec: &ModelSpec, size: &str) -> Result<Vec<(String, Value)>, Unfit> {
    let bad =
        |why: String| unfit("size", format!("Invalid 'size' {} for model '{}': {why}", shown(size), spec.id));
    let (w, h) = dimensions(size).ok_or_else(|| bad("expected WIDTHxHEIGHT, such as 1280x720".into()))?;
    let (aspect, resolution) = (spec.parameter("aspect_ratio"), spec.parameter("resolution"));
    if aspect.is_none() && resolution.is_none() {
        return Err(unfit("size", format!("Model '{}' takes no size; omit `size`", spec.id)));
    }
    let mut out = Vec::new();
    if let Some(p) = aspect {
        match matching_aspect(p, w, h) {
            Some(a) => out.push(("aspect_ratio".into(), Value::from(a))),
            None if p.allowed.is_empty() => {
                let g = gcd(w, h);
                out.push(("aspect_ratio".into(), Value::from(format!("{}:{}", w / g, h / g))));
            }
            None => {
                return Err(bad(format!(
                    "it allows aspect ratios {} (sizes such as {})",
                    allowed_list(p),
                    example_sizes(spec)
                )));
            }
        }
    }
    if let Some(p) = resolution {
        let short = w.min(h);
        let hit = p
            .allowed
            .iter()
            .filter_map(|v| v.as_str().and_then(|s| Some((s, lines(s)?))))
            .filter(|(_, n)| (*n as f64 / short as f64 - 1.0).abs() <= 0.1)
            .min_by_key(|(_, n)| n.abs_diff(short));
        match hit {
            Some((r, _)) => out.push(("resolution".into(), Value::from(r))),
            None => return Err(bad(format!("it allows resolutions {}", allowed_list(p)))),
        }
    }
    Ok(out)
}

/// The allowed aspect ratio of `p` within 2% of `w`:`h`.
fn matching_aspect(p: &Parameter, w: u32, h: u32) -> Option<&str> {
    let wanted = w as f64 / h as f64;
    p.allowed
        .iter()
        .filter_map(Value::as_str)
        .find(|a| ratio(a).is_some_and(|r| (r / wanted - 1.0).abs() < 0.02))
}

/// The aspect ratio `spec` allows that matches a video of `size`
/// (`WIDTHxHEIGHT`), if it has one: an extension keeps its source's shape.
pub(crate) fn aspect_for(spec: &ModelSpec, size: &str) -> Option<String> {
    let (w, h) = dimensions(size)?;
    aspect_of_frame(spec, w, h)
}

/// The aspect ratio `spec` allows that matches a frame of `w` by `h`.
pub(crate) fn aspect_of_frame(spec: &ModelSpec, w: u32, h: u32) -> Option<String> {
    matching_aspect(spec.parameter("aspect_ratio")?, w, h).map(str::to_owned)
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// `seconds` of a request body, as OpenAI writes it (a string): its
/// `duration`, else the model's default.
pub(crate) fn seconds_of(spec: Option<&ModelSpec>, body: &Value) -> String {
    let default = || spec.and_then(|s| s.parameter("duration")).and_then(|p| p.default.clone());
    match body.get("duration").cloned().or_else(default) {
        Some(Value::String(s)) => s,
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

/// `size` of a request body: its `aspect_ratio` at its `resolution`, else
/// the model's defaults (720 lines when it names none).
pub(crate) fn size_of_body(spec: Option<&ModelSpec>, body: &Value) -> String {
    let pick = |name: &str| {
        body.get(name).and_then(Value::as_str).map(str::to_owned).or_else(|| {
            // A parameter whose schema names no default is reported as its
            // first allowed value, rather than as no size at all.
            let p = spec?.parameter(name)?;
            p.default.as_ref().or(p.allowed.first())?.as_str().map(str::to_owned)
        })
    };
    let short = pick("resolution").as_deref().and_then(lines).unwrap_or(720);
    let aspect = pick("aspect_ratio");
    // Sora 2 at 1080p reads back as the sizes Sora names it by, which
    // clients such as async-openai take as the only ones there are.
    if spec.is_some_and(|s| s.id.starts_with("openai/sora-2")) && short >= 1024 {
        match aspect.as_deref() {
            Some("16:9") => return "1792x1024".into(),
            Some("9:16") => return "1024x1792".into(),
            _ => {}
        }
    }
    aspect.and_then(|a| size_of(&a, short)).unwrap_or_default()
}

/// A multipart form's fields as the JSON object they were flattened from:
/// the openai SDKs send a nested value as `name[key]` (`video[id]`,
/// `input_reference[image_url]`) and a list as `name[]`, each part one
/// leaf. A name that is not of that shape is kept as it came.
/// A name nested deeper than [`MAX_FORM_DEPTH`] is refused (`Err` names
/// it, shortened): the SDKs nest one or two levels, and a value nested
/// thousands deep would take the stack to build, hash and drop.
pub(crate) fn nest_form_fields(
    fields: Vec<(String, Value)>,
) -> Result<serde_json::Map<String, Value>, String> {
    let mut out = serde_json::Map::new();
    for (name, value) in fields {
        let Some((head, rest)) = name.split_once('[').filter(|(h, r)| !h.is_empty() && r.ends_with(']'))
        else {
            out.insert(name, value);
            continue;
        };
        // `a[b][]` is the path ["a", "b", ""]; an empty step appends.
        let steps: Vec<&str> = rest[..rest.len() - 1].split("][").collect();
        if steps.len() > MAX_FORM_DEPTH {
            return Err(shown(&name));
        }
        let mut slot = out.entry(head.to_owned()).or_insert(Value::Null);
        for step in steps {
            if step.is_empty() {
                if !slot.is_array() {
                    *slot = Value::Array(Vec::new());
                }
                let Value::Array(items) = slot else { unreachable!("made an array above") };
                items.push(Value::Null);
                slot = items.last_mut().expect("pushed above");
            } else {
                if !slot.is_object() {
                    *slot = Value::Object(serde_json::Map::new());
                }
                let Value::Object(map) = slot else { unreachable!("made an object above") };
                slot = map.entry(step.to_owned()).or_insert(Value::Null);
            }
        }
        *slot = value;
    }
    Ok(out)
}

/// How deep a form field's name may nest (`a[b][c][d]` is three).
pub(crate) const MAX_FORM_DEPTH: usize = 4;

/// A member's text as an error message quotes it: at most 64 characters,
/// so a refusal never echoes a file or a megabyte back.
pub(crate) fn shown(text: &str) -> String {
    match text.char_indices().nth(64) {
        Some((end, _)) => format!("{:?}…", &text[..end]),
        None => format!("{text:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(id: &str) -> &'static ModelSpec {
        aimlvid::catalog::model(id).unwrap()
    }

    #[test]
    fn sora_names_map_to_this_apis_ids() {
        assert_eq!(model_id("sora-2", false), "openai/sora-2-t2v");
        assert_eq!(model_id("sora-2-pro", true), "openai/sora-2-pro-i2v");
        assert_eq!(model_id("sora-2-pro-2025-10-06", false), "openai/sora-2-pro-t2v");
        assert_eq!(model_id("google/veo-3.1-t2v-fast", true), "google/veo-3.1-t2v-fast");
    }

    #[test]
    fn seconds_become_a_duration_of_the_declared_type_or_a_refusal_naming_the_choices() {
        let veo = spec("google/veo-3.1-t2v-fast");
        assert_eq!(duration(veo, "6").unwrap(), ("duration".into(), Value::from(6)));
        let refused = duration(veo, "5").unwrap_err();
        assert_eq!(refused.param, "seconds");
        assert!(refused.message.contains("4, 6, 8"), "{}", refused.message);
        assert!(duration(veo, "eight").is_err());
    }

    #[test]
    fn sizes_become_aspect_ratio_and_resolution() {
        let pro = spec("openai/sora-2-pro-t2v");
        let got = size(pro, "1280x720").unwrap();
        assert_eq!(
            got,
            vec![("aspect_ratio".into(), Value::from("16:9")), ("resolution".into(), Value::from("720p"))]
        );
        let got = size(pro, "1024x1792").unwrap();
        assert_eq!(
            got,
            vec![("aspect_ratio".into(), Value::from("9:16")), ("resolution".into(), Value::from("1080p"))]
        );
        let square = size(pro, "1024x1024").unwrap_err();
        assert_eq!(square.param, "size");
        assert!(
            square.message.contains("16:9, 9:16")
                && square.message.contains("1280x720, 720x1280, 1920x1080, 1080x1920"),
            "{}",
            square.message
        );
        assert!(size(pro, "1280x480").is_err(), "480 lines is no resolution sora-2-pro has");
        assert!(size(pro, "big").is_err());
    }

    #[test]
    fn a_body_reads_back_as_seconds_and_size() {
        let veo = spec("google/veo-3.1-t2v-fast");
        let body = serde_json::json!({"duration": 4, "aspect_ratio": "9:16", "resolution": "720p"});
        assert_eq!(seconds_of(Some(veo), &body), "4");
        assert_eq!(size_of_body(Some(veo), &body), "720x1280");
        // Defaults: 8 s at 1080p; veo declares no default ratio, so its first, 16:9.
        assert_eq!(seconds_of(Some(veo), &serde_json::json!({})), "8");
        assert_eq!(size_of_body(Some(veo), &serde_json::json!({})), "1920x1080");
        let sora = spec("openai/sora-2-t2v");
        assert_eq!(size_of_body(Some(sora), &serde_json::json!({})), "1280x720");
        // Sora 2 Pro's sizes read back as asked.
        let pro = spec("openai/sora-2-pro-t2v");
        for asked in ["1024x1792", "1792x1024", "720x1280", "1280x720"] {
            let body: serde_json::Map<String, Value> = size(pro, asked).unwrap().into_iter().collect();
            assert_eq!(size_of_body(Some(pro), &Value::Object(body)), asked);
        }
    }

    #[test]
    fn a_flattened_form_reads_back_as_the_object_the_sdk_flattened() {
        let form = |pairs: &[(&str, &str)]| {
            nest_form_fields(pairs.iter().map(|(k, v)| ((*k).to_owned(), Value::from(*v))).collect()).unwrap()
        };
        assert_eq!(
            Value::Object(form(&[
                ("prompt", "p"),
                ("video[id]", "v1"),
                ("input_reference[image_url]", "https://i")
            ])),
            serde_json::json!({"prompt": "p", "video": {"id": "v1"}, "input_reference": {"image_url": "https://i"}})
        );
        assert_eq!(
            Value::Object(form(&[("tags[]", "a"), ("tags[]", "b"), ("x[y][z]", "1")])),
            serde_json::json!({"tags": ["a", "b"], "x": {"y": {"z": "1"}}})
        );
        // Not of the SDK's shape: kept as it came.
        assert_eq!(
            Value::Object(form(&[("[id]", "1"), ("odd[", "2"), ("plain", "3")])),
            serde_json::json!({"[id]": "1", "odd[": "2", "plain": "3"})
        );
    }

    #[test]
    fn a_form_name_nested_past_four_levels_is_refused_not_built() {
        let deep = format!("x{}", "[a]".repeat(3000));
        let refused = nest_form_fields(vec![(deep, Value::from("1"))]).unwrap_err();
        assert!(refused.len() < 100, "the name is shortened: {refused}");
        assert!(nest_form_fields(vec![("x[a][b][c][d]".into(), Value::from("1"))]).is_ok());
        assert!(nest_form_fields(vec![("x[a][b][c][d][e]".into(), Value::from("1"))]).is_err());
    }
}
