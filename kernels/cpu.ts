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
  checkEntropy,
  checkTensor,
  type CrossEntropyOptions,
  type DType,
  type HostArray,
  type MatmulOptions,
  type SampleOptions,
  type Tensor,
} from "./backend.ts";
import { simdAttentionBackward, simdAttentionForward } from "./cpu_attention.ts";
import { cpuThreads, simdMatmul } from "./cpu_matmul.ts";
import { tokenBuckets, uniformDraw } from "./host.ts";

type Store = Float32Array | Float64Array | Uint32Array | Float16Array;

class CpuStorage {
  constructor(readonly data: Store) {}
}

/** Options of {@linkcode createCpuBackend}. */
export interface CpuBackendOptions {
  /** How f32 tensors are stored: "f32" (default, as on a GPU) or "f64" (gradient checks). */
  precision?: "f32" | "f64";
  /**
   * The matmul of f32 storage: "simd" (default), the WebAssembly SIMD kernel of `cpu_matmul.ts`
   * (float32 sums, on up to `threads` threads; attention then runs on it too, `cpu_attention.ts`), or
   * "reference", this file's float64 loops (always used with `precision: "f64"`). Both are
   * deterministic; they agree within float32 rounding.
   */
  matmul?: "simd" | "reference";
  /** Most threads the SIMD matmul uses; default `KILN_CPU_THREADS`, else the cores (at most 4). */
  threads?: number;
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
  const simd = !f64 && options.matmul !== "reference";
  const threads = simd ? cpuThreads(options.threads) : 1;
  const data = (t: Tensor): Store => (t.storage as CpuStorage).data;
  const array = (t: Tensor) => data(t).subarray(t.offset, t.offset + t.length);
  const floats = (t: Tensor) => array(t) as Float32Array | Float16Array;
  const make = (length: number, dtype: DType): Store => {
    if (dtype === "u32") return new Uint32Array(length);
    if (dtype === "f16") return new Float16Array(length);
    return f64 ? new Float64Array(length) : new Float32Array(length);
  };

