//! `aimlvid generate`: any model of the catalog, its parameters typed from
//! the model's schema and its media read from files or URLs, checked before
//! anything is sent, then the same journal, waiting and download as `extend`.

use std::path::{Path, PathBuf};

use aimlvid::catalog::{self, MediaKind, ModelSpec, ParamType, Parameter};
use aimlvid::{GenericRequest, MediaInput};
use serde_json::{Map, Value, json};

use crate::cli::GenerateArgs;
use crate::exit::{self, Failure};
use crate::jobs::{App, absolute, dry_run, ensure_free, ensure_writable, output_path, report_finished};
use crate::journal::JobState;

/// A request ready to send, and what the journal says it was made from.
struct Built {
    body: Map<String, Value>,
    /// Each media input as given (path or URL), never its bytes.
    inputs: Vec<String>,
}

pub(crate) async fn generate(app: &App<'_>, args: GenerateArgs) -> anyhow::Result<u8> {
    let Some(model) = args.model.clone().or_else(|| app.settings.generate_model()) else {
        return Err(Failure::usage(
            "give the model with -m ID (`aimlvid models` lists them), or set `model` in the config file",
        )
        .into());
    };
    // The API's catalogue, where it can be had: it resolves aliases, lists
    // models newer than this build, and no longer lists retired ones.
    let client = app.client(None).ok();
    let live = match &client {
        Some(client) => crate::prices::live_catalogue(client, &app.journal, false).await.now,
        None => None,
    };
    let model = live
        .as_ref()
        .and_then(|live| live.get(&model))
        .map(|listing| listing.id.clone())
        .or_else(|| catalog::resolve(&model).map(|spec| spec.id.clone()))
        .unwrap_or(model);
    let model = model.as_str();
    let listed = live.as_ref().map(|live| live.get(model).is_some());
    if let (Some(live), Some(false), Some(_)) = (&live, listed, catalog::model(model)) {
        // It would fail upstream: refused before anything is read or sent.
        return Err(aimlvid::Error::ModelNotListed {
            model: model.to_owned(),
            alternatives: live.nearest(model, 3),
        }
        .into());
    }
    // A model newer than this build is checked against the document the
    // API links for it, where there is one; else by the API alone.
    let live_spec = match (&client, listed) {
        (Some(client), Some(true)) if catalog::model(model).is_none() => {
            crate::prices::live_spec(client, &app.journal, model).await
        }
        _ => None,
    };
    let spec = match catalog::model(model).or(live_spec.as_deref()) {
        Some(spec) => Some(spec),
        None if args.skip_validation || listed == Some(true) => None,
        None => {
            let hint = catalog::suggest(model).map(|s| format!(" (did you mean {s}?)")).unwrap_or_default();
            return Err(Failure::usage(format!(
                "unknown model {:?}{hint}; `aimlvid models` lists them (or add --skip-validation \
                 to send it anyway, for a model newer than this aimlvid)",
                model
            ))
            .into());
        }
    };
    let built = build(spec, model, &args).await?;
    let body = Value::Object(built.body.clone());
    if let Some(checked) = spec.filter(|_| !args.skip_validation) {
        checked
            .validate(&body)
            .map_err(|e| Failure::usage(format!("{}; nothing was sent", in_flags(spec, e))))?;
    }
    if args.dry_run {
        return dry_run(app, model, &body, 1).await;
    }

    let name = default_file_name(model);
    let output = match &args.output {
        Some(path) => output_path(path, &name.to_string_lossy())?,
        None => absolute(&app.settings.output_dir.join(name))?,
    };
    ensure_free(&output, args.force)?;
    ensure_writable(&output)?;
    let client = app.client(None)?;
    let request: GenericRequest = serde_json::from_value(body)?;
    let policy = app.poll_policy(&client, model).await;
    let (created, mut record) = app
        .interruptible(async {
            let mut record = app.record(&client, output.clone(), JobState::Creating);
            record.model = Some(model.to_owned());
            record.prompt = args.prompt.clone();
            record.input = (!built.inputs.is_empty()).then(|| built.inputs.join(", "));
            app.create(&client, &request, record).await
        })
        .await?;
    // Inline media can be megabytes: do not hold it while waiting.
    drop(request);
    if args.no_wait {
        let id = created.id.clone();
        app.report.result(
            json!({"event": "result", "ok": true, "id": id, "status": created.status.as_str(), "output": record.output}),
            Some(format!("wait for it with: {}", app.resume_command(&record))),
            Some(id),
        )?;
        return Ok(exit::OK);
    }
    let watch = client.watch_created_with(created, policy);
    let finished = app.interruptible(app.follow(&client, &mut record, watch, args.force, true)).await?;
    report_finished(app, &[finished], false)?;
    Ok(exit::OK)
}

