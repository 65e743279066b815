"""A real browser against the real endpoints: Chromium publishes its fake camera
over WHIP and plays it back over WHEP, and its own decoder counts the frames.

This is the check that forwarded frames (re-packetised by aiortc, never
re-encoded) are something a browser's WebRTC stack accepts. Skipped when
Playwright or Debian's chromium is missing.
"""

from __future__ import annotations

import shutil
from typing import Any

import pytest
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from .harness import running_server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright_api = pytest.importorskip("playwright.async_api")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed")

PAGE = """<!doctype html><meta charset="utf-8"><title>whip/whep smoke</title>
<script>
async function gathered(pc) {
  if (pc.iceGatheringState === 'complete') return;
  await new Promise((resolve) => {
    pc.addEventListener('icegatheringstatechange', () => {
      if (pc.iceGatheringState === 'complete') resolve();
    });
    setTimeout(resolve, 3000);
  });
}
async function negotiate(url, pc, token) {
  await pc.setLocalDescription(await pc.createOffer());
  await gathered(pc);
  const headers = {'Content-Type': 'application/sdp'};
  if (token) headers.Authorization = 'Bearer ' + token;
  const res = await fetch(url, {method: 'POST', headers, body: pc.localDescription.sdp});
  if (res.status !== 201) throw new Error(res.status + ' ' + await res.text());
  await pc.setRemoteDescription({type: 'answer', sdp: await res.text()});
  return res.headers.get('Location');
}
function sendCodecs() {
  return RTCRtpSender.getCapabilities('video').codecs.map((c) => c.mimeType);
}
async function run(show, token, codec) {
  const stream = await navigator.mediaDevices.getUserMedia(
    {video: {width: 320, height: 240}, audio: true});
  const pub = new RTCPeerConnection();
  for (const track of stream.getTracks()) {
    const t = pub.addTransceiver(track, {direction: 'sendonly', streams: [stream]});
    if (track.kind === 'video') {
      t.setCodecPreferences(RTCRtpSender.getCapabilities('video').codecs.filter(
        (c) => c.mimeType.toLowerCase() === 'video/' + codec.toLowerCase()));
    }
  }
  const whip = await negotiate('/whip/' + show, pub, token);
  const sub = new RTCPeerConnection();
  sub.addTransceiver('video', {direction: 'recvonly'});
  sub.addTransceiver('audio', {direction: 'recvonly'});
  const whep = await negotiate('/whep/' + show, sub, null);
  let frames = 0, audio = 0, mime = '';
  const deadline = Date.now() + 20000;
  while (Date.now() < deadline && (frames < 30 || audio < 30)) {
    await new Promise((r) => setTimeout(r, 200));
    const stats = await sub.getStats();
    const codecs = {};
    stats.forEach((r) => { if (r.type === 'codec') codecs[r.id] = r.mimeType; });
    stats.forEach((r) => {
      if (r.type !== 'inbound-rtp') return;
      if (r.kind === 'video') { frames = r.framesDecoded || 0; mime = codecs[r.codecId] || mime; }
      if (r.kind === 'audio') audio = r.packetsReceived || 0;
    });
  }
  const deleted = [(await fetch(whep, {method: 'DELETE'})).status,
                   (await fetch(whip, {method: 'DELETE'})).status];
  sub.close();
  pub.close();
  stream.getTracks().forEach((t) => t.stop());
  return {frames, audio, mime, deleted};
}
</script>"""


async def page(_: Request) -> HTMLResponse:
    return HTMLResponse(PAGE)


# Transcode mode sends aiortc's own encoder output, which is aiortc's everyday
# path; forwarding is the one that needs a browser's word for it.
@pytest.mark.parametrize(("mode", "codec"), [("forward", "VP8"), ("forward", "H264")])
async def test_browser_publishes_and_plays_back(mode: Any, codec: str) -> None:
    async with running_server(mode, [Route("/_smoke", page)]) as vs, playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM,
            args=["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream", "--no-sandbox"],
        )
        try:
            tab = await browser.new_page()
            await tab.goto(vs.base_url + "/_smoke")
            if f"video/{codec}" not in await tab.evaluate("sendCodecs()"):
                pytest.skip(f"this chromium can't send {codec}")
            result = await tab.evaluate("([s, t, c]) => run(s, t, c)", ["show-1", vs.token("host", "show-1"), codec])
        finally:
            await browser.close()
    assert result["frames"] >= 30, result
    assert result["audio"] >= 30, result
    assert result["deleted"] == [204, 204], result
    if mode == "forward":
        assert result["mime"].lower() == f"video/{codec.lower()}", result
