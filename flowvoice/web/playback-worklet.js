// Assistant audio playback: a small jitter buffer, resampling to the context rate,
// instant flush on interrupt, and reports of what was actually played.
//
// Messages in:  {type: "audio", turn, rate, pcm: ArrayBuffer of PCM16}
//               {type: "flush", beforeTurn}   drop queued audio of older turns
// Messages out: {playing, samples, turns: [[turn, playedMs], ...]}
//               `samples` counts source samples played since start; `turns` lists the
//               turns whose played time changed since the previous report.

const PREBUFFER_S = 0.06; // start (or resume after an underrun) once this much is queued,
const MAX_WAIT_S = 0.1; // or once the first queued chunk has waited this long
const REPORT_EVERY_S = 0.1;

class PlaybackProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    this.queue = []; // {turn, rate, data: Float32Array, pos: fractional source index}
    this.playing = false;
    this.waitingSince = null;
    this.samples = 0;
    this.playedMs = new Map();
    this.changed = new Set();
    this.lastReport = 0;
    this.port.onmessage = (event) => this.onMessage(event.data);
  }

  onMessage(msg) {
    if (msg.type === "audio") {
      const pcm = new Int16Array(msg.pcm);
      const data = new Float32Array(pcm.length);
      for (let i = 0; i < pcm.length; i++) data[i] = pcm[i] / 32768;
      if (data.length) this.queue.push({ turn: msg.turn, rate: msg.rate, data, pos: 0 });
      if (this.waitingSince === null) this.waitingSince = currentTime;
    } else if (msg.type === "flush") {
      this.queue = this.queue.filter((chunk) => chunk.turn >= msg.beforeTurn);
      if (!this.queue.length) this.stop();
      this.report();
    }
  }

  buffered() {
    let seconds = 0;
    for (const chunk of this.queue) seconds += (chunk.data.length - chunk.pos) / chunk.rate;
    return seconds;
  }

  stop() {
    this.playing = false;
    this.waitingSince = null;
  }

  report() {
    const turns = [...this.changed].map((turn) => [turn, this.playedMs.get(turn)]);
    this.changed.clear();
    this.port.postMessage({ playing: this.playing, samples: this.samples, turns });
    this.lastReport = currentTime;
  }

  count(chunk, consumed) {
    this.samples += consumed;
    this.playedMs.set(chunk.turn, (this.playedMs.get(chunk.turn) || 0) + (1000 * consumed) / chunk.rate);
    this.changed.add(chunk.turn);
  }

  process(inputs, outputs) {
    const out = outputs[0][0];
    if (!this.playing) {
      const ready = this.queue.length &&
        (this.buffered() >= PREBUFFER_S || currentTime - this.waitingSince >= MAX_WAIT_S);
      if (!ready) {
        out.fill(0);
        return true;
      }
      this.playing = true;
      this.report();
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
      const b = index + 1 < chunk.data.length ? chunk.data[index + 1] : a;
      out[i] = a + (b - a) * (chunk.pos - index);
      chunk.pos += chunk.rate / sampleRate;
      const end = Math.min(Math.floor(chunk.pos), chunk.data.length);
      if (end > index) this.count(chunk, end - index);
      if (chunk.pos >= chunk.data.length) {
        this.queue.shift();
        if (this.queue[0] && this.queue[0].rate === chunk.rate) this.queue[0].pos = chunk.pos - chunk.data.length;
      }
    }
    if (currentTime - this.lastReport >= REPORT_EVERY_S) this.report();
    return true;
  }
}

registerProcessor("playback", PlaybackProcessor);
