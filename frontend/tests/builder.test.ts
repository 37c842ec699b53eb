/** The project builder's pure parts: tree edits (builder_tree.ts) and the upload's checks before sending (builder_upload.ts). */
import { describe, expect, it } from "vitest";
import {
  addAnswer, addTask, addTool, changeType, cloneTree, describePlan, errorLines, markLimit, newTaskKey, removeAnswer, removeTask,
  removeTool, setNext, unreachable,
} from "../src/builder_tree";
import { formatBytes, uploadProblems } from "../src/builder_upload";
import { TaskWalk, type TaskTree } from "../src/tasks";

function starter(): TaskTree {
  return { first_task: "T0", tasks: { T0: { type: "single", question: "Smooth or featured?", answers: [{ label: "Smooth" }, { label: "Featured" }] } } };
}

describe("tree edits", () => {
  it("builds two questions and a drawing task that the classifier walks by answer", () => {
    const tree = starter();
    expect(addTask(tree, "single")).toBe("T1");
    expect(addTask(tree, "drawing")).toBe("T2");
    setNext(tree, "T0", "T2", 0);
    setNext(tree, "T0", "T1", 1);
    setNext(tree, "T1", "T2");
    expect(tree.tasks.T0).toMatchObject({ answers: [{ next: "T2" }, { next: "T1" }] });
    expect(unreachable(tree)).toEqual([]);
    const walk = new TaskWalk(tree);
    walk.setValue(1);
    walk.advance();
    expect(walk.current.type).toBe("single");
    walk.setValue(0);
    walk.advance();
    expect(walk.current.type).toBe("drawing");
    expect(walk.isLast).toBe(true);
  });

  it("removing a task ends the branches that led to it and moves the first task", () => {
    const tree = starter();
    addTask(tree, "single");
    setNext(tree, "T0", "T1");
    removeTask(tree, "T1");
    expect(tree.tasks.T0).toMatchObject({ answers: [{ next: null }, { next: null }] });
    removeTask(tree, "T0");
    expect(tree.first_task).toBe("");
    expect(addTask(tree, "drawing")).toBe("T0");
    expect(tree.first_task).toBe("T0");
  });

  it("a task cannot lead to itself or to a task that is not there", () => {
    const tree = starter();
    setNext(tree, "T0", "T0", 0);
    setNext(tree, "T0", "T7", 1);
    expect(tree.tasks.T0).toMatchObject({ answers: [{ next: null }, { next: null }] });
  });

  it("retyping keeps the wording, the help, the answers and where they lead", () => {
    const tree = starter();
    addTask(tree, "drawing");
    tree.tasks.T0.help = "Look closely.";
    setNext(tree, "T0", "T1", 1);
    changeType(tree, "T0", "multiple");
    expect(tree.tasks.T0).toEqual({ type: "multiple", question: "Smooth or featured?", help: "Look closely.", answers: [{ label: "Smooth" }, { label: "Featured" }], next: "T1" });
    changeType(tree, "T0", "single");
    expect(tree.tasks.T0).toMatchObject({ answers: [{ label: "Smooth", next: "T1" }, { label: "Featured", next: "T1" }] });
    changeType(tree, "T0", "drawing");
    expect(tree.tasks.T0).toMatchObject({ type: "drawing", instruction: "Smooth or featured?", help: "Look closely.", next: "T1" });
    changeType(tree, "T0", "single");
    expect(tree.tasks.T0).toMatchObject({ type: "single", question: "Smooth or featured?", answers: [{ label: "Yes" }, { label: "No" }] });
  });

  it("removing an answer drops the mirror swaps that name it and renumbers the others", () => {
    const tree: TaskTree = {
      first_task: "T0",
      tasks: { T0: { type: "single", question: "Spiral?", answers: [{ label: "Edge-on" }, { label: "Clockwise" }, { label: "Anticlockwise" }, { label: "Other" }] } },
    };
    Object.assign(tree.tasks.T0, { mirror_swaps: [[1, 2]] });
    removeAnswer(tree, "T0", 0);
    expect((tree.tasks.T0 as unknown as { mirror_swaps: number[][] }).mirror_swaps).toEqual([[0, 1]]);
    removeAnswer(tree, "T0", 1);
    expect((tree.tasks.T0 as unknown as { mirror_swaps: number[][] }).mirror_swaps).toEqual([]);
    addAnswer(tree, "T0");
    expect(tree.tasks.T0).toMatchObject({ answers: [{ label: "Clockwise" }, { label: "Other" }, { label: "Answer 3" }] });
  });

  it("tools and their mark limits: numbers as numbers, anything else for the server to refuse", () => {
    const tree = starter();
    addTask(tree, "drawing");
    addTool(tree, "T1");
    removeTool(tree, "T1", 0);
    expect(tree.tasks.T1).toMatchObject({ tools: [{ type: "rectangle", label: "Tool 2", min: 0, max: 10 }] });
    expect([markLimit("4"), markLimit(" 12 "), markLimit("-1"), markLimit("two")]).toEqual([4, 12, "-1", "two"]);
  });

  it("finds the tasks no answer leads to, and new keys skip the ones taken", () => {
    const tree = starter();
    addTask(tree, "single");
    addTask(tree, "drawing");
    setNext(tree, "T0", "T2", 0);
    expect(unreachable(tree)).toEqual(["T1"]);
    removeTask(tree, "T1");
    expect(newTaskKey(tree)).toBe("T1");
    const copy = cloneTree(tree);
    copy.first_task = "T2";
    expect(tree.first_task).toBe("T0");
  });
});

describe("the server's answers in words", () => {
  it("says what saving does and lists field errors", () => {
    expect(describePlan({ change: "major", new_workflow: true, version: "3.0" })).toContain("version 3.0 as a new workflow");
    expect(describePlan({ change: "minor", new_workflow: false, version: "2.1" })).toContain("a minor change");
    expect(errorLines({ tasks: ["task T1: question text is required"], detail: ["Sign in first."] })).toEqual(["tasks: task T1: question text is required", "Sign in first."]);
  });
});

describe("the upload's checks before sending", () => {
  const limits = { maxFileBytes: 50 * 1024 * 1024, maxTotalBytes: 1024 ** 3, maxFiles: 3 };

  it("refuses a 5 GB upload, a file over its limit, too many files and a missing manifest before sending", () => {
    expect(uploadProblems([{ name: "a.png", size: 10 }], { name: "m.csv", size: 5 }, limits)).toEqual([]);
    expect(uploadProblems([{ name: "huge.png", size: 5 * 1024 ** 3 }], { name: "m.csv", size: 5 }, limits)).toEqual([
      "images: huge.png is 5.0 GB; at most 50.0 MB per file",
      "images: the upload is 5.0 GB; at most 1.0 GB at once: send it in parts",
    ]);
    const four = ["a", "b", "c", "a"].map((n) => ({ name: `${n}.png`, size: 1 }));
    expect(uploadProblems(four, null, limits)).toEqual([
      "manifest: choose the manifest (CSV) that names each image",
      "images: 4 files; at most 3 at once",
      "images: a.png is there twice",
    ]);
    expect(uploadProblems([], { name: "m.csv", size: 5 }, limits)).toEqual(["images: choose at least one image"]);
  });

  it("writes sizes for people", () => {
    expect([formatBytes(512), formatBytes(2048), formatBytes(50 * 1024 * 1024), formatBytes(5 * 1024 ** 3)]).toEqual(["512 bytes", "2.0 KB", "50.0 MB", "5.0 GB"]);
  });
});
