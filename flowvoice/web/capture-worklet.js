// Microphone capture: low-pass, resample to 16 kHz and post PCM16 frames of 20 ms.
//
// Runs at the AudioContext's rate (`sampleRate`, often 48000 or 44100). A 4th-order
// Butterworth low-pass at 7 kHz keeps aliasing out; linear interpolation then picks
// samples at the 16 kHz grid, carrying its position across render quanta.

const TARGET_RATE = 16000;
const FRAME_SAMPLES = 320; // 20 ms at 16 kHz
const CUTOFF_HZ = 7000;

class LowPass {
  // One RBJ-cookbook biquad section (direct form I).
  constructor(cutoff, rate, q) {
    const w0 = (2 * Math.PI * cutoff) / rate;
    const alpha = Math.sin(w0) / (2 * q);
    const cos = Math.cos(w0);
    const a0 = 1 + alpha;
    this.b0 = (1 - cos) / 2 / a0;
    this.b1 = (1 - cos) / a0;
    this.b2 = this.b0;
    this.a1 = (-2 * cos) / a0;
    this.a2 = (1 - alpha) / a0;
    this.x1 = this.x2 = this.y1 = this.y2 = 0;
  }

  process(x) {
    const y = this.b0 * x + this.b1 * this.x1 + this.b2 * this.x2 - this.a1 * this.y1 - this.a2 * this.y2;
    this.x2 = this.x1;
    this.x1 = x;
    this.y2 = this.y1;
    this.y1 = y;
    return y;
  }
}

class CaptureProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    this.step = sampleRate / TARGET_RATE; // input samples per output sample
    this.filters = this.step > 1
      ? [new LowPass(CUTOFF_HZ, sampleRate, 0.5412), new LowPass(CUTOFF_HZ, sampleRate, 1.3066)]
      : [];
    this.filtered = new Float32Array(128);
    this.pos = 0; // next output position, in input samples from the current quantum's start
    this.prev = 0; // last filtered sample of the previous quantum (position -1)
    this.startFrame();
  }

  startFrame() {
    this.frame = new Int16Array(FRAME_SAMPLES);
    this.fill = 0;
    this.energy = 0;
  }

  push(value) {
    const s = Math.max(-1, Math.min(1, value));
    this.frame[this.fill++] = s < 0 ? s * 0x8000 : s * 0x7fff;
    this.energy += s * s;
    if (this.fill === FRAME_SAMPLES) {
      const rms = Math.sqrt(this.energy / FRAME_SAMPLES);
      this.port.postMessage({ pcm: this.frame.buffer, rms }, [this.frame.buffer]);
      this.startFrame();
    }
  }

  process(inputs) {
    const input = inputs[0] && inputs[0][0];
    if (!input) return true;
    const n = input.length;
    if (this.filtered.length !== n) this.filtered = new Float32Array(n);
    const x = this.filtered;
    for (let i = 0; i < n; i++) {
      let v = input[i];
      for (const f of this.filters) v = f.process(v);
      x[i] = v;
    }
    while (this.pos < n - 1) {
      const i = Math.floor(this.pos);
      const a = i < 0 ? this.prev : x[i];
      this.push(a + (x[i + 1] - a) * (this.pos - i));
      this.pos += this.step;
    }
    this.pos -= n;
    this.prev = x[n - 1];
    return true;
  }
}

registerProcessor("capture", CaptureProcessor);
