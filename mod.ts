/**
 * kiln: an LLM pipeline — crawl → dedupe → quality filter → tokenize → pretrain → SFT → reward model →
 * PPO — written as a short TypeScript program in which every stage is a resumable, cached step.
 *
 * @example A pipeline file is also its own CLI (`deno run -A pipeline.ts status`)
 * ```ts ignore
 * import { pipeline } from "@kiln/kiln";
 * import { numbers } from "./tests/fixtures/numbers.ts";
 *
 * await pipeline("example", { workdir: ".kiln" })
 *   .pipe(numbers({ shards: 2 }))
 *   .run();
 * ```
 * @module
 */

// The schema library stages declare their config with (the same zod kiln validates with).
export { z } from "npm:zod@^4.6.7";

// The pipeline runtime: DSL, stage contract, artifacts.
export {
  type ExecuteOptions,
  Pipeline,
  pipeline,
  type PipelineOptions,
  type RunResult,
  type StageOutcome,
  type StageStatus,
} from "./pipeline/pipeline.ts";
export {
  defineStage,
  type Kind,
  localPaths,
  type Permissions,
  type Progress,
  type Stage,
  type StageContext,
  type StageDefinition,
  type StageFactory,
  type Stats,
  urlHosts,
} from "./pipeline/stage.ts";
export { Artifact, type FileEntry, type Manifest } from "./pipeline/artifact.ts";
export { Checkpoint, OutputWriter, type PendingFile, writeFileAtomic } from "./pipeline/workspace.ts";
export type { ShardEnv, ShardFn, ShardTask, ShardWorker } from "./pipeline/pool.ts";
export { expandFiles, fingerprintFiles } from "./pipeline/files.ts";
export {
  ArtifactError,
  ConfigError,
  DataError,
  InterruptedError,
  KilnError,
  LockedError,
  PermissionError,
  PipelineError,
  StageError,
} from "./pipeline/errors.ts";
export { loadPipelineYaml } from "./pipeline/yaml.ts";
export {
  runShardsOnSlurm,
  slurm,
  type SlurmExecutor,
  type SlurmOptionsInput,
  type SlurmRunOptions,
  submitJob,
  waitForJob,
} from "./pipeline/slurm.ts";
export { reportFileName } from "./pipeline/report.ts";

// Data formats shared by the stages.
export {
  type Document,
  documentShards,
  DocumentWriter,
  EXCLUDED_DIR,
  isDocumentShard,
  readDocuments,
} from "./stages/documents.ts";

// Stages.
export { crawl, type CrawlConfig } from "./stages/crawl.ts";
export { dedupe } from "./stages/dedupe.ts";
export { qualityFilter } from "./stages/quality_filter.ts";
export { tokenize, type TokenizeConfig } from "./stages/tokenize.ts";
export { mix, type MixConfig } from "./stages/mix.ts";
export { pretrain, type PretrainConfig } from "./stages/pretrain.ts";
export { sft, type SftConfig } from "./stages/sft.ts";
export { rewardModel, type RewardModelConfig } from "./stages/reward_model.ts";
export { ppo, type PpoConfig } from "./stages/ppo.ts";
export { evaluate, type EvaluateConfig, type ModelEvaluation } from "./stages/evaluate.ts";
export { type ColumnType, exportParquet, ParquetDocumentWriter } from "./stages/export_parquet.ts";
export { type ParquetColumns, readParquetDocuments } from "./stages/crawl/parquet.ts";

// Libraries the stages are built on (each directory's mod.ts has the rest).
export { loadTokenizer, Tokenizer } from "./tokenizer/mod.ts";
export { type Backend, createBackend, type Tensor } from "./kernels/mod.ts";
export { type GPTConfig, gptConfig } from "./model/config.ts";
export { GPT, type GPTOptions, type Precision } from "./model/gpt.ts";
export {
  Optimizer,
  type OptimizerSettings,
  type TrainBatch,
  Trainer,
  type TrainerOptions,
} from "./model/train.ts";
export { ScalarHead, type ScalarHeadWeights } from "./model/scalar_head.ts";
export { generate, generateBatch, type GenerateOptions, type Generation } from "./model/generate.ts";
export { type BeamOptions, beamSearch, type EarlyStopping } from "./model/beam.ts";
export {
  loadModelDir,
  modelDirFiles,
  readStopTokens,
  saveModelDir,
  specialTokenIds,
} from "./model/checkpoint.ts";
export { checkModelFits } from "./model/config.ts";
export { RewardScorer } from "./stages/reward_model/score.ts";
