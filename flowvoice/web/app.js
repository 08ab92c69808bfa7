// flowvoice browser client: microphone -> server -> speaker, with the live transcript,
// the conversation, and each turn's latency. Wire protocol: flowvoice/transport.py.
// Transport: the WebSocket /ws, or with ?transport=webrtc a peer connection (microphone and
// voice as tracks, events on a data channel; flowvoice/webrtc.py), falling back to the
// WebSocket when the server cannot answer the offer.

const SAMPLE_RATE = 16000; // what capture-worklet.js sends
const HEADER_BYTES = 8; // server audio: uint32 turn, uint32 sample rate (little-endian)
const MAX_BUFFERED_BYTES = 64 * 1024; // drop mic frames rather than build up latency
const MAX_RECONNECT_DELAY_MS = 10000;
const ICE_GATHERING_MS = 3000; // the offer goes out with the candidates gathered by then
const METER_MS = 20; // how often the WebRTC voice's level is read
const AUDIBLE_RMS = 0.002; // -54 dBFS: the voice track carries digital silence between replies
const TRANSPORT_TEXT = { websocket: "WebSocket", webrtc: "WebRTC" };
const STAGES = [
  ["final_transcript", "transcript"],
  ["turn_committed", "turn end"],
  ["first_token", "first token"],
  ["first_sentence", "first sentence"],
  ["first_audio", "first audio"],
  ["first_audio_sent", "sent"],
];
const STATE_TEXT = {
  idle: "Idle",
  starting: "Starting…",
  connecting: "Connecting…",
  listening: "Listening",
  hearing: "Hearing you",
  thinking: "Thinking",
  speaking: "Speaking",
  reconnecting: "Reconnecting…",
};

const $ = (id) => document.getElementById(id);
const ui = {
  start: $("start"),
  status: $("status"),
  statusText: $("status-text"),
  level: $("level"),
  notice: $("notice"),
  conversation: $("conversation"),
  hint: $("hint"),
  partial: $("partial"),
  latency: $("latency"),
  transport: $("transport"),
  voice: $("voice"),
};

// Live counters, also read by the end-to-end tests.
const fv = (window.flowvoice = {
  state: "idle",
  transport: new URLSearchParams(location.search).get("transport") === "webrtc" ? "webrtc" : "websocket",
  fallback: null, // why WebRTC was given up for the WebSocket
  audibleMs: 0, // ms of the voice heard with sound (both transports: an analyser)
  soundAt: [], // when the voice started to sound, each time
  iceRoute: null, // WebRTC: {local, remote, protocol} of the candidate pair in use
  quietAt: [], // when the voice last sounded before each silence
  jitterBufferMs: null, // WebRTC: the browser's mean jitter-buffer delay of the voice
  connected: false,
  framesSent: 0,
  audioMessages: 0,
  samplesPlayed: 0,
  partial: "",
  transcripts: [],
  userTurns: [],
  assistantTexts: [],
  metrics: [],
  errors: [],
  reconnects: 0,
  // Playback and barge-in, per connection (times are performance.now() ms):
  micStartedAt: null, // the microphone was opened (a fake one starts its file then)
  playedMs: {}, // turn -> ms of its audio played so far
  playStartedAt: {}, // turn -> when its audio was first heard
  firstAudioAt: {}, // turn -> when its first audio message arrived
  heardMs: {}, // turn -> end of the user's speech -> reply first heard here (see heardLatency)
  lastPlayedAt: {}, // turn -> when its played time last grew
  playing: false,
  underruns: 0, // a reply ran dry mid-way (the jitter buffer then grows)
  bargeIns: [], // the server's barge_in events
  interrupts: 0,
  interruptLog: [], // {turn, at, wasPlaying, droppedMs, silentAt, playedMs at the flush}
  voicePausedAt: [], // the server paused the voice (speech began during it): page clock
  voiceResumedAt: [], // ... and let it go on (a false alarm, or the next turn began)
  staleAudioMessages: 0, // audio of an interrupted turn that arrived after the interrupt
});

let audio = null; // {ctx, stream, playback}
let ws = null;
let rtc = null; // {pc, channel, meter} of a WebRTC connection
let running = false;
let fatal = false; // the server ended the session with an error: do not reconnect
let attempts = 0;
let reconnectTimer = null;
let flushedBefore = 0; // audio of older turns was interrupted: drop it
let pendingUser = null; // user bubble being transcribed, not yet a committed turn
const replies = new Map(); // turn -> {bubble, text, index}
const latencies = new Map(); // turn -> the server's latency_ms (metrics event)
const latencyTitles = new Map(); // turn -> its row title in the latency panel

