// Microphone capture on the audio thread: mix to mono, low-pass, resample from the context's actual rate to 16 kHz,
// and post small 16-bit frames to the page. The context rate is whatever the device runs at (44.1 kHz, 48 kHz, ...):
// it is read from the AudioWorkletGlobalScope's `sampleRate`, never assumed.

// RBJ-cookbook biquad low-pass; two in cascade give a 4th-order anti-alias filter below the new Nyquist.
class Biquad {
  constructor(cutoffHz, rateHz, q = Math.SQRT1_2) {
    const w0 = (2 * Math.PI * cutoffHz) / rateHz;
    const alpha = Math.sin(w0) / (2 * q);
    const cos = Math.cos(w0);
    const a0 = 1 + alpha;
    this.b0 = (1 - cos) / 2 / a0;
    this.b1 = (1 - cos) / a0;
    this.b2 = (1 - cos) / 2 / a0;
    this.a1 = (-2 * cos) / a0;
    this.a2 = (1 - alpha) / a0;
    this.x1 = this.x2 = this.y1 = this.y2 = 0;
  }

  run(buf) {
    for (let i = 0; i < buf.length; i++) {
      const x = buf[i];
      const y = this.b0 * x + this.b1 * this.x1 + this.b2 * this.x2 - this.a1 * this.y1 - this.a2 * this.y2;
      this.x2 = this.x1; this.x1 = x;
      this.y2 = this.y1; this.y1 = y;
      buf[i] = y;
    }
  }
}

class Capture16k extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const o = (options && options.processorOptions) || {};
    this.targetRate = o.targetRate || 16000;
    this.frameSamples = o.frameSamples || 320; // 20 ms at 16 kHz: small frames keep latency low
    this.step = sampleRate / this.targetRate; // input samples per output sample
    // Cut at 45% of the target rate, only when actually downsampling
    this.filters = this.step > 1
      ? [new Biquad(0.45 * this.targetRate, sampleRate), new Biquad(0.45 * this.targetRate, sampleRate)]
      : [];
    this.pos = 0; // read position of the next output sample, relative to the current block (may be in [-1, 0))
    this.prev = 0; // the previous block's last filtered sample, for interpolating across the block edge
    this.out = new Int16Array(this.frameSamples);
    this.n = 0;
    this.port.postMessage({ type: "rate", inputRate: sampleRate, outputRate: this.targetRate });
  }

  process(inputs) {
    const input = inputs[0];
    if (!input || input.length === 0 || input[0].length === 0) return true; // no source connected yet
    const len = input[0].length;
    const x = new Float32Array(len);
    for (const channel of input) for (let i = 0; i < len; i++) x[i] += channel[i] / input.length;
    for (const f of this.filters) f.run(x);

    // Linear interpolation; sample index -1 is the previous block's last sample
    while (this.pos < len - 1) {
      const i = Math.floor(this.pos);
      const frac = this.pos - i;
      const a = i < 0 ? this.prev : x[i];
      const v = a + (x[i + 1] - a) * frac;
      const c = Math.max(-1, Math.min(1, v));
      this.out[this.n++] = c < 0 ? c * 32768 : c * 32767;
      if (this.n === this.frameSamples) {
        this.port.postMessage(this.out.buffer, [this.out.buffer]); // transferred, not copied
        this.out = new Int16Array(this.frameSamples);
        this.n = 0;
      }
      this.pos += this.step;
    }
    this.pos -= len;
    this.prev = x[len - 1];
    return true;
  }
}

registerProcessor("capture-16k", Capture16k);
