/**
 * Moved to `stages/documents.ts`; kept only until `stages/dedupe.ts` imports them from there.
 * @module
 */
export { outputName, outputNames, reportBadLines } from "../documents.ts";