/// The body: model, prompt, `--image`/`--video`/`--audio` on the model's
/// parameters of those kinds, then every `--param`, typed.
async fn build(spec: Option<&ModelSpec>, model: &str, args: &GenerateArgs) -> anyhow::Result<Built> {
    let mut built = Built { body: Map::new(), inputs: Vec::new() };
    built.body.insert("model".into(), model.into());
    if let Some(prompt) = &args.prompt {
        // -p is --param prompt=, and refused the same way by a model without one.
        if let Some(spec) = spec.filter(|s| s.parameter("prompt").is_none() && !args.skip_validation) {
            return Err(no_such_parameter(spec, "prompt", "-p").into());
        }
        built.body.insert("prompt".into(), prompt.clone().into());
    }
    for (kind, given) in
        [(MediaKind::Image, &args.image), (MediaKind::Video, &args.video), (MediaKind::Audio, &args.audio)]
    {
        if given.is_empty() {
            continue;
        }
        let param = media_parameter(spec, model, kind, given.len())?;
        let mut values = Vec::new();
        for arg in given {
            values.push(media(arg, kind).await?);
            built.inputs.push(label(arg)?);
        }
        let value = if param.is_list() { Value::Array(values) } else { values.remove(0) };
        built.body.insert(param.name.clone(), value);
    }
    for raw in &args.params {
        let (name, text) = raw.split_once('=').ok_or_else(|| {
            Failure::usage(format!(
                "--param {raw:?} has no value; write it as NAME=VALUE, e.g. --param duration=10"
            ))
        })?;
        let name = name.trim();
        let value = match spec.and_then(|s| s.parameter(name)) {
            Some(param) => match param.media {
                Some(kind) if param.is_list() => {
                    let mut values = Vec::new();
                    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                        values.push(media(item, kind).await?);
                        built.inputs.push(label(item)?);
                    }
                    Value::Array(values)
                }
                Some(kind) if param.ty != ParamType::Array => {
                    built.inputs.push(label(text)?);
                    media(text, kind).await?
                }
                _ => typed(spec.map_or("", |s| s.id.as_str()), param, text)?,
            },
            None if let Some(spec) = spec.filter(|_| !args.skip_validation) => {
                return Err(no_such_parameter(spec, name, &format!("--param {name}=")).into());
            }
            // Unchecked: JSON where it parses, else the text itself.
            None => serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned())),
        };
        built.body.insert(name.to_owned(), value);
    }
    Ok(built)
}

/// A parameter the model does not have, with the closest one it has.
fn no_such_parameter(spec: &ModelSpec, name: &str, flag: &str) -> Failure {
    let hint = spec
        .suggest_parameter(name)
        .map(|p| format!(" (did you mean {}?)", flag_of(spec, &p.name)))
        .unwrap_or_default();
    Failure::usage(format!(
        "{} has no parameter {name:?} ({flag}){hint}; `aimlvid models show {}` lists them",
        spec.id, spec.id
    ))
}