// -- state and messages ------------------------------------------------------------------

function setState(state) {
  fv.state = state;
  ui.status.className = `status ${state}`;
  ui.statusText.textContent = STATE_TEXT[state];
  ui.start.textContent = state === "idle" ? "Start" : "Stop";
  ui.start.disabled = state === "starting";
}

function showNotice(text, kind = "error") {
  ui.notice.textContent = text;
  ui.notice.className = `notice ${kind}`;
  ui.notice.hidden = false;
}

function hideNotice() {
  ui.notice.hidden = true;
}

function micMessage(err) {
  switch (err && err.name) {
    case "NotAllowedError":
    case "SecurityError":
      return "Microphone access was denied. Allow the microphone for this site in the browser's settings, then press Start again.";
    case "NotFoundError":
    case "OverconstrainedError":
      return "No microphone was found. Connect one and press Start again.";
    case "NotReadableError":
      return "The microphone is busy or unavailable (another application may be using it).";
    default:
      return `Could not start audio: ${err && err.message ? err.message : err}`;
  }
}

// -- audio -------------------------------------------------------------------------------

async function openAudio() {
  const ctx = new AudioContext(); // created inside the click, so autoplay is allowed
  try {
    const stream = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true, channelCount: 1 },
    });
    fv.micStartedAt = performance.now();
    await ctx.audioWorklet.addModule("capture-worklet.js");
    await ctx.audioWorklet.addModule("playback-worklet.js");
    const capture = new AudioWorkletNode(ctx, "capture", { outputChannelCount: [1] });
    const mute = ctx.createGain(); // keeps the capture node pulled by the graph, silently
    mute.gain.value = 0;
    ctx.createMediaStreamSource(stream).connect(capture).connect(mute).connect(ctx.destination);
    const playback = new AudioWorkletNode(ctx, "playback", { numberOfInputs: 0, outputChannelCount: [1] });
    playback.connect(ctx.destination);
    capture.port.onmessage = (event) => onMicFrame(event.data);
    playback.port.onmessage = (event) => onPlayback(event.data);
    await ctx.resume();
    return { ctx, stream, playback, meter: null };
  } catch (err) {
    ctx.close();
    throw err;
  }
}

function closeAudio() {
  if (!audio) return;
  clearInterval(audio.meter);
  audio.stream.getTracks().forEach((track) => track.stop());
  audio.ctx.close();
  audio = null;
  ui.level.style.width = "0";
}

function onMicFrame({ pcm, rms }) {
  if (!running) return;
  ui.level.style.width = `${Math.min(100, Math.round(rms * 400))}%`;
  if (ws && ws.readyState === WebSocket.OPEN && ws.bufferedAmount < MAX_BUFFERED_BYTES) {
    ws.send(pcm);
    fv.framesSent++;
  }
}

function onPlayback({ playing, samples, turns, underruns, flushed }) {
  if (!running) return; // a report still queued after Stop
  const now = performance.now();
  fv.samplesPlayed = samples;
  fv.underruns = underruns;
  fv.playing = playing;
  for (const [turn, ms] of turns) {
    if (!(turn in fv.playStartedAt)) {
      fv.playStartedAt[turn] = now;
      heardLatency(turn);
    }
    fv.playedMs[turn] = ms;
    fv.lastPlayedAt[turn] = now;
    send({ type: "played", turn, ms: Math.round(ms) });
  }
  if (flushed) {
    const entry = fv.interruptLog.find((e) => e.turn === flushed.beforeTurn && e.silentAt === null);
    if (entry) {
      entry.silentAt = now; // the flush took effect: the interrupted reply is silent
      entry.wasPlaying = flushed.wasPlaying;
      entry.droppedMs = flushed.droppedMs;
      entry.playedMs = { ...fv.playedMs };
    }
  }
  if (playing) setState("speaking");
  else if (fv.state === "speaking") setState("listening");
}

// -- connection --------------------------------------------------------------------------