  const backend: CpuBackend = {
    name: "cpu",
    description: f64
      ? "TypeScript reference (float64)"
      : simd
      ? `TypeScript + WebAssembly SIMD matmul (${threads} thread${threads > 1 ? "s" : ""})`
      : "TypeScript reference",
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
      const batch = o.batch ?? { count: 1, strideA: 0, strideB: 0, strideOut: 0 };
      checkTensor("matmul", "out", out, (batch.count - 1) * batch.strideOut + o.m * o.n);
      const A = array(a), Bm = array(b), O = array(out), bias = o.bias ? array(o.bias) : null;
      for (let bi = 0; bi < batch.count; bi++) {
        const [oo, ao, bo] = [bi * batch.strideOut, bi * batch.strideA, bi * batch.strideB];
        // The reference also takes products too big for the SIMD kernel's 4 GiB of wasm memory.
        if (!simd || !simdMatmul(O, A, Bm, bias, o, oo, ao, bo, threads)) {
          hostMatmul(O, A, Bm, bias, o, oo, ao, bo);
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
      if (simd) {
        const allowed = opts.segments ? attendsTo(opts) : null;
        return simdAttentionForward(floats(out), floats(lse), floats(qkv), opts, allowed, threads);
      }
      const { B, T, C, NH } = opts, hs = C / NH, scale = 1 / Math.sqrt(hs);
      // The inputs as float64 (exact): the loops then see one array type, which V8 runs several times
      // faster than loops over whichever typed array the storage is.
      const o = array(out), l = array(lse), q = Float64Array.from(array(qkv));
      const allowed = attendsTo(opts);
      // Scores, then their exponentials, of one query row; the weighted sum of values of one head.
      const p = new Float64Array(T), acc = new Float64Array(hs);
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
              p[s] = dot * scale;
              max = Math.max(max, p[s]);
            }
            let sum = 0;
            acc.fill(0);
            for (let s = 0; s <= t; s++) {
              if (!allowed(b, t, s)) continue;
              const e = Math.exp(p[s] - max), vo = (b * T + s) * 3 * C + 2 * C + h * hs;
              sum += e;
              for (let i = 0; i < hs; i++) acc[i] += e * q[vo + i];
            }
            const oo = (b * T + t) * C + h * hs;
            for (let i = 0; i < hs; i++) o[oo + i] = acc[i] / sum;
            l[(b * NH + h) * T + t] = max + Math.log(sum);
          }
        }
      }
    },
    attentionDecode(out, qkv, opts) {
      const hs = checkAttentionDecode(out, qkv, opts);
      const { C, NH, T } = opts, B = opts.B ?? 1, Tmax = opts.Tmax ?? T, scale = 1 / Math.sqrt(hs);
      const o = array(out), q = array(qkv), lengths = opts.lengths ? array(opts.lengths) : null;
      lengths?.subarray(0, B).forEach((L, b) => {
        if (!(L >= 1 && L <= T)) {
          throw new Error(`attentionDecode: lengths[${b}] = ${L} is outside 1..T (${T})`);
        }
      });
      if (opts.append) {
        const fresh = array(opts.append);
        for (let b = 0; b < B; b++) {
          const L = lengths ? lengths[b] : T;
          q.set(fresh.subarray(b * 3 * C, (b + 1) * 3 * C), (b * Tmax + L - 1) * 3 * C);
        }
      }
      const scores = new Float64Array(T);
      for (let b = 0; b < B; b++) {
        const row = b * Tmax * 3 * C, L = lengths ? lengths[b] : T;
        for (let h = 0; h < NH; h++) {
          const qo = row + (L - 1) * 3 * C + h * hs;
          let max = -Infinity;
          for (let s = 0; s < L; s++) {
            const ko = row + s * 3 * C + C + h * hs;
            let dot = 0;
            for (let i = 0; i < hs; i++) dot += q[qo + i] * q[ko + i];
            scores[s] = dot * scale;
            max = Math.max(max, scores[s]);
          }
          let sum = 0;
          for (let s = 0; s < L; s++) sum += scores[s] = Math.exp(scores[s] - max);
          const oo = b * C + h * hs;
          for (let i = 0; i < hs; i++) {
            let acc = 0;
            for (let s = 0; s < L; s++) acc += scores[s] * q[row + s * 3 * C + 2 * C + h * hs + i];
            o[oo + i] = acc / sum;
          }
        }
      }
    },
    attentionBackward(dqkv, dout, qkv, out, lse, opts) {
      if (simd) {
        const allowed = opts.segments ? attendsTo(opts) : null;
        const [dq, d, q, o, l] = [dqkv, dout, qkv, out, lse].map(floats);
        return simdAttentionBackward(dq, d, q, o, l, opts, allowed, threads);
      }
      const { B, T, C, NH } = opts, hs = C / NH, scale = 1 / Math.sqrt(hs);
      // float64 copies and a float64 gradient, written once: one array type in the loops (see
      // attentionForward), and no rounding of the running sums in f32 mode.
      const d = Float64Array.from(array(dout)), q = Float64Array.from(array(qkv));
      const o = Float64Array.from(array(out)), l = Float64Array.from(array(lse));
      const dq = new Float64Array(B * T * 3 * C);
      const allowed = attendsTo(opts);
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
      array(dqkv).set(dq.subarray(0, B * T * 3 * C));
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

    encoderForward(out, tokens, wte, wpe, { B, T, C, positions }) {
      const o = array(out), tk = array(tokens), te = array(wte), pe = array(wpe);
      const pos = positions ? array(positions) : null;
      if (pos) checkPositions("encoderForward", pos, B * T, wpe.length / C);
      for (let b = 0; b < B; b++) {
        for (let t = 0; t < T; t++) {
          const token = tk[b * T + t], position = pos ? pos[b * T + t] : t;
          for (let c = 0; c < C; c++) {
            o[(b * T + t) * C + c] = te[token * C + c] + pe[position * C + c];
          }
        }
      }
    },
    encoderBackward(dwte, dwpe, dout, tokens, { B, T, C, hostPositions }) {
      const d = array(dout);
      if (hostPositions) checkPositions("encoderBackward", hostPositions, B * T, dwpe.length / C);
      // Without positions, bucketing rows by t gives the same sums in the same order (b ascending).
      const positions = hostPositions?.subarray(0, B * T) ??
        Uint32Array.from({ length: B * T }, (_, i) => i % T);
      for (const [grad, ids] of [[dwte, tokens.subarray(0, B * T)], [dwpe, positions]] as const) {
        const g = array(grad), { count, data: bk } = tokenBuckets(ids);
        for (let i = 0; i < count; i++) {
          const row = bk[i], start = bk[count + i], end = bk[count + i + 1];
          for (let c = 0; c < C; c++) {
            let acc = 0;
            for (let j = start; j < end; j++) acc += d[bk[2 * count + 1 + j] * C + c];
            g[row * C + c] += acc;
          }
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
      checkTensor("sumRows", "inp", inp, rows * cols);
      checkTensor("sumRows", "out", out, cols);
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
    entropy(out, logits, { rows, V, Vp = V, temperature = 1 }) {
      checkEntropy(out, logits, rows, V, Vp, temperature);
      const o = array(out), x = array(logits);
      for (let r = 0; r < rows; r++) {
        let max = -Infinity;
        for (let i = 0; i < V; i++) max = Math.max(max, x[r * Vp + i] / temperature);
        let sum = 0, weighted = 0;
        for (let i = 0; i < V; i++) {
          const z = x[r * Vp + i] / temperature - max, e = Math.exp(z);
          sum += e;
          weighted += e * z;
        }
        o[r] = Math.log(sum) - weighted / sum;
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

/** Throws unless `positions` has `n` entries, each a row of `wpe` (`rows` of them). */
function checkPositions(op: string, positions: ArrayLike<number>, n: number, rows: number) {
  if (positions.length < n) throw new Error(`${op}: positions has ${positions.length} entries, needs ${n}`);
  for (let i = 0; i < n; i++) {
    if (positions[i] >= rows) {
      throw new Error(`${op}: position ${positions[i]} at [${i}] is outside wpe (${rows} rows)`);
    }
  }
}

/** Reused float64 work arrays of the host matmul (grown as needed; it never runs re-entrantly). */
const scratchArrays: Float64Array[] = [];
function scratch(slot: number, length: number): Float64Array {
  if (!(scratchArrays[slot]?.length >= length)) scratchArrays[slot] = new Float64Array(length);
  return scratchArrays[slot].subarray(0, length);
}

/** Rows of op(a) and columns of op(b) packed at a time: 2·64·k float64s stay in L2 up to k ≈ 1000. */
const PANEL = 64;

/**
 * One `out (+)= op(A)·op(B) (+ bias)` on the host, at `oo`, `ao`, `bo` elements into the buffers.
 *
 * Hand-written because it bounds every CPU training step and no npm BLAS runs in Deno without
 * native code. Panels of op(A) rows and op(B) columns are first copied into float64 scratch, each
 * row of k contiguous (this hoists the transposes out of the inner loop and makes the kernel see one
 * array type whatever the storage is: f32, f64 or f16), then {@linkcode dot4x4} computes 4×4 output
 * blocks as 16 row dots (fewer than 4 rows skip the packing: {@linkcode fewRowsMatmul}). Every
 * output is still one float64 sum over p = 0..k-1 in order, plus the bias, added to `out` last when
 * accumulating: the same numbers as the naive triple loop.
 */
function hostMatmul(
  O: Store,
  A: Store,
  B: Store,
  bias: Store | null,
  { m, n, k, transA, transB, accumulate }: MatmulOptions,
  oo: number,
  ao: number,
  bo: number,
): void {
  if (m < 4) return fewRowsMatmul(O, A, B, bias, { m, n, k, transA, transB, accumulate }, oo, ao, bo);
  const pa = scratch(0, Math.min(PANEL, m) * k), pb = scratch(1, Math.min(PANEL, n) * k);
  const acc = scratch(2, 16);
  for (let i0 = 0; i0 < m; i0 += PANEL) {
    const mb = Math.min(PANEL, m - i0);
    // pa[r, p] = op(A)[i0 + r, p]
    if (transA) {
      for (let p = 0; p < k; p++) for (let r = 0; r < mb; r++) pa[r * k + p] = A[ao + p * m + i0 + r];
    } else {
      for (let r = 0; r < mb; r++) {
        for (let p = 0, row = ao + (i0 + r) * k; p < k; p++) pa[r * k + p] = A[row + p];
      }
    }
    for (let j0 = 0; j0 < n; j0 += PANEL) {
      const nb = Math.min(PANEL, n - j0);
      // pb[c, p] = op(B)[p, j0 + c]
      if (transB) {
        for (let c = 0; c < nb; c++) {
          for (let p = 0, row = bo + (j0 + c) * k; p < k; p++) pb[c * k + p] = B[row + p];
        }
      } else {
        for (let p = 0; p < k; p++) for (let c = 0; c < nb; c++) pb[c * k + p] = B[bo + p * n + j0 + c];
      }
      for (let r = 0; r < mb; r += 4) {
        const rows = Math.min(4, mb - r);
        for (let c = 0; c < nb; c += 4) {
          const cols = Math.min(4, nb - c);
          if (rows === 4 && cols === 4) dot4x4(acc, pa, r * k, pb, c * k, k);
          else dotEdge(acc, pa, r * k, rows, pb, c * k, cols, k);
          for (let y = 0; y < rows; y++) {
            for (let x = 0; x < cols; x++) {
              const j = j0 + c + x, at = oo + (i0 + r + y) * n + j;
              const v = bias ? acc[y * 4 + x] + bias[j] : acc[y * 4 + x];
              O[at] = accumulate ? O[at] + v : v;
            }
          }
        }
      }
    }
  }
}

/**
 * {@linkcode hostMatmul} for fewer than 4 rows (generation's decode step), where packing op(B) would
 * cost as much as the product: each row of op(A) is copied out, then dotted with B's rows (transB) or
 * B's rows are accumulated into a float64 row, straight over the storage. Same sums, same order.
 */
function fewRowsMatmul(
  O: Store,
  A: Store,
  B: Store,
  bias: Store | null,
  { m, n, k, transA, transB, accumulate }: MatmulOptions,
  oo: number,
  ao: number,
  bo: number,
): void {
  const row = scratch(0, k), acc = scratch(1, n);
  for (let i = 0; i < m; i++) {
    for (let p = 0; p < k; p++) row[p] = transA ? A[ao + p * m + i] : A[ao + i * k + p];
    if (transB) {
      for (let j = 0; j < n; j++) {
        let s = 0;
        for (let p = 0, at = bo + j * k; p < k; p++) s += row[p] * B[at + p];
        acc[j] = s;
      }
    } else {
      acc.fill(0);
      for (let p = 0; p < k; p++) {
        const a = row[p];
        for (let j = 0, at = bo + p * n; j < n; j++) acc[j] += a * B[at + j];
      }
    }
    for (let j = 0; j < n; j++) {
      const at = oo + i * n + j, v = bias ? acc[j] + bias[j] : acc[j];
      O[at] = accumulate ? O[at] + v : v;
    }
  }
}

/** `acc[y·4 + x] = Σ_p a[ai + y·k + p] · b[bi + x·k + p]` for a 4×4 block: 16 sums in registers. */
function dot4x4(acc: Float64Array, a: Float64Array, ai: number, b: Float64Array, bi: number, k: number) {
  let s00 = 0, s01 = 0, s02 = 0, s03 = 0, s10 = 0, s11 = 0, s12 = 0, s13 = 0;
  let s20 = 0, s21 = 0, s22 = 0, s23 = 0, s30 = 0, s31 = 0, s32 = 0, s33 = 0;
  for (let p = 0; p < k; p++) {
    const a0 = a[ai + p], a1 = a[ai + k + p], a2 = a[ai + 2 * k + p], a3 = a[ai + 3 * k + p];
    const b0 = b[bi + p], b1 = b[bi + k + p], b2 = b[bi + 2 * k + p], b3 = b[bi + 3 * k + p];
    s00 += a0 * b0, s01 += a0 * b1, s02 += a0 * b2, s03 += a0 * b3;
    s10 += a1 * b0, s11 += a1 * b1, s12 += a1 * b2, s13 += a1 * b3;
    s20 += a2 * b0, s21 += a2 * b1, s22 += a2 * b2, s23 += a2 * b3;
    s30 += a3 * b0, s31 += a3 * b1, s32 += a3 * b2, s33 += a3 * b3;
  }
  acc[0] = s00, acc[1] = s01, acc[2] = s02, acc[3] = s03, acc[4] = s10, acc[5] = s11, acc[6] = s12;
  acc[7] = s13, acc[8] = s20, acc[9] = s21, acc[10] = s22, acc[11] = s23, acc[12] = s30, acc[13] = s31;
  acc[14] = s32, acc[15] = s33;
}

/** {@linkcode dot4x4} for the partial blocks at the panel edges (`rows`, `cols` ≤ 4). */
function dotEdge(
  acc: Float64Array,
  a: Float64Array,
  ai: number,
  rows: number,
  b: Float64Array,
  bi: number,
  cols: number,
  k: number,
) {
  for (let y = 0; y < rows; y++) {
    for (let x = 0; x < cols; x++) {
      let s = 0;
      for (let p = 0; p < k; p++) s += a[ai + y * k + p] * b[bi + x * k + p];
      acc[y * 4 + x] = s;
    }
  }
}
