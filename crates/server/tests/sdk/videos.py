"""openai-python's `client.videos`, unchanged, against aimlvid-server.

Run by crates/server/tests/it/sdk.rs, one scenario per call:

    python videos.py SCENARIO

with AIMLVID_BASE_URL (the proxy's `/v1`), AIMLVID_KEY and AIMLVID_OTHER_KEY
(two members' team keys), AIMLVID_OUT (a scratch directory) and
AIMLVID_CLIP (a short MP4 to upload) set. Each
scenario checks what a Sora user's code relies on and raises on the first
thing that differs; on success it prints one line of JSON with what it
measured, for the Rust side to check against the simulator.
"""

import asyncio
import json
import os
import struct
import subprocess
import sys
import warnings
import zlib

import openai

# The SDK marks the videos API deprecated (Sora's shutdown): that is the point.
warnings.simplefilter("ignore", DeprecationWarning)

BASE_URL = os.environ["AIMLVID_BASE_URL"]
KEY = os.environ["AIMLVID_KEY"]
OTHER_KEY = os.environ["AIMLVID_OTHER_KEY"]
OUT = os.environ["AIMLVID_OUT"]

T2V = "google/veo-3.1-t2v-fast"
I2V = "google/veo-3.1-i2v-fast"


def client(key=KEY, **kwargs):
    return openai.OpenAI(base_url=BASE_URL, api_key=key, max_retries=0, **kwargs)


def check(condition, what):
    if not condition:
        raise AssertionError(what)


def finished(video, what):
    check(video.status == "completed", f"{what}: {video.status} {video.error}")
    check(video.progress == 100, f"{what}: progress {video.progress}")
    check(video.completed_at is not None and video.completed_at >= video.created_at, f"{what}: completed_at")
    return video


def png(width=64, height=64):
    """A small valid PNG (a gradient), made here so the test carries no binary file."""
    rows = b"".join(b"\x00" + bytes(c for x in range(width) for c in (x * 4 % 256, y * 4 % 256, 160)) for y in range(height))

    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def text_to_video():
    video = client().videos.create_and_poll(model=T2V, prompt="a heron lands on a pier", seconds="4", size="1280x720")
    finished(video, "text-to-video")
    check(video.model == T2V, f"model {video.model}")
    check(video.seconds == "4" and video.size == "1280x720", f"seconds/size {video.seconds} {video.size}")
    check(video.prompt == "a heron lands on a pier", f"prompt {video.prompt}")
    return {"id": video.id}


def image_to_video():
    image = os.path.join(OUT, "first-frame.png")
    with open(image, "wb") as f:
        f.write(png())
    with open(image, "rb") as f:
        video = client().videos.create_and_poll(model=I2V, prompt="the frame comes alive", input_reference=f)
    finished(video, "image-to-video")
    check(video.model == I2V, f"model {video.model}")
    # The other form of input_reference, an image by its URL, the SDK will
    # not send (it takes every input_reference for a file): its low-level
    # `post` sends it as JSON.
    by_url = client().post(
        "/videos",
        cast_to=openai.types.Video,
        body={"model": I2V, "prompt": "the frame comes alive", "input_reference": {"image_url": "https://example.com/first.png"}},
    )
    return {"id": video.id, "by_url": by_url.id}


def extend():
    c = client()
    source = finished(c.videos.create_and_poll(model=T2V, prompt="waves at dusk"), "source")
    # openai-python (3.57 to 3.60 at least) refuses `video={"id": ...}`
    # before sending anything: it takes every `video` for a file to upload.
    # Its own low-level `post` sends the same request as JSON, as the npm
    # package's `videos.extend` does.
    by_id = c.post(
        "/videos/extensions",
        cast_to=openai.types.Video,
        # Veo 3.1 extend makes 7 s extensions only (the SDK types list Sora's 4 to 20).
        body={"video": {"id": source.id}, "prompt": "the sun sets", "seconds": "7"},
    )
    check(by_id.id != source.id, "the extension is a new video")
    by_id = finished(c.videos.poll(by_id.id), "extension by id")
    # And a clip of the member's own, uploaded: this one the SDK sends itself.
    with open(os.environ["AIMLVID_CLIP"], "rb") as f:
        uploaded = c.videos.extend(video=f, prompt="the tide comes in", seconds="7")
    uploaded = finished(c.videos.poll(uploaded.id), "extension of an upload")
    # The clip is 16:9 (320x180): the extension keeps that shape, at 720p.
    check(uploaded.size == "1280x720", f"extension of an upload: size {uploaded.size!r}")
    return {"source": source.id, "id": by_id.id, "model": by_id.model, "uploaded": uploaded.id}


def remix():
    c = client()
    source = finished(c.videos.create_and_poll(model=T2V, prompt="a red kite", seconds="8", size="720x1280"), "source")
    remixed = c.videos.remix(source.id, prompt="a blue kite")
    check(remixed.remixed_from_video_id == source.id, f"remixed_from {remixed.remixed_from_video_id}")
    remixed = finished(c.videos.poll(remixed.id), "remix")
    check(remixed.model == source.model, f"model {remixed.model}")
    check((remixed.seconds, remixed.size) == (source.seconds, source.size), f"{remixed.seconds} {remixed.size}")
    check(remixed.prompt == "a blue kite", f"prompt {remixed.prompt}")
    check(remixed.remixed_from_video_id == source.id, "remixed_from after completion")
    return {"source": source.id, "id": remixed.id}


