// What only the simulated cluster knows, joined to what the root agent reports: when and how each failure
// really happened. The root learns of a failure by a lease running out, so its reports start at the
// detection; the observer adds the failure itself (its kind, where the machine was, when), and so the
// detection time and the whole time from failure to resumed training. The demo, the bench and the lab read
// these; the root never does.

import type { FailureKind, FailureRecord } from "./cluster.ts";
import type { Detection, RecoveryReport, RootEvent } from "../protocol/root.ts";

export interface FailureReport extends Detection {
  kind: FailureKind;
  where: string;
  /** On the cluster's clock (ms), as is `detectedAt`. */
  failedAt: number;
}

export interface ObservedRecovery extends RecoveryReport {
  failures: FailureReport[];
  /** From the first failure to its detection, and to training resumed (ms). */
  detection: number;
  total: number;
}

/** The root's events, with its recoveries and failures as the cluster saw them. */
export type ObservedEvent =
  | Exclude<RootEvent, RecoveryReport | { type: "failure" }>
  | ObservedRecovery
  | { type: "failure"; failure: FailureReport };

export class FailureObserver {
  readonly #cluster: { lastFailure(rank: number): FailureRecord | null };
  readonly #seen = new Map<string, FailureReport>();

  /** Watches a cluster that records each machine's last failure (the Worker cluster, or the in-process one). */
  constructor(cluster: { lastFailure(rank: number): FailureRecord | null }) {
    this.#cluster = cluster;
  }

  /**
   * The failure behind `detection`: the machine's last failure as the cluster recorded it. Read when the
   * root reports the detection, before the machine can be restarted and fail again; a machine that was
   * still running (wrongly suspected) has been fenced by then, which is recorded as its failure.
   */
  failure(detection: Detection): FailureReport {
    const key = `${detection.rank}@${detection.detectedAt}`;
    let report = this.#seen.get(key);
    if (!report) {
      const record: FailureRecord | null = this.#cluster.lastFailure(detection.rank);
      report = {
        ...detection,
        kind: record?.kind ?? "software",
        where: record?.where ?? "unknown",
        failedAt: Math.min(record?.at ?? detection.detectedAt, detection.detectedAt),
      };
      this.#seen.set(key, report);
    }
    return report;
  }

  recovery(report: RecoveryReport): ObservedRecovery {
    const failures = report.detections.map((detection) => this.failure(detection));
    // A rollback after a command failed, with no machine failed, has no failure to time from.
    const first = failures.reduce<FailureReport | null>((a, b) => (a && a.failedAt <= b.failedAt ? a : b), null);
    return {
      ...report,
      failures,
      detection: first ? first.detectedAt - first.failedAt : 0,
      total: first ? report.resumedAt - first.failedAt : 0,
    };
  }

  event(event: RootEvent): ObservedEvent {
    if (event.type === "failure") return { type: "failure", failure: this.failure(event.detection) };
    if (event.type === "recovery") return this.recovery(event);
    return event;
  }
}