function socketUrl() {
  const url = new URL("ws", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  const token = new URLSearchParams(location.search).get("token");
  if (token) url.searchParams.set("token", token);
  return url;
}

function send(message) {
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(message));
  else if (rtc && rtc.channel.readyState === "open") rtc.channel.send(JSON.stringify(message));
}

function showTransport() {
  ui.transport.textContent = TRANSPORT_TEXT[fv.transport];
  ui.transport.title = fv.fallback ? `WebRTC unavailable: ${fv.fallback}` : "";
}

function connect() {
  setState(attempts ? "reconnecting" : "connecting");
  showTransport();
  if (fv.transport === "webrtc") connectWebRTC();
  else connectWebSocket();
}

function onConnected() {
  fv.connected = true;
  if (attempts) {
    fv.reconnects++;
    addDivider("Reconnected: a new conversation starts here.");
  }
  attempts = 0;
  newConversation();
  hideNotice();
  setState("listening");
}

function onConnectionLost(opened) {
  fv.connected = false;
  if (!running) return;
  if (fatal) {
    stop();
    return;
  }
  attempts++;
  const delay = Math.min(1000 * 2 ** (attempts - 1), MAX_RECONNECT_DELAY_MS);
  const why = opened
    ? "Connection lost."
    : "Cannot connect to the server (is it running? is the token or origin refused?).";
  showNotice(`${why} Reconnecting in ${Math.round(delay / 1000)} s…`, "warning");
  setState("reconnecting");
  reconnectTimer = setTimeout(connect, delay);
}

function connectWebSocket() {
  const socket = new WebSocket(socketUrl());
  socket.binaryType = "arraybuffer";
  let opened = false;
  ws = socket;
  socket.onopen = () => {
    opened = true;
    socket.send(JSON.stringify({ type: "hello", sample_rate: SAMPLE_RATE }));
    onConnected();
  };
  socket.onmessage = (event) => {
    if (typeof event.data === "string") onEvent(JSON.parse(event.data));
    else onAudio(event.data);
  };
  socket.onclose = () => {
    if (ws !== socket) return; // an old socket, already replaced
    ws = null;
    onConnectionLost(opened);
  };
}

// -- WebRTC ------------------------------------------------------------------------------

function offerUrl() {
  const url = new URL("webrtc/offer", location.href);
  const token = new URLSearchParams(location.search).get("token");
  if (token) url.searchParams.set("token", token);
  return url;
}

function iceGathered(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ICE_GATHERING_MS);
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") {
        clearTimeout(timer);
        resolve();
      }
    });
  });
}

async function connectWebRTC() {
  const pc = new RTCPeerConnection();
  const channel = pc.createDataChannel("events");
  const conn = { pc, channel, meter: null, jitter: null, jitterTotals: null, opened: false, lost: false };
  rtc = conn;
  pc.addTransceiver(audio.stream.getAudioTracks()[0], { direction: "sendrecv" });
  pc.ontrack = (event) => playVoice(conn, event.streams[0] || new MediaStream([event.track]));
  channel.onopen = () => {
    conn.opened = true;
    onConnected();
  };
  channel.onmessage = (event) => onEvent(JSON.parse(event.data));
  const lost = () => {
    if (rtc !== conn || conn.lost) return;
    conn.lost = true;
    closeWebRTC();
    onConnectionLost(conn.opened);
  };
  channel.onclose = lost;
  pc.onconnectionstatechange = () => {
    if (pc.connectionState === "connected") showRoute(pc);
    if (pc.connectionState === "failed" || pc.connectionState === "closed") lost();
  };
  let answer;
  try {
    await pc.setLocalDescription(await pc.createOffer());
    await iceGathered(pc);
    const response = await fetch(offerUrl(), {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ sdp: pc.localDescription.sdp, type: "offer" }),
    });
    answer = await response.json().catch(() => ({ message: response.statusText }));
    if (!response.ok) throw new Error(`${response.status} ${answer.message || ""}`.trim());
  } catch (err) {
    if (rtc !== conn) return; // stopped meanwhile
    closeWebRTC();
    fv.fallback = String(err.message || err);
    fv.transport = "websocket";
    showNotice(`WebRTC unavailable (${fv.fallback}): using the WebSocket.`, "warning");
    connect();
    return;
  }
  if (rtc === conn) await pc.setRemoteDescription(answer);
}

