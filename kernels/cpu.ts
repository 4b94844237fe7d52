/**
 * The TypeScript reference backend: every op of {@linkcode Backend} as plain loops, run at once.
 * It is the specification the WGSL kernels are tested against, and the fallback where no GPU is.
 *
 * With `precision: "f64"` its f32 tensors are stored as float64, so finite-difference gradient checks
 * run the very same reference code without float32 rounding noise.
 *
 * @example
 * ```ts
 * import { createCpuBackend } from "./cpu.ts";
 * const cpu = createCpuBackend();
 * const x = cpu.alloc(4);
 * cpu.upload(x, [1, -1, 2, 0]);
 * cpu.geluForward(x, x);
 * const [y] = await cpu.download(x);
 * ```
 * @module
 */
import {
  type AdamWOptions,
  type AttentionOptions,
  type Backend,
  checkAttentionDecode,
  checkTensor,
  type CrossEntropyOptions,
  type DType,
  type HostArray,
  type MatmulOptions,
  type SampleOptions,
  type Tensor,
} from "./backend.ts";
import { tokenBuckets, uniformDraw } from "./host.ts";

type Store = Float32Array | Float64Array | Uint32Array | Float16Array;

class CpuStorage {
  constructor(readonly data: Store) {}
}

/** Options of {@linkcode createCpuBackend}. */
export interface CpuBackendOptions {
  /** How f32 tensors are stored: "f32" (default, as on a GPU) or "f64" (gradient checks). */
  precision?: "f32" | "f64";
}

/** The CPU backend, plus direct access to a tensor's elements (tests, gradient checks). */
export interface CpuBackend extends Backend {
  /** The live elements of `t` (a subarray of its buffer: writes go to the tensor). */
  array(t: Tensor): Float32Array | Float64Array | Uint32Array | Float16Array;
}

const GELU_SCALE = Math.sqrt(2 / Math.PI);

