// What the command-line entry points (demo, gradcheck, bench, lab) share: options parsed with
// node:util's parseArgs, a user's mistake (a bad option, a bad input file) reported as one line with
// exit code 2, and any other failure as one line with exit code 1: never a stack trace.

import { parseArgs, type ParseArgsConfig } from "node:util";

/** A mistake in what the user gave the command: reported as one line, exit code 2. */
export class UserError extends Error {}

/** The values of `options` in `args`; an unknown or malformed option is a UserError that ends with `usage`. */
export function parseOptions<const O extends NonNullable<ParseArgsConfig["options"]>>(
  args: string[],
  options: O,
  usage: string,
) {
  try {
    return parseArgs({ args, options }).values;
  } catch (error) {
    throw new UserError(`${(error as Error).message}; ${usage}`);
  }
}

/** Runs a command's `main` and exits with its code, or with one line on stderr: `name: what went wrong`. */
export async function runCommand(name: string, main: () => Promise<number>) {
  try {
    Deno.exit(await main());
  } catch (error) {
    console.error(`${name}: ${error instanceof Error ? error.message : String(error)}`);
    Deno.exit(error instanceof UserError ? 2 : 1);
  }
}

/** The number `text` given for `--flag`: an integer if `integer`; above zero if `positive`, else at least zero. */
export function numberOption(flag: string, text: string, { integer = false, positive = false } = {}): number {
  const value = Number(text);
  if (
    text.trim() === "" || !Number.isFinite(value) || (integer && !Number.isInteger(value)) || value < 0 ||
    (positive && value === 0)
  ) {
    throw new UserError(
      `--${flag} must be a ${positive ? "positive" : "non-negative"} ${integer ? "integer" : "number"}, got "${text}"`,
    );
  }
  return value;
}