async function showRoute(pc) {
  // The addresses ICE chose, shown beside the transport's name.
  const stats = await pc.getStats();
  for (const report of stats.values()) {
    if (report.type !== "transport" || !report.selectedCandidatePairId) continue;
    const pair = stats.get(report.selectedCandidatePairId);
    const local = stats.get(pair.localCandidateId);
    const remote = stats.get(pair.remoteCandidateId);
    fv.iceRoute = { local: local.address, remote: remote.address, protocol: local.protocol };
    ui.transport.title = `WebRTC over ${local.protocol} ${local.address} -> ${remote.address}:${remote.port}`;
  }
}

function playVoice(conn, stream) {
  // The <audio> element plays the voice (the path every browser's echo canceller
  // references); a meter on the same stream tells when it is audible.
  ui.voice.srcObject = stream;
  ui.voice.play().catch(() => {});
  conn.meter = voiceMeter(audio.ctx.createMediaStreamSource(stream), (now, playing) => {
    if (!playing) {
      for (const entry of fv.interruptLog) if (entry.silentAt === null) entry.silentAt = now;
    }
    fv.playing = playing;
    if (playing) {
      onVoiceSounding(now);
      setState("speaking");
    } else if (fv.state === "speaking") setState("listening");
  }, () => ui.voice.muted);
  conn.jitter = setInterval(() => measureJitter(conn), 1000);
}

function voiceMeter(source, onLevel = null, muted = () => false) {
  // Reads the level of what the page plays every METER_MS: when the voice sounds and when
  // it goes quiet (fv.soundAt, fv.quietAt, fv.audibleMs), the same for both transports.
  const analyser = audio.ctx.createAnalyser();
  analyser.fftSize = 1024;
  source.connect(analyser);
  const data = new Float32Array(analyser.fftSize);
  let last = performance.now();
  let lastSound = null;
  let sounding = false;
  return setInterval(() => {
    const now = performance.now();
    analyser.getFloatTimeDomainData(data);
    let sum = 0;
    for (const v of data) sum += v * v;
    const audible = Math.sqrt(sum / data.length) > AUDIBLE_RMS && !muted();
    if (audible) {
      fv.audibleMs += now - last;
      if (!sounding) fv.soundAt.push(now);
      lastSound = now;
    }
    last = now;
    const playing = audible || (lastSound !== null && now - lastSound < 100);
    if (sounding && !playing) fv.quietAt.push(lastSound); // the voice stopped (last sound then)
    sounding = playing;
    if (onLevel) onLevel(now, playing);
  }, METER_MS);
}

async function measureJitter(conn) {
  // How long Chrome's jitter buffer holds the voice, over the last second: what the server
  // sent is heard that much later.
  for (const report of (await conn.pc.getStats()).values()) {
    if (report.type !== "inbound-rtp" || report.kind !== "audio") continue;
    const [delay, emitted] = [report.jitterBufferDelay, report.jitterBufferEmittedCount];
    const last = conn.jitterTotals || [0, 0];
    if (emitted > last[1]) fv.jitterBufferMs = (1000 * (delay - last[0])) / (emitted - last[1]);
    conn.jitterTotals = [delay, emitted];
  }
}

function onTrackSent({ turn, ms }) {
  // The server reports what of each turn it sent over the track; the page plays it a
  // jitter buffer later, and then reports it played unless the voice was muted meanwhile
  // (a pause: the server replays what was not heard). The turn's audio began to leave the
  // server ms ago.
  const now = performance.now();
  if (turn < flushedBefore) fv.staleAudioMessages++;
  if (!(turn in fv.firstAudioAt)) fv.firstAudioAt[turn] = now - ms;
  fv.playedMs[turn] = ms;
  fv.lastPlayedAt[turn] = now;
  const conn = rtc;
  setTimeout(() => {
    if (rtc === conn && !ui.voice.muted && turn >= flushedBefore) send({ type: "played", turn, ms });
  }, fv.jitterBufferMs || 0);
}

function onVoiceSounding(now) {
  // Over WebRTC a turn is first heard when the voice sounds after its audio began to leave.
  for (const turn of Object.keys(fv.firstAudioAt).map(Number)) {
    if (turn in fv.playStartedAt || turn < flushedBefore) continue;
    fv.playStartedAt[turn] = now;
    heardLatency(turn);
  }
}

