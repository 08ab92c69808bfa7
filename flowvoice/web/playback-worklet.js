// Assistant audio playback: an adaptive jitter buffer, resampling to the context rate,
// instant flush on interrupt, and reports of what was actually played.
//
// The server paces audio to real time plus a small lead (~250 ms), in ~40 ms slices: the
// lead arrives at once, then one slice per 40 ms. Playback starts once START_S is queued
// (at once when the lead arrives in a burst), or when the first chunk has waited MAX_WAIT_S
// (a reply shorter than START_S). If a turn's audio runs dry mid-reply and then goes on (the
// server could not keep up), that was an audible gap: the start threshold of later restarts
// grows, up to MAX_START_S, so the buffer absorbs that much jitter from then on.
//
// Messages in:  {type: "audio", turn, rate, pcm: ArrayBuffer of PCM16}
//               {type: "flush", beforeTurn}   drop queued audio of older turns, silence now
//               {type: "flush", beforeTurn: Infinity, reset: true}   a new conversation
//               {type: "hold"} / {type: "release"}   silence now / go on where it stopped
//               (the user started speaking: maybe a barge-in, maybe a cough)
// Messages out: {playing, samples, turns: [[turn, playedMs], ...], underruns,
//                flushed?: {beforeTurn, droppedMs, wasPlaying}}
//               `samples` counts source samples played since start; `turns` lists the
//               turns whose played time changed since the previous report; `flushed`
//               answers a flush, sent right after it took effect.

const START_S = 0.1;
const MAX_START_S = 0.25; // at most the server's default lead, which arrives at once
const MAX_WAIT_S = 0.15;
const REPORT_EVERY_S = 0.1;

class PlaybackProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    this.queue = []; // {turn, rate, data: Float32Array, pos: fractional source index}
    this.playing = false;
    this.waitingSince = null; // when the first chunk queued while stopped arrived
    this.startS = START_S;
    this.dryTurn = null; // turn whose audio ran out last (a gap if more of it comes)
    this.underruns = 0;
    this.samples = 0;
    this.playedMs = new Map();
    this.changed = new Set();
    this.lastReport = 0;
    this.held = false;
    this.port.onmessage = (event) => this.onMessage(event.data);
  }

  onMessage(msg) {
    if (msg.type === "audio") {
      const pcm = new Int16Array(msg.pcm);
      if (!pcm.length) return;
      const data = new Float32Array(pcm.length);
      for (let i = 0; i < pcm.length; i++) data[i] = pcm[i] / 32768;
      this.queue.push({ turn: msg.turn, rate: msg.rate, data, pos: 0 });
      if (!this.playing && this.waitingSince === null) this.waitingSince = currentTime;
    } else if (msg.type === "hold" || msg.type === "release") {
      this.held = msg.type === "hold";
      if (this.held) this.report(); // what played up to now, before the silence
    } else if (msg.type === "flush") {
      const wasPlaying = this.playing;
      let dropped = 0;
      this.queue = this.queue.filter((chunk) => {
        if (chunk.turn >= msg.beforeTurn) return true;
        dropped += (chunk.data.length - chunk.pos) / chunk.rate;
        return false;
      });
      if (!this.queue.length) this.stop();
      if (this.dryTurn !== null && this.dryTurn < msg.beforeTurn) this.dryTurn = null;
      if (msg.reset) {
        // A new connection: its turns count from 0 again, so forget the old ones.
        this.playedMs.clear();
        this.changed.clear();
        this.startS = START_S;
      }
      this.report({ beforeTurn: msg.beforeTurn, droppedMs: 1000 * dropped, wasPlaying });
    }
  }

  buffered() {
    let seconds = 0;
    for (const chunk of this.queue) seconds += (chunk.data.length - chunk.pos) / chunk.rate;
    return seconds;
  }

  stop() {
    this.playing = false;
    this.waitingSince = this.queue.length ? currentTime : null;
  }

  report(flushed) {
    const turns = [...this.changed].map((turn) => [turn, this.playedMs.get(turn)]);
    this.changed.clear();
    const message = { playing: this.playing, samples: this.samples, turns, underruns: this.underruns };
    if (flushed) message.flushed = flushed;
    this.port.postMessage(message);
    this.lastReport = currentTime;
  }

  count(chunk, consumed) {
    this.samples += consumed;
    this.playedMs.set(chunk.turn, (this.playedMs.get(chunk.turn) || 0) + (1000 * consumed) / chunk.rate);
    this.changed.add(chunk.turn);
  }

  start() {
    const turn = this.queue[0].turn;
    if (turn === this.dryTurn) {
      // The same reply ran dry and went on: an audible gap. Buffer more from now on.
      this.underruns++;
      this.startS = Math.min(MAX_START_S, this.startS * 1.5);
    }
    this.dryTurn = null;
    this.playing = true;
    this.waitingSince = null;
    if (!this.playedMs.has(turn)) {
      this.playedMs.set(turn, 0); // report the turn's start now, not 100 ms into it
      this.changed.add(turn);
    }
    this.report();
  }

  process(inputs, outputs) {
    const out = outputs[0][0];
    if (this.held) {
      out.fill(0);
      return true;
    }
    if (!this.playing) {
      const ready = this.queue.length &&
        (this.buffered() >= this.startS || currentTime - this.waitingSince >= MAX_WAIT_S);
      if (!ready) {
        out.fill(0);
        return true;
      }
      this.start();
    }
    for (let i = 0; i < out.length; i++) {
      const chunk = this.queue[0];
      if (!chunk) {
        out.fill(0, i);
        this.stop();
        this.report();
        return true;
      }
      const index = Math.floor(chunk.pos);
      const a = chunk.data[index];
      let b = a;
      if (index + 1 < chunk.data.length) b = chunk.data[index + 1];
      else {
        // Interpolate across slice boundaries too, or every 40 ms slice would click.
        const next = this.queue[1];
        if (next && next.turn === chunk.turn && next.rate === chunk.rate) b = next.data[0];
      }
      out[i] = a + (b - a) * (chunk.pos - index);
      chunk.pos += chunk.rate / sampleRate;
      const end = Math.min(Math.floor(chunk.pos), chunk.data.length);
      if (end > index) this.count(chunk, end - index);
      if (chunk.pos >= chunk.data.length) {
        this.queue.shift();
        const next = this.queue[0];
        if (next && next.rate === chunk.rate) next.pos = chunk.pos - chunk.data.length;
        if (!next) this.dryTurn = chunk.turn;
      }
    }
    if (currentTime - this.lastReport >= REPORT_EVERY_S) this.report();
    return true;
  }
}

registerProcessor("playback", PlaybackProcessor);
