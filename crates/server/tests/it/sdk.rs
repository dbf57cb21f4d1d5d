//! The real openai SDKs, unchanged, against the proxy in front of the
//! simulator: openai-python from PyPI (`tests/sdk/videos.py`, one scenario
//! per test) and the openai npm package on Node (`tests/sdk/videos.mjs`).
//!
//! `.ci/run` installs both and names them in `AIMLVID_OPENAI_PYTHON` (a
//! Python with `openai` importable) and `AIMLVID_OPENAI_NODE_MODULES` (a
//! `node_modules` holding `openai`), and sets `AIMLVID_REQUIRE_SDKS=1` so a
//! missing SDK fails the run. Without them each test says it is skipped.

use std::path::{Path, PathBuf};
use std::time::Duration;

use aimlvid::PollPolicy;
use aimlvid_server::store::KeyLimits;
use aimlvid_sim::{RunningSim, SimConfig, Simulator, Spread};
use serde_json::Value;

use crate::support::*;

/// The model the poll-count scenario waits for: a minute's job.
const SLOW_MODEL: &str = "openai/sora-2-t2v";

fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk")
}

/// A simulator in real time, as the SDK sleeps in real time between
/// retrieves: a job is queued half a second and generates for two, but
/// [`SLOW_MODEL`]'s for a minute.
async fn real_time_sim(tweak: impl FnOnce(&mut SimConfig)) -> RunningSim {
    let mut config = SimConfig {
        time_scale: 1.0,
        queue_time: Spread::Fixed(Duration::from_millis(500)),
        generation_time: Spread::Fixed(Duration::from_secs(2)),
        model_generation_times: [(SLOW_MODEL.to_owned(), Spread::Fixed(Duration::from_secs(60)))].into(),
        ..SimConfig::default()
    };
    tweak(&mut config);
    Simulator::start(config).await.unwrap()
}

/// What one scenario saw, and the simulator and proxy it ran against.
struct Run {
    figures: Value,
    sim: RunningSim,
    _proxy: Proxy,
}

/// Runs `scenario` of `videos.py` with two members' keys; fails the test
/// with the script's own account if a check of it failed.
async fn run_python(scenario: &str) -> Option<Run> {
    run_python_with(scenario, quick_polls(), |_| {}).await
}

/// [`run_python`], with the proxy polling the upstream by `policy` and the
/// simulator's configuration changed by `tweak`.
async fn run_python_with(
    scenario: &str,
    policy: PollPolicy,
    tweak: impl FnOnce(&mut SimConfig),
) -> Option<Run> {
    let python = openai_python().await?;
    let mut command = tokio::process::Command::new(python);
    command.arg(scripts().join("videos.py")).arg(scenario);
    Some(run_script(scenario, command, policy, tweak).await)
}

/// Runs an SDK script against a fresh proxy in front of a real-time
/// simulator, with two members' keys in its environment, and reads the
/// JSON of its last line.
async fn run_script(
    label: &str,
    mut command: tokio::process::Command,
    policy: PollPolicy,
    tweak: impl FnOnce(&mut SimConfig),
) -> Run {
    let sim = real_time_sim(tweak).await;
    let (dir, db) = temp_db();
    let proxy = start_proxy_with(&sim, &db, policy).await;
    // A clip of the member's own to upload.
    let clip = dir.path().join("clip.mp4");
    std::fs::write(&clip, aimlvid_sim::SAMPLE_INPUT).unwrap();
    let key = proxy.key("ana", KeyLimits::default()).await;
    let other = proxy.key("ben", KeyLimits::default()).await;
    command
        .env("AIMLVID_BASE_URL", format!("{}/v1", proxy.url))
        .env("AIMLVID_KEY", &key)
        .env("AIMLVID_OTHER_KEY", &other)
        .env("AIMLVID_OUT", dir.path())
        .env("AIMLVID_CLIP", &clip)
        .env("AIMLVID_SLOW_MODEL", SLOW_MODEL)
        // Nothing written beside the scripts in the source tree.
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(240), command.output())
        .await
        .unwrap_or_else(|_| panic!("{label}: the SDK did not finish in 4 minutes"))
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{label} failed:\n{stdout}\n{stderr}");
    let figures: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{label} printed no figures ({e}):\n{stdout}\n{stderr}"));
    eprintln!("{label}: {figures}");
    Run { figures, sim, _proxy: proxy }
}