/// The flag that sets parameter `name` of `spec`: `-p` for the prompt,
/// `--image`/`--video`/`--audio` for the media parameter that flag fills,
/// else `--param NAME=`.
fn flag_of(spec: &ModelSpec, name: &str) -> String {
    if name == "prompt" {
        return "-p".to_owned();
    }
    for kind in [MediaKind::Image, MediaKind::Video, MediaKind::Audio] {
        if filled_by(spec, kind, 1).is_some_and(|p| p.name == name) {
            return format!("--{kind}");
        }
    }
    format!("--param {name}=")
}

/// A refusal from the catalog, each field named by the flag that sets it.
fn in_flags(spec: Option<&ModelSpec>, invalid: catalog::Invalid) -> String {
    let (Some(spec), catalog::Invalid::Refused { model, issues }) = (spec, &invalid) else {
        return invalid.to_string();
    };
    let mut text = format!("{model} does not accept this request:");
    for issue in issues {
        let field = issue.field();
        let top = issue.path.first().and_then(Value::as_str).unwrap_or_default();
        let flag = if top.is_empty() { field.clone() } else { flag_of(spec, top) };
        let flag = match flag.strip_suffix('=') {
            // `--param duration=`: the value goes after it; name the field for nested ones.
            Some(param) if field != top => format!("{param} ({field})"),
            Some(param) => param.to_owned(),
            None if field != top => format!("{flag} ({field})"),
            None => flag,
        };
        let line = if issue.detail("received").and_then(Value::as_str) == Some("undefined") {
            let what = spec.parameter(top).and_then(|p| p.media).map(|k| {
                let article = if matches!(k, MediaKind::Video) { "a" } else { "an" };
                format!(" ({article} {k} file or URL)")
            });
            format!("{flag} is required{} but was not given", what.unwrap_or_default())
        } else {
            format!("{flag}: {}", issue.message)
        };
        text.push_str("\n  - ");
        text.push_str(&line);
    }
    text
}

/// The parameter that `count` media of `kind` fill, if the model has one.
fn filled_by(spec: &ModelSpec, kind: MediaKind, count: usize) -> Option<&Parameter> {
    let candidates: Vec<&Parameter> = spec.media_parameters().filter(|p| p.media == Some(kind)).collect();
    let plain = [format!("{kind}_url"), format!("{kind}_urls")];
    match candidates.as_slice() {
        [] => None,
        [only] => Some(*only),
        several => several
            .iter()
            .find(|p| plain.contains(&p.name) && (count == 1 || p.is_list()))
            .or_else(|| several.iter().find(|p| p.required))
            .copied(),
    }
}

/// The parameter `--image`/`--video`/`--audio` fills: the model's only one
/// of that kind, else the one named plainly (`image_url`), else the
/// required one.
fn media_parameter<'s>(
    spec: Option<&'s ModelSpec>,
    model: &str,
    kind: MediaKind,
    count: usize,
) -> anyhow::Result<&'s Parameter> {
    let spec = spec.ok_or_else(|| {
        Failure::usage(format!(
            "--{kind} needs the model's schema, and {model} is not in the catalog; pass it with --param NAME=URL"
        ))
    })?;
    let Some(param) = filled_by(spec, kind, count) else {
        // Offer only what the model takes: the flag of each kind it has.
        let mut takes: Vec<String> = Vec::new();
        for p in spec.media_parameters() {
            let flag = match p.media {
                Some(other) if filled_by(spec, other, 1).is_some_and(|q| q.name == p.name) => {
                    format!("--{other}")
                }
                _ => format!("--param {}=FILE|URL", p.name),
            };
            takes.push(format!("{} ({flag})", p.name));
        }
        let why = if takes.is_empty() {
            format!(
                "{model} takes no media: only a prompt and its parameters (`aimlvid models show {model}`)"
            )
        } else {
            format!("{model} takes no {kind}; the media it takes: {}", takes.join(", "))
        };
        return Err(Failure::usage(why).into());
    };
    if count > 1 && !param.is_list() {
        return Err(Failure::usage(format!(
            "{model} takes one {kind} in {}; {count} were given",
            param.name
        ))
        .into());
    }
    Ok(param)
}

