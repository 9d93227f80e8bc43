// The run's DAG as SVG: one node per task, laid out by dagre once per shape
// (tasks and edges) and recoloured on every update. A fan-out is one node
// with its instance count and a bar of counts per status, however many
// instances it has; its instances are listed (paged) in the task panel.
//
// Nodes are buttons: Tab moves through them, the arrow keys move to the
// nearest node in that direction, Enter or Space selects.

import dagre from "@dagrejs/dagre";
import { useMemo, useRef } from "preact/hooks";
import { TASK_STATUSES, shapeKey, type TaskGroup } from "../model";

const PLAIN = { width: 164, height: 46 };
const FAN_OUT = { width: 236, height: 96 };
const MAX_NAME = 22;
/** Characters of counts per line in a fan-out node (two lines at most). */
const COUNTS_LINE = 36;

interface Box {
  x: number;
  y: number;
  width: number;
  height: number;
}

interface Layout {
  boxes: Map<string, Box>;
  edges: { from: string; to: string; path: string }[];
  width: number;
  height: number;
}

function layout(groups: TaskGroup[]): Layout {
  const g = new dagre.graphlib.Graph();
  g.setGraph({ rankdir: "LR", nodesep: 20, ranksep: 44, marginx: 12, marginy: 12 });
  g.setDefaultEdgeLabel(() => ({}));
  const names = new Set(groups.map((t) => t.name));
  for (const t of groups) g.setNode(t.name, { ...(t.fanOut ? FAN_OUT : PLAIN) });
  for (const t of groups) for (const d of t.dependsOn) if (names.has(d)) g.setEdge(d, t.name);
  dagre.layout(g);
  const boxes = new Map<string, Box>();
  for (const name of g.nodes()) {
    const n = g.node(name);
    boxes.set(name, { x: n.x - n.width / 2, y: n.y - n.height / 2, width: n.width, height: n.height });
  }
  const edges = g.edges().map((e) => {
    const points = (g.edge(e).points ?? []) as { x: number; y: number }[];
    const path = points.map((p, i) => `${i === 0 ? "M" : "L"}${p.x.toFixed(1)},${p.y.toFixed(1)}`).join(" ");
    return { from: e.v, to: e.w, path };
  });
  const graph = g.graph();
  return { boxes, edges, width: Math.ceil(graph.width ?? 0), height: Math.ceil(graph.height ?? 0) };
}

function short(name: string): string {
  return name.length > MAX_NAME ? `${name.slice(0, MAX_NAME - 1)}…` : name;
}

/** "990 success · 10 failed": a fan-out's counts, most urgent first. */
export function countsText(group: TaskGroup): string {
  return countParts(group).join(" · ");
}

function countParts(group: TaskGroup): string[] {
  return TASK_STATUSES.filter((s) => group.counts[s]).map((s) => `${(group.counts[s] ?? 0).toLocaleString()} ${s}`);
}

/** The counts on at most two lines of a node, the rest cut with "…". */
function countLines(group: TaskGroup): string[] {
  const lines: string[] = [];
  for (const part of countParts(group)) {
    const last = lines.length - 1;
    if (last >= 0 && `${lines[last]} · ${part}`.length <= COUNTS_LINE) lines[last] += ` · ${part}`;
    else if (lines.length < 2) lines.push(part);
    else {
      lines[1] = `${lines[1]} …`;
      break;
    }
  }
  return lines;
}

function describe(group: TaskGroup): string {
  if (!group.fanOut) return `task ${group.name}, ${group.status}`;
  if (!group.instances.some((i) => i.parallel_index !== undefined)) {
    return `task ${group.name}, fan-out not expanded yet, ${group.status}`;
  }
  return `task ${group.name}, fan-out of ${group.instances.length}: ${countsText(group)}`;
}

interface Props {
  groups: TaskGroup[];
  selected: string | undefined;
  onSelect: (name: string) => void;
}

