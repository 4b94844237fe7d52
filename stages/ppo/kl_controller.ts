/**
 * The KL coefficient β of the reward −β·log(π_RL/π_SFT): fixed (InstructGPT used β = 0.02), or
 * adapted to hold the policy near a target KL, as Ziegler et al. (2019, §2.2) do:
 *
 *   e = clip(KL / target − 1, −0.2, 0.2),   β ← β · (1 + e · n / horizon)
 *
 * where KL is the batch's mean sequence-level KL to the reference and n the number of responses in
 * the batch. The state is one number, saved in checkpoints so a resumed run continues with the same β.
 *
 * @example
 * ```ts
 * import { klController } from "./kl_controller.ts";
 * const kl = klController({ beta: 0.02, target: 6, horizon: 10000 });
 * kl.update(8, 64); // the batch's KL was above target: β grows
 * console.log(kl.beta > 0.02); // true
 * ```
 * @module
 */

/** How β is set: `target` (with `horizon`) makes it adaptive; without `target` it stays fixed. */
export interface KLControllerConfig {
  /** The initial (or fixed) coefficient. */
  beta: number;
  /** Target KL (nats, per response) for the adaptive controller. */
  target?: number;
  /** Responses over which the adaptive controller closes a 20 % error (Ziegler et al.: 10,000). */
  horizon?: number;
}

/** The saveable state of a controller. */
export interface KLControllerState {
  beta: number;
}

/** A KL coefficient that may move after each rollout batch. */
export interface KLController {
  /** The current β. */
  readonly beta: number;
  /** Whether `update` can change β. */
  readonly adaptive: boolean;
  /** Feeds the batch's mean sequence KL and its number of responses. */
  update(kl: number, responses: number): void;
  state(): KLControllerState;
}

/** The controller a config describes, optionally continuing from a saved state. */
export function klController(config: KLControllerConfig, saved?: KLControllerState): KLController {
  let beta = saved?.beta ?? config.beta;
  const { target, horizon = 10_000 } = config;
  if (!(beta >= 0)) throw new Error(`KL coefficient must be ≥ 0, got ${beta}`);
  if (target !== undefined && !(target > 0)) throw new Error(`KL target must be > 0, got ${target}`);
  if (!(horizon > 0)) throw new Error(`KL horizon must be > 0, got ${horizon}`);
  return {
    get beta() {
      return beta;
    },
    adaptive: target !== undefined,
    update(kl: number, responses: number) {
      if (target === undefined) return;
      const error = Math.min(Math.max(kl / target - 1, -0.2), 0.2);
      beta *= 1 + error * responses / horizon;
    },
    state: () => ({ beta }),
  };
}
