// Programs the lab runs that come from the system, not from npm (Chromium for the browser tests, etcd for
// clusters of processes): found through an environment variable or in the usual places, and on Debian or
// Ubuntu, run as root, installed from Debian's package when missing. Elsewhere the error gives the
// command to run.

export interface SystemProgram {
  /** What it is, for messages ("Chromium", "etcd"). */
  name: string;
  /** The environment variable that names the executable, checked first. */
  envVar: string;
  /** What that variable should name, for the message when nothing is found. */
  envHint: string;
  /** The usual places, in order. */
  candidates: string[];
  /** The shell command that installs Debian's package. */
  installCommand: string;
}

function isFile(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
}

/** The executable the environment variable names, else the first of the usual places that exists. */
export function findProgram(program: SystemProgram): string | null {
  const fromEnv = Deno.env.get(program.envVar);
  if (fromEnv) {
    if (!isFile(fromEnv)) throw new Error(`${program.envVar} is set to "${fromEnv}", which is not a file`);
    return fromEnv;
  }
  return program.candidates.find(isFile) ?? null;
}

function canInstallDebianPackage(): boolean {
  return Deno.build.os === "linux" && Deno.uid() === 0 && isFile("/etc/debian_version") && isFile("/usr/bin/apt-get");
}

/** The program; on Debian or Ubuntu as root it installs Debian's package when none is found. */
export async function ensureProgram(program: SystemProgram): Promise<string> {
  const found = findProgram(program);
  if (found) return found;
  await installDebianPackage(program.name, program.installCommand, `or set ${program.envVar} to ${program.envHint}`);
  const installed = findProgram(program);
  if (!installed) throw new Error(`installing ${program.name} failed; run it by hand: ${program.installCommand}`);
  return installed;
}

/**
 * Runs `installCommand` (Debian's package for `name`) on Debian or Ubuntu as root; elsewhere throws the error
 * that gives the command to run (and `otherwise`, another way, if there is one).
 */
export async function installDebianPackage(name: string, installCommand: string, otherwise = "") {
  if (!canInstallDebianPackage()) {
    throw new Error(
      `no ${name} found: install it (on Debian/Ubuntu: sudo sh -c "${installCommand}")${
        otherwise ? ` ${otherwise}` : ""
      }`,
    );
  }
  console.error(`no ${name} found; installing Debian's package: ${installCommand}`);
  const { success } = await new Deno.Command("sh", {
    args: ["-c", installCommand],
    env: { DEBIAN_FRONTEND: "noninteractive" },
    stdout: "inherit",
    stderr: "inherit",
  }).output();
  if (!success) throw new Error(`installing ${name} failed; run it by hand: ${installCommand}`);
}