export function Dag({ groups, selected, onSelect }: Props) {
  const key = shapeKey(groups);
  // eslint-disable-next-line react-hooks/exhaustive-deps
  const shape = useMemo(() => layout(groups), [key]);
  const svg = useRef<SVGSVGElement>(null);

  const move = (from: string, dx: number, dy: number) => {
    const a = shape.boxes.get(from);
    if (!a) return;
    let best: string | undefined;
    let bestScore = Infinity;
    for (const [name, b] of shape.boxes) {
      const vx = b.x + b.width / 2 - (a.x + a.width / 2);
      const vy = b.y + b.height / 2 - (a.y + a.height / 2);
      const along = vx * dx + vy * dy;
      if (name === from || along <= 0) continue;
      const across = Math.abs(vx * dy - vy * dx);
      const score = along + 2 * across;
      if (score < bestScore) {
        bestScore = score;
        best = name;
      }
    }
    if (best) svg.current?.querySelector<SVGGElement>(`[data-task="${CSS.escape(best)}"]`)?.focus();
  };

  const onKeyDown = (name: string) => (e: KeyboardEvent) => {
    const dirs: Record<string, [number, number]> = {
      ArrowRight: [1, 0],
      ArrowLeft: [-1, 0],
      ArrowDown: [0, 1],
      ArrowUp: [0, -1],
    };
    const dir = dirs[e.key];
    if (dir) {
      e.preventDefault();
      move(name, dir[0], dir[1]);
    } else if (e.key === "Enter" || e.key === " ") {
      e.preventDefault();
      onSelect(name);
    }
  };

  return (
    <div class="dag" role="group" aria-label="Tasks of this run (arrow keys move, Enter selects)">
      <svg
        ref={svg}
        width={shape.width}
        height={shape.height}
        viewBox={`0 0 ${shape.width} ${shape.height}`}
        role="presentation"
      >
        <defs>
          <marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto">
            <path d="M0,0 L10,5 L0,10 z" class="arrow" />
          </marker>
        </defs>
        {shape.edges.map((e) => (
          <path key={`${e.from}>${e.to}`} d={e.path} class="edge" marker-end="url(#arrow)" />
        ))}
        {groups.map((group) => {
          const box = shape.boxes.get(group.name);
          if (!box) return null;
          const total = group.instances.length;
          return (
            <g
              key={group.name}
              class={`node status-${group.status}${selected === group.name ? " selected" : ""}${group.fanOut ? " fan-out" : ""}`}
              transform={`translate(${box.x},${box.y})`}
              // Lowercase: on SVG elements Preact sets attributes as written.
              tabindex={0}
              role="button"
              aria-pressed={selected === group.name}
              aria-label={describe(group)}
              data-task={group.name}
              data-status={group.status}
              data-total={total}
              data-counts={TASK_STATUSES.filter((s) => group.counts[s])
                .map((s) => `${s}:${group.counts[s]}`)
                .join(",")}
              onClick={() => onSelect(group.name)}
              onKeyDown={onKeyDown(group.name)}
            >
              <title>{describe(group)}</title>
              {group.fanOut && <rect class="stack" x={6} y={-5} width={box.width} height={box.height} rx={8} />}
              <rect class="box" width={box.width} height={box.height} rx={8} />
              <rect class="stripe" width={6} height={box.height} rx={3} />
              <text class="name" x={16} y={20}>
                {short(group.name)}
              </text>
              {group.fanOut ? (
                <FanOutCounts group={group} width={box.width} />
              ) : (
                <text class="sub" x={16} y={36}>
                  {group.status}
                  {(group.instances[0]?.attempt ?? 0) > 1 ? ` · attempt ${group.instances[0]?.attempt}` : ""}
                </text>
              )}
            </g>
          );
        })}
      </svg>
    </div>
  );
}

function FanOutCounts({ group, width }: { group: TaskGroup; width: number }) {
  const expanded = group.instances.some((i) => i.parallel_index !== undefined);
  if (!expanded) {
    // A dynamic fan-out before its source task finished: one placeholder.
    return (
      <>
        <text class="sub" x={16} y={38}>
          fan-out{group.parallel ? ` (${group.parallel})` : ""}
        </text>
        <text class="sub" x={16} y={56}>
          {group.status === "pending" ? "not expanded yet" : group.status}
        </text>
      </>
    );
  }
  const total = group.instances.length;
  const barWidth = width - 32;
  let x = 16;
  const bars = TASK_STATUSES.filter((s) => group.counts[s]).map((s) => {
    const w = ((group.counts[s] ?? 0) / total) * barWidth;
    const bar = <rect key={s} class={`bar status-${s}`} x={x} y={78} width={Math.max(w, 1.5)} height={8} />;
    x += w;
    return bar;
  });
  return (
    <>
      <text class="sub total" x={16} y={38}>
        {total.toLocaleString()} instances
      </text>
      {countLines(group).map((line, i) => (
        <text key={i} class="sub counts" x={16} y={55 + 14 * i}>
          {line}
        </text>
      ))}
      <rect class="bar-bg" x={16} y={78} width={barWidth} height={8} />
      {bars}
    </>
  );
}