/** Creates the TypeScript reference backend. */
export function createCpuBackend(options: CpuBackendOptions = {}): CpuBackend {
  const f64 = options.precision === "f64";
  const data = (t: Tensor): Store => (t.storage as CpuStorage).data;
  const array = (t: Tensor) => data(t).subarray(t.offset, t.offset + t.length);
  const make = (length: number, dtype: DType): Store => {
    if (dtype === "u32") return new Uint32Array(length);
    if (dtype === "f16") return new Float16Array(length);
    return f64 ? new Float64Array(length) : new Float32Array(length);
  };

  const backend: CpuBackend = {
    name: "cpu",
    description: f64 ? "TypeScript reference (float64)" : "TypeScript reference",
    hasF16: true,
    array,

    alloc(length, dtype = "f32") {
      return { storage: new CpuStorage(make(length, dtype)), offset: 0, length, dtype };
    },
    view(t, offset, length) {
      if (offset < 0 || offset + length > t.length) {
        throw new Error(`view: [${offset}, ${offset + length}) is outside a tensor of ${t.length} elements`);
      }
      return { storage: t.storage, offset: t.offset + offset, length, dtype: t.dtype };
    },
    upload(t: Tensor, host: HostArray) {
      if (host.length > t.length) throw new Error(`upload: ${host.length} values into ${t.length} elements`);
      array(t).set(host as ArrayLike<number>);
    },
    download(...tensors) {
      return Promise.resolve(
        tensors.map((t) => t.dtype === "u32" ? Uint32Array.from(array(t)) : Float32Array.from(array(t))),
      );
    },
    free() {},
    submit() {},
    finish: () => Promise.resolve(),
    destroy() {},

    fill(t, value) {
      array(t).fill(value);
    },
    copy(dst, src) {
      array(dst).set(array(src));
    },
    scale(out, inp, alpha) {
      const o = array(out), x = array(inp);
      for (let i = 0; i < o.length; i++) o[i] = alpha * x[i];
    },
    add(out, a, b) {
      const o = array(out), x = array(a), y = array(b);
      for (let i = 0; i < o.length; i++) o[i] = x[i] + y[i];
    },
    geluForward(out, inp) {
      const o = array(out), x = array(inp);
      for (let i = 0; i < o.length; i++) {
        const v = x[i];
        o[i] = 0.5 * v * (1 + Math.tanh(GELU_SCALE * (v + 0.044715 * v * v * v)));
      }
    },
    geluBackward(dinp, inp, dout) {
      const di = array(dinp), x = array(inp), d = array(dout);
      for (let i = 0; i < di.length; i++) {
        const v = x[i];
        const u = GELU_SCALE * (v + 0.044715 * v * v * v);
        const th = Math.tanh(u);
        const sech2 = 1 - th * th;
        const grad = 0.5 * (1 + th) + 0.5 * v * sech2 * GELU_SCALE * (1 + 3 * 0.044715 * v * v);
        di[i] = grad * d[i];
      }
    },

    matmul(out, a, b, o: MatmulOptions) {
      const { m, n, k } = o;
      const batch = o.batch ?? { count: 1, strideA: 0, strideB: 0, strideOut: 0 };
      checkTensor("matmul", "out", out, (batch.count - 1) * batch.strideOut + m * n);
      const A = array(a), Bm = array(b), O = array(out), bias = o.bias ? array(o.bias) : null;
      for (let bi = 0; bi < batch.count; bi++) {
        const ao = bi * batch.strideA, bo = bi * batch.strideB, oo = bi * batch.strideOut;
        for (let i = 0; i < m; i++) {
          for (let j = 0; j < n; j++) {
            let acc = 0;
            for (let p = 0; p < k; p++) {
              const av = o.transA ? A[ao + p * m + i] : A[ao + i * k + p];
              const bv = o.transB ? Bm[bo + j * k + p] : Bm[bo + p * n + j];
              acc += av * bv;
            }
            if (bias) acc += bias[j];
            O[oo + i * n + j] = o.accumulate ? O[oo + i * n + j] + acc : acc;
          }
        }
      }
    },

    layernormForward(out, mean, rstd, inp, weight, bias, { rows, C, eps = 1e-5 }) {
      const o = array(out), mu = array(mean), rs = array(rstd), x = array(inp);
      const w = array(weight), b = array(bias);
      for (let r = 0; r < rows; r++) {
        let sum = 0;
        for (let c = 0; c < C; c++) sum += x[r * C + c];
        const m = sum / C;
        let v = 0;
        for (let c = 0; c < C; c++) v += (x[r * C + c] - m) ** 2;
        const s = 1 / Math.sqrt(v / C + eps);
        for (let c = 0; c < C; c++) o[r * C + c] = (x[r * C + c] - m) * s * w[c] + b[c];
        mu[r] = m;
        rs[r] = s;
      }
    },
    layernormBackward(dinp, dweight, dbias, dout, inp, weight, mean, rstd, { rows, C }) {
      const di = array(dinp), dw = array(dweight), db = array(dbias), d = array(dout), x = array(inp);
      const w = array(weight), mu = array(mean), rs = array(rstd);
      for (let r = 0; r < rows; r++) {
        // The two row means the input gradient needs (llm.c's dnorm_mean and dnorm_norm_mean).
        let dnormMean = 0, dnormNormMean = 0;
        for (let c = 0; c < C; c++) {
          const norm = (x[r * C + c] - mu[r]) * rs[r];
          const dnorm = w[c] * d[r * C + c];
          dnormMean += dnorm;
          dnormNormMean += dnorm * norm;
        }
        dnormMean /= C;
        dnormNormMean /= C;
        for (let c = 0; c < C; c++) {
          const norm = (x[r * C + c] - mu[r]) * rs[r];
          const dnorm = w[c] * d[r * C + c];
          db[c] += d[r * C + c];
          dw[c] += norm * d[r * C + c];
          di[r * C + c] += (dnorm - dnormMean - norm * dnormNormMean) * rs[r];
        }
      }
    },

    attentionForward(out, lse, qkv, opts) {
      const { B, T, C, NH } = opts, hs = C / NH, scale = 1 / Math.sqrt(hs);
      const o = array(out), l = array(lse), q = array(qkv);
      const allowed = attendsTo(opts);
      const scores = new Float64Array(T);
      for (let b = 0; b < B; b++) {
        for (let h = 0; h < NH; h++) {
          for (let t = 0; t < T; t++) {
            const qo = (b * T + t) * 3 * C + h * hs;
            let max = -Infinity;
            for (let s = 0; s <= t; s++) {
              if (!allowed(b, t, s)) continue;
              const ko = (b * T + s) * 3 * C + C + h * hs;
              let dot = 0;
              for (let i = 0; i < hs; i++) dot += q[qo + i] * q[ko + i];
              scores[s] = dot * scale;
              max = Math.max(max, scores[s]);
            }
            let sum = 0;
            for (let s = 0; s <= t; s++) if (allowed(b, t, s)) sum += Math.exp(scores[s] - max);
            const oo = (b * T + t) * C + h * hs;
            for (let i = 0; i < hs; i++) {
              let acc = 0;
              for (let s = 0; s <= t; s++) {
                if (allowed(b, t, s)) {
                  acc += Math.exp(scores[s] - max) * q[(b * T + s) * 3 * C + 2 * C + h * hs + i];
                }
              }
              o[oo + i] = acc / sum;
            }
            l[(b * NH + h) * T + t] = max + Math.log(sum);
          }
        }
      }
    },
    attentionDecode(out, qkv, opts) {
      const hs = checkAttentionDecode(out, qkv, opts);
      const { C, NH, T } = opts, B = opts.B ?? 1, Tmax = opts.Tmax ?? T, scale = 1 / Math.sqrt(hs);
      const o = array(out), q = array(qkv);
      const scores = new Float64Array(T);
      for (let b = 0; b < B; b++) {
        const row = b * Tmax * 3 * C;
        for (let h = 0; h < NH; h++) {
          const qo = row + (T - 1) * 3 * C + h * hs;
          let max = -Infinity;
          for (let s = 0; s < T; s++) {
            const ko = row + s * 3 * C + C + h * hs;
            let dot = 0;
            for (let i = 0; i < hs; i++) dot += q[qo + i] * q[ko + i];
            scores[s] = dot * scale;
            max = Math.max(max, scores[s]);
          }
          let sum = 0;
          for (let s = 0; s < T; s++) sum += Math.exp(scores[s] - max);
          const oo = b * C + h * hs;
          for (let i = 0; i < hs; i++) {
            let acc = 0;
            for (let s = 0; s < T; s++) {
              acc += Math.exp(scores[s] - max) * q[row + s * 3 * C + 2 * C + h * hs + i];
            }
            o[oo + i] = acc / sum;
          }
        }
      }
    },
    attentionBackward(dqkv, dout, qkv, out, lse, opts) {
      const { B, T, C, NH } = opts, hs = C / NH, scale = 1 / Math.sqrt(hs);
      const dq = array(dqkv), d = array(dout), q = array(qkv), o = array(out), l = array(lse);
      const allowed = attendsTo(opts);
      dq.fill(0, 0, B * T * 3 * C);
      for (let b = 0; b < B; b++) {
        for (let h = 0; h < NH; h++) {
          for (let t = 0; t < T; t++) {
            const qo = (b * T + t) * 3 * C + h * hs, oo = (b * T + t) * C + h * hs;
            // D = Σ_s P·dP = dout · out: the softmax backward's row term, without the P row.
            let D = 0;
            for (let i = 0; i < hs; i++) D += d[oo + i] * o[oo + i];
            for (let s = 0; s <= t; s++) {
              if (!allowed(b, t, s)) continue;
              const ko = (b * T + s) * 3 * C + C + h * hs, vo = ko + C;
              let dot = 0, dP = 0;
              for (let i = 0; i < hs; i++) {
                dot += q[qo + i] * q[ko + i];
                dP += d[oo + i] * q[vo + i];
              }
              const P = Math.exp(dot * scale - l[(b * NH + h) * T + t]);
              const dS = P * (dP - D) * scale;
              for (let i = 0; i < hs; i++) {
                dq[qo + i] += dS * q[ko + i];
                dq[ko + i] += dS * q[qo + i];
                dq[vo + i] += P * d[oo + i];
              }
            }
          }
        }
      }
    },

    crossEntropy(losses, logits, targets, o: CrossEntropyOptions) {
      const { rows, V } = o, Vp = o.Vp ?? V;
      const ls = array(losses), x = array(logits), tg = array(targets), mask = o.mask ? array(o.mask) : null;
      let norm = rows;
      if (mask && o.normalize !== "count") {
        norm = 0;
        for (let r = 0; r < rows; r++) norm += mask[r];
      }
      const gradScale = (o.gradScale ?? 1) * (norm !== 0 ? 1 / norm : 0);
      for (let r = 0; r < rows; r++) {
        const row = r * Vp, target = tg[r], weight = mask ? mask[r] : 1;
        let max = -Infinity;
        for (let i = 0; i < V; i++) max = Math.max(max, x[row + i]);
        let sum = 0;
        for (let i = 0; i < V; i++) sum += Math.exp(x[row + i] - max);
        ls[r] = weight * (max + Math.log(sum) - x[row + target]);
        for (let i = 0; i < Vp; i++) {
          const p = i < V ? Math.exp(x[row + i] - max) / sum : 0;
          x[row + i] = i < V ? (p - (i === target ? 1 : 0)) * weight * gradScale : 0;
        }
      }
    },

    encoderForward(out, tokens, wte, wpe, { B, T, C }) {
      const o = array(out), tk = array(tokens), te = array(wte), pe = array(wpe);
      for (let b = 0; b < B; b++) {
        for (let t = 0; t < T; t++) {
          const token = tk[b * T + t];
          for (let c = 0; c < C; c++) o[(b * T + t) * C + c] = te[token * C + c] + pe[t * C + c];
        }
      }
    },
    encoderBackward(dwte, dwpe, dout, tokens, { B, T, C }) {
      const dte = array(dwte), dpe = array(dwpe), d = array(dout);
      for (let t = 0; t < T; t++) {
        for (let c = 0; c < C; c++) {
          let acc = 0;
          for (let b = 0; b < B; b++) acc += d[(b * T + t) * C + c];
          dpe[t * C + c] += acc;
        }
      }
      const { count, data: bk } = tokenBuckets(tokens.subarray(0, B * T));
      for (let i = 0; i < count; i++) {
        const token = bk[i], start = bk[count + i], end = bk[count + i + 1];
        for (let c = 0; c < C; c++) {
          let acc = 0;
          for (let j = start; j < end; j++) acc += d[bk[2 * count + 1 + j] * C + c];
          dte[token * C + c] += acc;
        }
      }
    },

    adamw(params, grads, m, v, o: AdamWOptions) {
      const p = array(params), g = array(grads), mm = array(m), vv = array(v);
      const [decayStart, decayEnd] = o.decayRange ?? [0, p.length];
      const gradScale = o.gradScale ? array(o.gradScale)[0] : 1;
      const c1 = 1 - o.beta1 ** o.step, c2 = 1 - o.beta2 ** o.step;
      for (let i = 0; i < p.length; i++) {
        const grad = g[i] * gradScale;
        mm[i] = o.beta1 * mm[i] + (1 - o.beta1) * grad;
        vv[i] = o.beta2 * vv[i] + (1 - o.beta2) * grad * grad;
        const decay = i >= decayStart && i < decayEnd ? o.weightDecay : 0;
        p[i] -= o.lr * (mm[i] / c1 / (Math.sqrt(vv[i] / c2) + o.eps) + decay * p[i]);
      }
    },
    globalNorm(out, inp) {
      const x = array(inp);
      let sum = 0;
      for (let i = 0; i < x.length; i++) sum += x[i] * x[i];
      array(out)[0] = Math.sqrt(sum);
    },
    clipScale(out, norm, maxNorm) {
      array(out)[0] = Math.min(1, maxNorm / (array(norm)[0] + 1e-6));
    },
    sum(out, inp, opts = {}) {
      const x = array(inp);
      let sum = 0;
      for (let i = 0; i < x.length; i++) sum += x[i];
      array(out)[0] = opts.mean ? sum / x.length : sum;
    },
    sumRows(out, inp, { rows, cols, accumulate }) {
      const o = array(out), x = array(inp);
      for (let c = 0; c < cols; c++) {
        let acc = 0;
        for (let r = 0; r < rows; r++) acc += x[r * cols + c];
        o[c] = accumulate ? o[c] + acc : acc;
      }
    },

    sample(tokens, logits, o: SampleOptions) {
      const { rows, V } = o, Vp = o.Vp ?? V;
      const tk = array(tokens), x = array(logits);
      const scaled = new Float64Array(V);
      for (let r = 0; r < rows; r++) {
        let max = -Infinity;
        for (let i = 0; i < V; i++) {
          scaled[i] = Math.fround(x[r * Vp + i] / o.temperature);
          max = Math.max(max, scaled[i]);
        }
        const sorted = Float64Array.from(scaled).sort().reverse();
        // Top-k: keep values ≥ the k-th largest. Top-p: then the largest threshold whose kept mass
        // (among the top-k) reaches p of their total.
        let threshold = o.topK && o.topK < V ? sorted[o.topK - 1] : -Infinity;
        if (o.topP !== undefined && o.topP < 1) {
          let total = 0;
          for (const s of sorted) if (s >= threshold) total += Math.exp(s - max);
          let mass = 0;
          for (const s of sorted) {
            if (s < threshold) break;
            mass += Math.exp(s - max);
            if (mass >= o.topP * total) {
              threshold = s;
              break;
            }
          }
        }
        let kept = 0;
        for (let i = 0; i < V; i++) if (scaled[i] >= threshold) kept += Math.exp(scaled[i] - max);
        const u = uniformDraw(o.seed, r, o.step) * kept;
        let cumulative = 0, chosen = -1;
        for (let i = 0; i < V; i++) {
          if (scaled[i] < threshold) continue;
          cumulative += Math.exp(scaled[i] - max);
          chosen = i;
          if (cumulative > u) break;
        }
        tk[r] = chosen;
      }
    },
    argmax(tokens, logits, { rows, V, Vp = V }) {
      const tk = array(tokens), x = array(logits);
      for (let r = 0; r < rows; r++) {
        let best = 0;
        for (let i = 1; i < V; i++) if (x[r * Vp + i] > x[r * Vp + best]) best = i;
        tk[r] = best;
      }
    },
    logSoftmaxGather(out, logits, tokens, { rows, V, Vp = V, temperature = 1 }) {
      const o = array(out), x = array(logits), tk = array(tokens);
      for (let r = 0; r < rows; r++) {
        let max = -Infinity;
        for (let i = 0; i < V; i++) max = Math.max(max, x[r * Vp + i] / temperature);
        let sum = 0;
        for (let i = 0; i < V; i++) sum += Math.exp(x[r * Vp + i] / temperature - max);
        o[r] = x[r * Vp + tk[r]] / temperature - max - Math.log(sum);
      }
    },
  };
  return backend;

  /** Whether query t of sequence b may attend to key s ≤ t (same segment, when segments are given). */
  function attendsTo({ T, segments }: AttentionOptions): (b: number, t: number, s: number) => boolean {
    if (!segments) return () => true;
    const seg = array(segments);
    return (b, t, s) => seg[b * T + s] === seg[b * T + t];
  }
}