/// A media argument as sent: an https URL as is, a local file inline.
async fn media(arg: &str, kind: MediaKind) -> anyhow::Result<Value> {
    Ok(MediaInput::parse(arg, kind).await.map_err(|e| Failure::usage(e.to_string()))?.into_string().into())
}

/// How the journal names an input: the URL, or the file's absolute path.
fn label(arg: &str) -> anyhow::Result<String> {
    Ok(if arg.contains("://") || arg.starts_with("data:") {
        if arg.starts_with("data:") { "(inline data: URI)".to_owned() } else { arg.to_owned() }
    } else {
        absolute(Path::new(arg))?.display().to_string()
    })
}

/// `--param` text as the parameter's type: `duration=10` is a number.
fn typed(model: &str, param: &Parameter, text: &str) -> anyhow::Result<Value> {
    let wrong = |expected: &str| {
        let allowed = if param.allowed.is_empty() {
            String::new()
        } else {
            let values: Vec<String> = param.allowed.iter().map(|v| v.to_string()).collect();
            format!("; allowed: {}", values.join(", "))
        };
        Failure::usage(format!("{model}: --param {}={text:?} is not {expected}{allowed}", param.name))
    };
    Ok(match param.ty {
        ParamType::String => Value::String(text.to_owned()),
        ParamType::Integer => {
            text.trim().parse::<i64>().map(Value::from).map_err(|_| wrong("a whole number"))?
        }
        ParamType::Number => {
            let n = text.trim().parse::<f64>().map_err(|_| wrong("a number"))?;
            serde_json::Number::from_f64(n).map(Value::Number).ok_or_else(|| wrong("a finite number"))?
        }
        ParamType::Boolean => match text.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "1" => Value::Bool(true),
            "false" | "no" | "off" | "0" => Value::Bool(false),
            _ => return Err(wrong("true or false").into()),
        },
        ParamType::Array | ParamType::Object => {
            serde_json::from_str(text).map_err(|_| wrong("JSON of that shape"))?
        }
        // A union: JSON where it parses, else the text itself.
        _ => serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned())),
    })
}

/// `<model name>.mp4`: the id's last part, safe as a file name.
fn default_file_name(model: &str) -> PathBuf {
    let name = model.rsplit('/').next().unwrap_or(model);
    let safe: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect();
    PathBuf::from(format!("{}.mp4", safe.trim_start_matches('.')))
}