function closeWebRTC() {
  if (!rtc) return;
  clearInterval(rtc.meter);
  clearInterval(rtc.jitter);
  rtc.channel.close();
  rtc.pc.close();
  rtc = null;
  ui.voice.srcObject = null;
  ui.voice.muted = false;
}

async function start() {
  if (!navigator.mediaDevices || !window.AudioWorkletNode) {
    showNotice("This page needs a secure context (https or http://localhost) and a browser with AudioWorklet support.");
    return;
  }
  hideNotice();
  fatal = false;
  setState("starting");
  try {
    audio = await openAudio();
    audio.meter = voiceMeter(audio.playback); // the WebSocket's voice
  } catch (err) {
    showNotice(micMessage(err));
    setState("idle");
    return;
  }
  running = true;
  ui.hint.hidden = true;
  connect();
}

function stop() {
  running = false;
  clearTimeout(reconnectTimer);
  attempts = 0;
  if (ws) {
    const socket = ws;
    ws = null;
    socket.close(1000);
  }
  closeWebRTC();
  fv.connected = false;
  closeAudio();
  setPartial("");
  setState("idle");
}

ui.start.addEventListener("click", () => (running ? stop() : start()));

// -- server messages ---------------------------------------------------------------------

function onAudio(buffer) {
  const view = new DataView(buffer);
  const turn = view.getUint32(0, true);
  const rate = view.getUint32(4, true);
  if (turn < flushedBefore) fv.staleAudioMessages++;
  if (turn < flushedBefore || !audio) return;
  fv.audioMessages++;
  if (!(turn in fv.firstAudioAt)) fv.firstAudioAt[turn] = performance.now();
  const pcm = buffer.slice(HEADER_BYTES);
  audio.playback.port.postMessage({ type: "audio", turn, rate, pcm }, [pcm]);
}

function onEvent(event) {
  switch (event.type) {
    case "partial_transcript":
      setPartial(event.text);
      if (fv.state === "listening") setState("hearing");
      break;
    case "final_transcript":
      fv.transcripts.push(event.text);
      if (!pendingUser) pendingUser = addBubble("user pending", "");
      pendingUser.textContent = `${pendingUser.textContent} ${event.text}`.trim();
      setPartial("");
      break;
    case "user_turn":
      fv.userTurns.push(event.text);
      (pendingUser || addBubble("user", "")).textContent = event.text;
      if (pendingUser) pendingUser.classList.remove("pending");
      pendingUser = null;
      setPartial("");
      if (fv.state !== "speaking") setState("thinking");
      break;
    case "assistant_text":
      appendReply(event.turn, event.text, event.final);
      break;
    case "interrupt":
      interrupt(event.turn);
      break;
    case "track_sent":
      onTrackSent(event);
      break;
    case "barge_in":
      fv.bargeIns.push({ turn: event.turn, at: performance.now() });
      break;
    case "voice_paused":
      fv.voicePausedAt.push(performance.now());
      if (audio) audio.playback.port.postMessage({ type: "hold" });
      ui.voice.muted = true; // WebRTC: the server replays what the jitter buffer held
      break;
    case "voice_resumed":
      fv.voiceResumedAt.push(performance.now());
      if (audio) audio.playback.port.postMessage({ type: "release" });
      ui.voice.muted = false;
      break;
    case "metrics":
      fv.metrics.push(event);
      latencies.set(event.turn, event.latency_ms || {});
      showLatency(event.turn, event.latency_ms || {});
      heardLatency(event.turn);
      break;
    case "error":
      fv.errors.push(event);
      if (event.code === "node_failed" || event.code === "internal") {
        fatal = true;
        showNotice(`The session stopped: ${event.message}. Press Start to try again.`);
      } else {
        showNotice(`Server error (${event.code}): ${event.message}`);
      }
      break;
  }
}

function interrupt(turn) {
  fv.interrupts++;
  const now = performance.now();
  // (over WebRTC the voice meter stamps silentAt; over the WebSocket the playback worklet)
  fv.interruptLog.push({ turn, at: now, wasPlaying: fv.playing, droppedMs: 0, silentAt: rtc && !fv.playing ? now : null, playedMs: null });
  flushedBefore = Math.max(flushedBefore, turn);
  if (audio) audio.playback.port.postMessage({ type: "flush", beforeTurn: turn });
  // The server interrupts only while a reply is being spoken: the latest older one, whose
  // text may have long been complete (its audio is paced to real time).
  let cut = null;
  for (const [replyTurn, reply] of replies) {
    if (replyTurn >= turn) continue;
    if (!reply.done) {
      reply.done = true;
      reply.bubble.classList.remove("streaming");
    }
    if (!cut || replyTurn > cut.turn) cut = { turn: replyTurn, reply };
  }
  if (cut) cut.reply.bubble.classList.add("interrupted");
}