fn id_of(value: &Value) -> &str {
    value.as_str().expect("an id")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_create_and_poll_makes_a_text_to_video() {
    let Some(run) = run_python("text-to-video").await else { return };
    let job = run.sim.job(id_of(&run.figures["id"])).unwrap();
    // `seconds` and `size` reached the model as its own parameters.
    assert_eq!(job.request["duration"], 4, "{}", job.request);
    assert_eq!(job.request["aspect_ratio"], "16:9", "{}", job.request);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_create_and_poll_uploads_an_input_reference() {
    let Some(run) = run_python("image-to-video").await else { return };
    let job = run.sim.job(id_of(&run.figures["id"])).unwrap();
    let image = job.request["image_url"].as_str().unwrap_or_default();
    assert!(image.starts_with("data:image/png;base64,"), "the upload went inline: {}", job.request);
    let by_url = run.sim.job(id_of(&run.figures["by_url"])).unwrap();
    assert_eq!(by_url.request["image_url"], "https://example.com/first.png");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_extends_a_finished_video() {
    // The upstream's files are on an https CDN, so a finished video can be
    // extended by its URL.
    let Some(run) = run_python_with("extend", quick_polls(), |c| c.files_url = Some(CDN.into())).await else {
        return;
    };
    let job = run.sim.job(id_of(&run.figures["id"])).unwrap();
    assert_eq!(job.model, "google/veo3-1-fast-extend-video");
    let source = id_of(&run.figures["source"]);
    let url = job.request["video_url"].as_str().unwrap_or_default();
    assert!(
        url.contains(&format!("/files/{source}")),
        "the source went by its upstream URL: {}",
        job.request
    );
    let uploaded = run.sim.job(id_of(&run.figures["uploaded"])).unwrap();
    let clip = uploaded.request["video_url"].as_str().unwrap_or_default();
    assert!(clip.starts_with("data:video/mp4;base64,"), "the upload went inline: {}", uploaded.request);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_remixes_with_the_same_model_and_parameters() {
    let Some(run) = run_python("remix").await else { return };
    let source = run.sim.job(id_of(&run.figures["source"])).unwrap();
    let remix = run.sim.job(id_of(&run.figures["id"])).unwrap();
    assert_eq!(remix.model, source.model);
    let mut expected = source.request.clone();
    expected["prompt"] = "a blue kite".into();
    assert_eq!(remix.request, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_lists_25_videos_page_by_page() {
    let Some(run) = run_python("list").await else { return };
    assert_eq!(run.figures["listed"], 25);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_downloads_a_playable_file() {
    let Some(run) = run_python("download").await else { return };
    assert_eq!(run.figures["bytes"].as_u64(), Some(aimlvid_sim::SAMPLE_RESULT.len() as u64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_deletes_a_video_from_the_members_view_only() {
    let Some(run) = run_python("delete").await else { return };
    // Nothing is deleted upstream: there is no such call.
    assert!(run.sim.job(id_of(&run.figures["id"])).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sees_openai_errors() {
    let Some(run) = run_python("errors").await else { return };
    // The refused create never reached the upstream; the good one did.
    assert_eq!(run.sim.stats().create_requests, 1);
}

/// A minute's job, waited for by the SDK's `poll()` as it comes (honouring
/// `openai-poll-after-ms`, which asks back at most 10 s later, and keeping
/// the first value it reads) and at a fixed second: the header saves the
/// member some nine retrieves in ten, and neither changes how often the
/// proxy asks the upstream. The proxy first polls at 85 s (jittered by a
/// tenth): some 80 to 95 retrieves at 1 s, 9 to 11 with the header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_polls_at_the_pace_the_proxy_asks() {
    // The proxy polls as it does in production, so upstream polls count.
    let Some(run) = run_python_with("polls", PollPolicy::default(), |_| {}).await else { return };
    let honoured = &run.figures["honoured"];
    let every_second = &run.figures["every_second"];
    let (few, many) = (honoured["retrieves"].as_u64().unwrap(), every_second["retrieves"].as_u64().unwrap());
    let upstream: Vec<u64> =
        [honoured, every_second].iter().map(|v| run.sim.job(id_of(&v["id"])).unwrap().polls).collect();
    eprintln!(
        "a 60 s job: {few} SDK retrieves with openai-poll-after-ms, {many} at 1 s; upstream polls {upstream:?}"
    );
    assert!(many >= 55, "at 1 s a minute's job is read about 60 times, not {many}");
    assert!(few * 6 <= many, "{few} retrieves with the header against {many} at 1 s");
    assert!(
        upstream[0].abs_diff(upstream[1]) <= 2,
        "upstream polls follow the proxy's schedule: {upstream:?}"
    );
}

/// The openai npm package on Node: create, wait, download, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_creates_polls_and_downloads() {
    let modules = std::env::var_os("AIMLVID_OPENAI_NODE_MODULES").map(PathBuf::from);
    let Some(modules) = modules.filter(|m| m.join("openai/package.json").is_file()) else {
        return skip_without_sdk(
            "AIMLVID_OPENAI_NODE_MODULES names no node_modules with openai in it (npm install openai, then set it)",
        );
    };
    let mut command = tokio::process::Command::new("node");
    command.arg(scripts().join("videos.mjs")).env("AIMLVID_OPENAI_NODE_MODULES", &modules);
    let run = run_script("node", command, quick_polls(), |_| {}).await;
    assert_eq!(run.figures["bytes"].as_u64(), Some(aimlvid_sim::SAMPLE_RESULT.len() as u64));
    let job = run.sim.job(id_of(&run.figures["id"])).unwrap();
    assert_eq!(job.request["duration"], 4, "{}", job.request);
}

/// async-openai, the Rust client, on a client for `key` at `proxy`.
#[allow(deprecated)] // async-openai marks the videos API deprecated, as OpenAI did.
fn async_openai(proxy: &Proxy, key: String) -> async_openai::Client<async_openai::config::OpenAIConfig> {
    let config = async_openai::config::OpenAIConfig::new()
        .with_api_base(format!("{}/v1", proxy.url))
        .with_api_key(key);
    async_openai::Client::with_config(config)
}

/// async-openai's create, in-process on the frozen simulator: a video at
/// one of Sora's four sizes. It reads `size` as one of those four only,
/// so a video at another size (Veo's default 1920x1080) is an error to
/// it: the docs say so.
#[allow(deprecated)]
async fn async_openai_video(
    client: &async_openai::Client<async_openai::config::OpenAIConfig>,
) -> async_openai::types::videos::VideoResource {
    use async_openai::types::videos::{CreateVideoRequestArgs, VideoSeconds, VideoSize};
    let request = CreateVideoRequestArgs::default()
        .model("google/veo-3.1-t2v-fast")
        .prompt("a heron")
        .size(VideoSize::S1280x720)
        .seconds(VideoSeconds::Four)
        .build()
        .unwrap();
    client.videos().create(request).await.unwrap()
}

#[allow(deprecated)] // async-openai marks the videos API deprecated, as OpenAI did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_openai_creates_retrieves_lists_downloads_remixes_and_deletes() {
    use async_openai::traits::RequestOptionsBuilder as _;
    use async_openai::types::videos::{RemixVideoRequestArgs, VideoSeconds, VideoSize, VideoStatus};

    let sim = frozen_sim().await;
    let (_dir, db) = temp_db();
    let proxy = start_proxy(&sim, &db).await;
    let client = async_openai(&proxy, proxy.key("ana", KeyLimits::default()).await);
    let videos = || client.videos();

    let video = async_openai_video(&client).await;
    assert!(matches!(video.status, VideoStatus::Queued), "{video:?}");
    assert_eq!((video.seconds.clone(), video.size.clone()), (VideoSeconds::Four, VideoSize::S1280x720));
    let job = sim.job(&video.id).unwrap();
    assert_eq!(
        (job.request["duration"].clone(), job.request["resolution"].clone()),
        (4.into(), "720p".into())
    );

    assert!(sim.complete_now(&video.id));
    let done = eventually("the video completes", || async {
        let read = videos().retrieve(&video.id).await.unwrap();
        matches!(read.status, VideoStatus::Completed).then_some(read)
    })
    .await;
    assert_eq!((done.progress, done.size.clone()), (100, VideoSize::S1280x720));

    let bytes = videos().download_content(&video.id).await.unwrap();
    assert_eq!(&bytes[..], aimlvid_sim::SAMPLE_RESULT);

    let remix = videos()
        .remix(&video.id, RemixVideoRequestArgs::default().prompt("a stork").build().unwrap())
        .await
        .unwrap();
    assert_eq!(remix.remixed_from_video_id.as_deref(), Some(video.id.as_str()));

    let page = videos().query(&[("limit", "1"), ("order", "asc")]).unwrap().list().await.unwrap();
    let ids: Vec<&str> = page.data.iter().map(|v| v.id.as_str()).collect();
    assert_eq!(ids, [video.id.as_str()]);
    assert!(page.has_more);

    let deleted = videos().delete(&video.id).await.unwrap();
    assert!(deleted.deleted && deleted.id == video.id);
    let gone = videos().retrieve(&video.id).await.unwrap_err();
    assert!(gone.to_string().contains("not found"), "{gone}");
}

/// async-openai sends an extension's `video` reference as the JSON of it,
/// in a text field.
#[allow(deprecated)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_openai_extends_a_video_by_reference() {
    use async_openai::types::videos::{
        CreateVideoExtendRequestArgs, VideoEditInput, VideoReferenceInputParam, VideoSeconds,
    };

    let sim = frozen_sim_with(|c| c.files_url = Some(CDN.into())).await;
    let (_dir, db) = temp_db();
    let proxy = start_proxy(&sim, &db).await;
    let client = async_openai(&proxy, proxy.key("ana", KeyLimits::default()).await);
    let video = async_openai_video(&client).await;
    assert!(sim.complete_now(&video.id));
    eventually("the proxy sees the video complete", || async {
        proxy.state.views().get(&video.id).filter(|v| v.is_finished())
    })
    .await;
    let extend = CreateVideoExtendRequestArgs::default()
        .video(VideoEditInput::Reference(VideoReferenceInputParam { id: video.id.clone() }))
        .prompt("the heron flies off")
        .seconds(VideoSeconds::Other("7".into()))
        .build()
        .unwrap();
    let extension = client.videos().extend(extend).await.unwrap();
    // It keeps its source's shape, so it reads back at a size async-openai knows.
    assert_eq!(extension.size, async_openai::types::videos::VideoSize::S1280x720);
    let job = sim.job(&extension.id).unwrap();
    assert_eq!(job.model, "google/veo3-1-fast-extend-video");
    let url = job.request["video_url"].as_str().unwrap_or_default();
    assert!(url.starts_with(CDN) && url.contains(&video.id), "{}", job.request);
}
