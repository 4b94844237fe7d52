/**
 * `kiln score`: scores responses with a reward model from the command line. Apart from the stages, so
 * editing its help text changes no stage's cache key.
 * @module
 */
import { parseArgs } from "node:util";
import { DataError, KilnError } from "../../pipeline/errors.ts";
import { readJsonlRows } from "../../chat/jsonl.ts";
import { createBackend } from "../../kernels/device.ts";
import { REWARD_STATS_FILE } from "./artifact.ts";
import { RewardScorer, type ScoreItem } from "./score.ts";

/** Usage text of `kiln score`. */
export const SCORE_USAGE = `kiln score <reward-model-dir> [options]

Scores responses with a trained reward model (higher is better).

Options:
  --prompt TEXT      the user's message
  --response TEXT    the response to score (repeat to score several against one prompt)
  --file PATH        JSONL of {"prompt", "response"} rows instead; prints each row with its "reward"
  --normalize        print (reward - mean) / std with the statistics stored in the model
  --backend B        auto, webgpu or cpu (default auto)`;

/**
 * Runs `kiln score` with the arguments after `score`; writes one line per scored response to `write`
 * (default stdout) and returns the rewards.
 */
export async function scoreCommand(
  args: string[],
  write: (text: string) => void = (text) => console.log(text),
): Promise<number[]> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      prompt: { type: "string" },
      response: { type: "string", multiple: true },
      file: { type: "string" },
      normalize: { type: "boolean", default: false },
      backend: { type: "string", default: "auto" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    write(SCORE_USAGE);
    return [];
  }
  if (positionals.length !== 1) {
    throw new KilnError(`kiln score: expected one reward-model directory\n\n${SCORE_USAGE}`);
  }
  const backendName = values.backend;
  if (backendName !== "auto" && backendName !== "cpu" && backendName !== "webgpu") {
    throw new KilnError(`kiln score: --backend must be auto, webgpu or cpu, got "${backendName}"`);
  }
  let items: (ScoreItem & Record<string, unknown>)[];
  if (values.file) {
    items = (await readJsonlRows(values.file)).map((r) => {
      if (r.error !== undefined) throw new DataError(values.file!, `line ${r.line}`, r.error);
      const { prompt, response } = r.value;
      if (typeof prompt !== "string") {
        throw new DataError(values.file!, `line ${r.line}: prompt`, "must be a string");
      }
      if (typeof response !== "string") {
        throw new DataError(values.file!, `line ${r.line}: response`, "must be a string");
      }
      return { ...r.value, prompt, response };
    });
  } else {
    if (values.prompt === undefined || !values.response?.length) {
      throw new KilnError(`kiln score: give --prompt and --response, or --file\n\n${SCORE_USAGE}`);
    }
    items = values.response.map((response) => ({ prompt: values.prompt!, response }));
  }
  const backend = await createBackend({ backend: backendName, log: () => {} });
  const scorer = await RewardScorer.load(positionals[0], { backend });
  try {
    let rewards = await scorer.scoreMany(items);
    if (values.normalize) {
      const s = scorer.model.stats;
      if (!s) {
        throw new KilnError(`kiln score: ${positionals[0]} has no ${REWARD_STATS_FILE} to normalise with`);
      }
      rewards = rewards.map((r) => (r - s.mean) / s.std);
    }
    items.forEach((item, i) => {
      if (values.file) write(JSON.stringify({ ...item, reward: rewards[i] }));
      else write(`${rewards[i].toFixed(4)}\t${JSON.stringify(item.response)}`);
    });
    return rewards;
  } finally {
    scorer.close();
  }
}