// -- conversation view -------------------------------------------------------------------

function newConversation() {
  // Each connection is a new server session whose turns count from 0 again.
  flushedBefore = 0;
  pendingUser = null;
  replies.clear();
  fv.playedMs = {};
  fv.playStartedAt = {};
  fv.firstAudioAt = {};
  fv.heardMs = {};
  latencies.clear();
  latencyTitles.clear();
  fv.lastPlayedAt = {};
  if (audio) audio.playback.port.postMessage({ type: "flush", beforeTurn: Infinity, reset: true });
}

function setPartial(text) {
  fv.partial = text;
  ui.partial.textContent = text;
  ui.partial.hidden = !text;
}

function addBubble(kind, text) {
  const bubble = document.createElement("div");
  bubble.className = `bubble ${kind}`;
  bubble.textContent = text;
  ui.conversation.append(bubble);
  bubble.scrollIntoView({ block: "end" });
  return bubble;
}

function addDivider(text) {
  const divider = document.createElement("p");
  divider.className = "divider";
  divider.textContent = text;
  ui.conversation.append(divider);
}

function reply(turn) {
  if (!replies.has(turn)) {
    const bubble = addBubble("assistant streaming", "");
    const text = document.createElement("span");
    bubble.append(text);
    replies.set(turn, { bubble, text, index: fv.assistantTexts.push("") - 1, done: false });
  }
  return replies.get(turn);
}

function appendReply(turn, text, final) {
  const entry = reply(turn);
  if (entry.done) return;
  entry.text.textContent += text;
  fv.assistantTexts[entry.index] = entry.text.textContent;
  if (final) {
    entry.done = true;
    entry.bubble.classList.remove("streaming");
  }
  entry.bubble.scrollIntoView({ block: "end" });
}

// Voice-to-voice as the user hears it: the server's end of speech -> first audio sent, plus
// the time that audio then waited here (transit on the socket aside) before it played.
function heardLatency(turn) {
  const sent = (latencies.get(turn) || {}).first_audio_sent;
  if (sent === undefined || !(turn in fv.playStartedAt) || !(turn in fv.firstAudioAt)) return;
  if (turn in fv.heardMs) return;
  fv.heardMs[turn] = sent + Math.max(0, fv.playStartedAt[turn] - fv.firstAudioAt[turn]);
  const title = latencyTitles.get(turn);
  if (title) title.textContent += `, heard at ${Math.round(fv.heardMs[turn])} ms`;
}

function showLatency(turn, latency) {
  const total = latency.first_audio_sent;
  if (total === undefined) return;
  const row = document.createElement("li");
  const title = document.createElement("div");
  title.className = "latency-title";
  title.textContent = `turn ${turn}: voice-to-voice ${Math.round(total)} ms`;
  latencyTitles.set(turn, title);
  const bar = document.createElement("div");
  bar.className = "latency-bar";
  const table = document.createElement("dl");
  let previous = 0;
  for (const [stage, label] of STAGES) {
    if (latency[stage] === undefined) continue;
    const step = Math.max(0, latency[stage] - previous);
    previous = latency[stage];
    const segment = document.createElement("span");
    segment.className = `stage ${stage}`;
    segment.style.flexGrow = String(step);
    segment.title = `${label}: +${Math.round(step)} ms`;
    bar.append(segment);
    const dt = document.createElement("dt");
    dt.className = `stage ${stage}`;
    dt.textContent = label;
    const dd = document.createElement("dd");
    dd.textContent = `${Math.round(latency[stage])} ms (+${Math.round(step)})`;
    table.append(dt, dd);
  }
  row.append(title, bar, table);
  ui.latency.prepend(row);
  const entry = replies.get(turn);
  if (entry) {
    const badge = document.createElement("small");
    badge.className = "latency-badge";
    badge.textContent = `${Math.round(total)} ms`;
    entry.bubble.append(badge);
  }
}

setState("idle");
showTransport();
