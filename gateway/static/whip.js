// WebRTC publish (WHIP) and play (WHEP) without trickle ICE: the offer is sent
// once ICE gathering is complete, the 201 answer carries the server's
// candidates and `Location` names the session resource to DELETE on stop.

import { LiveCoreError } from './livecore.js';

/** Resolve when ICE gathering is complete (or after `timeoutMs`, with what we have). */
export function waitForIceGathering(pc, timeoutMs = 3000) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      pc.removeEventListener('icegatheringstatechange', onState);
      pc.removeEventListener('icecandidate', onCandidate);
      resolve();
    };
    const onState = () => {
      if (pc.iceGatheringState === 'complete') done();
    };
    const onCandidate = (e) => {
      if (!e.candidate) done();
    };
    const timer = setTimeout(done, timeoutMs);
    pc.addEventListener('icegatheringstatechange', onState);
    pc.addEventListener('icecandidate', onCandidate);
  });
}

async function errorFromResponse(res) {
  let body = null;
  try {
    body = await res.json();
  } catch {
    /* not JSON */
  }
  const e = (body && body.error) || {};
  return new LiveCoreError(e.code || `http_${res.status}`, e.message || res.statusText, {
    status: res.status,
    details: body,
  });
}

/** Offer → POST (application/sdp) → 201 answer. Returns the absolute session URL (Location) or null. */
async function negotiate(pc, url, token) {
  await pc.setLocalDescription(await pc.createOffer());
  await waitForIceGathering(pc);
  const headers = { 'Content-Type': 'application/sdp', Accept: 'application/sdp' };
  if (token) headers.Authorization = `Bearer ${token}`;
  let res;
  try {
    res = await fetch(url, { method: 'POST', headers, body: pc.localDescription.sdp });
  } catch (err) {
    throw new LiveCoreError('network', String(err && err.message ? err.message : err));
  }
  if (res.status !== 201 && res.status !== 200) throw await errorFromResponse(res);
  const sdp = await res.text();
  const location = res.headers.get('Location');
  await pc.setRemoteDescription({ type: 'answer', sdp });
  return location ? new URL(location, new URL(url, window.location.href)).toString() : null;
}

/**
 * One WHIP or WHEP session. `onended` (settable) fires once when the peer
 * connection fails, closes, or stays disconnected for `graceMs`.
 */
export class MediaSession {
  constructor(pc, location, token, { graceMs = 5000 } = {}) {
    this.pc = pc;
    this.location = location;
    this.token = token;
    this.onended = null;
    this.ended = false;
    let graceTimer = null;
    pc.addEventListener('connectionstatechange', () => {
      const state = pc.connectionState;
      clearTimeout(graceTimer);
      if (state === 'failed' || state === 'closed') this._end(state);
      else if (state === 'disconnected') graceTimer = setTimeout(() => this._end(state), graceMs);
    });
  }

  get state() {
    return this.pc.connectionState;
  }

  _end(reason) {
    if (this.ended) return;
    this.ended = true;
    if (this.onended) this.onended(reason);
  }

  /** Close the peer connection and DELETE the session resource (best effort). */
  async stop({ keepalive = false } = {}) {
    this.ended = true;
    const headers = this.token ? { Authorization: `Bearer ${this.token}` } : {};
    // DELETE goes out before the peer connection closes, so the server ends
    // the session on our request rather than on ICE failure.
    const deleted = this.location
      ? fetch(this.location, { method: 'DELETE', headers, keepalive }).catch(() => null)
      : null;
    this.pc.close();
    await deleted; // best effort: the server times the session out anyway
  }
}

/** WHIP: publish a local MediaStream to `url` (e.g. /whip/{show}) with a host bearer token. */
export async function publish({ url, stream, token, iceServers = [] }) {
  const pc = new RTCPeerConnection({ iceServers });
  for (const track of stream.getTracks()) {
    pc.addTransceiver(track, { direction: 'sendonly', streams: [stream] });
  }
  try {
    const location = await negotiate(pc, url, token);
    return new MediaSession(pc, location, token);
  } catch (err) {
    pc.close();
    throw err;
  }
}

/** WHEP: play `url` (e.g. /whep/{show}) into a <video>. Token optional. */
export async function play({ url, video, token = null, iceServers = [] }) {
  const pc = new RTCPeerConnection({ iceServers });
  pc.addTransceiver('video', { direction: 'recvonly' });
  pc.addTransceiver('audio', { direction: 'recvonly' });
  const stream = new MediaStream();
  pc.addEventListener('track', (e) => {
    stream.addTrack(e.track);
    if (video.srcObject !== stream) video.srcObject = stream;
    video.play().catch(() => {
      /* autoplay refused: the page shows its unmute/play button */
    });
  });
  try {
    const location = await negotiate(pc, url, token);
    const session = new MediaSession(pc, location, token);
    session.stream = stream;
    return session;
  } catch (err) {
    pc.close();
    throw err;
  }
}

/** Frames decoded so far by a <video>, from whichever API the browser offers. */
export function decodedFrames(video, presented = 0) {
  let n = presented;
  if (typeof video.getVideoPlaybackQuality === 'function') {
    n = Math.max(n, video.getVideoPlaybackQuality().totalVideoFrames || 0);
  }
  if (Number.isFinite(video.webkitDecodedFrameCount)) n = Math.max(n, video.webkitDecodedFrameCount);
  return n;
}

/**
 * Keep `data-frames` on the <video> equal to its decoded frame count,
 * refreshed every `intervalMs`. Returns a stop function.
 */
export function trackFrames(video, intervalMs = 500) {
  let presented = 0;
  let stopped = false;
  const hasRvfc = typeof video.requestVideoFrameCallback === 'function';
  const onFrame = (_now, meta) => {
    presented = meta && Number.isFinite(meta.presentedFrames) ? meta.presentedFrames : presented + 1;
    if (!stopped) video.requestVideoFrameCallback(onFrame);
  };
  if (hasRvfc) video.requestVideoFrameCallback(onFrame);
  const update = () => {
    video.dataset.frames = String(decodedFrames(video, presented));
  };
  update();
  const timer = setInterval(update, intervalMs);
  video.addEventListener('emptied', () => {
    presented = 0;
  });
  return () => {
    stopped = true;
    clearInterval(timer);
  };
}