def listing():
    c = client()
    made = [c.videos.create(model=T2V, prompt=f"clip {i}").id for i in range(25)]
    # The other member's video never shows in this member's list.
    theirs = client(OTHER_KEY).videos.create(model=T2V, prompt="not yours").id
    pages = c.videos.list(limit=10)
    newest_first = [v.id for v in pages]
    check(newest_first == list(reversed(made)), f"desc order: {newest_first} against {made}")
    check(theirs not in newest_first, "another member's video is listed")
    first = c.videos.list(limit=10)
    check(len(first.data) == 10 and first.has_more, "first page")
    check(first.last_id == first.data[-1].id, "last_id")
    oldest_first = [v.id for v in c.videos.list(limit=7, order="asc")]
    check(oldest_first == made, f"asc order: {oldest_first}")
    pages_read = sum(1 for _ in c.videos.list(limit=10).iter_pages())
    check(pages_read == 3, f"{pages_read} pages of 10 for 25 videos")
    return {"listed": len(newest_first)}


def download():
    c = client()
    video = finished(c.videos.create_and_poll(model=T2V, prompt="rain on glass"), "video")
    content = c.videos.download_content(video.id, variant="video")
    path = os.path.join(OUT, "video.mp4")
    content.write_to_file(path)
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "stream=codec_type", "-of", "json", path],
        capture_output=True, text=True, check=True,
    )
    kinds = [s["codec_type"] for s in json.loads(probe.stdout)["streams"]]
    check("video" in kinds, f"ffprobe found {kinds}")
    return {"bytes": os.path.getsize(path), "streams": kinds}


def delete():
    c = client()
    video = finished(c.videos.create_and_poll(model=T2V, prompt="to be deleted"), "video")
    kept = c.videos.create(model=T2V, prompt="kept").id
    deleted = c.videos.delete(video.id)
    check(deleted.id == video.id and deleted.deleted and deleted.object == "video.deleted", f"{deleted}")
    try:
        c.videos.retrieve(video.id)
        raise AssertionError("a deleted video is still retrieved")
    except openai.NotFoundError:
        pass
    listed = [v.id for v in c.videos.list()]
    check(video.id not in listed and kept in listed, f"listed after delete: {listed}")
    return {"id": video.id}


def errors():
    c = client()
    try:
        c.videos.create(model=T2V, prompt="x", size="333x333")
        raise AssertionError("a size the model cannot take was accepted")
    except openai.BadRequestError as e:
        check(e.param == "size", f"param {e.param!r}")
        check(e.type == "invalid_request_error", f"type {e.type!r}")
        check("1280x720" in e.message, f"the message names what is allowed: {e.message}")
    mine = c.videos.create(model=T2V, prompt="mine").id
    try:
        client(OTHER_KEY).videos.retrieve(mine)
        raise AssertionError("another member read this member's video")
    except openai.NotFoundError as e:
        check(e.code == "not_found", f"code {e.code!r}")
    try:
        client("not-a-key").videos.retrieve(mine)
        raise AssertionError("a wrong key was let in")
    except openai.AuthenticationError as e:
        check(e.code == "invalid_api_key", f"code {e.code!r}")
    return {"id": mine}


def polls():
    """Two SDK users wait for a job of the same slow model: one as the SDK
    does by default (it honours `openai-poll-after-ms`), one at 1 s."""
    retrieves = {}

    async def count(request):
        if request.method == "GET" and "/videos/" in request.url.path:
            video = request.url.path.rsplit("/", 1)[-1]
            retrieves[video] = retrieves.get(video, 0) + 1

    async def wait(interval_ms=None):
        # The SDK's own HTTP client class, with a hook that counts its requests.
        http = openai.DefaultAsyncHttpxClient(event_hooks={"request": [count]})
        c = openai.AsyncOpenAI(base_url=BASE_URL, api_key=KEY, max_retries=0, http_client=http)
        kwargs = {} if interval_ms is None else {"poll_interval_ms": interval_ms}
        video = await c.videos.create_and_poll(model=os.environ["AIMLVID_SLOW_MODEL"], prompt="slow", **kwargs)
        await http.aclose()
        return finished(video, "slow video")

    async def both():
        return await asyncio.gather(wait(), wait(1000))

    honoured, every_second = asyncio.run(both())
    return {
        "honoured": {"id": honoured.id, "retrieves": retrieves[honoured.id]},
        "every_second": {"id": every_second.id, "retrieves": retrieves[every_second.id]},
    }


SCENARIOS = {
    "text-to-video": text_to_video,
    "image-to-video": image_to_video,
    "extend": extend,
    "remix": remix,
    "list": listing,
    "download": download,
    "delete": delete,
    "errors": errors,
    "polls": polls,
}

if __name__ == "__main__":
    print(json.dumps({"openai": openai.__version__, **SCENARIOS[sys.argv[1]]()}))
