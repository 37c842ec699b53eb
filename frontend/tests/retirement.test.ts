/** Whole-workflow retirement on the scientists' pages: reasons grouped by kind and task on the
 * dashboard, and each required task's weighted risk against its bar on a subject's page. */
import { describe, expect, it } from "vitest";
import { modelQuestionLines, reasonLabel, retiredByKindText, retiredSeries, type Statistics } from "../src/dashboard";
import { riskSeries, type TaskRisk } from "../src/subject";

const risk = (weighted: number, bar: number | null, kind = "question"): TaskRisk => ({
  kind, reach: 1, risk: weighted, weighted_risk: weighted, bar, settled: bar !== null && weighted < bar, answers: 1,
});

describe("retirement reasons", () => {
  it("names the task that settled last, and leaves the other reasons as they are", () => {
    expect(reasonLabel("consensus:T1")).toBe("consensus on T1");
    expect(reasonLabel("consensus")).toBe("consensus");
    expect(reasonLabel("limit")).toBe("limit");
  });

  it("counts each kind of reason, by task where the reasons name one", () => {
    const text = retiredByKindText({
      consensus: { count: 9, by_task: { T0: 7, T2: 2 } },
      limit: { count: 3, by_task: {} },
    });
    expect(text).toBe("consensus 9 (T0 7, T2 2) · limit 3");
  });

  it("draws one line per kind of reason over time", () => {
    const stats = {
      retired_over_time: {
        bucket: "minute",
        points: [
          { at: "2026-01-01T10:00:00Z", by_reason: { "consensus:T0": 0, limit: 0 }, by_kind: { consensus: 0, limit: 0 } },
          { at: "2026-01-01T10:01:00Z", by_reason: { "consensus:T0": 2, "consensus:T2": 1, limit: 1 }, by_kind: { consensus: 3, limit: 1 } },
        ],
      },
    } as unknown as Statistics;
    const series = retiredSeries(stats);
    expect(series.map((s) => s.name)).toEqual(["consensus", "limit"]);
    expect(series[0].points.map((p) => p[1])).toEqual([0, 3]);
  });
});

describe("the risk path", () => {
  it("follows each required task's weighted risk vote by vote, with its bar dashed", () => {
    const detail = {
      risk: [
        { task: "T0", required: true, ...risk(0.004, 0.02, "drawing") },
        { task: "T1", required: false, ...risk(0.3, null) },
      ],
      classifications: [
        { id: 1, annotations: [], posterior_after: { "@risk": { T0: risk(0.4, 0.02, "drawing"), T1: risk(0.3, null) } } },
        { id: 2, annotations: [], posterior_after: null }, // not applied yet
        { id: 3, annotations: [], posterior_after: { "@risk": { T0: risk(0.004, 0.02, "drawing") } } },
      ],
    };
    const series = riskSeries(detail);
    expect(series.map((s) => s.name)).toEqual(["T0 weighted risk", "T0 bar"]);
    expect(series[0].points).toEqual([[1, 0.4], [3, 0.004]]);
    expect(series[1].points).toEqual([[1, 0.02], [3, 0.02]]);
    expect(series[1].dashed).toBe(true);
  });

  it("is empty before anything was aggregated", () => {
    expect(riskSeries({ risk: [], classifications: [] })).toEqual([]);
  });
});

describe("the machine's questions", () => {
  it("lists the questions it answers first, then why not the others", () => {
    const lines = modelQuestionLines([
      { task: "T0", answers: false, reason: "gate not passed: 81% on 40 gold, needs 90%", text: "T0: gate not passed: 81% on 40 gold, needs 90%" },
      { task: "T1", answers: true, reason: "answers", text: "T1: answers" },
      { task: "T2", answers: false, reason: "humans only: a drawing task", text: "T2: humans only: a drawing task" },
    ]);
    expect(lines).toEqual(["T1: answers", "T0: gate not passed: 81% on 40 gold, needs 90%", "T2: humans only: a drawing task"]);
    expect(modelQuestionLines(undefined)).toEqual([]);
  });
});
