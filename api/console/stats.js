// Pure figures from activation records (full records from the stream, or the list's summaries): success,
// latency percentiles, throughput buckets and latency histograms. No DOM here.

/** An annotation's value, or undefined. */
export function annotation(record, key) {
  const found = (record.annotations || []).find((a) => a.key === key);
  return found ? found.value : undefined;
}

/** Action records carry a `kind` annotation; trigger records do not. */
export function kindOf(record) {
  return annotation(record, 'kind') !== undefined ? 'action' : 'trigger';
}

export function succeeded(record) {
  if (record.response) return record.response.success === true || record.response.status === 'success';
  return record.statusCode === 0;
}

const STATUS_NAMES = ['success', 'application error', 'action developer error', 'whisk internal error'];

export function statusOf(record) {
  if (record.response) return record.response.status;
  return STATUS_NAMES[record.statusCode] || 'unknown';
}

/** The entity a record belongs to, as `pkg/name` or `name` (what the list's `name` filter takes). */
export function entityOf(record) {
  const path = annotation(record, 'path');
  if (typeof path === 'string' && path.includes('/')) return path.split('/').slice(1).join('/');
  return record.name;
}

/** The q-quantile (0..1) of numbers, nearest rank; null for none. */
export function quantile(values, q) {
  if (!values.length) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[rank];
}

/** Per entity: `{count, ok, rate, p50, p95, last}` of the action records among `records`. */
export function byEntity(records) {
  const groups = new Map();
  for (const record of records) {
    if (kindOf(record) !== 'action') continue;
    const key = entityOf(record);
    const group = groups.get(key) || {count: 0, ok: 0, durations: [], last: 0};
    group.count++;
    if (succeeded(record)) group.ok++;
    if (typeof record.duration === 'number') group.durations.push(record.duration);
    group.last = Math.max(group.last, record.start || 0);
    groups.set(key, group);
  }
  const out = new Map();
  for (const [key, g] of groups) {
    out.set(key, {count: g.count, ok: g.ok, rate: g.ok / g.count, p50: quantile(g.durations, 0.5), p95: quantile(g.durations, 0.95), last: g.last});
  }
  return out;
}

/** Trigger fires per trigger name: `{count, last}`. */
export function firesByTrigger(records) {
  const out = new Map();
  for (const record of records) {
    if (kindOf(record) !== 'trigger') continue;
    const entry = out.get(record.name) || {count: 0, last: 0};
    entry.count++;
    entry.last = Math.max(entry.last, record.start || 0);
    out.set(record.name, entry);
  }
  return out;
}

/** `n` buckets of `spanMs / n` ending at `now`: `[{start, ok, failed}]`, oldest first (action records only). */
export function throughput(records, now, spanMs, n) {
  const width = spanMs / n;
  const first = now - spanMs;
  const buckets = Array.from({length: n}, (_, i) => ({start: first + i * width, ok: 0, failed: 0}));
  for (const record of records) {
    if (kindOf(record) !== 'action') continue;
    const index = Math.floor(((record.start || 0) - first) / width);
    if (index < 0 || index >= n) continue;
    if (succeeded(record)) buckets[index].ok++;
    else buckets[index].failed++;
  }
  return buckets;
}

// Latency bins in ms, roughly logarithmic: the tail matters more than the exact middle.
export const LATENCY_EDGES = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 30000, 60000];

/** `[{label, from, to, count}]` of durations over LATENCY_EDGES, trimmed to the bins in use. */
export function latencyHistogram(durations) {
  const bins = [];
  let from = 0;
  for (const to of [...LATENCY_EDGES, Infinity]) {
    bins.push({from, to, count: 0, label: to === Infinity ? `≥${short(from)}` : `<${short(to)}`});
    from = to;
  }
  for (const d of durations) {
    const bin = bins.find((b) => d < b.to);
    bin.count++;
  }
  let lo = bins.findIndex((b) => b.count > 0);
  let hi = bins.length - 1 - [...bins].reverse().findIndex((b) => b.count > 0);
  if (lo < 0) return [];
  lo = Math.max(0, lo - 1);
  hi = Math.min(bins.length - 1, hi + 1);
  return bins.slice(lo, hi + 1);
}

function short(ms) {
  return ms >= 1000 ? `${ms / 1000}s` : `${ms}ms`;
}
