/** The dashboard's running tally: human votes per retired subject against a fixed-N majority, and
 * the accuracy of the retired subjects against their known answers, crowd alone and with the machine. */
import { describe, expect, it } from "vitest";
import { type Tally, type TallyGroup, tallyAccuracyText, tallyVotesText } from "../src/dashboard";

const share = (scored: number, right: number) => ({ scored, right, accuracy: scored ? right / scored : null });

function group(retired: number, votes: number, scored: number, right: number, n = 40, byTask = {}): TallyGroup {
  return {
    retired, human_votes: votes, votes_per_subject: retired ? votes / retired : null, fixed_n_votes: n * retired,
    saved: n * retired - votes, fewer: votes ? (n * retired) / votes : null, accuracy: { ...share(scored, right), by_task: byTask },
  };
}

const tally: Tally = {
  fixed_n: { n: 40, source: "the workflow's budget: Galaxy Zoo 2's votes per galaxy" },
  groups: {
    crowd: group(1419, 10783, 1419, 1351),
    machine: group(134, 67, 134, 131),
    all: group(1553, 10850, 1553, 1482, 40, { T0: share(1553, 1500), T1: share(402, 380) }),
  },
  human_votes_total: 12000,
};

describe("the running tally", () => {
  it("puts human votes per retired subject beside N, with the totals and where N comes from", () => {
    const { value, note } = tallyVotesText(tally);
    expect(value).toBe("7.0 vs 40");
    expect(note).toBe(
      "1,553 retired with 10,850 human votes; a fixed 40-vote majority: 62,120 (5.7× fewer) · " +
        "by the crowd 7.6 each (1,419) · by the machine 0.5 each (134) · " +
        "N = 40: the workflow's budget: Galaxy Zoo 2's votes per galaxy",
    );
  });

  it("gives the accuracy with the machine, the crowd alone's and the machine's own, by question", () => {
    const { value, note } = tallyAccuracyText(tally);
    expect(value).toBe("95.4%");
    expect(note).toBe(
      "against the known answers of 1,553 of 1,553 retired · crowd alone 95.2% (1,419) · with the machine 95.4% (1,553) · " +
        "the machine's retirements 97.8% (134) · by question: T0 96.6%, T1 94.5%",
    );
  });

  it("says so when nothing is retired or nothing retired has a known answer", () => {
    const empty: Tally = { ...tally, groups: { crowd: group(0, 0, 0, 0), machine: group(0, 0, 0, 0), all: group(0, 0, 0, 0) } };
    expect(tallyVotesText(empty).value).toBe("– vs 40");
    expect(tallyVotesText(empty).note).toMatch(/^Nothing retired yet/);
    expect(tallyAccuracyText(empty).value).toBe("–");
    expect(tallyAccuracyText(empty).note).toMatch(/#truth\.<task>/);
  });
});