/// Prints the request (media elided) and its price where the API says it,
/// sending nothing that costs.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::elide_media;

    #[test]
    fn params_are_typed_from_the_schema() {
        let model = catalog::model("alibaba/happyhorse-1-0").unwrap();
        let duration = model.parameter("duration").unwrap();
        assert_eq!(typed(&model.id, duration, "10").unwrap(), json!(10));
        let err = typed(&model.id, duration, "ten").unwrap_err().to_string();
        assert!(err.contains("--param duration=\"ten\" is not a whole number; allowed: 3, 4"), "{err}");
        let seedance = catalog::model("bytedance/seedance-1-5-pro").unwrap();
        let audio = seedance.parameter("generate_audio").unwrap();
        assert_eq!(typed(&seedance.id, audio, "no").unwrap(), json!(false));
    }

    #[test]
    fn media_flags_find_the_models_parameter_of_that_kind() {
        let pick =
            |id: &str, kind, n| media_parameter(catalog::model(id), id, kind, n).map(|p| p.name.clone());
        assert_eq!(pick("google/veo-3.1-i2v", MediaKind::Image, 1).unwrap(), "image_url");
        assert_eq!(pick("bytedance/seedance-1-5-pro", MediaKind::Image, 1).unwrap(), "image_url");
        assert_eq!(
            pick("kling-video/v1.6/standard/multi-image-to-video", MediaKind::Image, 3).unwrap(),
            "image_list"
        );
        let err = pick("google/veo-3.1-t2v", MediaKind::Image, 1).unwrap_err().to_string();
        assert!(err.contains("takes no media"), "{err}");
        let err = pick("google/veo-3.1-i2v", MediaKind::Image, 2).unwrap_err().to_string();
        assert!(err.contains("takes one image in image_url; 2 were given"), "{err}");
    }

    fn args(line: &[&str]) -> GenerateArgs {
        use clap::Parser as _;
        let cli = crate::cli::Cli::try_parse_from([&["aimlvid", "generate"][..], line].concat()).unwrap();
        let crate::cli::Command::Generate(args) = cli.command else { panic!("not generate") };
        args
    }

    async fn refusal(line: &[&str]) -> String {
        let args = args(line);
        let model = args.model.clone().unwrap();
        let spec = catalog::model(&model);
        match build(spec, &model, &args).await {
            Err(e) => e.to_string(),
            Ok(built) => {
                let body = Value::Object(built.body);
                in_flags(spec, catalog::validate(&body).expect_err("refused"))
            }
        }
    }

    #[tokio::test]
    async fn refusals_name_the_flag_that_sets_each_field() {
        assert_eq!(
            refusal(&["-m", "google/veo-3.1-i2v", "-p", "x"]).await,
            "google/veo-3.1-i2v does not accept this request:\n  - --image is required (an image file or URL) \
             but was not given"
        );
        assert_eq!(
            refusal(&["-m", "google/veo-3.1-i2v", "--image", "https://x/a.png"]).await,
            "google/veo-3.1-i2v does not accept this request:\n  - -p is required but was not given"
        );
        let duration = refusal(&["-m", "google/veo-3.1-t2v", "-p", "x", "--param", "duration=9"]).await;
        assert!(duration.contains("\n  - --param duration: "), "{duration}");
    }

    #[tokio::test]
    async fn near_miss_parameter_names_are_suggested_and_p_is_a_parameter() {
        assert_eq!(
            refusal(&["-m", "google/veo-3.1-t2v", "-p", "x", "--param", "durration=6"]).await,
            "google/veo-3.1-t2v has no parameter \"durration\" (--param durration=) (did you mean \
             --param duration=?); `aimlvid models show google/veo-3.1-t2v` lists them"
        );
        let by_flag = refusal(&["-m", "bytedance/omnihuman", "-p", "x"]).await;
        let by_param = refusal(&["-m", "bytedance/omnihuman", "--param", "prompt=x"]).await;
        assert_eq!(
            by_flag,
            "bytedance/omnihuman has no parameter \"prompt\" (-p); `aimlvid models show bytedance/omnihuman` \
             lists them"
        );
        assert_eq!(by_flag.replace("(-p)", "(--param prompt=)"), by_param);
    }

    #[test]
    fn media_suggestions_offer_only_what_the_model_takes() {
        let err = |id: &str, kind| media_parameter(catalog::model(id), id, kind, 1).unwrap_err().to_string();
        assert_eq!(
            err("alibaba/wan2.1-t2v-plus", MediaKind::Image),
            "alibaba/wan2.1-t2v-plus takes no media: only a prompt and its parameters \
             (`aimlvid models show alibaba/wan2.1-t2v-plus`)"
        );
        assert_eq!(
            err("google/veo-3.1-i2v", MediaKind::Video),
            "google/veo-3.1-i2v takes no video; the media it takes: image_url (--image)"
        );
    }

    #[test]
    fn default_names_come_from_the_model() {
        assert_eq!(default_file_name("google/veo-3.1-t2v-fast"), PathBuf::from("veo-3.1-t2v-fast.mp4"));
        assert_eq!(default_file_name("veo2"), PathBuf::from("veo2.mp4"));
        let elided = elide_media(&json!({"image_url": "data:image/png;base64,AAAA", "prompt": "x"}));
        assert_eq!(elided["image_url"], "<data:image/png;base64, 26 bytes>");
    }
}
